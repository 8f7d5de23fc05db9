"""runner.run_small: run's rules (argument list, C locale, stdin
/dev/null, a timeout, a clear DeviceError) without the subprocess import."""
import os
import signal
import sys
import time

import pytest

from netoffload import runner
from netoffload.errors import DeviceError


def test_run_small_gives_exit_code_stdout_and_stderr_as_text():
    done = runner.run_small(["sh", "-c", 'echo "out é"; echo err >&2; '
                             'echo "$LC_ALL"; exit 3'])
    assert (done.returncode, done.stdout, done.stderr) == (3, "out é\nC\n",
                                                           "err\n")
    assert done.args == ["sh", "-c", done.args[2]]


def test_run_small_matches_run():
    argv = [sys.executable, "-c", "import sys; print(sys.stdin.read() == '');"
            " print(sorted(a for a in sys.argv[1:])); sys.exit(1)", "b", "a;x"]
    small, full = runner.run_small(argv), runner.run(argv)
    assert (small.returncode, small.stdout, small.stderr) == \
        (full.returncode, full.stdout, full.stderr) == (1, "True\n['a;x', 'b']\n", "")


def test_run_small_a_missing_binary_is_a_device_error():
    with pytest.raises(DeviceError, match="no-such-tool-xyz is not installed"):
        runner.run_small(["no-such-tool-xyz", "a"])


def test_run_small_a_tool_that_cannot_run_says_why(tmp_path):
    tool = tmp_path / "tool"
    tool.write_text("#!/bin/sh\n")
    tool.chmod(0o600)  # not executable
    with pytest.raises(DeviceError, match="cannot run .*: Permission denied"):
        runner.run_small([str(tool)])


def test_run_small_kills_a_tool_that_overruns_and_leaves_no_child():
    start = time.monotonic()
    with pytest.raises(DeviceError, match="timed out after 0.3s"):
        runner.run_small(["sleep", "30"], timeout=0.3)
    assert time.monotonic() - start < 5
    with pytest.raises(ChildProcessError):
        os.waitpid(-1, os.WNOHANG)  # reaped


def test_run_small_leaks_no_descriptor():
    before = sorted(os.listdir("/proc/self/fd"))
    runner.run_small(["true"])
    with pytest.raises(DeviceError):
        runner.run_small(["no-such-tool-xyz"])
    assert sorted(os.listdir("/proc/self/fd")) == before


def test_run_small_refuses_a_string():
    with pytest.raises(TypeError):
        runner.run_small("ls -l")


@pytest.mark.parametrize("spawn", ["posix_spawn", "fork"])
def test_run_small_by_fork_where_there_is_no_posix_spawn(mocker, spawn,
                                                         tmp_path):
    """Python 3.6 and 3.7 have no os.posix_spawn: fork + exec, the same
    results and errors."""
    if spawn == "fork":
        mocker.patch.object(os, "posix_spawn", None, create=True)
    elif not hasattr(os, "posix_spawn"):
        pytest.skip("no os.posix_spawn before Python 3.8")
    done = runner.run_small(["sh", "-c", "cat; echo out; echo err >&2"])
    assert (done.returncode, done.stdout, done.stderr) == (0, "out\n", "err\n")
    with pytest.raises(DeviceError, match="no-such-tool-xyz is not installed"):
        runner.run_small(["no-such-tool-xyz"])
    tool = tmp_path / "tool"
    tool.write_text("#!/bin/sh\n")
    tool.chmod(0o600)
    with pytest.raises(DeviceError, match="cannot run .*: Permission denied"):
        runner.run_small([str(tool)])


def test_run_small_finds_tools_on_the_runner_path(tmp_path, monkeypatch):
    """The tool is looked up on the environment the runner gives it (the
    sbin directories added), not only on the caller's PATH."""
    monkeypatch.setenv("PATH", str(tmp_path))
    done = runner.run_small(["ip", "-V"])  # /sbin or /usr/sbin
    assert done.returncode == 0 and "ip" in done.stdout.lower() + done.stderr.lower()


def test_run_small_times_out_a_tool_that_closes_its_output_and_goes_on():
    start = time.monotonic()
    with pytest.raises(DeviceError, match="timed out after 0.3s"):
        runner.run_small(["sh", "-c", "exec >&- 2>&-; sleep 30"], timeout=0.3)
    assert time.monotonic() - start < 5
    with pytest.raises(ChildProcessError):
        os.waitpid(-1, os.WNOHANG)


class _Alarm(Exception):
    pass


def _raise_alarm(signum, frame):
    raise _Alarm()


@pytest.mark.parametrize("spawn", ["posix_spawn", "fork"])
@pytest.mark.parametrize("script", ["sleep 30", "exec >&- 2>&-; sleep 30"],
                         ids=["while-reading", "while-reaping"])
def test_run_small_kills_its_child_when_a_signal_handler_raises(mocker, spawn,
                                                                script):
    """The udev helper's deadline is a SIGALRM handler that raises: whatever
    run_small is waiting on (the output, or the exit of a child that closed
    its output), the child is killed and reaped, as subprocess.run does."""
    import signal
    if spawn == "fork":
        mocker.patch.object(os, "posix_spawn", None, create=True)
    elif not hasattr(os, "posix_spawn"):
        pytest.skip("no os.posix_spawn before Python 3.8")
    previous = signal.signal(signal.SIGALRM, _raise_alarm)
    signal.setitimer(signal.ITIMER_REAL, 0.3)
    try:
        with pytest.raises(_Alarm):
            runner.run_small(["sh", "-c", script], timeout=20)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    with pytest.raises(ChildProcessError):
        os.waitpid(-1, os.WNOHANG)  # killed and reaped: no child at all


_CLOSED_STDIO_CODE = """
import os, sys
sys.path.insert(0, %r)
if sys.argv[1] == "fork":
    os.posix_spawn = None
from netoffload import runner
done = runner.run_small(["sh", "-c", "echo out; echo err >&2"])
os.write(3, repr((done.returncode, done.stdout, done.stderr)).encode())
"""


@pytest.mark.parametrize("spawn", ["posix_spawn", "fork"])
def test_run_small_in_a_process_whose_stdio_is_closed(spawn):
    """With 0, 1 and 2 closed the pipes take those numbers (stdout's write
    end is 1 itself): the tool still gets its stdout and stderr."""
    import subprocess
    if spawn == "posix_spawn" and not hasattr(os, "posix_spawn"):
        pytest.skip("no os.posix_spawn before Python 3.8")
    repo = os.path.dirname(os.path.dirname(os.path.abspath(runner.__file__)))
    done = subprocess.run(
        ["sh", "-c", 'exec "$0" -c "$1" "$2" 3>&1 <&- >&- 2>&-',
         sys.executable, _CLOSED_STDIO_CODE % repo, spawn],
        stdout=subprocess.PIPE, universal_newlines=True, timeout=30)
    assert done.stdout == repr((0, "out\n", "err\n"))


@pytest.mark.parametrize("spawn", ["posix_spawn", "fork"])
def test_run_small_gives_the_tool_default_signal_dispositions(mocker, spawn):
    """Python ignores SIGPIPE and SIGXFSZ; the tool must not inherit that
    (a tool writing to a closed pipe dies of SIGPIPE, as under run)."""
    if spawn == "fork":
        mocker.patch.object(os, "posix_spawn", None, create=True)
    elif not hasattr(os, "posix_spawn"):
        pytest.skip("no os.posix_spawn before Python 3.8")
    argv = ["sh", "-c", "grep SigIgn /proc/$$/status"]
    ignored = int(runner.run_small(argv).stdout.split()[1], 16)
    assert ignored & (1 << (signal.SIGPIPE - 1)) == 0
    assert ignored & (1 << (signal.SIGXFSZ - 1)) == 0
