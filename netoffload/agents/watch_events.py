"""The watcher's pure core: a batch of event.from events applied to the
snapshot, and what it asks for.

No session, no threads, no I/O: the daemon (netoffload.agents.watch) feeds
each batch to `apply_events` and acts on the `Batch` it returns, writing
keys on the master, enforcing live state and refreshing cache entries.

- a VIF or PIF event affects that object;
- a VM whose policy key, tags or eligibility changed affects all its VIFs;
  one that started, stopped or moved asks for live enforcement of its VIFs;
  one that was renamed changes its VIFs' cache entries (they carry its name);
- a network's policy change affects its VIFs, a host's its PIFs;
- a pool policy change, or this host becoming the master, affects everything.

Records are trimmed to the fields the pack reads, kept as small read-only
records (`Record`: slots, read as a dict is), strings interned (refs and
keys repeat across records) and equal other_config maps shared (`Config`:
most VIFs of a pool in policy hold the same keys), so the snapshot stays
small.

Also pure: reading event.from's and get_all_records' XML-RPC replies lean
(parse_event_reply, parse_records_stream: only the fields in KEEP become
values), and telling the events of our own writes (is_echo).
"""
import re
import sys
import xml.etree.ElementTree as ElementTree

from netoffload.pool import keys
from netoffload.pool.records import (
    BY_EVENT,
    is_eligible_vm,
    is_sriov_logical_pif,
    is_sriov_vif,
    runs_on,
)

# the fields we keep, per event class
KEEP = {
    "pool": ("uuid", "name_label", "master", "other_config"),
    "host": ("uuid", "name_label", "enabled", "other_config"),
    "network": ("uuid", "name_label", "other_config"),
    # bond_*: a bond master has no kernel device under openvswitch
    # properties: an admin's gro there is an explicit setting (precedence);
    # sriov_logical_PIF_of: an SR-IOV network's VIFs have no dom0 device
    "pif": ("uuid", "device", "VLAN", "host", "network", "other_config",
            "bond_master_of", "bond_slave_of", "properties",
            "sriov_logical_PIF_of"),
    "vm": ("uuid", "name_label", "other_config", "tags", "is_a_template",
           "is_a_snapshot", "is_control_domain", "power_state",
           "resident_on", "domid"),
    # currently_attached: a VIF hot-plugged into a running VM has no device
    # yet when it is created (the udev helper may then find no cache entry
    # for it), so live state is enforced again when it turns true
    "vif": ("uuid", "device", "VM", "network", "other_config",
            "currently_attached"),
}

intern = sys.intern


def compact(value):
    """Strings interned (refs, keys and values repeat across records)."""
    if isinstance(value, str):
        return intern(value)
    if isinstance(value, dict):
        return dict((compact(k), compact(v)) for k, v in value.items())
    if isinstance(value, list):
        return [compact(v) for v in value]
    return value


class Config(dict):
    """An other_config map of the snapshot, shared by every record that
    holds an equal one (share_config): read-only, so that no reader can
    change another record's map through its own (copy it: dict(config))."""

    __slots__ = ()

    @staticmethod
    def _read_only():
        return TypeError("a snapshot's other_config is shared and read-only; "
                         "work on a copy (dict(...))")

    def __setitem__(self, *args, **kwargs):
        raise self._read_only()

    def __delitem__(self, *args, **kwargs):
        raise self._read_only()

    def __ior__(self, *args, **kwargs):
        raise self._read_only()

    def clear(self, *args, **kwargs):
        raise self._read_only()

    def pop(self, *args, **kwargs):
        raise self._read_only()

    def popitem(self, *args, **kwargs):
        raise self._read_only()

    def setdefault(self, *args, **kwargs):
        raise self._read_only()

    def update(self, *args, **kwargs):
        raise self._read_only()

    def __reduce__(self):
        return (Config, (dict(self),))


EMPTY_CONFIG = Config()
# The shared maps, by their items. Cleared when it grows past CONFIGS_MAX
# (maps no record holds any more would pile up otherwise); records keep
# theirs, only later ones share anew.
_CONFIGS = {frozenset(): EMPTY_CONFIG}
CONFIGS_MAX = 2048


def share_config(config):
    """The shared Config equal to `config` (a dict of strings; None: {})."""
    if not config:
        return EMPTY_CONFIG
    config = Config((intern(k), intern(v) if isinstance(v, str) else v)
                    for k, v in config.items())
    try:
        items = frozenset(config.items())
    except TypeError:  # a value that is no string: not shared
        return config
    found = _CONFIGS.get(items)
    if found is not None:
        return found
    if len(_CONFIGS) >= CONFIGS_MAX:
        _CONFIGS.clear()
        _CONFIGS[frozenset()] = EMPTY_CONFIG
    _CONFIGS[items] = config
    return config


class Record(object):
    """A trimmed record (the fields of its class in KEEP, as slots; a field
    the snapshot lacked is absent), read as a read-only dict is: get, [],
    in, iteration over its fields, keys, items, values, len, ==. Compared
    with a dict holding the same fields it is equal. About a third of a
    dict's size: a pool's 16,000 VIFs are most of the watcher's memory."""

    __slots__ = ()
    FIELDS = frozenset()
    CLASS = ""

    def __init__(self, values):
        for key, value in values.items():
            if key in self.FIELDS:
                object.__setattr__(self, key, value)

    def __setattr__(self, name, value):
        raise TypeError("a snapshot record is read-only")

    def get(self, key, default=None):
        if key in self.FIELDS:
            try:
                return getattr(self, key)
            except AttributeError:
                pass
        return default

    def __getitem__(self, key):
        if key in self.FIELDS:
            try:
                return getattr(self, key)
            except AttributeError:
                pass
        raise KeyError(key)

    def __contains__(self, key):
        return key in self.FIELDS and hasattr(self, key)

    def __iter__(self):
        return iter([k for k in self.__slots__ if hasattr(self, k)])

    def keys(self):
        return [k for k in self.__slots__ if hasattr(self, k)]

    def items(self):
        return [(k, getattr(self, k)) for k in self.__slots__
                if hasattr(self, k)]

    def values(self):
        return [getattr(self, k) for k in self.__slots__ if hasattr(self, k)]

    def __len__(self):
        return sum(1 for k in self.__slots__ if hasattr(self, k))

    def __bool__(self):  # `record or {}` everywhere: not through __len__
        for key in self.__slots__:
            if hasattr(self, key):
                return True
        return False

    def copy(self):
        return dict(self.items())

    def __eq__(self, other):
        if isinstance(other, (dict, Record)):
            return dict(self.items()) == dict(other.items())
        return NotImplemented

    def __ne__(self, other):
        equal = self.__eq__(other)
        return equal if equal is NotImplemented else not equal

    __hash__ = None  # type: ignore[assignment]

    def __reduce__(self):
        return (RECORD_TYPES[self.CLASS], (dict(self.items()),))

    def __repr__(self):
        return "%s(%r)" % (type(self).__name__, dict(self.items()))


def _record_type(cls):
    fields = KEEP[cls]
    return type("%sRecord" % cls.upper(), (Record,), {
        "__slots__": fields, "FIELDS": frozenset(fields), "CLASS": cls})


# the Record subclass of each event class
RECORD_TYPES = dict((cls, _record_type(cls)) for cls in KEEP)
# by name too, so that pickle and copy find them (VIFRecord, ...)
globals().update((t.__name__, t) for t in RECORD_TYPES.values())


def compact_record(cls, record):
    """The Record of a trimmed record (a dict of the fields in KEEP[cls]):
    strings interned, other_config a shared Config."""
    values = {}
    for key in KEEP[cls]:
        if key in record:
            values[key] = compact(record[key])
    if "other_config" in values:
        values["other_config"] = share_config(values["other_config"])
    return RECORD_TYPES[cls](values)


def trim(cls, snapshot):
    """The part of an event snapshot the pack reads, as a Record (keeps
    memory small)."""
    return compact_record(cls, snapshot)


def policy_view(cls, record):
    """What, in a record, decides the policy of the objects below it."""
    config = (record or {}).get("other_config") or {}
    if cls == "vm":
        return (config.get(keys.KEY_VIF), tuple(sorted(record.get("tags") or ())),
                is_eligible_vm(record) if record else None)
    if cls == "network":
        return config.get(keys.KEY_VIF)
    if cls == "host":
        return config.get(keys.KEY_PIF)
    if cls == "pool":
        # the writers' protocol keys (lease, its break keys, operations)
        # change with every write, the watcher's own included, and decide
        # no policy: an object a writer touched comes again as its own
        # event, and what waited for another writer's lease is taken up
        # when it goes (the daemon's deferral), so no full replan here
        return tuple(sorted((k, v) for k, v in config.items()
                            if keys.is_pack_key(k) and not is_protocol_key(k)))
    # VIF / PIF: its own keys and where it hangs
    return tuple(sorted(config.items())) + tuple(
        (k, record.get(k)) for k in ("VM", "network", "host", "device", "VLAN"))


def is_protocol_key(key):
    """A pool key of the writers' protocol (lease.py), not of policy."""
    return key == keys.KEY_LEASE or \
        key.startswith((keys.LEASE_BREAK_PREFIX, keys.OP_PREFIX))


def run_view(record):
    """What, in a VM record, says where its devices are."""
    record = record or {}
    return (record.get("power_state"), record.get("resident_on"),
            record.get("domid"))


def is_master(records, host_ref):
    """True if the snapshot names host_ref as the pool master."""
    if records is None:
        return False
    return records.pool_record.get("master") == host_ref


class Batch(object):
    """What one batch of events asks of the daemon.

    affected: VIF/PIF refs whose policy may have changed: planned on the
        master, enforced live where their device is on this host.
    live: VIF refs to enforce live although their policy did not change
        (their VM started or moved, or the VIF was plugged).
    dirty: refs whose cache entries to re-resolve; None: all of them.
    took_over: this host has just become the pool master.
    """

    __slots__ = ("affected", "live", "dirty", "took_over")

    def __init__(self, affected, live, dirty, took_over=False):
        self.affected = affected
        self.live = live
        self.dirty = dirty
        self.took_over = took_over

    def __repr__(self):
        return "Batch(affected=%r, live=%r, dirty=%r, took_over=%r)" % (
            self.affected, self.live, self.dirty, self.took_over)


# Where a VIF or PIF hangs: a change of these is never our own write.
PLACEMENT = ("VM", "network", "host", "device", "VLAN")


def is_echo(old, new, echo):
    """True if the record `new` differs from `old` only by our own writes:
    echo is (other_config before them, other_config after them), and every
    key of new's other_config holds one of those two values."""
    before, after = echo
    config = new.get("other_config") or {}
    for key in set(config) | set(before) | set(after):
        value = config.get(key)
        if value != before.get(key) and value != after.get(key):
            return False
    return all(old.get(k) == new.get(k) for k in PLACEMENT)


def apply_events(records, events, host_ref, was_master, echoes=None):
    """Apply events (event.from's list) to records in place; the Batch.

    was_master: whether this host was the master before the batch (a
    promotion means every object must be planned by its new writer).
    echoes: {ref: (other_config before, after)} of our own writes: an
    event that shows only those (is_echo) plans nothing again; it is
    dropped from echoes once everything shows, or at someone else's
    change.
    """
    affected, live, dirty = set(), set(), set()
    vm_changed, net_changed, host_changed = set(), set(), set()
    everything = False
    for event in events:
        cls = str(event.get("class", "")).lower()
        if cls not in BY_EVENT:
            continue
        table = records.table(cls)
        ref = intern(str(event.get("ref")))
        old = table.get(ref)
        if cls in ("vif", "pif"):
            dirty.add(ref)
        if event.get("operation") == "del":
            table.pop(ref, None)
            continue
        snapshot = event.get("snapshot")
        if not isinstance(snapshot, dict):
            continue
        new = trim(cls, snapshot)
        table[ref] = new
        if cls == "vif" and new.get("currently_attached") and \
                not (old or {}).get("currently_attached"):
            live.add(ref)  # plugged: its device exists now
        if echoes and ref in echoes and old is not None:
            if is_echo(old, new, echoes[ref]):
                if (new.get("other_config") or {}) == echoes[ref][1]:
                    del echoes[ref]  # all our writes show
                continue
            del echoes[ref]  # someone else's change: planned below
        if cls == "vm" and old is not None and \
                old.get("name_label") != new.get("name_label"):
            vm_changed.add(("name", ref))
        if old is not None and policy_view(cls, old) == policy_view(cls, new):
            if cls == "vm" and run_view(old) != run_view(new):
                vm_changed.add(("run", ref))
            continue
        if cls in ("vif", "pif"):
            affected.add(ref)
        elif cls == "vm":
            vm_changed.add(("policy", ref))
        elif cls == "network":
            net_changed.add(ref)
        elif cls == "host":
            host_changed.add(ref)
        elif cls == "pool":
            everything = True
    took_over = is_master(records, host_ref) and not was_master
    if everything or took_over:
        return Batch(set(records.vifs) | set(records.pifs), set(), None,
                     took_over)
    if vm_changed or net_changed:
        for vif_ref, vif in records.vifs.items():
            if ("policy", vif.get("VM")) in vm_changed or \
                    vif.get("network") in net_changed:
                affected.add(vif_ref)
            elif ("name", vif.get("VM")) in vm_changed:
                dirty.add(vif_ref)
            if ("run", vif.get("VM")) in vm_changed:
                live.add(vif_ref)
    if host_changed:
        affected.update(ref for ref, pif in records.pifs.items()
                        if pif.get("host") in host_changed)
    dirty.update(affected)
    return Batch(affected, live, dirty)


def eligible(records, ref):
    """True for a PIF, and for a VIF of a real guest (not a template,
    snapshot or control domain)."""
    if ref in records.pifs:
        return not is_sriov_logical_pif(records.pifs[ref])
    vif = records.vifs.get(ref)
    vm = records.vms.get((vif or {}).get("VM"))
    return vm is not None and is_eligible_vm(vm) and \
        not is_sriov_vif(records, ref)


def local_targets(records, host_ref, refs):
    """The refs among `refs` that have a device on host_ref: its PIFs and
    the VIFs of VMs running there."""
    local = set()
    for ref in refs:
        if ref in records.pifs:
            if records.pifs[ref].get("host") == host_ref:
                local.add(ref)
            continue
        vm = records.vms.get((records.vifs.get(ref) or {}).get("VM"))
        if vm and runs_on(vm, host_ref):
            local.add(ref)
    return local


def shows(records, ref, written):
    """True if the snapshot of ref holds every (key, value) in written,
    the last value of a key written twice (a book key: the intent, then
    the final book or its removal)."""
    record = records.vifs.get(ref) or records.pifs.get(ref)
    if record is None:
        return False
    config = record.get("other_config") or {}
    return all(config.get(key) == value
               for key, value in dict(written).items())


# -- an XML-RPC call, written lean ----------------------------------------------
# xmlrpc.client.dumps would do, but importing xmlrpc.client brings
# http.client, the email package, ssl and decimal: 7 MiB of the watcher's
# RSS for one function. The calls the watcher makes take strings, numbers,
# lists and string maps.


def _escape(text):
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _xml_param(value, out):
    if value is None:
        raise TypeError("XML-RPC has no None (xapi takes no nil)")
    if isinstance(value, bool):
        out.append("<value><boolean>%d</boolean></value>\n" % value)
    elif isinstance(value, str):
        out.append("<value><string>%s</string></value>\n" % _escape(value))
    elif isinstance(value, int):
        if not -2 ** 31 <= value < 2 ** 31:
            raise OverflowError("int exceeds XML-RPC limits")
        out.append("<value><int>%d</int></value>\n" % value)
    elif isinstance(value, float):
        out.append("<value><double>%r</double></value>\n" % value)
    elif isinstance(value, (list, tuple)):
        out.append("<value><array><data>\n")
        for item in value:
            _xml_param(item, out)
        out.append("</data></array></value>\n")
    elif isinstance(value, dict):
        out.append("<value><struct>\n")
        for key, item in value.items():
            if not isinstance(key, str):
                raise TypeError("XML-RPC struct keys must be strings")
            out.append("<member>\n<name>%s</name>\n" % _escape(key))
            _xml_param(item, out)
            out.append("</member>\n")
        out.append("</struct></value>\n")
    else:
        raise TypeError("cannot marshal %s objects" % type(value).__name__)


def dumps_call(method, params):
    """The XML-RPC request (bytes, UTF-8) calling method with params, as
    xmlrpc.client.dumps writes it (strings as <string>, the same escapes)."""
    out = ["<?xml version='1.0'?>\n<methodCall>\n<methodName>%s</methodName>"
           "\n<params>\n" % _escape(method)]
    for param in params:
        out.append("<param>\n")
        _xml_param(param, out)
        out.append("</param>\n")
    out.append("</params>\n</methodCall>\n")
    return "".join(out).encode("utf-8")


# -- event.from's XML-RPC reply, read lean ------------------------------------
# The reply of event.from carries whole snapshots (a VM record has about a
# hundred fields); xmlrpc.client turns every element into Python objects
# through Python callbacks. Here the reply is parsed into a tree in C and
# only the fields in KEEP are turned into values.


class EventReplyError(Exception):
    """event.from answered with a failure: `details` as xapi gave them."""

    def __init__(self, details):
        Exception.__init__(self, " ".join(details))
        self.details = details


def xml_value(element):
    """The Python value of an XML-RPC <value> element."""
    if len(element) == 0:  # <value>text</value> or <value/>: a string
        return element.text or ""
    child = element[0]
    tag = child.tag
    if tag == "string":
        return child.text or ""
    if tag == "struct":
        return xml_struct(child)
    if tag == "array":
        data = child.find("data")
        return [xml_value(v) for v in (data if data is not None else ())]
    if tag in ("int", "i4", "i8"):
        return int((child.text or "0").strip())
    if tag == "boolean":
        return (child.text or "").strip() == "1"
    if tag == "double":
        return float((child.text or "0").strip())
    if tag == "nil":
        return None
    return child.text or ""  # dateTime.iso8601, base64: not read here


def xml_struct(struct, only=None):
    """{name: value} of an XML-RPC <struct>; `only`: decode these names
    and skip the rest unread."""
    result = {}
    for member in struct:
        name = member.find("name")
        value = member.find("value")
        if name is None or value is None:
            continue
        key = name.text or ""
        if only is None or key in only:
            result[key] = xml_value(value)
    return result


# Sets of refs the pack never reads that grow with the pool: a network's
# VIFs (every VIF on it: 16,000 refs, a megabyte of XML, in the network's
# snapshot that comes with every VIF.create), a host's resident_VMs, ...
# They are cut out of the reply before it is parsed.
UNREAD_SETS = (b"VIFs", b"PIFs", b"VBDs", b"VUSBs", b"VGPUs", b"PBDs",
               b"resident_VMs", b"host_CPUs", b"consoles", b"crash_dumps",
               b"snapshots", b"children", b"attached_PCIs", b"tasks",
               b"allowed_operations", b"current_operations")
assert not set(n.decode() for n in UNREAD_SETS) & set(
    f for fields in KEEP.values() for f in fields)


_UNREAD = frozenset(UNREAD_SETS)
_NAME_RE = re.compile(rb"<member>\s*<name>([A-Za-z_]+)</name>\s*<value>\s*$")


def strip_unread_sets(data):
    """data with every struct member named in UNREAD_SETS whose value is
    an array cut out (a member of that name holding anything else, e.g. an
    other_config key, is left alone). One pass: from each <array> the
    member's name is read backwards; sets of refs hold no nested array."""
    pieces, pos, at = [], 0, 0
    while True:
        at = data.find(b"<array>", at)
        if at < 0:
            break
        found = _NAME_RE.search(data, max(pos, at - 80), at)
        close = data.find(b"</array>", at)
        if found is None or found.group(1) not in _UNREAD or close < 0:
            at += 7
            continue
        end = data.find(b"</member>", close)
        if end < 0 or data[close + 8:end].strip() != b"</value>":
            at += 7
            continue
        pieces.append(data[pos:found.start()])
        pos = at = end + len(b"</member>")
    if not pieces:
        return data
    pieces.append(data[pos:])
    return b"".join(pieces)


def parse_value_reply(data):
    """Any XenAPI call's XML-RPC reply (bytes) -> its Value, fully
    decoded (for small replies: a write's "", an other_config map).
    EventReplyError for a xapi failure; ValueError for anything else."""
    try:
        root = ElementTree.fromstring(data)
    except ElementTree.ParseError as err:
        raise ValueError("not XML: %s" % err) from err
    fault = root.find("fault/value")
    if fault is not None:
        raise EventReplyError(["XMLRPC_FAULT", str(xml_value(fault))])
    top = root.find("params/param/value/struct")
    if top is None:
        raise ValueError("not an XML-RPC reply")
    outer = xml_struct(top)
    if outer.get("Status") != "Success":
        raise EventReplyError([str(d) for d in
                               outer.get("ErrorDescription") or ["UNKNOWN"]])
    if "Value" not in outer:
        raise ValueError("a reply with no Value")
    return outer["Value"]


def _reply_value(data, what):
    """The <struct> of a XenAPI reply's Value (event.from's, or
    get_all_records'), its unread sets cut out. EventReplyError for a xapi
    failure; ValueError for anything that is not such a reply."""
    try:
        root = ElementTree.fromstring(strip_unread_sets(data))
    except ElementTree.ParseError as err:
        raise ValueError("%s: not XML: %s" % (what, err)) from err
    fault = root.find("fault/value")
    if fault is not None:
        detail = xml_value(fault)
        raise EventReplyError(["XMLRPC_FAULT", str(detail)])
    top = root.find("params/param/value/struct")
    if top is None:
        raise ValueError("%s: not an XML-RPC reply" % what)
    outer = xml_struct(top, ("Status", "ErrorDescription"))
    if outer.get("Status") != "Success":
        raise EventReplyError([str(d) for d in
                               outer.get("ErrorDescription") or ["UNKNOWN"]])
    for member in top:
        name = member.find("name")
        if name is not None and name.text == "Value":
            value = member.find("value/struct")
            if value is not None:
                return value
    raise ValueError("%s: a reply with no Value" % what)


# Element depths in a XenAPI reply: methodResponse 1, params 2, param 3,
# value 4, struct 5, its members (Status, Value, ErrorDescription) 6;
# in get_all_records' Value: value 7, struct 8, one member per ref 9.
_TOP_MEMBER = 6
_RECORDS = 8
_RECORD_MEMBER = 9


def parse_records_stream(chunks, cls):
    """<class>.get_all_records' reply, given as an iterable of byte chunks
    -> {ref: Record} with only the fields in KEEP[cls] (trim's). Parsed as
    it arrives, each record dropped from the tree once read and made a
    Record at once, so a pool's 10,000 VIFs are never all in memory as
    XML or as whole records. EventReplyError for a
    xapi failure; ValueError for anything that is not such a reply."""
    only = KEEP[cls]
    parser = ElementTree.XMLPullParser(events=("start", "end"))
    depth = 0
    records = None
    result, top = {}, {}
    try:
        for chunk in chunks:
            parser.feed(chunk)
            for item in parser.read_events():
                event, elem = item[0], item[-1]
                if not isinstance(elem, ElementTree.Element):
                    continue
                if event == "start":
                    depth += 1
                    if depth == _RECORDS and elem.tag == "struct":
                        records = elem
                    continue
                if elem.tag == "member" and depth == _RECORD_MEMBER:
                    name = elem.find("name")
                    record = elem.find("value/struct")
                    if name is not None and record is not None:
                        result[intern(name.text or "")] = compact_record(
                            cls, xml_struct(record, only))
                    if records is not None:
                        records.remove(elem)  # always its first child now
                elif elem.tag == "member" and depth == _TOP_MEMBER:
                    name = elem.find("name")
                    value = elem.find("value")
                    if name is not None and value is not None and \
                            name.text in ("Status", "ErrorDescription"):
                        top[name.text] = xml_value(value)
                    elif name is not None and name.text == "Value":
                        # its records went one by one; a Value that is
                        # no struct is no get_all_records reply
                        top["Value"] = value is not None and \
                            value.find("struct") is not None
                elif elem.tag == "fault" and depth == 2:
                    value = elem.find("value")
                    raise EventReplyError(["XMLRPC_FAULT", str(
                        xml_value(value) if value is not None else "")])
                depth -= 1
        parser.close()
    except ElementTree.ParseError as err:
        raise ValueError("get_all_records: not XML: %s" % err) from err
    if "Status" not in top:
        raise ValueError("get_all_records: not an XML-RPC reply")
    if top.get("Status") != "Success":
        raise EventReplyError([str(d) for d in
                               top.get("ErrorDescription") or ["UNKNOWN"]])
    if not top.get("Value"):
        # not "no records": a reply with no map of them at all
        raise ValueError("get_all_records: a reply with no Value")
    return result


def parse_event_reply(data):
    """event.from's XML-RPC reply (bytes) -> {"events": [...], "token"},
    each event {"class", "ref", "operation", "snapshot"} with only the
    snapshot fields in KEEP for its class (classes not in KEEP: none).
    EventReplyError for a xapi failure; ValueError for anything that is
    not such a reply."""
    value = _reply_value(data, "event.from")
    result = {"events": [], "token": ""}
    for member in value:
        name = member.find("name")
        if name is None:
            continue
        if name.text == "token":
            result["token"] = xml_value(member.find("value"))
        elif name.text == "events":
            data_el = member.find("value/array/data")
            for event_el in (data_el if data_el is not None else ()):
                struct = event_el.find("struct")
                if struct is None:
                    continue
                result["events"].append(_event(struct))
    return result


def _event(struct):
    event = {}
    snapshot = None
    for member in struct:
        name = member.find("name")
        value = member.find("value")
        if name is None or value is None:
            continue
        if name.text == "snapshot":
            snapshot = value
        elif name.text in ("class", "ref", "operation"):
            event[name.text] = xml_value(value)
    cls = str(event.get("class", "")).lower()
    if snapshot is not None and cls in KEEP:
        inner = snapshot.find("struct")
        if inner is not None:
            event["snapshot"] = xml_struct(inner, KEEP[cls])
    return event
