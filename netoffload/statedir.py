"""The state directory: where it is, files written whole or not at all, and
the host lock.

`paths.state_dir(explicit=None)` names the directory every state file lives in.

`atomic_write(path, data, mode=0o600)`: a temp file in the same directory
(so the rename cannot cross filesystems), fsync, rename over `path`, fsync
of the directory (so the rename itself survives a crash). Readers see the
old file or the new one, never half of one. `data` is a str or an iterable
of str (a big file need not be one string).

No tempfile import: the udev helper writes the live-state record and its
start-up time counts; a random name opened with O_EXCL does the same job.
"""
import contextlib
import errno
import fcntl
import os
import time

from netoffload import paths
from netoffload.errors import Busy, DeviceError

_TEMP_ATTEMPTS = 100




def fsync_dir(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _open_temp(directory, base, mode):
    """(fd, path) of a new file that nobody else can have opened."""
    for _ in range(_TEMP_ATTEMPTS):
        tmp = os.path.join(directory, ".%s.%s.tmp" % (base, os.urandom(6).hex()))
        try:
            return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode), tmp
        except FileExistsError:
            continue
    raise FileExistsError("no free temporary name for %s in %s" % (base, directory))


def atomic_write(path, data, mode=0o600):
    """Replace path with data (str, or an iterable of str) atomically.

    Returns the os.stat_result of what was written, taken from the temp
    file before the rename (inode, size and mtime survive a rename): a
    stat of `path` afterwards may already be another writer's file."""
    directory = os.path.dirname(path) or "."
    fd, tmp = _open_temp(directory, os.path.basename(path), mode)
    try:
        os.fchmod(fd, mode)  # O_CREAT's mode is filtered by the umask
        with os.fdopen(fd, "w") as handle:
            if isinstance(data, str):
                handle.write(data)
            else:
                for chunk in data:
                    handle.write(chunk)
            handle.flush()
            os.fsync(handle.fileno())
            written = os.fstat(handle.fileno())
        os.rename(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    fsync_dir(directory)
    return written


def ensure(directory):
    """Create the state directory (0700, parents too) unless it exists."""
    try:
        os.makedirs(directory, mode=0o700, exist_ok=True)
    except OSError as err:
        raise DeviceError("cannot create the state directory %s: %s"
                          % (directory, err.strerror or err)) from err


@contextlib.contextmanager
def locked(path, wait, busy_message):
    """An exclusive flock on `path` (created 0600, its directory ensured).

    `wait` seconds: 0 fails at once with Busy(busy_message) when someone
    holds it; more retries every 50 ms until that much time has passed.
    The lock goes with the descriptor, so a crash cannot leave it held.
    """
    ensure(os.path.dirname(path))
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as err:
        raise DeviceError("cannot open the lock %s: %s"
                          % (path, err.strerror or err)) from err
    try:
        deadline = time.monotonic() + wait
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as err:
                if err.errno not in (errno.EWOULDBLOCK, errno.EAGAIN,
                                     errno.EACCES):
                    raise DeviceError("cannot lock %s: %s"
                                      % (path, err.strerror)) from err
                if time.monotonic() >= deadline:
                    raise Busy(busy_message) from err
                time.sleep(0.05)
        yield
    finally:
        os.close(fd)  # also releases the lock


def host_lock(directory=None):
    """The host lock (<state dir>/lock) that serialises apply and revert.

    It fails fast rather than wait: xapi puts no timeout on plugin calls,
    so a waiting call could hang its caller for ever.
    """
    return locked(os.path.join(paths.state_dir(directory), "lock"), 0,
                  "another netoffload apply or revert is running on this "
                  "host; try again when it has finished")


def check_writable(path=None, need_bytes=1 << 20):
    """DeviceError unless the state directory can take a write of
    need_bytes (a minimal stand-in for the live-engine helper's version,
    CONTRACTS.md B): it is, or can be made, a writable directory, with
    that much free space. Changes nothing."""
    directory = paths.state_dir(path)
    existing = os.path.abspath(directory)
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing) or not os.access(existing, os.W_OK):
        raise DeviceError("cannot write to the state directory %s: fix its "
                          "owner and mode (root, 0700)" % directory, directory)
    fs = os.statvfs(existing)
    if fs.f_bavail * fs.f_frsize < need_bytes:
        raise DeviceError("no space left on the filesystem of %s: free some "
                          "space there; nothing was changed" % directory,
                          directory)
