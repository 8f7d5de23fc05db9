"""Keep `udevadm test` from leaving marks in the host's udev database.

`udevadm test` (run in a network namespace for a device there) writes the
device's entry to /run/udev/data/n<ifindex> in the host's /run, the same
file the host's own device with that ifindex uses. `restored(ifindexes)`
saves those entries before and puts them back after: removed if they did
not exist, rewritten byte for byte (mode and owner too) if they did.
Only the named entries are touched, so entries that other processes create
or change meanwhile for other devices are left alone.
"""
import contextlib
import os

UDEV_DATA = "/run/udev/data"


def entry_path(ifindex, data_dir=UDEV_DATA):
    return os.path.join(data_dir, "n%d" % int(ifindex))


def _save(path):
    try:
        info = os.lstat(path)
        with open(path, "rb") as handle:
            return handle.read(), info
    except FileNotFoundError:
        return None


def _put_back(path, saved):
    if saved is None:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        return
    content, info = saved
    current = _save(path)
    if current is not None and current[0] == content and \
            (current[1].st_mode, current[1].st_uid, current[1].st_gid) == \
            (info.st_mode, info.st_uid, info.st_gid):
        return
    tmp = "%s.restore-%d" % (path, os.getpid())
    with open(tmp, "wb") as handle:
        handle.write(content)
    os.chmod(tmp, info.st_mode & 0o7777)
    os.chown(tmp, info.st_uid, info.st_gid)
    os.rename(tmp, path)


@contextlib.contextmanager
def restored(ifindexes, data_dir=UDEV_DATA):
    """The udev data entries of these ifindexes as they were, on exit."""
    paths = [entry_path(i, data_dir) for i in sorted(set(ifindexes))]
    saved = dict((path, _save(path)) for path in paths)
    try:
        yield paths
    finally:
        for path in paths:
            _put_back(path, saved[path])


def ifindex_in(ns_run, device):
    """The ifindex of device as seen by ns_run (e.g. NetNS.run)."""
    proc = ns_run(["cat", "/sys/class/net/%s/ifindex" % device])
    return int(proc.stdout.strip())
