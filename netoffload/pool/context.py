"""One plugin call's view of the pool: a XAPI wrapper, a snapshot of the
database and this host (from the inventory, never the session's host).

A call that works on the whole pool takes a whole-pool snapshot (one
`get_all_records` per class). A `scope=local` call (the fan-out asking a
member for its devices' part) takes a local one (`local_snapshot`): the
records this host's devices resolve from, and the objects its arguments
name, so that it costs O(this host) and not O(pool) on the master's xapi.
Every answer a local call gives from it equals the whole snapshot's
(tests/plugin/test_local_snapshot.py compares them for every function).
"""
from collections import namedtuple

from netoffload.errors import XapiError
from netoffload.pool import keys, xapi
from netoffload.pool.records import PoolRecords, is_eligible_vm

# The names a local call's arguments give (vm=, network=, host=, tag=;
# None: not given), looked up pool-wide so that a name resolves (or is
# NotFound / Ambiguous) exactly as in the whole snapshot.
Names = namedtuple("Names", "vm network host tag")
NO_NAMES = Names(None, None, None, None)

# xapi's null reference (a field that points nowhere).
NULL_REF = "OpaqueRef:NULL"


def names_of(args):
    """The Names a plugin call's arguments give."""
    return Names(*[args.get(k) or None for k in Names._fields])


class CallContext(object):
    """One call's view: the wrapper, a snapshot and this host.

    `local`: None for a whole-pool snapshot, else the Names of a
    scope=local call (see local_snapshot).
    """

    def __init__(self, session, client=None, local=None):
        self.xapi = client or xapi.Xapi(session)
        self.host_uuid = xapi.local_host_uuid()
        if local is None:
            self.records = self.xapi.snapshot()
            self.host_ref = self.records.host_by_uuid(self.host_uuid) or \
                self.xapi.local_host_ref(self.host_uuid)
        else:
            self.host_ref = self.xapi.local_host_ref(self.host_uuid)
            self.records = local_snapshot(self.xapi, self.host_ref, local)

    def host_json(self, host_ref=None):
        ref = host_ref or self.host_ref
        rec = self.records.hosts.get(ref) or {}
        return {"uuid": rec.get("uuid", ""),
                "name_label": rec.get("name_label", "")}


def _records(client, cls, refs, into):
    """Add `cls.get_record` of each ref not in `into` yet; an object
    destroyed meanwhile is left out (as a snapshot a moment later would)."""
    for ref in refs:
        if ref in into or ref == NULL_REF:
            continue
        try:
            into[ref] = client.call("%s.get_record" % cls, ref)
        except xapi.ObjectGone:
            continue


def _by_name_or_uuid(client, cls, value):
    """Refs of the `cls` objects whose uuid or name_label is `value`
    (targeting.find_by_name_or_uuid then decides among them)."""
    refs = list(client.call("%s.get_by_name_label" % cls, value))
    try:
        refs.append(client.call("%s.get_by_uuid" % cls, value))
    except XapiError as err:
        if not err.params or err.params[0] != "UUID_INVALID":
            raise
    return refs


def _sriov_logical_pifs(client):
    """Refs of every SR-IOV logical PIF in the pool (network_sriov records:
    PIF.sriov_logical_PIF_of is derived from their logical_PIF). A xapi
    without the class has none."""
    try:
        records = client.call("network_sriov.get_all_records")
    except xapi.ObjectGone:
        return set()
    except XapiError as err:
        if err.params and err.params[0] == "MESSAGE_METHOD_UNKNOWN":
            return set()
        raise
    return set(rec.get("logical_PIF") for rec in records.values())


def local_snapshot(client, host_ref, names=NO_NAMES):
    """A PoolRecords holding, exactly as get_all_records would:

    - the pool (its policies: pool, PIF and tag levels) and this host (its
      PIF policy level);
    - this host's PIFs, the VMs resident on it (their VM policy level and
      tags) with their VIFs, and the networks those VIFs are on (the
      network policy level);
    - the SR-IOV logical PIFs on those networks, on any host: a VIF on
      such a network has no dom0 device (records.sriov_networks);
    - the objects `names` gives: every VM, network or host whose uuid or
      name-label it is, and for a tag no policy names and no VM here
      carries, the eligible VMs elsewhere that carry it (whether the tag
      is known at all is a pool-wide question).

    Each table is a subset of the whole pool's; everything a local call
    asks about this host's devices reads only these records. Cost: a few
    calls plus one per local object, instead of every record of the pool.
    """
    pool = client.get_all_records("pool")
    hosts = {}
    _records(client, "host", [host_ref], hosts)
    host = hosts.get(host_ref) or {}
    pifs, vms, vifs, networks = {}, {}, {}, {}
    _records(client, "PIF", host.get("PIFs") or [], pifs)
    _records(client, "VM", host.get("resident_VMs") or [], vms)
    for vm in list(vms.values()):
        _records(client, "VIF", vm.get("VIFs") or [], vifs)
    _records(client, "network", sorted(set(
        vif.get("network") for vif in vifs.values())), networks)
    logical = _sriov_logical_pifs(client)
    if logical:
        for network in list(networks.values()):
            _records(client, "PIF", [ref for ref in network.get("PIFs") or []
                                     if ref in logical], pifs)
    if names.vm:
        _records(client, "VM", _by_name_or_uuid(client, "VM", names.vm), vms)
    if names.network:
        _records(client, "network", _by_name_or_uuid(
            client, "network", names.network), networks)
    if names.host:
        _records(client, "host", _by_name_or_uuid(client, "host", names.host),
                 hosts)
    if names.tag and not _tag_known_here(pool, vms, names.tag):
        for ref, vm in client.get_all_records("VM").items():
            if is_eligible_vm(vm) and names.tag in (vm.get("tags") or []):
                vms.setdefault(ref, vm)
    records = PoolRecords(pool, hosts, networks, pifs, vms, vifs,
                          host_metrics=None)
    records.local_to = host_ref
    return records


def _tag_known_here(pool, vms, tag):
    """Does a policy name the tag, or an eligible VM here carry it?"""
    for rec in pool.values():
        if keys.tag_key(tag) in (rec.get("other_config") or {}):
            return True
    return any(is_eligible_vm(vm) and tag in (vm.get("tags") or [])
               for vm in vms.values())
