"""The host-local lock that serialises apply and revert on one host."""
import contextlib
import errno
import fcntl
import os

from netoffload.errors import Busy, DeviceError
from netoffload.fileutil import state_dir

@contextlib.contextmanager
def host_lock(directory=None):
    """flock(LOCK_EX | LOCK_NB) on <state dir>/lock; Busy if it is held.

    Failing fast (rather than waiting) is deliberate: xapi puts no timeout
    on plugin calls, so a waiting call could hang its caller for ever.
    """
    directory = state_dir(directory)
    try:
        os.makedirs(directory, mode=0o700, exist_ok=True)
        fd = os.open(os.path.join(directory, "lock"),
                     os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as err:
        raise DeviceError("cannot open the lock in %s: %s" % (directory, err))
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            if err.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise Busy("another netoffload apply or revert is running on "
                           "this host; try again when it has finished")
            raise DeviceError("cannot lock %s: %s" % (directory, err))
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
