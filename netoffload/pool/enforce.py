"""Live enforcement on this host's devices: PIF devices and the vif/tap
devices of the VMs running here.

- `local_devices(records, host_ref, targets)` -> [LocalDevice];
- `enforce_live` / `revert_live` -> per-device results;
- `device_status` -> live vs desired, compliance.
"""
from netoffload.engine import ethtool
from netoffload.errors import DeviceError
from netoffload.pool import keys
from netoffload.pool.precedence import resolve_pif, resolve_vif
from netoffload.pool.records import (
    BACKEND_OVS,
    as_int,
    eligible_vms,
    network_backend,
    pif_carriers,
    pif_device,
    runs_on,
)


class LocalDevice(object):
    def __init__(self, device, kind, ref, resolution, vm=None):
        self.device = device
        self.kind = kind          # "pif" | "vif" | "tap"
        self.ref = ref            # the PIF or VIF ref
        self.resolution = resolution
        self.vm = vm              # {"uuid", "name_label"} for guest devices
        self.owner = None         # "<vm-uuid>/<devid>": the live record's owner
        if vm and vm.get("uuid") and "." in device:
            self.owner = keys.owner_key(vm["uuid"], device.rsplit(".", 1)[1])


def local_devices(records, host_ref, targets=None):
    """This host's PIF devices and the vif/tap devices of its running VMs."""
    wanted = None if targets is None else set(targets)
    result = []
    backend = network_backend()
    for ref in records.pifs_of_host(host_ref):
        if wanted is None or ref in wanted:
            device = pif_device(records.pifs[ref], backend=backend)
            if device is None:  # see deviceless_pifs
                continue
            result.append(LocalDevice(device, "pif", ref,
                                      resolve_pif(records, ref)))
    for vm_ref in eligible_vms(records):
        vm = records.vms[vm_ref]
        if not runs_on(vm, host_ref):
            continue
        domid = as_int(vm.get("domid"))
        if domid <= 0:
            continue
        for vif_ref in records.vifs_of_vm(vm_ref):
            if wanted is not None and vif_ref not in wanted:
                continue
            devid = as_int(records.vifs[vif_ref].get("device"))
            if devid < 0:
                continue
            resolution = resolve_vif(records, vif_ref)
            for kind in ("vif", "tap"):
                result.append(LocalDevice(
                    "%s%d.%d" % (kind, domid, devid), kind, vif_ref, resolution,
                    {"uuid": vm.get("uuid"), "name_label": vm.get("name_label")}))
    return result


def deviceless_pifs(records, host_ref, targets=None):
    """Status entries for this host's PIFs with no kernel device (VLAN and
    bond PIFs under openvswitch): nothing to enforce on them live."""
    if network_backend() != BACKEND_OVS:
        return []
    wanted = None if targets is None else set(targets)
    result = []
    for ref in records.pifs_of_host(host_ref):
        pif = records.pifs[ref]
        if (wanted is not None and ref not in wanted) or \
                pif_device(pif, backend=BACKEND_OVS) is not None:
            continue
        result.append({
            "device": None, "kind": "pif", "pif": records.pif_label(ref),
            "note": "no kernel device under openvswitch; carried by %s"
                    % ", ".join(pif_carriers(records, ref))})
    return result


def _device_entry(local):
    entry = {"device": local.device, "kind": local.kind,
             "desired": local.resolution.live_features,
             "explicit": dict(local.resolution.explicit),
             # explicit keys xapi will not apply at plug (e.g. "TRUE")
             "ignored_by_xapi": sorted(
                 f for f, v in local.resolution.explicit.items()
                 if v not in ("on", "off")),
             "policy": local.resolution.policy,
             "level": local.resolution.level}
    if local.resolution.error:
        entry["policy"] = "INVALID"
        entry["policy_error"] = local.resolution.error
    if local.vm:
        entry["vm"] = local.vm
    return entry


def pending_restores(recorded, desired):
    """{short: recorded value} of features recorded for a device that its
    policy no longer wants (the policy narrowed or went away)."""
    return dict((f, v) for f, v in (recorded or {}).items()
                if f not in desired)


def enforce_live(records, host_ref, store, targets=None, dry_run=False):
    """Apply each local device's desired features (LiveStateStore.apply),
    then restore the recorded features its policy no longer wants (all of
    them when nothing is wanted any more).

    Entry: the apply result (or the restore result when nothing is
    desired), `pending_restore` {short: value} planned/attempted, and
    `restored` (the restore's result) when both ran.
    """
    present = set(ethtool.list_devices())
    locals_ = local_devices(records, host_ref, targets)
    # a guest device's record from another VM (domids restart at boot)
    # is not this device's past
    recorded = store.recorded(dict((d.device, d.owner) for d in locals_))
    results = []
    for local in locals_:
        if local.device not in present:
            continue
        entry = _device_entry(local)
        if local.resolution.error:
            # a broken policy: leave the device as it is (see plan_object)
            entry["action"] = "invalid"
            results.append(entry)
            continue
        desired = local.resolution.live_features
        pending = pending_restores(recorded.get(local.device), desired)
        if pending:
            entry["pending_restore"] = pending
        try:
            if dry_run:
                if desired:
                    entry.update(ethtool.apply_features(
                        local.device, desired, dry_run=True).to_json())
                entry["action"] = "plan" if desired or pending else "none"
            else:
                _enforce_one(store, local, desired, pending, entry)
        except DeviceError as err:
            _mark_failed(entry, err)
        results.append(entry)
    return results


def _mark_failed(entry, err):
    """One device failed: say so in its entry; the others still run."""
    entry["action"] = "failed"
    entry["ok"] = False
    entry["errors"] = [err.message]


def _enforce_one(store, local, desired, pending, entry):
    entry["action"] = "none"
    if desired:
        entry.update(store.apply(local.device, desired,
                                 owner=local.owner).to_json())
        entry["action"] = "apply"
    if not pending:
        return
    restored = store.restore(local.device, set(pending),
                             owner=local.owner).to_json()
    if not desired:
        entry.update(restored)
        entry["action"] = "restore"
        return
    entry["restored"] = restored
    entry["ran_command"] = entry["ran_command"] or restored["ran_command"]
    entry["ok"] = entry["ok"] and restored["ok"]
    entry["errors"] = entry["errors"] + restored["errors"]


def revert_live(records, host_ref, store, targets=None, dry_run=False):
    """Restore recorded live state: of the targets' devices, or (targets
    None) of every device recorded on this host, known to xapi or not;
    then the records of vif/tap devices that no longer exist are dropped
    (action "gone").
    dry_run: report what would be restored (action "plan"), change nothing."""
    present = set(ethtool.list_devices())
    if targets is None:
        recorded = store.recorded()
        devices = [(dev, {"device": dev, "kind": _kind_of(dev)}, None)
                   for dev in sorted(recorded)]
    else:
        locals_ = local_devices(records, host_ref, targets)
        recorded = store.recorded(dict((d.device, d.owner) for d in locals_))
        devices = [(d.device, _device_entry(d), d.owner)
                   for d in locals_ if d.device in recorded]
    results = []
    for device, entry, owner in devices:
        if device not in present:
            entry["action"] = "absent"
            if targets is None and not dry_run and \
                    entry.get("kind", _kind_of(device)) != "pif":
                # A guest's vif/tap name dies with its domain (domids are
                # not reused soon): nothing left to restore. A PIF device
                # may come back (driver reload), so its record is kept.
                store.forget(device)
                entry["action"] = "gone"
            results.append(entry)
            continue
        if dry_run:
            entry["action"] = "plan"
            entry["restore"] = dict(recorded[device])
            results.append(entry)
            continue
        try:
            entry.update(store.restore(device, owner=owner).to_json())
            entry["action"] = "restore"
        except DeviceError as err:
            _mark_failed(entry, err)
        results.append(entry)
    return results


def _kind_of(device):
    for kind in ("vif", "tap"):
        if device.startswith(kind) and device[len(kind):][:1].isdigit():
            return kind
    return "pif"


def device_status(records, host_ref, targets=None, plans=None, store=None):
    """Per local device: live vs desired, compliance, db state (VIFs).

    `store` (a LiveStateStore): a device with recorded features that its
    policy no longer wants and that are not back yet is not compliant.
    """
    present = set(ethtool.list_devices())
    locals_ = [d for d in local_devices(records, host_ref, targets)
               if d.device in present]
    recorded = store.recorded(dict((d.device, d.owner) for d in locals_)) \
        if store is not None else {}
    live = ethtool.read_many([d.device for d in locals_])
    db_plans = dict((p.ref, p) for p in (plans or []))
    results = []
    for local in locals_:
        entry = _device_entry(local)
        features = live.get(local.device)
        if features is None:
            entry["live"] = {}
            entry["compliant"] = False
            entry["error"] = "device vanished while reading"
            results.append(entry)
            continue
        entry["live"] = features.as_onoff()
        unsupported = sorted(f for f in entry["desired"]
                             if not features.present(f))
        fixed = sorted(f for f, v in entry["desired"].items()
                       if features.present(f) and features.features[f].fixed
                       and entry["live"][f] != v)
        differ = sorted(f for f, v in entry["desired"].items()
                        if features.present(f) and entry["live"][f] != v
                        and f not in fixed)
        # Recorded features the policy no longer wants, not yet back.
        pending = dict((f, v) for f, v in pending_restores(
            recorded.get(local.device), entry["desired"]).items()
            if entry["live"].get(f, v) != v)
        if local.resolution.error:
            pending = {}  # nothing is decided while the policy is broken
        entry["compliant"] = not differ and not pending and \
            not local.resolution.error
        entry["pending_restore"] = pending
        entry["differs"] = differ
        entry["fixed"] = fixed
        entry["unsupported"] = unsupported
        plan = db_plans.get(local.ref)
        if plan is not None:
            entry["db_compliant"] = not plan.changes
            entry["reapplied_at_plug"] = plan.reapplied_now
        results.append(entry)
    return results + deviceless_pifs(records, host_ref, targets)
