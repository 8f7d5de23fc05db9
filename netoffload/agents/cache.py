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

`cache.index` holds the same entries one per line, for the udev helper: it
finds one device's line with a byte search instead of parsing the whole
JSON (milliseconds on a 10,000-VIF pool instead of tens). Its first line
carries the identity (inode, size, mtime) of the cache.json it was written
with; a reader that finds cache.json changed since (replaced, truncated,
hand-edited) ignores the index and reads cache.json.

    netoffload-cache-index 1 {"cache":[ino,size,mtime_ns],"format":1,...}
    pif eth0 {"features":{...},...}
    vif <vm-uuid>/<devid> {"features":{...},...}
"""
import json
import os
import re

from netoffload import paths
from netoffload.engine.features import FEATURES, VALUES
from netoffload.errors import NotFound
from netoffload.pool import keys

FORMAT = 1
CACHE_FILE = "cache.json"
INDEX_FILE = "cache.index"
INDEX_MAGIC = "netoffload-cache-index 1 "
PIF_MARKER_DIR = "pif"

_UUID_RE = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-"
                      r"[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
_DEVID_RE = re.compile(r"^[0-9]{1,5}$")


class CacheUnusable(NotFound):
    """The cache is missing, unreadable or not in a format we understand."""


def cache_path(directory=None):
    return os.path.join(paths.state_dir(directory), CACHE_FILE)


def is_uuid(text):
    return isinstance(text, str) and bool(_UUID_RE.match(text))


def stamp(stat_result):
    """What identifies one version of cache.json: inode, size, mtime."""
    return [stat_result.st_ino, stat_result.st_size, stat_result.st_mtime_ns]


def index_head(first_line, current):
    """The header of an index whose first line is first_line, if it was
    written with the cache.json whose stamp is current; else None."""
    if not first_line.startswith(INDEX_MAGIC):
        return None
    try:
        head = json.loads(first_line[len(INDEX_MAGIC):])
    except ValueError:
        return None
    if not isinstance(head, dict) or head.get("cache") != current \
            or head.get("format") != FORMAT:
        return None
    return head


# -- reading -----------------------------------------------------------------

def _unreadable(path, err):
    return CacheUnusable("cache %s cannot be read: %s" % (
        path, getattr(err, "strerror", None) or err))


def read_raw(directory=None):
    """The parsed cache file; CacheUnusable if missing, unreadable or bad."""
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
        if not is_uuid(vm_uuid) or not _DEVID_RE.match(str(devid)):
            return None, None
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
    """LocalCache over cache.index: one byte search per lookup."""

    def __init__(self, directory=None):
        directory = paths.state_dir(directory)
        path = os.path.join(directory, CACHE_FILE)
        try:
            current = stamp(os.stat(path))
        except (IOError, OSError) as err:
            raise _unreadable(path, err) from err
        try:
            with open(os.path.join(directory, INDEX_FILE), "rb") as handle:
                self._text = handle.read()
        except (IOError, OSError) as err:
            raise _IndexStale() from err
        first = self._text[:self._text.find(b"\n")].decode("utf-8", "replace")
        head = index_head(first, current)
        if head is None:
            raise _IndexStale()
        LocalCache.__init__(self, head, path)

    def _lookup(self, section, key):
        needle = ("\n%s %s " % (section[:3], key)).encode("utf-8")
        start = self._text.find(needle)
        if start < 0:
            return None, None
        start += len(needle)
        end = self._text.find(b"\n", start)
        try:
            entry = json.loads(self._text[start:end].decode("utf-8"))
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
