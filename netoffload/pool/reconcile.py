"""Plan and apply: database keys (pool-wide) and live devices (this host).

Data flows one way: records -> resolution (resolve.py) -> a plan per object
-> writes -> bookkeeping that revert uses.

Bookkeeping on each VIF/PIF the pack wrote to (the watcher relies on it):
- `netoffload-managed`: comma-separated sorted short names whose
  `ethtool-<f>` key the pack wrote, e.g. `gso,rx,sg,tso,tx,ufo`;
- `netoffload-saved`: compact JSON, short name -> `[prior, written]`: the
  key's prior value string (null when it was absent) and the value the pack
  wrote, e.g. `{"sg":[null,"off"],"tx":["true","off"]}` (the earlier form
  with a bare prior is still read). A managed key that no longer holds what
  the pack wrote was changed by someone else: it is un-managed, its prior
  dropped, and left alone (keys.taken_over).
An `ethtool-<f>` key not listed in managed is explicit (someone else's) and
is never touched unless `force=True`, which saves it first. When the policy
stops covering a managed feature the saved value is restored and the feature
un-managed; when nothing is managed both bookkeeping keys go.

Write order keeps a crash harmless: bookkeeping that grows is written before
the ethtool keys, bookkeeping that shrinks after them.

Interfaces:
- `select(records, spec, host_ref, pool_wide)` -> `Selection` (target
  parsing: ALL, vm=, tag=, network=, pif=; NotFound / Ambiguous);
- `plan_db(records, targets, force=False)` -> [ObjectPlan] (targets: VIF
  and/or PIF refs);
- `plan_revert(records, targets)` -> [ObjectPlan] restoring everything managed;
- `apply_db(xapi, plans)` -> [dict] per object (a lost race re-reads the
  object and re-plans it; a vanished object is reported "gone");
- `local_devices(records, host_ref, targets=None)` -> [LocalDevice];
- `enforce_live(records, host_ref, store, targets=None, dry_run=False)` and
  `revert_live(records, host_ref, store, targets=None)` -> [dict] per device;
- `device_status(records, host_ref, targets=None)` -> [dict] per device.
"""
import json
import threading

from netoffload.pool import keys
from netoffload.engine import ethtool
from netoffload.pool import resolve as R
from netoffload.errors import Ambiguous, DeviceError, NotFound, XapiError
from netoffload.engine.features import FEATURES, VIF_XAPI_FEATURES
from netoffload.log import get_logger
from netoffload.pool.xapi import LostRace, ObjectGone

MAX_RACE_RETRIES = 3


# -- target selection ---------------------------------------------------------

class Selection(object):
    """The objects a target names: VIF refs, PIF refs, and what it was."""

    def __init__(self, kind, value, vifs=(), pifs=(), object_ref=None):
        self.kind = kind          # "all" | "vm" | "tag" | "network" | "pif"
        self.value = value
        self.vifs = list(vifs)
        self.pifs = list(pifs)
        self.object_ref = object_ref  # the VM or network ref, if one

    @property
    def refs(self):
        return self.vifs + self.pifs

    def to_json(self):
        return {"kind": self.kind, "value": self.value,
                "vifs": len(self.vifs), "pifs": len(self.pifs)}


def find_by_name_or_uuid(table, value, what, eligible=None):
    """The ref whose uuid or name_label is `value`; NotFound / Ambiguous."""
    candidates = [ref for ref, rec in table.items()
                  if eligible is None or eligible(rec)]
    for ref in candidates:
        if table[ref].get("uuid") == value:
            return ref
    matches = sorted((ref for ref in candidates
                      if table[ref].get("name_label") == value),
                     key=lambda r: table[r].get("uuid", ""))
    if not matches:
        raise NotFound("no %s has the name-label or uuid %r" % (what, value),
                       value)
    if len(matches) > 1:
        raise Ambiguous("%d %ss are named %r; use a uuid" % (
            len(matches), what, value), *[table[r].get("uuid") for r in matches])
    return matches[0]


def select(records, spec, host_ref=None, pool_wide=False):
    """Selection for a target spec (kind, value) from api.parse_target.

    pif=DEV names the PIFs with that device on this host, or on every host
    when pool_wide.
    """
    kind, value = spec
    vifs = R.eligible_vifs(records)
    if kind == "all":
        return Selection(kind, value, vifs, sorted(records.pifs))
    if kind == "vm":
        vm_ref = find_by_name_or_uuid(records.vms, value, "VM",
                                      R.is_eligible_vm)
        return Selection(kind, value, records.vifs_of_vm(vm_ref),
                         object_ref=vm_ref)
    if kind == "tag":
        tagged = set(ref for ref, vm in records.vms.items()
                     if R.is_eligible_vm(vm) and value in (vm.get("tags") or []))
        return Selection(kind, value, [v for v in vifs
                                       if records.vifs[v].get("VM") in tagged])
    if kind == "network":
        net_ref = find_by_name_or_uuid(records.networks, value, "network")
        return Selection(kind, value, [v for v in vifs if records.vifs[v].get(
            "network") == net_ref], object_ref=net_ref)
    if kind == "pif":
        pifs = sorted(ref for ref, pif in records.pifs.items()
                      if pif.get("device") == value
                      and (pool_wide or pif.get("host") == host_ref))
        if not pifs:
            raise NotFound("no PIF with device %r%s" % (
                value, "" if pool_wide else " on this host"), value)
        return Selection(kind, value, pifs=pifs)
    raise NotFound("unknown target kind %r" % kind)


# -- planning the database ------------------------------------------------------

class ObjectPlan(object):
    """What to write on one VIF or PIF, in order, and what it leads to."""

    def __init__(self, cls, ref, record, label, resolution, writes, final,
                 force=False):
        self.cls = cls
        self.force = force
        self.current = dict(record.get("other_config") or {})
        self.ref = ref
        self.uuid = record.get("uuid", "")
        self.label = label
        self.resolution = resolution
        self.writes = writes      # [(key, value or None, expected)]
        self.final = final        # other_config after the writes

    @property
    def changes(self):
        return bool(self.writes)

    @property
    def live_only(self):
        """gro/lro wishes on a VIF: xapi drops these keys; enforced live."""
        if self.cls != "VIF":
            return {}
        return dict((f, v) for f, v in self.resolution.features.items()
                    if f not in VIF_XAPI_FEATURES)

    def _reapplied(self, config):
        written_features = VIF_XAPI_FEATURES if self.cls == "VIF" else FEATURES
        return all(keys.xapi_value(config.get(keys.ethtool_key(f))) == v
                   for f, v in self.resolution.features.items() if f in written_features)

    @property
    def reapplied_at_plug(self):
        """After the writes, would xapi apply every desired key at plug?"""
        return self._reapplied(self.final)

    @property
    def reapplied_now(self):
        """With the keys as they are now, would xapi apply them at plug?"""
        return self._reapplied(self.current)

    def to_json(self):
        return {"class": self.cls, "uuid": self.uuid, "label": self.label,
                "writes": [[k, v] for k, v, _ in self.writes],
                "policy": self.resolution.policy,
                "level": self.resolution.level,
                "desired": dict(self.resolution.features),
                "sources": dict(self.resolution.sources),
                "live_only": self.live_only,
                "reapplied_at_plug": self.reapplied_at_plug,
                "policy_error": self.resolution.error}


def _bookkeeping(managed, saved, written):
    if not managed:
        return None, None
    return (keys.format_managed(managed),
            keys.format_saved(dict((f, saved.get(f)) for f in managed),
                           dict((f, written.get(f)) for f in managed)))


def plan_object(cls, ref, record, label, resolution, force=False,
                actual=None):
    """The ordered writes that bring one object's keys to `resolution`.

    A managed key someone changed or removed since the pack wrote it
    (keys.taken_over) is theirs: it is un-managed and left as it is,
    and its saved prior is dropped, so revert keeps their value. With
    force the policy overwrites it and saves *their* value as the prior.

    `actual`: the map as xapi holds it, when the decision is made on an
    adjusted view of it (after a lost race); `expected` values follow it.
    """
    config = dict(record.get("other_config") or {})
    if resolution.error:
        # A broken policy string (a typo set with xe, past set_policy's
        # check) says nothing about what is wanted: keep what is there
        # rather than take it for "nothing wanted" and strip every key.
        return ObjectPlan(cls, ref, record, label, resolution, [],
                          dict(config if actual is None else actual), force)
    written_features = VIF_XAPI_FEATURES if cls == "VIF" else FEATURES
    managed = keys.parse_managed(config.get(keys.KEY_MANAGED)) - \
        keys.taken_over(config)
    saved = keys.parse_saved(config.get(keys.KEY_SAVED))
    written = keys.parse_written(config.get(keys.KEY_SAVED))
    new_managed = set(managed)
    new_saved = dict((f, saved.get(f)) for f in managed)
    new_written = dict((f, written.get(f)) for f in managed)
    key_writes = []
    for feature in written_features:
        key = keys.ethtool_key(feature)
        current = config.get(key)
        source = resolution.sources.get(feature)
        wanted = resolution.features.get(feature) \
            if source not in (None, "explicit") else None
        if feature in managed:
            if wanted is None:
                prior = saved.get(feature)
                if current != prior:
                    key_writes.append((key, prior))
                new_managed.discard(feature)
                new_saved.pop(feature, None)
                new_written.pop(feature, None)
            elif current != wanted:
                key_writes.append((key, wanted))
                new_written[feature] = wanted
        elif wanted is not None and keys.xapi_value(current) != wanted:
            if current is not None and not force:
                continue  # explicit: resolution already let it win
            new_managed.add(feature)
            new_saved[feature] = current
            new_written[feature] = wanted
            key_writes.append((key, wanted))
    held = config if actual is None else actual
    old_book = (held.get(keys.KEY_MANAGED), held.get(keys.KEY_SAVED))
    # Before the keys: every feature about to be written is claimed with
    # the value it will hold; after them: what is no longer ours goes.
    grown_saved = dict((f, saved.get(f)) for f in managed)
    grown_saved.update(new_saved)
    grown_written = dict((f, written.get(f)) for f in managed)
    grown_written.update(new_written)
    grown_book = _bookkeeping(managed | new_managed, grown_saved,
                              grown_written)
    final_book = _bookkeeping(new_managed, new_saved, new_written)
    ordered = []
    if key_writes and grown_book != old_book:
        ordered += list(zip((keys.KEY_MANAGED, keys.KEY_SAVED), grown_book))
        old_book = grown_book
    ordered += key_writes
    if final_book != old_book:
        ordered += list(zip((keys.KEY_MANAGED, keys.KEY_SAVED), final_book))
    writes = []
    config = dict(config if actual is None else actual)
    for key, value in ordered:
        expected = config.get(key)
        if expected == value:
            continue
        writes.append((key, value, expected))
        if value is None:
            config.pop(key, None)
        else:
            config[key] = value
    return ObjectPlan(cls, ref, record, label, resolution, writes, config,
                      force)


def _plan_ref(records, ref, force=False, revert=False):
    if ref in records.vifs:
        cls, record, label = "VIF", records.vifs[ref], records.vif_label(ref)
        resolution = R.resolve_vif(records, ref, force) if not revert else None
    elif ref in records.pifs:
        cls, record, label = "PIF", records.pifs[ref], records.pif_label(ref)
        resolution = R.resolve_pif(records, ref, force) if not revert else None
    else:
        raise NotFound("no VIF or PIF %s" % ref, ref)
    if resolution is None:  # revert: nothing is desired any more
        resolution = R.Resolution()
        resolution.explicit = keys.explicit_keys(record.get("other_config") or {})
    return plan_object(cls, ref, record, label, resolution, force)


def plan_db(records, targets, force=False):
    """[ObjectPlan] for the given VIF/PIF refs (unchanged objects included)."""
    return [_plan_ref(records, ref, force) for ref in targets]


def plan_revert(records, targets):
    """[ObjectPlan] restoring every managed key of the given refs."""
    return [_plan_ref(records, ref, revert=True) for ref in targets]


# -- applying to the database ---------------------------------------------------

def _replan(plan, fresh_config, lost_key=None):
    """Re-decide one object from its fresh map after a lost race.

    The other writer's key wins: if we had just claimed that feature in our
    bookkeeping (written before the key), the claim is withdrawn.
    """
    view = dict(fresh_config)
    feature = (lost_key or "")[len(keys.ETHTOOL_PREFIX):]
    claimed = keys.parse_managed(view.get(keys.KEY_MANAGED))
    if lost_key and lost_key.startswith(keys.ETHTOOL_PREFIX) and \
            feature in claimed and feature not in \
            keys.parse_managed(plan.current.get(keys.KEY_MANAGED)):
        claimed.discard(feature)
        saved = keys.parse_saved(view.get(keys.KEY_SAVED))
        saved.pop(feature, None)
        book = _bookkeeping(claimed, saved,
                            keys.parse_written(view.get(keys.KEY_SAVED)))
        for key, value in zip((keys.KEY_MANAGED, keys.KEY_SAVED), book):
            if value is None:
                view.pop(key, None)
            else:
                view[key] = value
    record = {"uuid": plan.uuid, "other_config": view}
    resolution = R.rederive(plan.resolution, view, plan.force)
    again = plan_object(plan.cls, plan.ref, record, plan.label, resolution,
                        plan.force, actual=fresh_config)
    again.current = dict(plan.current)
    return again


def _apply_one(xapi, plan):
    result = {"class": plan.cls, "uuid": plan.uuid, "label": plan.label,
              "written": [], "status": "unchanged"}
    for _attempt in range(MAX_RACE_RETRIES):
        try:
            for key, value, expected in plan.writes:
                xapi.set_other_config_key(plan.cls, plan.ref, key, value,
                                          expected)
                result["written"].append([key, value])
                result["status"] = "changed"
            break
        except LostRace as race:
            get_logger().info("%s %s: lost a race on other_config; re-planning",
                              plan.cls, plan.uuid)
            plan = _replan(plan, race.other_config,
                           race.params[2] if len(race.params) > 2 else None)
        except ObjectGone:
            result["status"] = "gone"
            return result
        except XapiError as err:
            result["status"] = "failed"
            result["error"] = [err.message] + err.params
            return result
    else:
        result["status"] = "failed"
        result["error"] = ["lost %d races in a row" % MAX_RACE_RETRIES]
        return result
    result["live_only"] = plan.live_only
    result["reapplied_at_plug"] = plan.reapplied_at_plug
    result["desired"] = dict(plan.resolution.features)
    return result


def apply_db(xapi, plans, clients=None):
    """Carry out plans; [dict] per object with status changed / unchanged /
    gone / failed, the keys written, live-only wishes, reapplied_at_plug.

    `clients`: Xapi objects (one session each) to spread the objects over
    in parallel threads; an object's own writes stay in order on one client.
    """
    clients = list(clients or [xapi])
    if len(clients) == 1 or len(plans) < 2:
        return [_apply_one(clients[0], plan) for plan in plans]
    results = [None] * len(plans)
    indexes = iter(range(len(plans)))
    take = threading.Lock()

    def work(client):
        while True:
            with take:
                index = next(indexes, None)
            if index is None:
                return
            results[index] = _apply_one(client, plans[index])
    threads = [threading.Thread(target=work, args=(c,)) for c in clients]
    for thread in threads:
        thread.daemon = True
        thread.start()
    for thread in threads:
        thread.join()
    return results


# -- live devices on this host -------------------------------------------------

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
    backend = R.network_backend()
    for ref in records.pifs_of_host(host_ref):
        if wanted is None or ref in wanted:
            device = R.pif_device(records.pifs[ref], backend=backend)
            if device is None:  # see deviceless_pifs
                continue
            result.append(LocalDevice(device, "pif", ref,
                                      R.resolve_pif(records, ref)))
    for vm_ref in R.eligible_vms(records):
        vm = records.vms[vm_ref]
        if not R.runs_on(vm, host_ref):
            continue
        domid = R.as_int(vm.get("domid"))
        if domid <= 0:
            continue
        for vif_ref in records.vifs_of_vm(vm_ref):
            if wanted is not None and vif_ref not in wanted:
                continue
            devid = R.as_int(records.vifs[vif_ref].get("device"))
            if devid < 0:
                continue
            resolution = R.resolve_vif(records, vif_ref)
            for kind in ("vif", "tap"):
                result.append(LocalDevice(
                    "%s%d.%d" % (kind, domid, devid), kind, vif_ref, resolution,
                    {"uuid": vm.get("uuid"), "name_label": vm.get("name_label")}))
    return result


def deviceless_pifs(records, host_ref, targets=None):
    """Status entries for this host's PIFs with no kernel device (VLAN and
    bond PIFs under openvswitch): nothing to enforce on them live."""
    if R.network_backend() != R.BACKEND_OVS:
        return []
    wanted = None if targets is None else set(targets)
    result = []
    for ref in records.pifs_of_host(host_ref):
        pif = records.pifs[ref]
        if (wanted is not None and ref not in wanted) or \
                R.pif_device(pif, backend=R.BACKEND_OVS) is not None:
            continue
        result.append({
            "device": None, "kind": "pif", "pif": records.pif_label(ref),
            "note": "no kernel device under openvswitch; carried by %s"
                    % ", ".join(R.pif_carriers(records, ref))})
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


def saved_summary(plans):
    """A compact JSON summary of plans (carried by CONFIRM_REQUIRED)."""
    changing = [p for p in plans if p.changes]
    return json.dumps({
        "objects": len(plans), "changing": len(changing),
        "keys": sum(len(p.writes) for p in changing),
        "plan": [{"class": p.cls, "uuid": p.uuid, "label": p.label,
                  "writes": dict((k, v) for k, v, _ in p.writes)}
                 for p in changing]}, sort_keys=True, separators=(",", ":"))
