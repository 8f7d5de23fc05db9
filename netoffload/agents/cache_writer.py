"""The local cache's writer: its content built from pool records, and the
atomic write of cache.json, cache.index and the PIF markers.

The format is described in netoffload.agents.cache (the reader, which the
udev helper imports); the boot unit builds the whole cache with `build`,
the watcher keeps a `CacheEntries` and refreshes only what changed.
"""
import binascii
import datetime
import errno
import json
import os
import re
import time
from itertools import accumulate

from netoffload import paths, statedir
from netoffload.agents.cache import (
    CACHE_FILE,
    FORMAT,
    INDEX_FILE,
    INDEX_MAGIC,
    OFFSET_WIDTH,
    PIF_MARKER_DIR,
    index_head,
    stamp,
)
from netoffload.engine import devices
from netoffload.errors import BadArgument
from netoffload.pool import keys
from netoffload.pool.precedence import resolve_pif, resolve_vif, vif_policy_inputs
from netoffload.pool.records import (
    is_eligible_vm,
    is_sriov_logical_pif,
    is_sriov_vif,
    network_backend,
    pif_device,
    sriov_networks,
)

# keys JSON needs no escapes for, and that cannot break an index line
_PLAIN_KEY_RE = re.compile(r"^[A-Za-z0-9_.:@/-]+\Z")


def _utc_now():
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
    if pif is None or pif.get("host") != host_ref or \
            is_sriov_logical_pif(pif):
        return None  # (an SR-IOV logical PIF is no device of its own)
    device = pif_device_name(pif, backend)
    if device is None:
        return None
    resolution = resolve_pif(records, pif_ref)
    if resolution.error:
        return on_error
    entry = entry_from_resolution(resolution)
    return None if entry is None else (device, entry)


def vif_entry(records, vif_ref, on_error=None, sriov=None, resolved=None):
    """(key, entry) for one VIF of an eligible VM whose policy sets
    something, else None (or `on_error` if its policy string is broken).
    A VIF on an SR-IOV network has no dom0 device: None. `sriov`:
    sriov_networks(records), when building for many VIFs. `resolved`: a
    dict kept over one unchanged snapshot, so that VIFs with the same
    policy inputs are resolved once (a busy pool's new VIFs all are)."""
    vif = records.vifs.get(vif_ref)
    vm = records.vms.get((vif or {}).get("VM"))
    if vm is None or not is_eligible_vm(vm) or \
            is_sriov_vif(records, vif_ref, sriov):
        return None
    try:
        key = keys.owner_key(vm["uuid"], vif.get("device", ""))
    except (KeyError, ValueError, TypeError, AttributeError):
        return None
    vm_name = vm.get("name_label", "")
    inputs = None
    if resolved is None:
        resolution = resolve_vif(records, vif_ref)
    else:
        inputs = vif_policy_inputs(records, vif_ref)
        known = resolved.get((inputs, vm_name))
        if known is not None:  # (entry or None) of an alike VIF
            return None if known[0] is None else (key, known[0])
        resolution = resolved.get(inputs)
        if resolution is None:
            resolution = resolved[inputs] = resolve_vif(records, vif_ref)
    if resolution.error:
        return on_error
    entry = entry_from_resolution(resolution, vm_name)
    if resolved is not None:
        # the same dict for alike VIFs: never changed once made
        resolved[(inputs, vm_name)] = (entry,)
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
    backend = network_backend()
    pifs = {}
    for pif_ref in sorted(records.pifs):
        found = pif_entry(records, pif_ref, host_ref, backend=backend)
        if found is not None:
            pifs[found[0]] = found[1]
    vifs = {}
    sriov = sriov_networks(records)
    for vif_ref in sorted(records.vifs):
        found = vif_entry(records, vif_ref, sriov=sriov)
        if found is not None:
            vifs[found[0]] = found[1]
    data = header(records, host_ref, generated_at)
    data["pifs"] = pifs
    data["vifs"] = vifs
    return data


# cache.json and cache.index are written in pieces of this many entries
# (or buckets, about four entries each)
CHUNK_ENTRIES = 512
CHUNK_BUCKETS = 128
# the characters of _PLAIN_KEY_RE
_PLAIN_CHARS = (b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
                b"0123456789_.:@/-")


def _is_plain(key):
    return _PLAIN_KEY_RE.match(key) is not None


def _all_plain(keys):
    """Is every key of the list plain (_PLAIN_KEY_RE)? In C loops: the
    keys joined by newlines hold nothing else than plain characters and
    those newlines, and none is empty."""
    if not keys:
        return True
    try:
        joined = "\n".join(keys).encode("ascii")
    except UnicodeEncodeError:
        return False
    rest = joined.translate(None, _PLAIN_CHARS)
    return len(rest) == len(keys) - 1 and rest.count(b"\n") == len(rest) \
        and "" not in keys


def _json_key(key):
    return '"%s"' % key if _PLAIN_KEY_RE.match(key) else json.dumps(key)


def _json_keys(keys):
    """The JSON texts of keys (most are plain: quoted as they are)."""
    if _all_plain(keys):
        return map('"%s"'.__mod__, keys)
    return map(_json_key, keys)


class Encoded(object):
    """Cache content with every entry already JSON-encoded.

    The watcher's CacheEntries assembles one from entries it re-encodes
    only when a change touches them, instead of resolving and encoding the
    whole pool each time.
    `sections` is {"pifs": {key: json text}, "vifs": {key: json text}};
    keys are device names or <uuid>/<devid>, which JSON never escapes.
    """

    SECTIONS = ("pifs", "vifs")

    def __init__(self, head, sections=None, tables=None):
        """`tables` instead of `sections`: {name: {ref: (key, json
        text)}}, assembled into sections (for a key held twice, the later
        ref wins) when they are first read: in the thread that writes."""
        self.header = head
        self._sections = sections
        self._tables = tables
        self._sorted = {}  # section -> its keys, sorted (once)

    def sorted_keys(self, name):
        if name not in self._sorted:
            self._sorted[name] = sorted(self.sections[name])
        return self._sorted[name]

    @property
    def sections(self):
        if self._sections is None:
            tables, self._tables = self._tables or {}, None
            self._sections = dict(
                (name, dict(map(table.__getitem__, sorted(table))))
                for name, table in tables.items())
        return self._sections

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
        """cache.json in pieces (a big pool's file is never one string):
        the head's members, and each section in slices of entries."""
        head = self.header
        sep = "{"
        for name in sorted(set(head) | set(self.SECTIONS)):
            if name in self.SECTIONS:
                yield '%s"%s":{' % (sep, name)
                table = self.sections[name]
                names = self.sorted_keys(name)
                for start in range(0, len(names), CHUNK_ENTRIES):
                    part = names[start:start + CHUNK_ENTRIES]
                    yield ("," if start else "") + ",".join(map(
                        "%s:%s".__mod__,
                        zip(_json_keys(part), map(table.__getitem__, part))))
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
        """cache.index (format in netoffload.agents.cache): the entries in
        crc32 buckets, about four per bucket, behind a table of offsets.
        Every piece is ASCII (JSON escapes the rest; keys are plain), so
        lengths in characters are lengths in bytes."""
        # Each line is made when its bucket is written, not all at once: a
        # pool's 16,000 lines held together were megabytes of small strings
        # made by the cache-writer thread amid the watcher's own objects
        # (its RSS kept the high-water mark). The per-entry work runs in
        # map() over built-in calls: this runs every few seconds under load.
        names = []  # "<prefix> <key>" of each line, and its entry's text
        texts = []
        for name, prefix in (("pifs", "pif"), ("vifs", "vif")):
            table = self.sections[name]
            # lookups use validated names only: other keys can stay out
            plain = self.sorted_keys(name)
            if not _all_plain(plain):
                plain = [key for key in plain if _is_plain(key)]
            names.extend(map((prefix + " ").__add__, plain))
            texts.extend(map(table.__getitem__, plain))
        buckets = 1
        while buckets * 4 < len(names):
            buckets *= 2
        bucket_of = list(map(buckets.__rmod__, map(binascii.crc32, map(
            str.encode, names))))
        # the lines in bucket order, each bucket's in key order (a stable
        # sort), and where each line ends ("<prefix> <key> <entry>\n")
        order = sorted(range(len(names)), key=bucket_of.__getitem__)
        ends = list(accumulate(map((2).__add__, map(
            int.__add__, map(len, map(names.__getitem__, order)),
            map(len, map(texts.__getitem__, order))))))
        counts = [0] * buckets
        for bucket in bucket_of:
            counts[bucket] += 1
        del bucket_of
        lines_before = [0] + list(accumulate(counts))  # of each bucket
        head = INDEX_MAGIC + encode_entry(dict(
            self.header, cache=cache_stamp, buckets=buckets)) + "\n"
        start = len(head) + (buckets + 1) * OFFSET_WIDTH + 1
        yield head
        yield "".join("%0*d" % (OFFSET_WIDTH, start + (ends[n - 1] if n else 0))
                      for n in lines_before) + "\n"
        for first in range(0, buckets, CHUNK_BUCKETS):
            part = order[lines_before[first]:
                         lines_before[min(first + CHUNK_BUCKETS, buckets)]]
            yield "".join(map("%s %s\n".__mod__, zip(
                map(names.__getitem__, part), map(texts.__getitem__, part))))

    def index_text(self, cache_stamp):
        return "".join(self.index_chunks(cache_stamp))


# -- writing -----------------------------------------------------------------

def encode_entry(value):
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def _index_matches(directory):
    """True if cache.index was written with the cache.json there now."""
    try:
        with open(os.path.join(directory, INDEX_FILE)) as handle:
            first = handle.readline()
        current = stamp(os.stat(os.path.join(directory, CACHE_FILE)))
    except (IOError, OSError):
        return False
    return index_head(first, current) is not None


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


def write(data, directory=None, changed=None, pause=None):
    """Store data (a dict, or Encoded) as the cache; False if it held the
    same content already.

    With changed=True it is written without reading the file back to
    compare (the watcher knows which entries changed).
    cache.index is rewritten with cache.json (or when it is missing/stale).
    `pause` (seconds): slept after each piece of the files, so that the
    other threads of a busy process run between them (the watcher's).
    """
    directory = paths.state_dir(directory)
    statedir.ensure(directory)
    os.chmod(directory, 0o700)  # private even if it was made looser
    path = os.path.join(directory, CACHE_FILE)
    encoded = data if isinstance(data, Encoded) else Encoded.from_data(data)
    if changed is not None:
        changed = bool(changed)
    else:
        changed = not _same_content(path, encoded)
    written = None
    if changed:
        written = statedir.atomic_write(path, _paced(encoded.chunks(), pause))
    if changed or not _index_matches(directory):
        # Stamped with the file *we* wrote (its temp file's fstat): a stat
        # of cache.json now may be another writer's newer file, and an
        # index carrying its stamp over our older entries would be trusted.
        # A loser's index then names a cache.json that is gone, so readers
        # take it as stale and parse cache.json itself.
        if written is None:
            written = os.stat(path)  # unchanged: the content is ours too
        statedir.atomic_write(os.path.join(directory, INDEX_FILE), _paced(
            encoded.index_chunks(stamp(written)), pause))
    sync_pif_markers(sorted(encoded.sections["pifs"]), directory)
    return changed


def _paced(pieces, pause):
    for piece in pieces:
        yield piece
        if pause:
            time.sleep(pause)


def sync_pif_markers(pif_devices, directory=None):
    """One empty file per PIF device under <state>/pif/, stale ones removed."""
    marker_dir = os.path.join(paths.state_dir(directory), PIF_MARKER_DIR)
    statedir.ensure(marker_dir)
    os.chmod(marker_dir, 0o700)
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


class CacheEntries(object):
    """This host's cache as pre-encoded entries, refreshed per object.

    `refresh(records, refs)` re-resolves only the given VIF/PIF refs (None:
    all); `encoded(records)` assembles an Encoded; `changed` says
    whether anything differs from what was last written.
    """

    def __init__(self, host_ref):
        self.host_ref = host_ref
        self.vifs = {}   # vif ref -> (key, json text)
        self.pifs = {}   # pif ref -> (device, json text)
        self.changed = True
        self.written_once = False  # until then, compare with the file on disk
        self._header = None

    def refresh(self, records, refs=None):
        previous = {}
        backend = network_backend()
        # for this call only: the snapshot does not change during it
        resolved, sriov = {}, sriov_networks(records)
        texts = {}  # id(entry) -> its JSON, entries kept alive by resolved
        if refs is None:
            previous = dict(self.vifs, **self.pifs)
            self.vifs, self.pifs = {}, {}
            refs = list(records.vifs) + list(records.pifs)
            self.changed = True
        for ref in refs:
            if ref in records.pifs:
                table, found = self.pifs, pif_entry(
                    records, ref, self.host_ref, on_error=KEEP,
                    backend=backend)
            elif ref in records.vifs:
                table, found = self.vifs, vif_entry(
                    records, ref, on_error=KEEP, sriov=sriov,
                    resolved=resolved)
            else:  # deleted
                table, found = (self.vifs if ref in self.vifs else self.pifs), None
            if found is KEEP:
                # a broken policy string: the last good entry stays
                if ref in previous:
                    table[ref] = previous[ref]
                continue
            if found is None:
                new = None
            elif table is self.vifs:
                # alike VIFs share one entry dict, which `resolved` keeps
                # alive for this call (so its id names it): encoded once
                text = texts.get(id(found[1]))
                if text is None:
                    text = texts[id(found[1])] = encode_entry(found[1])
                new = (found[0], text)
            else:
                new = (found[0], encode_entry(found[1]))
            if table.get(ref) != new:
                self.changed = True
                if new is None:
                    table.pop(ref, None)
                else:
                    table[ref] = new

    def encoded(self, records):
        head = header(records, self.host_ref)
        bare = dict(head, generated_at=None)
        if bare != self._header:
            self._header = bare
            self.changed = True
        # copies (a C loop each): the sorting and assembling happen in
        # the writer's thread, not in the caller's (the event loop)
        return Encoded(head, tables={"pifs": dict(self.pifs),
                                     "vifs": dict(self.vifs)})
