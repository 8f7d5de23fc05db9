"""The local cache that bring-up works from when XAPI is not reachable.

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
import errno
import json
import os
import re

from netoffload import statedir
from netoffload.engine import devices
from netoffload.engine import features as feature_names
from netoffload.errors import BadArgument, NotFound
from netoffload.pool import keys

FORMAT = 1
CACHE_FILE = "cache.json"
INDEX_FILE = "cache.index"
INDEX_MAGIC = "netoffload-cache-index 1 "
PIF_MARKER_DIR = "pif"

_UUID_RE = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-"
                      r"[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
_DEVID_RE = re.compile(r"^[0-9]{1,5}$")
# keys JSON needs no escapes for, and that cannot break an index line
_PLAIN_KEY_RE = re.compile(r"^[A-Za-z0-9_.:@/-]+\Z")


class CacheUnusable(NotFound):
    """The cache is missing, unreadable or not in a format we understand."""


state_dir = statedir.state_dir


def cache_path(directory=None):
    return os.path.join(state_dir(directory), CACHE_FILE)


def is_uuid(text):
    return isinstance(text, str) and bool(_UUID_RE.match(text))


def _utc_now():
    import datetime  # writers only: keep the udev helper's start-up short
    return datetime.datetime.utcnow().replace(microsecond=0) \
        .isoformat() + "Z"


# -- building from pool records ----------------------------------------------

def entry_from_resolution(resolution, vm_name=None):
    """The cache entry for one object, or None if its policy sets nothing.

    Only the policy's features (`live_features`), as enforce.enforce_live
    applies: explicit `ethtool-*` keys are xapi's to apply at plug, and an
    opted-out VM (`none`) or an object without policy is left alone.
    """
    wanted = dict(resolution.live_features)
    if not wanted:
        return None
    sources = resolution.sources or {}
    entry = {
        "features": wanted,
        "source": resolution.level,
        "sources": dict((f, sources[f]) for f in wanted if f in sources),
        "policy": resolution.policy,
    }
    if vm_name is not None:
        entry["vm"] = vm_name
    return entry


def policy_summary(records, host_ref):
    """The policy keys that feed this host's cache, for a reader's benefit."""
    pool_oc = records.pool_other_config
    host_oc = records.hosts.get(host_ref, {}).get("other_config") or {}
    tags = dict((keys.tag_of_key(key), value)
                for key, value in sorted(pool_oc.items())
                if keys.tag_of_key(key) is not None)
    return {
        "pool": {"vif": pool_oc.get(keys.KEY_VIF),
                 "pif": pool_oc.get(keys.KEY_PIF),
                 "tags": tags},
        "host": {"pif": host_oc.get(keys.KEY_PIF)},
    }


def pif_device_name(pif, backend=None):
    """The kernel device of a PIF record (pif_device), or None if
    it has none (a VLAN or bond under openvswitch) or that is not a valid
    device name. backend: network_backend() when not given."""
    from netoffload.pool.records import network_backend, pif_device
    if backend is None:
        backend = network_backend()
    device = pif_device(pif, backend=backend)
    if device is None:
        return None
    try:
        return devices.validate_device(device)
    except BadArgument:
        return None


# pif_entry/vif_entry(on_error=KEEP): the object's policy string is broken;
# the watcher keeps the entry it had rather than drop it.
KEEP = "keep"


def pif_entry(records, pif_ref, host_ref, on_error=None, backend=None):
    """(device, entry) for one PIF of host_ref whose policy sets something,
    else None (or `on_error` if its policy string is broken)."""
    pif = records.pifs.get(pif_ref)
    if pif is None or pif.get("host") != host_ref:
        return None
    device = pif_device_name(pif, backend)
    if device is None:
        return None
    from netoffload.pool.precedence import resolve_pif
    resolution = resolve_pif(records, pif_ref)
    if resolution.error:
        return on_error
    entry = entry_from_resolution(resolution)
    return None if entry is None else (device, entry)


def vif_entry(records, vif_ref, on_error=None):
    """(key, entry) for one VIF of an eligible VM whose policy sets
    something, else None (or `on_error` if its policy string is broken)."""
    from netoffload.pool.precedence import resolve_vif
    from netoffload.pool.records import is_eligible_vm
    vif = records.vifs.get(vif_ref)
    vm = records.vms.get((vif or {}).get("VM"))
    if vm is None or not is_eligible_vm(vm):
        return None
    try:
        key = keys.owner_key(vm["uuid"], vif.get("device", ""))
    except (KeyError, ValueError, TypeError, AttributeError):
        return None
    resolution = resolve_vif(records, vif_ref)
    if resolution.error:
        return on_error
    entry = entry_from_resolution(resolution, vm.get("name_label", ""))
    return None if entry is None else (key, entry)


def header(records, host_ref, generated_at=None):
    """Everything in the cache but the pifs and vifs sections."""
    host = records.hosts.get(host_ref, {})
    return {
        "format": FORMAT,
        "generated_at": generated_at or _utc_now(),
        "host": {"uuid": host.get("uuid"), "name": host.get("name_label")},
        "policy": policy_summary(records, host_ref),
    }


def build(records, host_ref, generated_at=None):
    """The cache content for host_ref from a PoolRecords snapshot."""
    from netoffload.pool.records import network_backend
    backend = network_backend()
    pifs = {}
    for pif_ref in sorted(records.pifs):
        found = pif_entry(records, pif_ref, host_ref, backend=backend)
        if found is not None:
            pifs[found[0]] = found[1]
    vifs = {}
    for vif_ref in sorted(records.vifs):
        found = vif_entry(records, vif_ref)
        if found is not None:
            vifs[found[0]] = found[1]
    data = header(records, host_ref, generated_at)
    data["pifs"] = pifs
    data["vifs"] = vifs
    return data


def _json_key(key):
    return '"%s"' % key if _PLAIN_KEY_RE.match(key) else json.dumps(key)


class Encoded(object):
    """Cache content with every entry already JSON-encoded.

    The watcher keeps one and re-encodes only the entries a change touches,
    instead of resolving and encoding the whole pool each time.
    `sections` is {"pifs": {key: json text}, "vifs": {key: json text}};
    keys are device names or <uuid>/<devid>, which JSON never escapes.
    """

    SECTIONS = ("pifs", "vifs")

    def __init__(self, head, sections):
        self.header = head
        self.sections = sections

    @classmethod
    def from_data(cls, data):
        head = dict((k, v) for k, v in data.items() if k not in cls.SECTIONS)
        sections = dict((name, dict((key, encode_entry(entry))
                                    for key, entry in data.get(name, {}).items()))
                        for name in cls.SECTIONS)
        return cls(head, sections)

    def counts(self):
        return dict((name, len(self.sections[name])) for name in self.SECTIONS)

    def chunks(self):
        """cache.json in pieces (a big pool's file is never one string)."""
        head = self.header
        sep = "{"
        for name in sorted(set(head) | set(self.SECTIONS)):
            if name in self.SECTIONS:
                yield '%s"%s":{' % (sep, name)
                inner = ""
                for key in sorted(self.sections[name]):
                    yield "%s%s:%s" % (inner, _json_key(key), self.sections[name][key])
                    inner = ","
                yield "}"
            else:
                yield "%s%s:%s" % (sep, json.dumps(name), encode_entry(head[name]))
            sep = ","
        yield "}\n"

    def text(self):
        """cache.json: the same text as json.dumps(data, sort_keys=True,
        separators=(",", ":")) + newline."""
        return "".join(self.chunks())

    def index_chunks(self, cache_stamp):
        yield INDEX_MAGIC + encode_entry(dict(self.header, cache=cache_stamp)) + "\n"
        for name, prefix in (("pifs", "pif"), ("vifs", "vif")):
            table = self.sections[name]
            for key in sorted(table):
                # lookups use validated names only: other keys can stay out
                if _PLAIN_KEY_RE.match(key):
                    yield "%s %s %s\n" % (prefix, key, table[key])

    def index_text(self, cache_stamp):
        return "".join(self.index_chunks(cache_stamp))


# -- writing -----------------------------------------------------------------

def encode_entry(value):
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


# one implementation for every state file (fileutil): same-directory temp
# file, fsync, rename, directory fsync
atomic_write = statedir.atomic_write


def _stamp(stat_result):
    """What identifies one version of cache.json: inode, size, mtime."""
    return [stat_result.st_ino, stat_result.st_size, stat_result.st_mtime_ns]


def _index_head(first_line, current):
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


def _index_matches(directory):
    """True if cache.index was written with the cache.json there now."""
    try:
        with open(os.path.join(directory, INDEX_FILE)) as handle:
            first = handle.readline()
        current = _stamp(os.stat(os.path.join(directory, CACHE_FILE)))
    except (IOError, OSError):
        return False
    return _index_head(first, current) is not None


_GENERATED_AT_RE = re.compile(r'"generated_at":("(?:[^"\\]|\\.)*"|null)')


def _same_content(path, encoded):
    """True if the file at path holds encoded's content, generated_at aside.

    Compares text, not parsed data: parsing a big pool's cache only to
    compare it would cost the watcher its memory (the fragments stay).
    """
    try:
        with open(path) as handle:
            text = handle.read()
    except (IOError, OSError, UnicodeDecodeError):
        return False
    # top-level keys are sorted, so the first match is the top-level one
    # (inside a JSON string a quote is escaped, so a value cannot match)
    match = _GENERATED_AT_RE.search(text)
    if match is None:
        return False
    try:
        stamp = json.loads(match.group(1))
    except ValueError:
        return False
    return Encoded(dict(encoded.header, generated_at=stamp),
                   encoded.sections).text() == text


def write(data, directory=None, changed=None):
    """Store data (a dict, or Encoded) as the cache; False if it held the
    same content already.

    With changed=True it is written without reading the file back to
    compare (the watcher knows which entries changed).
    cache.index is rewritten with cache.json (or when it is missing/stale).
    """
    directory = state_dir(directory)
    statedir.ensure(directory)
    path = os.path.join(directory, CACHE_FILE)
    encoded = data if isinstance(data, Encoded) else Encoded.from_data(data)
    if changed is not None:
        changed = bool(changed)
    else:
        changed = not _same_content(path, encoded)
    written = None
    if changed:
        written = atomic_write(path, encoded.chunks())
    if changed or not _index_matches(directory):
        # Stamped with the file *we* wrote (its temp file's fstat): a stat
        # of cache.json now may be another writer's newer file, and an
        # index carrying its stamp over our older entries would be trusted.
        # A loser's index then names a cache.json that is gone, so readers
        # take it as stale and parse cache.json itself.
        if written is None:
            written = os.stat(path)  # unchanged: the content is ours too
        atomic_write(os.path.join(directory, INDEX_FILE),
                     encoded.index_chunks(_stamp(written)))
    sync_pif_markers(sorted(encoded.sections["pifs"]), directory)
    return changed


def sync_pif_markers(pif_devices, directory=None):
    """One empty file per PIF device under <state>/pif/, stale ones removed."""
    marker_dir = os.path.join(state_dir(directory), PIF_MARKER_DIR)
    statedir.ensure(marker_dir)
    wanted = set()
    for name in pif_devices:
        try:
            wanted.add(devices.validate_device(name))
        except BadArgument:  # never make a file from a bad name
            continue
    present = set(os.listdir(marker_dir))
    # Another writer (boot unit, watcher, plugin) may be syncing the same
    # markers: a marker it made or removed first is not an error.
    for name in sorted(wanted - present):
        try:
            fd = os.open(os.path.join(marker_dir, name),
                         os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except OSError as err:
            if err.errno != errno.EEXIST:
                raise
            continue
        os.close(fd)
    for name in sorted(present - wanted):
        try:
            os.unlink(os.path.join(marker_dir, name))
        except OSError as err:
            if err.errno != errno.ENOENT:
                raise


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
        raise _unreadable(path, err)
    except ValueError as err:
        raise CacheUnusable("cache %s is corrupt: %s" % (path, err))
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
            name not in feature_names.FEATURES
            or value not in feature_names.VALUES
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
        directory = state_dir(directory)
        path = os.path.join(directory, CACHE_FILE)
        try:
            current = _stamp(os.stat(path))
        except (IOError, OSError) as err:
            raise _unreadable(path, err)
        try:
            with open(os.path.join(directory, INDEX_FILE), "rb") as handle:
                self._text = handle.read()
        except (IOError, OSError):
            raise _IndexStale()
        first = self._text[:self._text.find(b"\n")].decode("utf-8", "replace")
        head = _index_head(first, current)
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
