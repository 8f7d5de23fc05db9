"""The plugin functions: `fn(session, args) -> dict` (DESIGN section 3).

`version`, `status`, `get_policy`, `set_policy`, `apply`, `revert`. Every
argument is a string; unknown arguments, bad values and over-long strings
are refused before anything changes. Targets:
`target=ALL | vm=<name-label or uuid> | tag=<tag> | network=<name-label or
uuid> | pif=<device>` (exactly one; `status` takes none for "everything").

`pool=true` on status/apply/revert: the database part runs once (here), the
live part runs here and, through `host.call_plugin(host, "netoffload", fn,
args + scope=local)`, in parallel on every other live host; each host is
reported on its own and an unreachable host does not fail the others.
`scope=local` is that internal call: live part only, no database writes and
no further fan-out.

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
from netoffload import API_LEVEL, __version__
from netoffload.engine.devices import validate_device
from netoffload.engine.policy import parse_policy
from netoffload.errors import BadArgument, ConfirmRequired
from netoffload.plugin import args as A
from netoffload.pool import (
    context,
    enforce,
    fanout,
    levels,
    planning,
    targeting,
    writer,
)
from netoffload.pool import xapi as X
from netoffload.pool.precedence import all_policies
from netoffload.pool.records import eligible_vifs
from netoffload.statedir import host_lock

TARGET_KEYS = ("target", "vm", "tag", "network", "pif")
SCOPES = ("pool", "local")


# -- arguments ------------------------------------------------------------------

def _check_args(args, allowed):
    if not isinstance(args, dict):
        raise BadArgument("arguments must be a map of strings")
    for key in args:
        if not isinstance(key, str):
            raise BadArgument("argument names must be strings")
    A.reject_unknown(args, allowed)
    for key in args:
        A.get(args, key)  # every value a string of bounded length


def parse_target(args, required=True):
    """(kind, value) with kind all|vm|tag|network|pif, or None."""
    given = [k for k in TARGET_KEYS if args.get(k) not in (None, "")]
    if not given:
        if required:
            raise BadArgument("name a target: target=ALL, vm=, tag=, network= "
                              "or pif=")
        return None
    if len(given) > 1:
        raise BadArgument("name one target, not %s" % " and ".join(given))
    key = given[0]
    value = A.get(args, key)
    if key == "target":
        if value != "ALL":
            raise BadArgument("target=%r: the only target= value is ALL (in "
                              "capitals); use vm=, tag=, network= or pif= for "
                              "the others" % value[:40])
        return ("all", value)
    if key == "pif":
        validate_device(value)
    return (key, value)


def _confirmed(args):
    value = A.get(args, "confirm")
    if value is None:
        return False
    if value != "yes":
        raise BadArgument("confirm=%r: pass confirm=yes" % value[:40])
    return True


def _scope(args):
    scope = A.get(args, "scope") or "pool"
    if scope not in SCOPES:
        raise BadArgument("scope=%r: valid scopes are %s" % (
            scope[:40], ", ".join(SCOPES)))
    return scope


def _policy_arg(args, key="policy"):
    text = A.get(args, key)
    if text is None:
        return None
    return parse_policy(text)


# -- shared pieces ----------------------------------------------------------------


def _store():
    from netoffload.engine.livestate import LiveStateStore
    return LiveStateStore()


def _summary_of(objects, devices):
    statuses = {}
    for obj in objects:
        statuses[obj.get("status", "planned")] = \
            statuses.get(obj.get("status", "planned"), 0) + 1
    failed = [d["device"] for d in devices if d.get("ok") is False]
    return {"objects": statuses, "devices": len(devices),
            "devices_changed": sum(1 for d in devices if d.get("ran_command")),
            "devices_failed": failed}


# -- version / policy ------------------------------------------------------------------

def version(session, args):
    _check_args(args, ())
    return {"version": __version__, "api": API_LEVEL}


def get_policy(session, args):
    _check_args(args, ())
    records = X.Xapi(session).snapshot()
    return {"policies": all_policies(records)}


def set_policy(session, args):
    _check_args(args, ("level", "kind", "policy", "vm", "network", "tag",
                       "host"))
    level = A.require(args, "level")
    if level not in levels.LEVELS:
        raise BadArgument("level=%r: valid levels are %s" % (
            level[:40], ", ".join(sorted(levels.LEVELS))))
    kinds, selector_key, default_kind = levels.LEVELS[level]
    kind = A.get(args, "kind") or default_kind
    if kind is None:
        raise BadArgument("level=pool needs kind=vif or kind=pif")
    if kind not in kinds:
        raise BadArgument("kind=%r is not valid at level %s (valid: %s)" % (
            kind[:40], level, ", ".join(kinds)))
    for other in ("vm", "network", "tag", "host"):
        if other != selector_key and args.get(other) not in (None, ""):
            raise BadArgument("%s= does not apply to level=%s" % (other, level))
    selector = A.get(args, selector_key) if selector_key else None
    if selector_key in ("vm", "network", "tag") and not selector:
        raise BadArgument("level=%s needs %s=" % (level, selector_key))
    if "policy" not in args:
        raise BadArgument("missing argument policy (an empty policy clears "
                          "the level)")
    text = A.get(args, "policy")
    policy = parse_policy(text) if text.strip() else None
    stored = policy.text if policy is not None else None
    ctx = context.CallContext(session)
    location = levels.policy_location(ctx, level, kind, selector)
    cls, ref = location[0], location[1]
    previous = (ctx.records.table(cls)[ref].get("other_config") or {}).get(
        location[2])
    levels.write_policy(ctx, location, stored)
    return dict(levels.location_json(location, stored, previous), level=level,
                kind=kind)


# -- status ------------------------------------------------------------------------------

def status(session, args):
    _check_args(args, TARGET_KEYS + ("pool", "scope"))
    spec = parse_target(args, required=False)
    pool_wide = A.parse_bool(args, "pool")
    scope = _scope(args)
    ctx = context.CallContext(session)
    targets = None
    selection = None
    if spec is not None:
        selection = targeting.select(ctx.records, spec, ctx.host_ref)
        targets = selection.refs
    local = enforce.local_devices(ctx.records, ctx.host_ref, targets)
    vif_refs = sorted(set(d.ref for d in local if d.kind != "pif"))
    plans = planning.plan_db(ctx.records, vif_refs)
    devices = enforce.device_status(ctx.records, ctx.host_ref, targets,
                                      plans, _store())
    real = [d for d in devices if d.get("device") is not None]
    result = {"host": ctx.host_json(), "devices": devices,
              "summary": {"devices": len(real),
                          "compliant": sum(1 for d in real
                                           if d.get("compliant"))}}
    if scope == "pool":
        db_refs = selection.refs if selection else \
            eligible_vifs(ctx.records) + sorted(ctx.records.pifs)
        pending = [p for p in planning.plan_db(ctx.records, db_refs)
                   if p.changes]
        result["db"] = {"objects": len(db_refs), "pending": len(pending),
                        "pending_objects": [
                            {"class": p.cls, "uuid": p.uuid, "label": p.label}
                            for p in pending]}
    if pool_wide and scope == "pool":
        result["hosts"] = fanout.fan_out(ctx, "status", args, {
            "host": result["host"], "devices": devices,
            "summary": result["summary"]})
    return result


# -- apply / revert ------------------------------------------------------------------------

def _records_after(records, plans):
    """records with each planned object's other_config as it will be."""
    after = records.copy()
    for plan in plans:
        after.table(plan.cls)[plan.ref]["other_config"] = dict(plan.final)
    return after


def _local_live(session, args, revert, dry_run, confirm):
    """scope=local: this host's live part only (called by the fan-out).

    The same rules as the pool scope: dry_run only plans, and target=ALL
    changes nothing without confirm=yes (the fan-out forwards it).
    """
    spec = parse_target(args)
    ctx = context.CallContext(session)
    selection = targeting.select(ctx.records, spec, ctx.host_ref)
    targets = None if spec[0] == "all" else selection.refs
    if revert and targets is not None:
        targets = levels.revert_scope(ctx, spec, selection)[1]
    base = {"host": ctx.host_json(), "dry_run": dry_run}
    if dry_run:
        if revert:
            devices = enforce.revert_live(ctx.records, ctx.host_ref,
                                            _store(), targets, dry_run=True)
        else:
            devices = enforce.enforce_live(ctx.records, ctx.host_ref,
                                             _store(), targets, dry_run=True)
        return dict(base, devices=devices, summary=_summary_of([], devices))
    if spec[0] == "all" and not confirm:
        raise ConfirmRequired(
            "%s target=ALL scope=local changes every device on this host; "
            "nothing was changed. Pass confirm=yes"
            % ("revert" if revert else "apply"))
    with host_lock():
        store = _store()
        if revert:
            devices = enforce.revert_live(ctx.records, ctx.host_ref, store,
                                            targets)
        else:
            devices = enforce.enforce_live(ctx.records, ctx.host_ref, store,
                                             targets)
    return dict(base, devices=devices, summary=_summary_of([], devices))


def apply(session, args):
    _check_args(args, TARGET_KEYS + ("policy", "dry_run", "confirm", "pool",
                                     "force", "scope"))
    spec = parse_target(args)
    policy = _policy_arg(args)
    dry_run = A.parse_bool(args, "dry_run")
    confirm = _confirmed(args)
    pool_wide = A.parse_bool(args, "pool")
    force = A.parse_bool(args, "force")
    if _scope(args) == "local":
        return _local_live(session, args, False, dry_run, confirm)
    if dry_run:
        return _apply(session, args, spec, policy, True, confirm, pool_wide,
                      force)
    with host_lock():
        return _apply(session, args, spec, policy, False, confirm, pool_wide,
                      force)


def _apply(session, args, spec, policy, dry_run, confirm, pool_wide, force):
    ctx = context.CallContext(session)
    selection = targeting.select(ctx.records, spec, ctx.host_ref, pool_wide)
    locations = []
    planned = ctx.records
    if policy is not None:
        locations = levels.apply_policy_locations(ctx, spec, pool_wide)
        planned = ctx.records.copy()
        for cls, ref, key, _, _ in locations:
            planned.table(cls)[ref]["other_config"][key] = policy.text
    plans = planning.plan_db(planned, selection.refs, force)
    policy_json = [levels.location_json(
        loc, policy.text, (ctx.records.table(loc[0])[loc[1]].get(
            "other_config") or {}).get(loc[2])) for loc in locations]
    live_targets = None if spec[0] == "all" else selection.refs
    base = {"host": ctx.host_json(), "target": selection.to_json(),
            "policy": policy_json, "dry_run": dry_run}
    if dry_run:
        devices = enforce.enforce_live(_records_after(planned, plans),
                                         ctx.host_ref, _store(), live_targets,
                                         dry_run=True)
        objects = [p.to_json() for p in plans if p.changes]
        return dict(base, objects=objects, devices=devices,
                    summary=dict(_summary_of([], devices), objects={
                        "planned": len(objects),
                        "unchanged": len(plans) - len(objects)}))
    if spec[0] == "all" and not confirm:
        raise ConfirmRequired(
            "target=ALL changes every VIF and PIF in the pool and every device "
            "on this host; nothing was changed. Review the plan and pass "
            "confirm=yes", planning.saved_summary(plans))
    for location in locations:
        levels.write_policy(ctx, location, policy.text)
    results = writer.write_plans(ctx, plans)
    devices = enforce.enforce_live(_records_after(planned, plans),
                                     ctx.host_ref, _store(), live_targets)
    objects = [r for r in results if r["status"] != "unchanged"]
    result = dict(base, objects=objects, devices=devices,
                  summary=_summary_of(results, devices))
    result["summary"]["xapi_calls"] = ctx.xapi.calls
    if pool_wide:
        result["hosts"] = fanout.fan_out(ctx, "apply", args, {
            "host": result["host"], "devices": devices,
            "summary": _summary_of([], devices)})
    return result


def revert(session, args):
    _check_args(args, TARGET_KEYS + ("confirm", "pool", "scope", "dry_run"))
    spec = parse_target(args)
    confirm = _confirmed(args)
    pool_wide = A.parse_bool(args, "pool")
    dry_run = A.parse_bool(args, "dry_run")
    if _scope(args) == "local":
        return _local_live(session, args, True, dry_run, confirm)
    if dry_run:
        return _revert(session, args, spec, True, confirm, pool_wide)
    with host_lock():
        return _revert(session, args, spec, False, confirm, pool_wide)


def _revert(session, args, spec, dry_run, confirm, pool_wide):
    ctx = context.CallContext(session)
    selection = targeting.select(ctx.records, spec, ctx.host_ref, pool_wide)
    changes, refs, kept = levels.revert_scope(ctx, spec, selection)
    plans = planning.plan_revert(ctx.records, refs)
    policy_json = [levels.location_json(loc, text, (ctx.records.table(loc[0])[
        loc[1]].get("other_config") or {}).get(loc[2]))
        for loc, text in changes]
    base = {"host": ctx.host_json(), "target": selection.to_json(),
            "policy": policy_json, "dry_run": dry_run, "kept": kept}
    if dry_run:
        objects = [p.to_json() for p in plans if p.changes]
        return dict(base, objects=objects, devices=[], summary={
            "objects": {"planned": len(objects)}})
    if spec[0] == "all" and not confirm:
        raise ConfirmRequired(
            "revert target=ALL restores every VIF and PIF in the pool and "
            "removes every policy; nothing was changed. Pass confirm=yes",
            planning.saved_summary(plans))
    for location, text in changes:
        levels.write_policy(ctx, location, text)
    results = writer.write_plans(ctx, plans)
    live_targets = None if spec[0] == "all" else refs
    devices = enforce.revert_live(ctx.records, ctx.host_ref, _store(),
                                    live_targets)
    result = dict(base, objects=[r for r in results
                                 if r["status"] != "unchanged"],
                  devices=devices, summary=_summary_of(results, devices))
    result["summary"]["xapi_calls"] = ctx.xapi.calls
    if pool_wide:
        result["hosts"] = fanout.fan_out(ctx, "revert", args, {
            "host": result["host"], "devices": devices,
            "summary": _summary_of([], devices)})
    return result


FUNCTIONS = {
    "version": version,
    "status": status,
    "get_policy": get_policy,
    "set_policy": set_policy,
    "apply": apply,
    "revert": revert,
}
