"""The local cache that bring-up works from when XAPI is not reachable: its
format and its reader.

`/var/lib/netoffload/cache.json` (directory from $NETOFFLOAD_STATE_DIR),
written by the boot unit and the watcher, read by the udev helper. It holds,
for this host, the resolved desired features of each of its PIF devices and
of every VIF in the pool (a VM can start here later), keyed
"<vm-uuid>/<devid>":

    {"format": 1,
     "generated_at": "2024-05-01T10:00:00Z",
     "host": {"uuid": "...", "name": "..."},
     "policy": {"pool": {"vif": "all-off", "pif": null, "tags": {"bsd": "tx-off"}},
                "host": {"pif": null}},
     "pifs": {"eth0": {"features": {"tx": "off", ...}, "source": "pool",
                       "sources": {"tx": "pool", ...}, "policy": "all-off"}},
     "vifs": {"<vm-uuid>/0": {"features": {...}, "source": "vm",
                              "sources": {...}, "policy": "tx-off",
                              "vm": "web01"}}}

Only objects whose policy sets at least one feature are listed: a device
that is not listed is left alone. `features` holds every feature the policy
sets, gro and lro included (xapi drops those for VIFs; we apply them live),
and never an explicit `ethtool-*` key (Resolution.live_features, the same
set enforce.enforce_live applies).

This module only reads (it is what the udev helper imports, so it stays
light); cache_writer builds the content from pool records and writes it.

Writes are atomic (temp file in the same directory, fsync, rename), the file
is 0600 and the directory 0700. A write whose content equals the file's
apart from `generated_at` is skipped, so the watcher can refresh freely.

Next to the cache, `pif/<device>` holds one empty marker file per PIF device
listed: the udev rules test for it to recognise virtual PIF devices.

`cache.index` holds the same entries one per line, for the udev helper,
grouped in hash buckets so that one lookup reads a few hundred bytes, not
the whole file (2 MB on a 10,000-VIF pool). Its first line carries the
identity (inode, size, mtime) of the cache.json it was written with and
the number of buckets; a reader that finds cache.json changed since
(replaced, truncated, hand-edited) ignores the index and reads cache.json.
The second line is the bucket table: buckets+1 byte offsets from the start
of the file, ten digits each. An entry "<pif|vif> <key>" is in bucket
crc32("<pif|vif> <key>") % buckets.

    netoffload-cache-index 2 {"buckets":N,"cache":[ino,size,mtime_ns],"format":1,...}
    0000000321000000045600...
    pif eth0 {"features":{...},...}
    vif <vm-uuid>/<devid> {"features":{...},...}
"""
import binascii
import os

from netoffload import paths
from netoffload.engine import jsonlite
from netoffload.engine.features import FEATURES, VALUES
from netoffload.errors import NotFound

FORMAT = 1
CACHE_FILE = "cache.json"
INDEX_FILE = "cache.index"
INDEX_MAGIC = "netoffload-cache-index 2 "
OFFSET_WIDTH = 10  # digits per bucket offset in the table line
PIF_MARKER_DIR = "pif"

_HEX = frozenset("0123456789abcdefABCDEF")
_UUID_GROUPS = (8, 4, 4, 4, 12)


class CacheUnusable(NotFound):
    """The cache is missing, unreadable or not in a format we understand."""


def cache_path(directory=None):
    return os.path.join(paths.state_dir(directory), CACHE_FILE)


def is_uuid(text):
    """8-4-4-4-12 hex digits (no regular expression: the udev helper's
    start-up)."""
    if not isinstance(text, str) or len(text) != 36:
        return False
    groups = text.split("-")
    return tuple(len(g) for g in groups) == _UUID_GROUPS and \
        all(c in _HEX for g in groups for c in g)


def _is_devid(devid):
    text = str(devid)
    return 0 < len(text) <= 5 and all(c in "0123456789" for c in text)


def stamp(stat_result):
    """What identifies one version of cache.json: inode, size, mtime."""
    return [stat_result.st_ino, stat_result.st_size, stat_result.st_mtime_ns]


def index_bucket(prefix, key, buckets):
    """The bucket of the index line "<prefix> <key> ..." (prefix pif/vif)."""
    return binascii.crc32(("%s %s" % (prefix, key)).encode("utf-8")) \
        % buckets


def index_head(first_line, current):
    """The header of an index whose first line is first_line, if it was
    written with the cache.json whose stamp is current; else None."""
    if not first_line.startswith(INDEX_MAGIC):
        return None
    try:
        head = jsonlite.loads(first_line[len(INDEX_MAGIC):])
    except ValueError:
        return None
    if not isinstance(head, dict) or head.get("cache") != current \
            or head.get("format") != FORMAT \
            or not isinstance(head.get("buckets"), int) \
            or head["buckets"] < 1:
        return None
    return head


# -- reading -----------------------------------------------------------------

def _unreadable(path, err):
    return CacheUnusable("cache %s cannot be read: %s" % (
        path, getattr(err, "strerror", None) or err))


def read_raw(directory=None):
    """The parsed cache file; CacheUnusable if missing, unreadable or bad."""
    import json  # noqa: PLC0415 (a whole cache: the C parser; start-up)
    path = cache_path(directory)
    try:
        with open(path) as handle:
            data = json.load(handle)
    except (IOError, OSError) as err:
        raise _unreadable(path, err) from err
    except ValueError as err:
        raise CacheUnusable("cache %s is corrupt: %s" % (path, err)) from err
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise CacheUnusable("cache %s has an unknown format (want %d)" % (
            path, FORMAT))
    for section in ("pifs", "vifs"):
        if not isinstance(data.get(section), dict):
            raise CacheUnusable("cache %s is corrupt: no %s section" % (
                path, section))
    return data


def _checked(section, key, entry):
    """(features, entry) if every feature name and value in the listed
    entry is valid; else the cache is corrupt: CacheUnusable."""
    wanted = entry.get("features") if isinstance(entry, dict) else None
    if not isinstance(wanted, dict) or not wanted or any(
            name not in FEATURES or value not in VALUES
            for name, value in wanted.items()):
        raise CacheUnusable("cache entry %s/%s is corrupt" % (section, key))
    return dict(wanted), entry


class LocalCache(object):
    """Read access to a loaded cache; entries are checked when looked up."""

    def __init__(self, data, path=None):
        self.data = data
        self.path = path

    def close(self):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    @property
    def host_uuid(self):
        return (self.data.get("host") or {}).get("uuid")

    @property
    def generated_at(self):
        return self.data.get("generated_at")

    def pif(self, device):
        """(features, entry) for a PIF device of this host, or (None, None).

        A listed entry with invalid content counts as corrupt: CacheUnusable.
        """
        return self._lookup("pifs", device)

    def vif(self, vm_uuid, devid):
        if not is_uuid(vm_uuid) or not _is_devid(devid):
            return None, None
        # a guest device only: a PIF's bring-up skips the pool package
        from netoffload.pool import keys  # noqa: PLC0415
        return self._lookup("vifs", keys.owner_key(vm_uuid, devid))

    def _lookup(self, section, key):
        entry = self.data[section].get(key)
        if entry is None:
            return None, None
        return _checked(section, key, entry)


def load(directory=None):
    return LocalCache(read_raw(directory), cache_path(directory))


class _IndexStale(Exception):
    pass


class IndexedCache(LocalCache):
    """LocalCache over cache.index: per lookup, one bucket read and one
    byte search in it. The file stays open, so every lookup reads the
    version whose first line was checked."""

    def __init__(self, directory=None):
        self._handle = None
        directory = paths.state_dir(directory)
        path = os.path.join(directory, CACHE_FILE)
        try:
            current = stamp(os.stat(path))
        except (IOError, OSError) as err:
            raise _unreadable(path, err) from err
        self._index = os.path.join(directory, INDEX_FILE)
        try:
            self._handle = open(self._index, "rb")
        except (IOError, OSError) as err:
            raise _IndexStale() from err
        first = self._handle.readline()
        head = index_head(first.decode("utf-8", "replace"), current)
        if head is None:
            self.close()
            raise _IndexStale()
        self._buckets = head["buckets"]
        self._table = len(first)
        LocalCache.__init__(self, head, path)

    def close(self):
        handle, self._handle = self._handle, None
        if handle is not None:
            handle.close()

    def __del__(self):
        self.close()

    def _read(self, offset, size):
        handle = self._handle
        if handle is None:
            raise CacheUnusable("cache index %s was closed" % self._index)
        handle.seek(offset)
        data = handle.read(size)
        if len(data) != size:
            raise CacheUnusable("cache index %s is truncated" % self._index)
        return data

    def _lookup(self, section, key):
        prefix = section[:3]
        bucket = index_bucket(prefix, key, self._buckets)
        table = self._read(self._table + bucket * OFFSET_WIDTH,
                           2 * OFFSET_WIDTH)
        try:
            start = int(table[:OFFSET_WIDTH])
            end = int(table[OFFSET_WIDTH:])
        except ValueError:
            start = end = -1
        if not self._table < start <= end:
            raise CacheUnusable("cache index %s has a bad bucket table"
                                % self._index)
        text = b"\n" + self._read(start, end - start)
        needle = ("\n%s %s " % (prefix, key)).encode("utf-8")
        found = text.find(needle)
        if found < 0:
            return None, None
        found += len(needle)
        line_end = text.find(b"\n", found)
        try:
            entry = jsonlite.loads(text[found:line_end].decode("utf-8"))
        except ValueError:
            entry = None
        return _checked(section, key, entry)


def open_lookup(directory=None):
    """A LocalCache for looking up a few devices: the index when it belongs
    to the current cache.json, else cache.json itself."""
    try:
        return IndexedCache(directory)
    except _IndexStale:
        return load(directory)
