"""The plugin functions: `fn(session, args) -> dict` (docs/policy.md).

`version`, `status`, `get_policy`, `set_policy`, `apply`, `revert`. Every
argument is a string; unknown arguments, bad values and over-long strings
are refused before anything changes. Results travel here as the pool
side's types (DeviceOutcome, DeviceStatus, ObjectWrite, PolicyLocation...)
and become JSON in this module only. Targets:
`target=ALL | vm=<name-label or uuid> | tag=<tag> | network=<name-label or
uuid> | pif=<device>` (exactly one; `status` takes none for "everything").

`pool=true` on status/apply/revert: the database part runs once (here), the
live part runs here and, through `host.call_plugin(host, "netoffload", fn,
args + scope=local)`, in parallel on every other live host; each host is
reported on its own and an unreachable host does not fail the others.
`scope=local` is that internal call: live part only, no database writes and
no further fan-out.

`wait=SECONDS` (0..300) on set_policy, apply and revert: how long the call
waits for another writer's pool lease before NETOFFLOAD_BUSY (default
lease.default_wait(), 20 s); checked before anything changes.

Where `policy=` is stored by `apply` (the level the target names):
ALL -> pool `netoffload-vif` and `netoffload-pif`; vm -> the VM; tag -> pool
`netoffload-tag:<tag>`; network -> the network; pif -> this host's
`netoffload-pif` (the pool's with pool=true).

`revert`: restores saved keys and recorded live state of the target, and
for ALL removes every policy key in the pool; otherwise it sets to `none`
the level the target's objects resolve from, so the watcher does not undo
it (see levels.revert_scope): vm/tag/network set that level to none and leave
(report as `kept`) objects whose policy comes from a level above the
target; pif= sets the PIF's host to none and reverts that host's PIFs.
"""
import json
from collections import namedtuple
from typing import Any, Dict  # noqa: F401 (type comments)

from netoffload import API_LEVEL, __version__, statedir
from netoffload.agents import drift, todo
from netoffload.engine.devices import KIND_PIF, validate_device
from netoffload.engine.livestate import LiveStateStore
from netoffload.engine.policy import parse_policy
from netoffload.errors import BadArgument, ConfirmRequired, DeviceError
from netoffload.plugin.args import (
    bool_arg,
    int_arg,
    reject_unknown,
    required_arg,
    string_arg,
)
from netoffload.pool import (
    context,
    enforce,
    fanout,
    lease,
    levels,
    planning,
    policychange,
    targeting,
    writer,
    xapi,
)
from netoffload.pool.precedence import all_policies, resolve_vif
from netoffload.pool.records import eligible_vifs, eligible_vms, runs_on
from netoffload.pool.targeting import TARGET_ALL, TARGET_PIF, Target
from netoffload.statedir import host_lock

TARGET_KEYS = ("target", "vm", "tag", "network", "pif")
SCOPES = (fanout.SCOPE_POOL, fanout.SCOPE_LOCAL)


# -- arguments ----------------------------------------------------------------

def _check_args(args, allowed):
    if not isinstance(args, dict):
        raise BadArgument("arguments must be a map of strings")
    for key in args:
        if not isinstance(key, str):
            raise BadArgument("argument names must be strings")
    reject_unknown(args, allowed)
    for key in args:
        string_arg(args, key)  # every value a string of bounded length


def optional_target(args):
    """The Target the arguments name, or None."""
    given = [k for k in TARGET_KEYS if args.get(k) not in (None, "")]
    if not given:
        return None
    if len(given) > 1:
        raise BadArgument("name one target, not %s" % " and ".join(given))
    key = given[0]
    value = required_arg(args, key)
    if key == "target":
        if value != "ALL":
            raise BadArgument("target=%r: the only target= value is ALL (in "
                              "capitals); use vm=, tag=, network= or pif= for "
                              "the others" % value[:40])
        return Target(TARGET_ALL, value)
    if key == TARGET_PIF:
        validate_device(value)
    return Target(key, value)


def parse_target(args):
    """The Target the arguments name; BadArgument when none is named."""
    target = optional_target(args)
    if target is None:
        raise BadArgument("name a target: target=ALL, vm=, tag=, network= "
                          "or pif=")
    return target


def _confirmed(args):
    value = string_arg(args, "confirm")
    if value is None:
        return False
    if value != "yes":
        raise BadArgument("confirm=%r: pass confirm=yes" % value[:40])
    return True


def _scope(args):
    scope = string_arg(args, "scope") or fanout.SCOPE_POOL
    if scope not in SCOPES:
        raise BadArgument("scope=%r: valid scopes are %s" % (
            scope[:40], ", ".join(SCOPES)))
    return scope


def _wait(args):
    """wait=SECONDS (0..lease.MAX_WAIT_S): how long to wait for the pool's
    writer lease before NETOFFLOAD_BUSY; None: the default
    (lease.default_wait)."""
    return int_arg(args, "wait", None, 0, lease.MAX_WAIT_S)


def _context(session, args, client=None):
    """The call's CallContext: scope=local (the fan-out asking for this
    host's part) takes a local snapshot, with the objects the arguments
    name; any other call the whole pool's."""
    if _scope(args) == fanout.SCOPE_LOCAL:
        return context.CallContext(session, client, context.names_of(args))
    return context.CallContext(session, client)


def _policy_arg(args, key="policy"):
    text = string_arg(args, key)
    if text is None:
        return None
    return parse_policy(text)


# -- shared pieces ------------------------------------------------------------


def _summary_of(writes, devices):
    """Counts of object writes by status, and of devices changed/failed."""
    statuses = {}
    for write in writes:
        statuses[write.status] = statuses.get(write.status, 0) + 1
    return {"objects": statuses, "devices": len(devices),
            "devices_changed": sum(1 for d in devices if d.ran_command),
            "devices_failed": [d.device for d in devices if d.failed],
            "devices_held": [d.device for d in devices
                             if d.held is not None]}


def _json_list(items):
    return [item.to_json() for item in items]


def _policy_json(records, policy_writes):
    """The policy writes as JSON, with what each key held in `records`."""
    return [write.location.to_json(write.policy,
                                   write.location.held(records))
            for write in policy_writes]


# -- version / policy ---------------------------------------------------------

def version(session, args):
    _check_args(args, ())
    return {"version": __version__, "api": API_LEVEL}


def get_policy(session, args):
    _check_args(args, ())
    records = xapi.Xapi(session).snapshot()
    return {"policies": [p.to_json() for p in all_policies(records)]}


# set_policy's arguments: the level, kind and policy, the selector that
# names the object, dry_run, confirm=yes and scope (scope=local: the
# fan-out asking a host for its devices' part of the plan).
SET_POLICY_ARGS = ("level", "kind", "policy", "vm", "network", "tag", "host",
                   "dry_run", "confirm", "scope", "wait")

# One set_policy call's arguments, checked: the level, the policy kind,
# the selector's value (None at the pool level) and the text to store
# (None: the key goes).
PolicyRequest = namedtuple("PolicyRequest", "level kind selector text")


def _policy_request(args):
    level = required_arg(args, "level")
    if level not in levels.LEVELS:
        raise BadArgument("level=%r: valid levels are %s" % (
            level[:40], ", ".join(sorted(levels.LEVELS))))
    rule = levels.LEVELS[level]
    kind = string_arg(args, "kind") or rule.default_kind
    if kind is None:
        raise BadArgument("level=pool needs kind=vif or kind=pif")
    if kind not in rule.kinds:
        raise BadArgument("kind=%r is not valid at level %s (valid: %s)" % (
            kind[:40], level, ", ".join(rule.kinds)))
    for other in ("vm", "network", "tag", "host"):
        if other != rule.selector and args.get(other) not in (None, ""):
            raise BadArgument("%s= does not apply to level=%s" % (other, level))
    selector = string_arg(args, rule.selector) if rule.selector else None
    if rule.selector and not selector:
        # every level names its object: no silent "this host"
        raise BadArgument("level=%s needs %s=<%s> (the %s it is stored on)" % (
            level, rule.selector, "tag" if rule.selector == "tag"
            else "name-label or uuid", rule.selector))
    if "policy" not in args:
        raise BadArgument("missing argument policy (an empty policy clears "
                          "the level)")
    text = string_arg(args, "policy") or ""  # "" clears the level
    policy = parse_policy(text) if text.strip() else None
    return PolicyRequest(level, kind, selector,
                         policy.text if policy is not None else None)


def set_policy(session, args):
    """Store a policy, after planning its effect (docs/policy.md).

    The result (and a CONFIRM_REQUIRED) carries the plan: per host, the
    objects whose keys change and the devices that change. A policy wider
    than one VM (pool, host, network, tag) is stored only with
    confirm=yes; dry_run=true stores nothing.
    """
    _check_args(args, SET_POLICY_ARGS)
    request = _policy_request(args)
    wait = _wait(args)
    dry_run = bool_arg(args, "dry_run")
    confirm = _confirmed(args)
    scope = _scope(args)
    ctx = _context(session, args)
    location = levels.policy_location(ctx, request.level, request.kind,
                                      request.selector)
    change = policychange.plan_change(ctx.records, location, request.text)
    if scope == fanout.SCOPE_LOCAL:
        # the fan-out asking for this host's part; never stores anything
        return _local_json(ctx, True, policychange.changing_devices(
            change, ctx.host_ref, LiveStateStore()))
    plan = _policy_plan_json(ctx, args, change)
    result = dict(location.to_json(request.text, change.previous),
                  level=request.level, kind=request.kind, dry_run=dry_run,
                  stored=False, plan=plan,
                  message="dry run, nothing was stored. " + _effect_text(
                      change, plan))  # type: Dict[str, Any]
    if dry_run:
        return result
    if location.wide and not confirm:
        raise ConfirmRequired(
            "%s; nothing was stored. %s Review the plan and pass confirm=yes "
            "(CLI: answer YES or pass --yes)" % (
                _reach_text(request), _effect_text(change, plan)),
            json.dumps(plan, sort_keys=True, separators=(",", ":")))
    with lease.held(ctx.xapi, lease.default_holder("set_policy"),
                    wait_s=wait):
        levels.write_policy(ctx, location, request.text)
    result["stored"] = True
    result["message"] = "stored. " + _effect_text(change, plan)
    return result


def _confirm_policy_store(session, args, request, policy, force):
    """`apply ... policy=` stores through set_policy's rule: a policy that
    governs more than one VM (tag, network, pif: this host or the pool)
    is stored only with confirm=yes; ALL has its own rule, in the apply
    flow. Nothing is written here."""
    spec = request.spec
    if policy is None or request.confirm or request.dry_run or \
            spec.kind in (TARGET_ALL, targeting.TARGET_VM) or \
            _scope(args) == fanout.SCOPE_LOCAL:
        return
    work = _plan_apply(session, spec, policy, request.pool_wide, force)
    wide = [w.location for w in work.policy_writes if w.location.wide]
    if wide:
        raise ConfirmRequired(
            "apply %s=%s policy=... stores %s on the %s, which governs more "
            "than one VM; nothing was changed. Review the plan "
            "(dry_run=true) and pass confirm=yes (CLI: answer YES or pass "
            "--yes)" % (spec.kind, spec.value, ", ".join(
                loc.key for loc in wide), wide[0].cls),
            planning.saved_summary(work.plans))


def _reach_text(request):
    """What a wide policy reaches, for CONFIRM_REQUIRED."""
    return {
        "pool": "a pool %s policy governs every %s in the pool" % (
            request.kind, request.kind.upper()),
        "host": "a host policy governs every PIF of host %r" % (
            request.selector,),
        "network": "a network policy governs every VIF on network %r" % (
            request.selector,),
        "tag": "a tag policy governs every VIF of the VMs tagged %r" % (
            request.selector,),
    }.get(request.level, "this policy governs more than one VM")


def _policy_plan_json(ctx, args, change):
    """The plan of a PolicyChange: per host with something in reach, the
    objects whose keys change and (asked on that host) the devices that
    change; then the VIFs of VMs not running, and what is skipped."""
    hosts = change.hosts()
    local = None
    if ctx.host_ref in hosts:
        local = _local_json(ctx, True, policychange.changing_devices(
            change, ctx.host_ref, LiveStateStore()))
    answers = fanout.fan_out(ctx, "set_policy", args, local, hosts) \
        if hosts else []
    entries = []
    devices = 0
    unreachable = []
    for answer in answers:
        ref = ctx.records.host_by_uuid(answer["uuid"])
        entry = {"uuid": answer["uuid"], "name_label": answer["name_label"],
                 "ok": answer["ok"],
                 "objects": [p.to_json() for p in change.objects_on(ref)]}
        if answer["ok"]:
            entry["devices"] = answer["result"].get("devices") or []
            devices += len(entry["devices"])
        else:
            entry["error"] = answer["error"]
            unreachable.append(answer["name_label"] or answer["uuid"])
        entries.append(entry)
    not_running = [p.to_json() for p in change.not_running()]
    return {"hosts": entries, "not_running": not_running,
            "skipped": [s.to_json() for s in change.skipped],
            "summary": {"objects": len(change.plans),
                        "objects_changing": len(change.changing),
                        "devices_changing": devices,
                        "hosts_not_answering": unreachable}}


def _effect_text(change, plan):
    """What storing the policy does, and when, in words."""
    summary = plan["summary"]
    devices = summary["devices_changing"]
    vifs = sum(1 for p in change.changing if p.cls == "VIF")
    pifs = len(change.changing) - vifs
    keys_of = []
    if vifs:
        keys_of.append("%d VIF(s) (xapi applies them when each VIF is next "
                       "plugged)" % vifs)
    if pifs:
        keys_of.append("%d PIF(s) (xapi applies them at the PIF's next "
                       "plug or boot)" % pifs)
    parts = []
    if keys_of:
        parts.append("within seconds the watcher on the pool master writes "
                     "the ethtool keys of " + " and ".join(keys_of))
    if devices:
        parts.append("the watcher on each host changes %d device(s) live "
                     "within seconds, with no VM restart" % devices)
    if plan["not_running"]:
        parts.append("%d VIF(s) of VMs not running take it when they "
                     "start" % len(plan["not_running"]))
    text = "; ".join(parts) if parts else \
        "nothing changes now (no key and no device of what it governs " \
        "differs)"
    text = text[0].upper() + text[1:] + "."
    if summary["hosts_not_answering"]:
        text += " Hosts not answering (their devices are not in this " \
            "plan; their watcher enforces it when it runs): %s." % \
            ", ".join(summary["hosts_not_answering"])
    if change.skipped:
        text += " %d object(s) on SR-IOV are skipped (no dom0 device of " \
            "their own)." % len(change.skipped)
    tag = change.location.tag
    if tag is not None and not change.reach and not change.skipped:
        text += " No VM carries the tag %r yet: the policy applies to VMs " \
            "as they are tagged." % tag
    return text


def runs_on_host(records, vif_ref, host_ref):
    """Does the VM of a VIF run on host_ref?"""
    vm = records.vms.get(records.vifs[vif_ref].get("VM")) or {}
    return runs_on(vm, host_ref)


# -- status -------------------------------------------------------------------

def status(session, args):
    _check_args(args, TARGET_KEYS + ("pool", "scope"))
    spec = optional_target(args)
    pool_wide = bool_arg(args, "pool")
    scope = _scope(args)
    ctx = _context(session, args)
    targets = None
    selection = None
    if spec is not None:
        selection = targeting.select(ctx.records, spec, ctx.host_ref)
        targets = selection.refs
    skipped = (selection or targeting.select(
        ctx.records, Target(TARGET_ALL, "ALL"))).skipped
    local = enforce.local_devices(ctx.records, ctx.host_ref, targets)
    vif_refs = sorted(set(d.ref for d in local if d.kind != KIND_PIF))
    plans = planning.plan_db(ctx.records, vif_refs)
    statuses = enforce.device_status(ctx.records, ctx.host_ref, targets,
                                     plans, LiveStateStore())
    real = [d for d in statuses if d.device is not None]
    devices = _json_list(statuses)
    _add_drift(statuses, devices, drift.read_drift())
    result = {"host": ctx.host_json(), "devices": devices,
              "summary": {"devices": len(real),
                          "compliant": sum(1 for d in real if d.compliant),
                          "drifted": sum(1 for d in devices if d.get("drift")),
                          # objects the watcher could not write yet
                          "watch_todo": todo.read_todo().count}}
    here = [s for s in skipped if s.cls == "VIF" and runs_on_host(
        ctx.records, s.ref, ctx.host_ref)]
    if here:  # VIFs of VMs running here with no dom0 device (SR-IOV)
        result["skipped"] = _json_list(here)
    if scope == fanout.SCOPE_POOL:
        db_refs = selection.refs if selection else \
            eligible_vifs(ctx.records) + sorted(ctx.records.pifs)
        pending = [p for p in planning.plan_db(ctx.records, db_refs)
                   if p.changes]
        result["db"] = {"objects": len(db_refs), "pending": len(pending),
                        "pending_objects": [
                            {"class": p.cls, "uuid": p.uuid, "label": p.label}
                            for p in pending]}
    if pool_wide and scope == fanout.SCOPE_POOL:
        result["hosts"] = fanout.fan_out(ctx, "status", args, {
            "host": result["host"], "devices": devices,
            "summary": result["summary"]})
    return result


def _add_drift(statuses, devices, recorded):
    """Each device entry's `drift` (docs/policy.md, "Drift"): null, or the
    live values that differ from desired and since when (the time the
    watcher first saw it; null when it has not seen it yet)."""
    for status_, entry in zip(statuses, devices):
        if status_.device is None or "live" not in entry:
            continue
        differs = getattr(status_, "differs", None)
        if not differs:
            entry["drift"] = None
            continue
        seen = recorded.get(status_.device)
        entry["drift"] = {
            "features": dict((f, status_.live.get(f)) for f in differs),
            "since": seen.since if seen is not None else None,
            "held": bool(seen.held) if seen is not None else False}


# -- live part on this host (scope=local) -------------------------------------


def _apply_live_targets(ctx, spec):
    """The VIF/PIF refs whose devices apply enforces (None: every device)."""
    if spec.kind == TARGET_ALL:
        return None
    return targeting.select(ctx.records, spec, ctx.host_ref).refs


def _revert_live_targets(ctx, spec):
    """The VIF/PIF refs whose devices revert restores (None: every device
    recorded here): those the revert takes the policy off."""
    selection = targeting.select(ctx.records, spec, ctx.host_ref)
    if spec.kind == TARGET_ALL:
        return None
    return levels.revert_scope(ctx, spec, selection).refs


# What apply or revert does to this host's devices: its verb, the refs it
# covers (targets(ctx, spec)), and the planning and doing functions
# (records, host_ref, store, targets) -> [DeviceOutcome].
LiveOperation = namedtuple("LiveOperation", "verb targets plan run")

APPLY_LIVE = LiveOperation("apply", _apply_live_targets, enforce.plan_live,
                           enforce.enforce_live)
REVERT_LIVE = LiveOperation("revert", _revert_live_targets,
                            enforce.plan_revert_live, enforce.revert_live)


def _local_json(ctx, dry_run, outcomes):
    return {"host": ctx.host_json(), "dry_run": dry_run,
            "devices": _json_list(outcomes),
            "summary": _summary_of([], outcomes)}


def _plan_local(session, args, operation):
    """scope=local with dry_run: what the live part would do here."""
    spec = parse_target(args)
    ctx = _context(session, args)
    targets = operation.targets(ctx, spec)
    return _local_json(ctx, True, operation.plan(
        ctx.records, ctx.host_ref, LiveStateStore(), targets))


def _run_local(session, args, operation, confirm):
    """scope=local: this host's live part only (called by the fan-out).

    The same rule as the pool scope: target=ALL changes nothing without
    confirm=yes (the fan-out forwards it).
    """
    spec = parse_target(args)
    ctx = _context(session, args)
    targets = operation.targets(ctx, spec)
    if spec.kind == TARGET_ALL and not confirm:
        raise ConfirmRequired(
            "%s target=ALL scope=local changes every device on this host; "
            "nothing was changed. Pass confirm=yes" % operation.verb)
    with host_lock():
        _check_state(reverting=operation.verb == "revert")
        store = LiveStateStore()
        set_aside = _set_aside_if_corrupt(store) \
            if operation.verb == "revert" else None
        outcomes = operation.run(ctx.records, ctx.host_ref, store, targets)
    result = _local_json(ctx, False, outcomes)
    if set_aside is not None:
        result.update(_set_aside_note(set_aside))
    return result


def _set_aside_if_corrupt(store):
    """A revert goes on with a corrupt live-state record: it is moved to
    live-state.json.corrupt-<time> (kept for the admin); its path, or
    None when the record is fine."""
    try:
        store.check()
    except DeviceError:
        return store.set_aside()
    return None


def _set_aside_note(path):
    return {"live_state_set_aside": path,
            "warnings": ["the live-state record was corrupt: set aside as %s; "
                         "the database was restored, devices only it "
                         "remembered were not" % path]}


# -- apply --------------------------------------------------------------------

def _records_after(records, plans):
    """records with each planned object's other_config as it will be."""
    after = records.copy()
    for plan in plans:
        after.table(plan.cls)[plan.ref]["other_config"] = dict(plan.final)
    return after


# One apply worked out before anything is written: the call's context,
# where `policy=` goes, the records as they will be, the plans, the refs
# whose devices are enforced (None: every device here) and the JSON common
# to its results.
ApplyPlan = namedtuple("ApplyPlan",
                       "ctx policy_writes planned plans live_targets base")


# The switches of one apply or revert, each parsed once, in the order the
# arguments are checked: the target, dry_run, confirm=yes and pool=true.
ChangeRequest = namedtuple("ChangeRequest", "spec dry_run confirm pool_wide")


def _check_state(reverting=False):
    """Before the first database or device change: the state directory
    takes a write, and the live-state record parses (a revert goes on
    with a corrupt one: it restores the database, then sets the record
    aside; see _revert_finish). DeviceError naming the file and the fix,
    with nothing changed."""
    statedir.check_writable()
    if not reverting:
        LiveStateStore().check()


def _change(session, args, request, live, plan, show_plan, carry_out,
            finish, verb):
    """The one path of apply and revert. scope=local: this host's live part
    only (`live`, a LiveOperation). Otherwise `plan(ctx_client, op)` works
    the change out; with dry_run `show_plan(work)` reports it. Else, under
    the host lock and after the state checks: target=ALL without
    confirm=yes fails with the plan; then, holding the pool's writer lease
    as one operation (writer.operation), `carry_out(work, op)` writes the
    database, and after the lease is given back `finish(work, done, args,
    pool_wide)` does the live part and the fan-out."""
    if _scope(args) == fanout.SCOPE_LOCAL:
        if request.dry_run:
            return _plan_local(session, args, live)
        return _run_local(session, args, live, request.confirm)
    if request.dry_run:
        return show_plan(plan(None, None))
    with host_lock():
        _check_state(reverting=verb == "revert")
        if request.spec.kind == TARGET_ALL and not request.confirm:
            work = plan(None, None)
            raise ConfirmRequired(
                CONFIRM_TEXT[verb], planning.saved_summary(work.plans))
        client = xapi.Xapi(session)
        with writer.operation(client, lease.default_holder(verb),
                              wait_s=_wait(args)) as op:
            work = plan(client, op.op)
            done = carry_out(work, op)
        return finish(work, done, args, request.pool_wide)


CONFIRM_TEXT = {
    "apply": "target=ALL changes every VIF and PIF in the pool and every "
             "device on this host; nothing was changed. Review the plan and "
             "pass confirm=yes",
    "revert": "revert target=ALL restores every VIF and PIF in the pool and "
              "removes every policy; nothing was changed. Pass confirm=yes",
}


def apply(session, args):
    _check_args(args, TARGET_KEYS + ("policy", "dry_run", "confirm", "pool",
                                     "force", "scope", "wait"))
    spec = parse_target(args)
    _wait(args)
    policy = _policy_arg(args)
    request = ChangeRequest(spec, bool_arg(args, "dry_run"), _confirmed(args),
                            bool_arg(args, "pool"))
    force = bool_arg(args, "force")
    if _scope(args) == fanout.SCOPE_LOCAL and request.dry_run and \
            (policy is not None or force):
        # another host's preview of `apply --pool --dry-run --policy/--force`:
        # its live plan as the database would be, nothing stored
        work = _plan_apply(session, spec, policy, request.pool_wide, force,
                           args=args)
        return _local_json(work.ctx, True, enforce.plan_live(
            _records_after(work.planned, work.plans), work.ctx.host_ref,
            LiveStateStore(), work.live_targets))
    _confirm_policy_store(session, args, request, policy, force)
    return _change(session, args, request, APPLY_LIVE,
                   lambda client, op: _plan_apply(
                       session, spec, policy, request.pool_wide, force,
                       client, op),
                   _apply_dry_run, _apply_changes, _apply_finish, "apply")


def _plan_apply(session, spec, policy, pool_wide, force, client=None,
                op=None, args=None):
    ctx = _context(session, args or {}, client)
    selection = targeting.select(ctx.records, spec, ctx.host_ref, pool_wide)
    policy_writes = []
    planned = ctx.records
    if policy is not None:
        policy_writes = [
            levels.PolicyWrite(location, policy.text)
            for location in levels.apply_policy_locations(ctx, spec,
                                                          pool_wide)]
        planned = ctx.records.copy()
        for write in policy_writes:
            location = write.location
            planned.table(location.cls)[location.ref]["other_config"][
                location.key] = write.policy
    plans = planning.plan_db(planned, selection.refs, force, op)
    live_targets = None if spec.kind == TARGET_ALL else selection.refs
    base = {"host": ctx.host_json(), "target": selection.to_json(),
            "policy": _policy_json(ctx.records, policy_writes)}
    return ApplyPlan(ctx, policy_writes, planned, plans, live_targets, base)


def _apply_dry_run(work):
    outcomes = enforce.plan_live(
        _records_after(work.planned, work.plans), work.ctx.host_ref,
        LiveStateStore(), work.live_targets)
    objects = [p.to_json() for p in work.plans if p.changes or p.refused]
    return dict(work.base, dry_run=True, objects=objects,
                devices=_json_list(outcomes),
                summary=dict(_summary_of([], outcomes), objects={
                    "planned": sum(1 for p in work.plans if p.changes),
                    "refused": sum(1 for p in work.plans if p.refused),
                    "unchanged": sum(1 for p in work.plans
                                     if not p.changes and not p.refused)}))


def _apply_changes(work, op):
    """The database part of apply, under the lease: [ObjectWrite]."""
    ctx = work.ctx
    for write in work.policy_writes:
        levels.write_policy(ctx, write.location, write.policy)
    return writer.write_plans(ctx, work.plans, op)


def _done_records(work, writes):
    """The records as the writes left them (a re-planned object's final
    map is its plan as carried out)."""
    after = work.planned.copy()
    for plan, write in zip(work.plans, writes):
        done = write.done_plan or plan
        if write.status in (writer.STATUS_CHANGED, writer.STATUS_UNCHANGED):
            after.table(done.cls)[done.ref]["other_config"] = dict(done.final)
    return after


def _apply_finish(work, writes, args, pool_wide):
    ctx = work.ctx
    outcomes = enforce.enforce_live(_done_records(work, writes), ctx.host_ref,
                                    LiveStateStore(), work.live_targets)
    return _pool_result(ctx, work.base, args, "apply", writes, outcomes,
                        pool_wide)


def _pool_result(ctx, base, args, fn, writes, outcomes, pool_wide):
    """The result of an apply or revert that changed things: the objects
    written, the devices, a summary, and the other hosts with pool=true."""
    devices = _json_list(outcomes)
    summary = _summary_of(writes, outcomes)
    summary["xapi_calls"] = ctx.xapi.calls
    result = dict(base, dry_run=False,
                  objects=[w.to_json() for w in writes
                           if w.status != writer.STATUS_UNCHANGED],
                  devices=devices, summary=summary)
    if pool_wide:
        result["hosts"] = fanout.fan_out(ctx, fn, args, {
            "host": result["host"], "devices": devices,
            "summary": _summary_of([], outcomes)})
    return result


# -- revert -------------------------------------------------------------------

# One revert worked out before anything is written: the call's context,
# its RevertScope, the plans, the refs whose devices are restored (None:
# every device recorded here) and the JSON common to its results.
RevertPlan = namedtuple("RevertPlan", "ctx scope plans live_targets base")


def revert(session, args):
    _check_args(args, TARGET_KEYS + ("confirm", "pool", "scope", "dry_run",
                                     "wait"))
    spec = parse_target(args)
    _wait(args)
    confirm = _confirmed(args)
    pool_wide = bool_arg(args, "pool")
    request = ChangeRequest(spec, bool_arg(args, "dry_run"), confirm, pool_wide)
    return _change(session, args, request, REVERT_LIVE,
                   lambda client, op: _plan_revert(session, spec, pool_wide,
                                                   client, op),
                   _revert_dry_run, _revert_changes, _revert_finish, "revert")


def _plan_revert(session, spec, pool_wide, client=None, op=None):
    ctx = context.CallContext(session, client)
    selection = targeting.select(ctx.records, spec, ctx.host_ref, pool_wide)
    scope = levels.revert_scope(ctx, spec, selection)
    # a VIF selection skips (SR-IOV) still gives back what was written on
    # it (by an older version): plan_revert of an unmanaged VIF is empty
    plans = planning.plan_revert(ctx.records,
                                 scope.refs + selection.skipped_refs, op)
    live_targets = None if spec.kind == TARGET_ALL else scope.refs
    base = {"host": ctx.host_json(), "target": selection.to_json(),
            "policy": _policy_json(ctx.records, scope.policy_writes),
            "kept": _json_list(scope.kept)}
    if not scope.policy_writes and not any(p.changes for p in plans):
        # a target netoffload never changed: nothing is written
        base["unchanged"] = True
        base["message"] = ("netoffload has changed nothing for %s=%s in the "
                           "database: nothing to revert there"
                           % (spec.kind if spec.kind != TARGET_ALL
                              else "target", spec.value))
    return RevertPlan(ctx, scope, plans, live_targets, base)


def _revert_dry_run(work):
    objects = [p.to_json() for p in work.plans if p.changes or p.refused]
    return dict(work.base, dry_run=True, objects=objects, devices=[], summary={
        "objects": {"planned": sum(1 for p in work.plans if p.changes),
                    "refused": sum(1 for p in work.plans if p.refused)}})


def _revert_changes(work, op):
    """The database part of revert, under the lease: [ObjectWrite]."""
    ctx = work.ctx
    for write in work.scope.policy_writes:
        levels.write_policy(ctx, write.location, write.policy)
    return writer.write_plans(ctx, work.plans, op)


def _revert_finish(work, writes, args, pool_wide):
    """The live part of revert. A corrupt live-state record is set aside
    (kept as live-state.json.corrupt-<time>) now that the database is
    restored; devices it alone remembered cannot be restored and are
    reported."""
    ctx = work.ctx
    store = LiveStateStore()
    set_aside = _set_aside_if_corrupt(store)
    outcomes = enforce.revert_live(ctx.records, ctx.host_ref, store,
                                   work.live_targets)
    result = dict(_pool_result(ctx, work.base, args, "revert", writes,
                               outcomes, pool_wide))  # type: Dict[str, Any]
    if set_aside is not None:
        result.update(_set_aside_note(set_aside))
    return result


# -- report -------------------------------------------------------------------

# The provenance fields of docs/policy.md that a report entry carries over
# from Resolution.to_json() when the pool side provides them.
PROVENANCE = ("sources", "contributing", "shadowed", "overrides")


def _report_entry(records, vm_ref, vif_ref, resolution):
    vm = records.vms[vm_ref]
    vif = records.vifs[vif_ref]
    network = records.networks.get(vif.get("network")) or {}
    host = records.hosts.get(vm.get("resident_on")) or {}
    resolved = resolution.to_json()
    entry = {"vm": vm.get("name_label", ""), "vm_uuid": vm.get("uuid", ""),
             "power_state": vm.get("power_state", ""),
             "host": host.get("name_label") if vm.get("power_state") ==
             "Running" else None,
             "vif": "vif%s" % vif.get("device", "?"),
             "vif_uuid": vif.get("uuid", ""),
             "network": network.get("name_label", ""),
             "desired": resolution.live_features,
             "explicit": dict(resolution.explicit),
             "off": sorted(f for f, v in resolution.features.items()
                           if v == "off"),
             "policy": resolution.policy, "level": resolution.level,
             "devices": [], "drift": None}
    for key in PROVENANCE:
        if key in resolved:
            entry[key] = resolved[key]
    entry.setdefault("sources", dict(resolution.sources))
    if resolution.error:
        entry["policy"] = "INVALID"
        entry["policy_error"] = resolution.error
    return entry


def report(session, args):
    """Pool-wide, from the database: every VIF of every VM (running or
    halted) with a feature resolved off, an explicit key, an invalid policy
    or drift on a live device (`all=true`: every VIF), with where each
    feature comes from; the live part (devices, drift) from every live
    host's `status scope=local`."""
    _check_args(args, ("all",))
    everything = bool_arg(args, "all")
    ctx = context.CallContext(session)
    records = ctx.records
    local = status(session, {"scope": fanout.SCOPE_LOCAL})
    hosts = fanout.fan_out(ctx, "status", {}, local)
    live = {}  # (vm uuid, VIF device number) -> [status device entry]
    for host in hosts:
        for dev in (host.get("result") or {}).get("devices") or []:
            vm_uuid = (dev.get("vm") or {}).get("uuid")
            if vm_uuid and dev.get("device"):
                devid = dev["device"].rsplit(".", 1)[-1]
                live.setdefault((vm_uuid, devid), []).append(dev)
    entries = []
    for vm_ref in eligible_vms(records):
        vm = records.vms[vm_ref]
        for vif_ref in records.vifs_of_vm(vm_ref):
            entry = _report_entry(records, vm_ref, vif_ref,
                                  resolve_vif(records, vif_ref))
            devid = str(records.vifs[vif_ref].get("device"))
            for dev in live.get((vm.get("uuid"), devid), []):
                entry["devices"].append(dev["device"])
                if dev.get("drift") and not entry["drift"]:
                    entry["drift"] = dict(dev["drift"], device=dev["device"])
            entry["devices"].sort()
            if everything or entry["off"] or entry["explicit"] or \
                    entry["drift"] or entry["policy"] == "INVALID":
                entries.append(entry)
    entries.sort(key=lambda e: (e["vm"].lower(), e["vm_uuid"], e["vif"]))
    invalid = [p.to_json() for p in all_policies(records) if not p.valid]
    return {
        "host": ctx.host_json(), "vifs": entries,
        "invalid_policies": invalid,
        "hosts_unreachable": [dict((k, h[k]) for k in ("uuid", "name_label",
                                                       "error"))
                              for h in hosts if not h.get("ok")],
        "summary": {
            "vifs_off": sum(1 for e in entries if e["off"]),
            "vms_off": len(set(e["vm_uuid"] for e in entries if e["off"])),
            "explicit": sum(1 for e in entries if e["explicit"]),
            "drift": sum(1 for e in entries if e["drift"]),
            "invalid": len(invalid)}}


FUNCTIONS = {
    "version": version,
    "status": status,
    "get_policy": get_policy,
    "set_policy": set_policy,
    "apply": apply,
    "revert": revert,
    "report": report,
}
