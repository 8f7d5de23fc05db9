"""Running dom0 tools: argument lists only, C locale, always a timeout."""
import os
import subprocess

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
