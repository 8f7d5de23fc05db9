"""Running dom0 tools: argument lists only, C locale, always a timeout.

`run` is the general way (subprocess); `run_small` is for one short tool
on a path whose start-up time counts (the udev helper's xenstore-read):
the same rules, without importing subprocess (selectors, threading,
signal and more: four times a bare interpreter's start).
"""
import errno
import os
import time

try:
    # the C module: `signal` wraps it in enums, a large import
    import _signal as signal  # pyright: ignore[reportMissingModuleSource]
except ImportError:  # pragma: no cover - every CPython 3 has it
    import signal

from netoffload.errors import DeviceError

DEFAULT_TIMEOUT = 10.0
# dom0 keeps ethtool and ip in /sbin; make sure they are found whatever PATH
# udev or xapi gave us.
_EXTRA_PATH = ("/usr/local/sbin", "/usr/sbin", "/sbin")


def environment(extra_env=None):
    """The environment a dom0 tool runs with: C locale, the sbin dirs on PATH."""
    env = dict(os.environ)
    env["LC_ALL"] = "C"
    env["LANG"] = "C"
    path = env.get("PATH", "/usr/bin:/bin").split(":")
    env["PATH"] = ":".join(path + [p for p in _EXTRA_PATH if p not in path])
    if extra_env:
        env.update(extra_env)
    return env


def run(argv, timeout=DEFAULT_TIMEOUT, check=False, extra_env=None,
        input_text=None):
    """Run argv (a list, never a shell) and return a CompletedProcess.

    stdout/stderr are str. A missing binary or a timeout raises DeviceError;
    with check=True so does a non-zero exit.
    """
    if isinstance(argv, str) or not argv:
        raise TypeError("argv must be a non-empty list")
    argv = [str(a) for a in argv]
    import subprocess  # noqa: PLC0415 (start-up: the module doc)
    try:
        proc = subprocess.run(
            argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL if input_text is None else None,
            input=input_text, universal_newlines=True,
            env=environment(extra_env), timeout=timeout)
    except FileNotFoundError as err:
        raise DeviceError("%s is not installed" % argv[0], argv[0]) from err
    except subprocess.TimeoutExpired as err:
        raise DeviceError("%s timed out after %ss" % (argv[0], timeout),
                          " ".join(argv)) from err
    if check and proc.returncode != 0:
        raise DeviceError("%s failed with exit code %d: %s" % (
            " ".join(argv), proc.returncode, proc.stderr.strip()),
            str(proc.returncode))
    return proc


class Completed(object):
    """What run_small gives: subprocess.CompletedProcess's fields."""
    __slots__ = ("args", "returncode", "stdout", "stderr")

    def __init__(self, args, returncode, stdout, stderr):
        self.args = args
        self.returncode = returncode
        self.stdout = stdout
        self.stderr = stderr


def _which(name, path):
    """The file execvpe would run for name on path (PATH's text)."""
    if "/" in name:
        return name
    for directory in path.split(os.pathsep):
        candidate = os.path.join(directory or ".", name)
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    raise OSError(errno.ENOENT, os.strerror(errno.ENOENT), name)


# Python starts with these ignored and a child would inherit that; the
# tool gets the default dispositions, as subprocess gives it.
_PYTHON_IGNORED = (signal.SIGPIPE, signal.SIGXFSZ)


def _spawn(argv, env, out_w, err_w, report_w):
    """Start argv with stdin /dev/null and stdout/stderr on the pipes; the
    pid. posix_spawn (3.8+; glibc starts the child without copying this
    process) raises the exec's OSError here; with fork + exec the child
    writes the errno to report_w (close-on-exec) instead."""
    spawn = getattr(os, "posix_spawn", None)
    if spawn is not None:
        # Python 3.8+ only, as the function: its constants looked up alike
        # (vermin would take a plain os.POSIX_SPAWN_* for a 3.8 dependency)
        opens, dup2 = (getattr(os, "POSIX_SPAWN_" + name)
                       for name in ("OPEN", "DUP2"))
        return spawn(_which(argv[0], env.get("PATH", "")), argv, env,
                     file_actions=[(opens, 0, os.devnull, os.O_RDONLY, 0),
                                   (dup2, out_w, 1), (dup2, err_w, 2)],
                     setsigdef=_PYTHON_IGNORED)
    pid = os.fork()
    if pid:
        return pid
    try:  # the child: only fd work and exec, then _exit whatever happens
        for signum in _PYTHON_IGNORED:
            signal.signal(signum, signal.SIG_DFL)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.dup2(out_w, 1)
        os.dup2(err_w, 2)
        # a pipe end that already was 1 (this process started with its
        # stdio closed) is not copied by dup2 and keeps its close-on-exec
        os.set_inheritable(1, True)
        os.set_inheritable(2, True)
        os.execvpe(argv[0], argv, env)
    except OSError as err:
        try:
            os.write(report_w, str(err.errno or 0).encode("ascii"))
        except OSError:
            pass
    finally:
        os._exit(127)
    return pid  # pragma: no cover - never reached


def _cannot_run(name, code):
    if code == errno.ENOENT:
        return DeviceError("%s is not installed" % name, name)
    return DeviceError("cannot run %s: %s" % (name, os.strerror(code)), name)


def run_small(argv, timeout=DEFAULT_TIMEOUT):
    """run(argv, timeout) for a short tool with little output, without the
    subprocess import: a Completed with text stdout/stderr. A missing
    binary or a timeout raises DeviceError, as run does."""
    if isinstance(argv, str) or not argv:
        raise TypeError("argv must be a non-empty list")
    argv = [str(a) for a in argv]
    env = environment()
    pipes = [os.pipe() for _ in range(3)]  # stdout, stderr, exec errors
    try:
        pid = _spawn(argv, env, pipes[0][1], pipes[1][1], pipes[2][1])
    except BaseException as err:
        for read_end, write_end in pipes:
            os.close(read_end)
            os.close(write_end)
        if isinstance(err, OSError) and err.errno:
            raise _cannot_run(argv[0], err.errno) from err
        raise
    deadline = time.monotonic() + timeout
    chunks = dict((read_end, []) for read_end, _ in pipes)
    try:
        # from here on anything that raises (the udev helper's SIGALRM
        # deadline is a handler that raises) kills and reaps the child, as
        # subprocess.run does: never a tool left running behind us
        try:
            for _, write_end in pipes:
                os.close(write_end)
            _read_all(chunks, deadline, argv, timeout)
        finally:
            for fd in chunks:
                os.close(fd)
        status = _reap(pid, deadline, argv, timeout)
    except BaseException:
        _kill(pid)
        raise
    report = b"".join(chunks[pipes[2][0]])
    if report:
        raise _cannot_run(argv[0], int(report) if report.isdigit() else 0)
    if os.WIFSIGNALED(status):
        returncode = -os.WTERMSIG(status)
    else:
        returncode = os.WEXITSTATUS(status)
    text = [b"".join(chunks[pipes[i][0]]).decode("utf-8", "replace")
            for i in (0, 1)]
    return Completed(argv, returncode, text[0], text[1])


def _read_all(chunks, deadline, argv, timeout):
    """Read every pipe of chunks ({fd: [data]}) to its end, by deadline."""
    import select  # noqa: PLC0415 (a C module; only run_small uses it)
    poller = select.poll()  # not select.select: no limit on the fd numbers
    for fd in chunks:
        poller.register(fd, select.POLLIN)
    left_open = len(chunks)
    while left_open:
        left = deadline - time.monotonic()
        if left <= 0:
            raise DeviceError("%s timed out after %ss" % (argv[0], timeout),
                              " ".join(argv))
        for fd, _ in poller.poll(left * 1000.0):
            data = os.read(fd, 65536)
            if data:
                chunks[fd].append(data)
            else:  # end of file (POLLHUP included)
                poller.unregister(fd)
                left_open -= 1


def _reap(pid, deadline, argv, timeout):
    """The exit status of a child whose output has ended; it may still run
    (it closed its output and went on): it gets the time left, no more."""
    pause = 0.0001
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return status
        if time.monotonic() >= deadline:  # run_small kills it
            raise DeviceError("%s timed out after %ss" % (argv[0], timeout),
                              " ".join(argv))
        time.sleep(pause)  # an exiting child is reapable within microseconds
        pause = min(pause * 2, 0.01)


def _kill(pid):
    """End a child that overran (or whose reader failed) and reap it."""
    try:
        os.kill(pid, 9)
    except OSError:
        pass
    try:
        os.waitpid(pid, 0)
    except OSError:
        pass
