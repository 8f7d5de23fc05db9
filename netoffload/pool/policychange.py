"""What storing a policy will do, worked out before it is stored.

A policy key changes desired state for everything it governs, and the
watcher acts on it within seconds: on the pool master it writes the
`ethtool-*` keys of the objects whose keys change, and on every host it
enforces the devices that change live. `set_policy` (and `apply ...
policy=`) therefore plan it first, like `apply`: the database is planned
over the records *as they will be* with the new policy (planning.plan_db),
and each host's devices with enforce.plan_live on those records.

- `plan_change(records, location, text)` -> `PolicyChange`;
- `PolicyChange.objects_on(host_ref)` / `not_running()`: the ObjectPlans
  whose keys change, by the host their devices are on;
- `PolicyChange.hosts()`: the hosts with something in reach;
- `changing_devices(change, host_ref, store)` -> [DeviceOutcome] of this
  host that would change.
"""
from netoffload.engine.ethtool import WOULD_CHANGE
from netoffload.pool import enforce, planning
from netoffload.pool.records import runs_on


def records_after(records, plans):
    """`records` with each planned object's other_config as it will be."""
    after = records.copy()
    for plan in plans:
        after.table(plan.cls)[plan.ref]["other_config"] = dict(plan.final)
    return after


class PolicyChange(object):
    """One policy store, planned: where (a levels.PolicyLocation), the text
    (None: the key goes), what the key held, the records with it stored,
    the refs it governs, the objects in reach it skips, and the plans."""

    def __init__(self, location, text, previous, records, reach, skipped,
                 plans):
        self.location = location
        self.text = text
        self.previous = previous
        self.records = records          # as they will be, policy stored
        self.reach = reach              # VIF/PIF refs it governs
        self.skipped = skipped          # [targeting.SkippedObject]
        self.plans = plans              # [ObjectPlan] over reach

    @property
    def changing(self):
        """The ObjectPlans whose keys change."""
        return [p for p in self.plans if p.changes]

    def host_of(self, plan):
        """The host whose devices an object's keys concern: a PIF's host,
        the host a VIF's VM runs on, None for a VM that is not running."""
        if plan.cls == "PIF":
            return self.records.pifs[plan.ref].get("host")
        vm_ref = self.records.vifs[plan.ref].get("VM")
        vm = self.records.vms.get(vm_ref) or {}
        host = vm.get("resident_on")
        return host if runs_on(vm, host) else None

    def objects_on(self, host_ref):
        return [p for p in self.changing if self.host_of(p) == host_ref]

    def not_running(self):
        """VIFs of VMs not running: their keys apply at the next start."""
        return self.objects_on(None)

    def hosts(self):
        """Hosts with a device in reach (a PIF, a running VM's VIF)."""
        return sorted(set(host for host in map(self.host_of, self.plans)
                          if host is not None))


def plan_change(records, location, text):
    """The PolicyChange of storing `text` (None: removing the key) at
    `location`; nothing is written."""
    after = location.stored_in(records, text)
    reach, skipped = location.reach(after)
    plans = planning.plan_db(after, reach)
    return PolicyChange(location, text, location.held(records),
                        records_after(after, plans), reach, skipped, plans)


def would_change(outcome):
    """Would the watcher change this device (a feature to set, or a
    recorded one to give back)?"""
    if outcome.action != enforce.ACTION_PLAN:
        return False
    if outcome.pending_restore:
        return True
    return outcome.result is not None and any(
        status == WOULD_CHANGE for status in outcome.result.features.values())


def changing_devices(change, host_ref, store):
    """[DeviceOutcome] of this host's devices in reach that would change."""
    return [o for o in enforce.plan_live(change.records, host_ref, store,
                                         change.reach)
            if would_change(o)]
