"""Live enforcement on this host's devices: PIF devices and the vif/tap
devices of the VMs running here.

- `local_devices(records, host_ref, targets)` -> [LocalDevice];
- `enforce_live` / `revert_live` -> [DeviceOutcome]; `plan_live` /
  `plan_revert_live` say what those would do and change nothing;
- `device_status` -> [DeviceStatus]: live vs desired, compliance (and a
  `DevicelessPif` for a PIF with no kernel device).
"""
from netoffload.engine import ethtool
from netoffload.engine.devices import (
    GUEST_KINDS,
    KIND_PIF,
    guest_device_name,
    parse_guest_device,
)
from netoffload.errors import DeviceError
from netoffload.pool import keys
from netoffload.pool.precedence import resolve_pif, resolve_vif
from netoffload.pool.records import (
    BACKEND_OVS,
    as_int,
    eligible_vms,
    is_sriov_logical_pif,
    is_sriov_vif,
    network_backend,
    pif_carriers,
    pif_device,
    runs_on,
    sriov_networks,
)

# Only for the type checker (basedpyright takes a name TYPE_CHECKING as
# true): typing costs the watcher about 0.2 MiB of RSS at run time.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Dict, Optional  # noqa: F401 (type comments)

# DeviceOutcome.action
ACTION_NONE = "none"          # nothing to do
ACTION_APPLY = "apply"        # desired features applied
ACTION_RESTORE = "restore"    # recorded features put back
ACTION_PLAN = "plan"          # planning only: something would be done
ACTION_INVALID = "invalid"    # a broken policy: the device is left alone
ACTION_FAILED = "failed"      # a device error
ACTION_ABSENT = "absent"      # recorded, but no such device now
ACTION_GONE = "gone"          # a departed guest device: its record dropped
ACTION_HELD = "held"          # an admin holds it (`netoffload set`): left alone


class LocalDevice(object):
    """A device on this host that xapi knows of, and its resolution."""
    __slots__ = ("device", "kind", "ref", "resolution", "vm", "owner")

    def __init__(self, device, kind, ref, resolution, vm=None):
        self.device = device
        self.kind = kind          # KIND_PIF | KIND_VIF | KIND_TAP
        self.ref = ref            # the PIF or VIF ref
        self.resolution = resolution
        self.vm = vm              # {"uuid", "name_label"} for guest devices
        self.owner = None         # "<vm-uuid>/<devid>": the live record's owner
        if vm and vm.get("uuid") and "." in device:
            self.owner = keys.owner_key(vm["uuid"], device.rsplit(".", 1)[1])

    def to_json(self):
        resolution = self.resolution
        entry = {"device": self.device, "kind": self.kind,
                 "desired": resolution.live_features,
                 "explicit": dict(resolution.explicit),
                 # explicit keys xapi will not apply at plug (e.g. "TRUE")
                 "ignored_by_xapi": sorted(
                     f for f, v in resolution.explicit.items()
                     if v not in ("on", "off")),
                 "policy": resolution.policy,
                 "level": resolution.level}
        # where each feature comes from (docs/policy.md)
        entry.update(resolution.provenance_json())
        if resolution.error:
            entry["policy"] = "INVALID"
            entry["policy_error"] = resolution.error
        if self.vm:
            entry["vm"] = self.vm
        return entry


class RecordedDevice(object):
    """A device known only from this host's live-state record (revert ALL
    covers devices xapi may no longer know)."""
    __slots__ = ("device", "kind")
    owner = None  # every record of the device, whoever owned it

    def __init__(self, device):
        self.device = device
        guest = parse_guest_device(device)
        self.kind = guest[0] if guest else KIND_PIF

    def to_json(self):
        return {"device": self.device, "kind": self.kind}


def local_devices(records, host_ref, targets=None):
    """This host's PIF devices and the vif/tap devices of its running VMs."""
    wanted = None if targets is None else set(targets)
    result = []
    backend = network_backend()
    sriov = sriov_networks(records)
    for ref in records.pifs_of_host(host_ref):
        if (wanted is None or ref in wanted) and \
                not is_sriov_logical_pif(records.pifs[ref]):
            device = pif_device(records.pifs[ref], backend=backend)
            if device is None:  # see deviceless_pifs
                continue
            result.append(LocalDevice(device, KIND_PIF, ref,
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
            if is_sriov_vif(records, vif_ref, sriov):
                continue  # a VF in the guest: no dom0 device
            devid = as_int(records.vifs[vif_ref].get("device"))
            if devid < 0:
                continue
            resolution = resolve_vif(records, vif_ref)
            for kind in GUEST_KINDS:
                result.append(LocalDevice(
                    guest_device_name(kind, domid, devid), kind, vif_ref, resolution,
                    {"uuid": vm.get("uuid"), "name_label": vm.get("name_label")}))
    return result


class DevicelessPif(object):
    """A PIF of this host with no kernel device (a VLAN or bond PIF under
    openvswitch): nothing to enforce on it live."""
    __slots__ = ("label", "carriers")
    device = None
    kind = KIND_PIF
    desired = {}  # read only: nothing is enforced on it live

    def __init__(self, label, carriers):
        self.label = label
        self.carriers = carriers  # labels of the PIFs that carry it

    def to_json(self):
        return {"device": None, "kind": self.kind, "pif": self.label,
                "note": "no kernel device under openvswitch; carried by %s"
                        % ", ".join(self.carriers)}


def deviceless_pifs(records, host_ref, targets=None):
    """[DevicelessPif] of this host: PIFs with no kernel device."""
    if network_backend() != BACKEND_OVS:
        return []
    wanted = None if targets is None else set(targets)
    result = []
    for ref in records.pifs_of_host(host_ref):
        pif = records.pifs[ref]
        if (wanted is not None and ref not in wanted) or \
                is_sriov_logical_pif(pif) or \
                pif_device(pif, backend=BACKEND_OVS) is not None:
            continue
        result.append(DevicelessPif(records.pif_label(ref),
                                    pif_carriers(records, ref)))
    return result


def pending_restores(recorded, desired):
    """{short: recorded value} of features recorded for a device that its
    policy no longer wants (the policy narrowed or went away)."""
    return dict((f, v) for f, v in (recorded or {}).items()
                if f not in desired)


class _AboutADevice(object):
    """A result about one device: `local` is its LocalDevice (or
    RecordedDevice), whose name and kind it answers to."""
    __slots__ = ("local",)

    def __init__(self, local):
        self.local = local

    @property
    def device(self):
        return self.local.device

    @property
    def kind(self):
        return self.local.kind


class DeviceOutcome(_AboutADevice):
    """What enforce/revert did (or, planning, would do) to one device.

    `device` is the LocalDevice or RecordedDevice; `result` the engine's
    ApplyResult (the apply, or the restore when only that ran); `restored`
    the restore's ApplyResult when both ran; `pending_restore` {short:
    value} the recorded features its policy no longer wants;
    `restore_plan` {short: value} what a revert would restore; `error` the
    message of a device error; `held` the hold ({"by", "wanted", "since"})
    of a device an admin holds, which apply leaves alone.
    """
    __slots__ = ("action", "result", "restored", "pending_restore",
                 "restore_plan", "error", "held")

    def __init__(self, local, action=ACTION_NONE):
        _AboutADevice.__init__(self, local)
        self.action = action
        self.result = None  # type: Optional[ethtool.ApplyResult]
        self.restored = None  # type: Optional[ethtool.ApplyResult]
        self.pending_restore = {}  # type: Dict[str, str]
        self.restore_plan = None  # type: Optional[Dict[str, str]]
        self.error = None  # type: Optional[str]
        self.held = None  # type: Optional[Dict[str, Any]]

    def fail(self, err):
        """One device failed: say so here; the others still run."""
        self.action = ACTION_FAILED
        self.error = err.message

    @property
    def ok(self):
        """False on a failure, True on success, None when nothing ran."""
        if self.error is not None:
            return False
        if self.result is None:
            return None
        return self.result.ok and (self.restored is None or self.restored.ok)

    @property
    def failed(self):
        return self.ok is False

    @property
    def ran_command(self):
        return any(r is not None and r.ran_command
                   for r in (self.result, self.restored))

    @property
    def errors(self):
        if self.error is not None:
            return [self.error]
        return [e for r in (self.result, self.restored) if r is not None
                for e in r.errors]

    def to_json(self):
        entry = self.local.to_json()
        if self.pending_restore:
            entry["pending_restore"] = dict(self.pending_restore)
        if self.restore_plan is not None:
            entry["restore"] = dict(self.restore_plan)
        if self.result is not None:
            entry.update(self.result.to_json())
            # with a restore after the apply: both together
            entry["ran_command"] = self.ran_command
            entry["ok"] = self.ok
            entry["errors"] = self.errors
        if self.restored is not None:
            entry["restored"] = self.restored.to_json()
        if self.error is not None:
            entry["ok"] = False
            entry["errors"] = [self.error]
        if self.held is not None:
            entry["held"] = dict(self.held)
        entry["action"] = self.action
        return entry

    def __repr__(self):
        return "DeviceOutcome(%s: %s)" % (self.device, self.action)


def _run_live(records, host_ref, store, targets, step):
    """A DeviceOutcome per present local device, filled in by
    `step(store, outcome)`; a device whose policy is broken is left alone
    (action invalid, see planning.plan_object), and so is a device an
    admin holds with `netoffload set` (action held: `netoffload restore
    DEV` ends the hold and brings it into policy)."""
    present = set(ethtool.list_devices())
    locals_ = local_devices(records, host_ref, targets)
    holds = store.holds(dict((d.device, d.owner) for d in locals_)) \
        if locals_ else {}
    # a guest device's record from another VM (domids restart at boot)
    # is not this device's past
    recorded = store.recorded(dict((d.device, d.owner) for d in locals_))
    outcomes = []
    for local in locals_:
        if local.device not in present:
            continue
        outcome = DeviceOutcome(local)
        if local.device in holds:
            outcome.action = ACTION_HELD
            outcome.held = holds[local.device]
            outcomes.append(outcome)
            continue
        if local.resolution.error:
            outcome.action = ACTION_INVALID
            outcomes.append(outcome)
            continue
        outcome.pending_restore = pending_restores(
            recorded.get(local.device), local.resolution.live_features)
        try:
            step(store, outcome)
        except DeviceError as err:
            outcome.fail(err)
        outcomes.append(outcome)
    return outcomes


def _plan_one(store, outcome):
    desired = outcome.local.resolution.live_features
    if desired:
        outcome.result = ethtool.plan_features(outcome.device, desired)
    if desired or outcome.pending_restore:
        outcome.action = ACTION_PLAN


def _enforce_one(store, outcome):
    local = outcome.local
    desired = local.resolution.live_features
    if desired:
        outcome.result = store.apply(local.device, desired, owner=local.owner)
        outcome.action = ACTION_APPLY
    if not outcome.pending_restore:
        return
    restored = store.restore(local.device, set(outcome.pending_restore),
                             owner=local.owner)
    if desired:
        outcome.restored = restored
    else:
        outcome.result = restored
        outcome.action = ACTION_RESTORE


def enforce_live(records, host_ref, store, targets=None):
    """Apply each local device's desired features (LiveStateStore.apply),
    then restore the recorded features its policy no longer wants (all of
    them when nothing is wanted any more): [DeviceOutcome]."""
    return _run_live(records, host_ref, store, targets, _enforce_one)


def plan_live(records, host_ref, store, targets=None):
    """What enforce_live would do (action plan or none); changes nothing."""
    return _run_live(records, host_ref, store, targets, _plan_one)


def _recorded_devices(records, host_ref, store, targets):
    """[(device, recorded features)] to revert: of the targets' devices, or
    (targets None) every device recorded on this host, known to xapi or
    not."""
    if targets is None:
        recorded = store.recorded()
        return [(RecordedDevice(device), recorded[device])
                for device in sorted(recorded)]
    locals_ = local_devices(records, host_ref, targets)
    recorded = store.recorded(dict((d.device, d.owner) for d in locals_))
    return [(d, recorded[d.device]) for d in locals_ if d.device in recorded]


def plan_revert_live(records, host_ref, store, targets=None):
    """What revert_live would restore (action plan, with `restore_plan`)
    or find absent; changes nothing."""
    present = set(ethtool.list_devices())
    outcomes = []
    for local, features in _recorded_devices(records, host_ref, store,
                                             targets):
        outcome = DeviceOutcome(local, ACTION_ABSENT)
        if local.device in present:
            outcome.action = ACTION_PLAN
            outcome.restore_plan = dict(features)
        outcomes.append(outcome)
    return outcomes


def revert_live(records, host_ref, store, targets=None):
    """Restore recorded live state: of the targets' devices, or (targets
    None) of every device recorded on this host, known to xapi or not;
    then the records of vif/tap devices that no longer exist are dropped
    (action gone): [DeviceOutcome]."""
    present = set(ethtool.list_devices())
    outcomes = []
    for local, _ in _recorded_devices(records, host_ref, store, targets):
        outcome = DeviceOutcome(local, ACTION_ABSENT)
        if local.device not in present:
            if targets is None and local.kind != KIND_PIF:
                # A guest's vif/tap name dies with its domain (domids are
                # not reused soon): nothing left to restore. A PIF device
                # may come back (driver reload), so its record is kept.
                store.forget(local.device)
                outcome.action = ACTION_GONE
        else:
            try:
                outcome.result = store.restore(local.device, owner=local.owner)
                outcome.action = ACTION_RESTORE
            except DeviceError as err:
                outcome.fail(err)
        outcomes.append(outcome)
    return outcomes


class DeviceStatus(_AboutADevice):
    """One local device: live vs desired features, compliance, and for a
    VIF whether its database keys are in line (`db_compliant`, None when
    not planned)."""
    __slots__ = ("live", "read_error", "pending_restore", "differs",
                 "fixed", "unsupported", "forced", "db_compliant",
                 "reapplied_at_plug")

    def __init__(self, local):
        _AboutADevice.__init__(self, local)
        self.live = {}
        self.read_error = None  # type: Optional[str]
        self.pending_restore = {}  # type: Dict[str, str]
        self.differs = []
        self.fixed = []
        self.unsupported = []
        self.forced = []
        self.db_compliant = None  # type: Optional[bool]
        self.reapplied_at_plug = None  # type: Optional[bool]

    @property
    def desired(self):
        return self.local.resolution.live_features

    @property
    def compliant(self):
        return self.read_error is None and not self.differs and \
            not self.pending_restore and not self.local.resolution.error

    def to_json(self):
        entry = self.local.to_json()
        entry["live"] = dict(self.live)
        entry["compliant"] = self.compliant
        if self.read_error is not None:
            entry["error"] = self.read_error
            return entry
        entry["pending_restore"] = dict(self.pending_restore)
        entry["differs"] = list(self.differs)
        entry["fixed"] = list(self.fixed)
        entry["unsupported"] = list(self.unsupported)
        entry["forced"] = list(self.forced)
        if self.db_compliant is not None:
            entry["db_compliant"] = self.db_compliant
            entry["reapplied_at_plug"] = self.reapplied_at_plug
        return entry


def device_status(records, host_ref, targets=None, plans=None, store=None):
    """[DeviceStatus] per local device, then [DevicelessPif].

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
        status = DeviceStatus(local)
        results.append(status)
        features = live.get(local.device)
        if features is None:
            status.read_error = "device vanished while reading"
            continue
        status.live = features.as_onoff()
        desired = status.desired
        status.unsupported = sorted(f for f in desired
                                    if not features.present(f))
        status.fixed = sorted(f for f, v in desired.items()
                              if features.present(f)
                              and features.features[f].fixed
                              and status.live[f] != v)
        # the policy itself keeps these from their value (tx=off,tso=on):
        # apply reports them forced, and so does status
        status.forced = sorted(
            f for f, v in desired.items() if features.present(f)
            and status.live[f] != v and f not in status.fixed
            and ethtool.forced_by(f, v, status.live, desired))
        status.differs = sorted(f for f, v in desired.items()
                                if features.present(f)
                                and status.live[f] != v
                                and f not in status.fixed
                                and f not in status.forced)
        # Recorded features the policy no longer wants, not yet back;
        # nothing is decided while the policy is broken.
        if not local.resolution.error:
            status.pending_restore = dict(
                (f, v) for f, v in pending_restores(
                    recorded.get(local.device), desired).items()
                if status.live.get(f, v) != v)
        plan = db_plans.get(local.ref)
        if plan is not None:
            status.db_compliant = not plan.changes
            status.reapplied_at_plug = plan.reapplied_now
    return results + deviceless_pifs(records, host_ref, targets)
