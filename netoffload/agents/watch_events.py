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

Records are trimmed to the fields the pack reads, strings interned (refs
and keys repeat across records), so the snapshot stays small.
"""
import sys

from netoffload.pool import keys
from netoffload.pool.records import BY_EVENT, is_eligible_vm, runs_on

# the fields we keep, per event class
KEEP = {
    "pool": ("uuid", "name_label", "master", "other_config"),
    "host": ("uuid", "name_label", "enabled", "other_config"),
    "network": ("uuid", "name_label", "other_config"),
    # bond_*: a bond master has no kernel device under openvswitch
    "pif": ("uuid", "device", "VLAN", "host", "network", "other_config",
            "bond_master_of", "bond_slave_of"),
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


def compact_record(record):
    """A record with its strings interned and other_config a dict."""
    result = dict((intern(key), compact(value))
                  for key, value in record.items())
    if "other_config" in result:
        result["other_config"] = result["other_config"] or {}
    return result


def trim(cls, snapshot):
    """The part of an event snapshot the pack reads (keeps memory small)."""
    return compact_record(dict((k, snapshot[k]) for k in KEEP[cls]
                               if k in snapshot))


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
        return tuple(sorted((k, v) for k, v in config.items()
                            if keys.is_pack_key(k)))
    # VIF / PIF: its own keys and where it hangs
    return tuple(sorted(config.items())) + tuple(
        (k, record.get(k)) for k in ("VM", "network", "host", "device", "VLAN"))


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


def apply_events(records, events, host_ref, was_master):
    """Apply events (event.from's list) to records in place; the Batch.

    was_master: whether this host was the master before the batch (a
    promotion means every object must be planned by its new writer).
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
        return True
    vif = records.vifs.get(ref)
    vm = records.vms.get((vif or {}).get("VM"))
    return vm is not None and is_eligible_vm(vm)


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
    """True if the snapshot of ref holds every (key, value) in written."""
    record = records.vifs.get(ref) or records.pifs.get(ref)
    if record is None:
        return False
    config = record.get("other_config") or {}
    return all(config.get(key) == value for key, value in written)
