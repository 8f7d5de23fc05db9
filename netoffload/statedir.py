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
import errno
import fcntl
import os
import stat
import time

from netoffload import paths
from netoffload.errors import Busy, DeviceError

_TEMP_ATTEMPTS = 100
DEFAULT_NEED_BYTES = 1 << 20


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


def atomic_write(path, data, mode=0o600, sync_dir=True):
    """Replace path with data (str, or an iterable of str) atomically.

    sync_dir=False skips the fsync of the directory: after a power loss
    the rename may then be lost (the old file is back, whole), which a
    caller whose content does not outlive a reboot anyway can accept.

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
    if sync_dir:
        fsync_dir(directory)
    return written


def _mount_point(path):
    """The mount point of the filesystem holding path (an existing path)."""
    path = os.path.realpath(path)
    device = os.stat(path).st_dev
    while path != os.path.dirname(path):
        parent = os.path.dirname(path)
        if os.stat(parent).st_dev != device:
            break
        path = parent
    return path


def _existing_ancestor(path):
    """path itself or its nearest ancestor that exists."""
    path = os.path.abspath(path)
    while not os.path.lexists(path) and path != os.path.dirname(path):
        path = os.path.dirname(path)
    return path


def no_space_message(path, detail):
    """The text of a full filesystem under path (ENOSPC, EDQUOT, or a
    pre-check that found too little room)."""
    try:
        mount = _mount_point(_existing_ancestor(path))
    except OSError:
        mount = "the filesystem of %s" % path
    return ("no space left on %s: free some space on %s and run the command "
            "again (%s)" % (mount, mount, detail))


def write_error(path, err):
    """DeviceError for an OSError met writing a state file: a full disk
    gets its own message."""
    if err.errno in (errno.ENOSPC, errno.EDQUOT):
        return DeviceError(no_space_message(path, "writing %s: %s" % (
            path, err.strerror or err)), path)
    if err.errno == errno.EROFS:
        return DeviceError("cannot write %s: the filesystem is read-only: "
                           "remount it read-write" % path, path)
    return DeviceError("cannot write %s: %s: check the state directory %s "
                       "(owner root, mode 0700)"
                       % (path, err.strerror or err, os.path.dirname(path)),
                       path)


def check_writable(path=None, need_bytes=DEFAULT_NEED_BYTES):
    """Raise DeviceError unless the state directory (path, default the
    state directory) can take a write of need_bytes: it exists as a
    writable directory, or can be created (its nearest existing ancestor
    is a writable directory), and its filesystem has that much space and a
    free inode. Changes nothing (it creates nothing either).
    """
    directory = paths.state_dir(path)
    existing = _existing_ancestor(directory)
    try:
        info = os.stat(existing)
    except OSError as err:
        raise DeviceError("cannot use the state directory %s: %s: %s"
                          % (directory, existing, err.strerror or err),
                          directory) from err
    if existing != os.path.abspath(directory):
        where = "cannot create the state directory %s: %s" % (
            directory, existing)
    else:
        where = "cannot write to the state directory %s" % directory
    if not stat.S_ISDIR(info.st_mode):
        raise DeviceError("%s is not a directory: move it away or set %s"
                          % (where, paths.ENV_STATE_DIR), directory)
    if not os.access(existing, os.W_OK | os.X_OK):
        fs = os.statvfs(existing)
        why = "its filesystem is read-only: remount it read-write" \
            if fs.f_flag & os.ST_RDONLY else \
            "permission denied: run as root, or fix its owner and mode " \
            "(root, 0700)"
        raise DeviceError("%s (%s)" % (where, why), directory)
    fs = os.statvfs(existing)
    free = fs.f_bavail * fs.f_frsize
    if free < need_bytes or fs.f_favail == 0 and fs.f_files:
        raise DeviceError(no_space_message(directory, (
            "the state directory %s needs %d bytes, %d are free%s; "
            "nothing was changed" % (
                directory, need_bytes, free, ", and no free inode"
                if fs.f_favail == 0 and fs.f_files else ""))), directory)


def ensure(directory):
    """Create the state directory (0700, parents too) unless it exists."""
    try:
        os.makedirs(directory, mode=0o700, exist_ok=True)
    except OSError as err:
        raise DeviceError("cannot create the state directory %s: %s"
                          % (directory, err.strerror or err)) from err


class locked(object):  # noqa: N801 (used as a function: `with locked(...)`)
    """An exclusive flock on `path` (created 0600, its directory ensured).

    `wait` seconds: 0 fails at once with Busy(busy_message) when someone
    holds it; more retries every 50 ms until that much time has passed.
    The lock goes with the descriptor, so a crash cannot leave it held.
    A class rather than contextlib (the udev helper's start-up).
    """

    def __init__(self, path, wait, busy_message):
        self.path = path
        self.wait = wait
        self.busy_message = busy_message
        self._fd = None

    def __enter__(self):
        path = self.path
        ensure(os.path.dirname(path))
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as err:
            raise DeviceError("cannot open the lock %s: %s"
                              % (path, err.strerror or err)) from err
        try:
            deadline = time.monotonic() + self.wait
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
                        raise Busy(self.busy_message) from err
                    time.sleep(0.05)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        return self

    def __exit__(self, *exc):
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)  # also releases the lock
        return False


def host_lock(directory=None):
    """The host lock (<state dir>/lock) that serialises apply and revert.

    It fails fast rather than wait: xapi puts no timeout on plugin calls,
    so a waiting call could hang its caller for ever.
    """
    return locked(os.path.join(paths.state_dir(directory), "lock"), 0,
                  "another netoffload apply or revert is running on this "
                  "host; try again when it has finished")
