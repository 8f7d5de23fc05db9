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
it (see _revert_scope): vm/tag/network set that level to none and leave
(report as `kept`) objects whose policy comes from a level above the
target; pif= sets the PIF's host to none and reverts that host's PIFs.
"""
import json
import threading
import time
import traceback

from netoffload.pool import keys
from netoffload import __version__
from netoffload import API_LEVEL
from netoffload.plugin import args as A
from netoffload.pool import reconcile
from netoffload.pool import resolve as R
from netoffload.pool import xapi as X
from netoffload.engine.devices import validate_device
from netoffload.errors import BadArgument, ConfirmRequired, XapiError
from netoffload.statedir import host_lock
from netoffload.log import get_logger
from netoffload.engine.policy import parse_policy

PLUGIN_NAME = "netoffload"
TARGET_KEYS = ("target", "vm", "tag", "network", "pif")
# How long the fan-out waits for the other hosts, all together. The caller
# holds this host's lock meanwhile (others get BUSY), so keep it short; a
# host that has not answered by then is reported as TIMEOUT.
FANOUT_TIMEOUT = 120.0
# Database writes for many objects are spread over this many sessions.
DB_SESSIONS = 4
PARALLEL_MIN_OBJECTS = 32
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

class _Context(object):
    """One call's view: the wrapper, a snapshot and this host."""

    def __init__(self, session):
        self.xapi = X.Xapi(session)
        self.records = self.xapi.snapshot()
        self.host_uuid = X.local_host_uuid()
        self.host_ref = self.records.host_by_uuid(self.host_uuid) or \
            self.xapi.local_host_ref(self.host_uuid)

    def host_json(self, host_ref=None):
        ref = host_ref or self.host_ref
        rec = self.records.hosts.get(ref) or {}
        return {"uuid": rec.get("uuid", ""),
                "name_label": rec.get("name_label", "")}


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


def _fan_out(ctx, fn, args, local_result):
    """Per host: the local result here, host.call_plugin elsewhere.

    Every entry has `ok`: a host that fails in any way, or does not answer
    within FANOUT_TIMEOUT, is reported and does not fail the others. The
    threads write into their own dicts; what is returned is a copy taken
    after the joins, so a late thread cannot change it while it is encoded.
    """
    call_args = dict((k, v) for k, v in args.items() if k != "pool")
    call_args["scope"] = "local"
    entries = []
    threads = []
    deadline = time.time() + FANOUT_TIMEOUT
    for host_ref in sorted(ctx.records.hosts,
                           key=lambda r: ctx.records.hosts[r].get(
                               "name_label", "")):
        entry = ctx.host_json(host_ref)
        entries.append(entry)
        if host_ref == ctx.host_ref:
            entry.update(ok=True, result=local_result)
        elif not ctx.records.host_is_live(host_ref):
            entry.update(ok=False, error=["HOST_OFFLINE",
                                          "the host is not live"])
        else:
            outcome = {}
            thread = threading.Thread(target=_call_host,
                                      args=(host_ref, fn, call_args, outcome))
            thread.daemon = True
            thread.start()
            threads.append((thread, entry, outcome))
    for thread, entry, outcome in threads:
        thread.join(max(0.0, deadline - time.time()))
        done = dict(outcome)  # one copy; the thread may still be running
        if thread.is_alive() or "ok" not in done:
            done = {"ok": False, "error": [
                "TIMEOUT", "no answer in %ds" % FANOUT_TIMEOUT]}
        entry.update(done)
    return [dict(entry) for entry in entries]


def _call_host(host_ref, fn, call_args, outcome):
    """Fill `outcome` with ok/result or ok/error; never raises."""
    session = None
    try:
        session = X.open_session()
        text = session.xenapi.host.call_plugin(host_ref, PLUGIN_NAME, fn,
                                               call_args)
        result = {"ok": True, "result": json.loads(text)}
    except XapiError as err:
        result = {"ok": False, "error": [err.code, err.message]}
    except Exception as err:  # any failure of this host: report, go on
        details = getattr(err, "details", None)
        if details and isinstance(details, (list, tuple)):
            error = [str(d) for d in details]
        else:
            error = [type(err).__name__, str(err)]
            get_logger().error("host %s: %s: %s", host_ref, fn,
                               traceback.format_exc())
        result = {"ok": False, "error": error}
    finally:
        if session is not None:
            X.close_session(session)
    if not result["ok"]:
        get_logger().warning("host %s: %s failed: %s", host_ref, fn,
                             result["error"])
    outcome.update(result)


def _apply_db(ctx, plans):
    """reconcile.apply_db, in parallel sessions when there is much to do."""
    extra = []
    if sum(1 for p in plans if p.changes) >= PARALLEL_MIN_OBJECTS:
        for _ in range(DB_SESSIONS - 1):
            try:
                extra.append(X.Xapi(X.open_session()))
            except XapiError as err:
                get_logger().info("writing with fewer sessions: %s",
                                  err.message)
                break
    try:
        return reconcile.apply_db(ctx.xapi, plans, [ctx.xapi] + extra)
    finally:
        for client in extra:
            X.close_session(client.session)
            ctx.xapi.calls += client.calls + 2  # + login and logout


# -- version / policy ------------------------------------------------------------------

def version(session, args):
    _check_args(args, ())
    return {"version": __version__, "api": API_LEVEL}


def get_policy(session, args):
    _check_args(args, ())
    records = X.Xapi(session).snapshot()
    return {"policies": R.all_policies(records)}


_LEVELS = {
    # level: (allowed kinds, selector argument, default kind)
    "pool": (("vif", "pif"), None, None),
    "host": (("pif",), "host", "pif"),
    "network": (("vif",), "network", "vif"),
    "tag": (("vif",), "tag", "vif"),
    "vm": (("vif",), "vm", "vif"),
}


def _policy_location(ctx, level, kind, selector):
    """(cls, ref, key, uuid, name) where a level's policy lives."""
    records = ctx.records
    if level == "pool":
        return ("pool", records.pool_ref, keys.policy_key(kind),
                records.pool_record.get("uuid", ""), "")
    if level == "tag":
        return ("pool", records.pool_ref, keys.tag_key(selector),
                records.pool_record.get("uuid", ""), selector)
    if level == "host":
        ref = ctx.host_ref if not selector else reconcile.find_by_name_or_uuid(
            records.hosts, selector, "host")
        table, cls = records.hosts, "host"
    elif level == "network":
        ref = reconcile.find_by_name_or_uuid(records.networks, selector,
                                             "network")
        table, cls = records.networks, "network"
    else:
        ref = reconcile.find_by_name_or_uuid(records.vms, selector, "VM",
                                             R.is_eligible_vm)
        table, cls = records.vms, "VM"
    return (cls, ref, keys.policy_key(kind), table[ref].get("uuid", ""),
            table[ref].get("name_label", ""))


def _write_policy(ctx, location, text):
    cls, ref, key, _, _ = location
    current = ctx.records.table(cls)[ref].get("other_config") or {}
    ctx.xapi.set_other_config_key(cls, ref, key, text, current.get(key))
    ctx.records.table(cls)[ref].setdefault("other_config", {})
    if text is None:
        ctx.records.table(cls)[ref]["other_config"].pop(key, None)
    else:
        ctx.records.table(cls)[ref]["other_config"][key] = text


def _location_json(location, text, previous):
    cls, _, key, uuid, name = location
    return {"class": cls, "uuid": uuid, "name": name, "key": key,
            "policy": text, "previous": previous}


def set_policy(session, args):
    _check_args(args, ("level", "kind", "policy", "vm", "network", "tag",
                       "host"))
    level = A.require(args, "level")
    if level not in _LEVELS:
        raise BadArgument("level=%r: valid levels are %s" % (
            level[:40], ", ".join(sorted(_LEVELS))))
    kinds, selector_key, default_kind = _LEVELS[level]
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
    ctx = _Context(session)
    location = _policy_location(ctx, level, kind, selector)
    cls, ref = location[0], location[1]
    previous = (ctx.records.table(cls)[ref].get("other_config") or {}).get(
        location[2])
    _write_policy(ctx, location, stored)
    return dict(_location_json(location, stored, previous), level=level,
                kind=kind)


def _apply_policy_locations(ctx, spec, pool_wide):
    kind, value = spec
    if kind == "all":
        return [_policy_location(ctx, "pool", "vif", None),
                _policy_location(ctx, "pool", "pif", None)]
    if kind == "pif":
        if pool_wide:
            return [_policy_location(ctx, "pool", "pif", None)]
        return [_policy_location(ctx, "host", "pif", None)]
    return [_policy_location(ctx, kind, "vif", value)]


def _all_policy_locations(ctx):
    """Every policy key in the pool (for revert ALL)."""
    records = ctx.records
    result = []
    for key in sorted(records.pool_other_config):
        if key in (keys.KEY_VIF, keys.KEY_PIF) or key.startswith(keys.TAG_PREFIX):
            result.append(("pool", records.pool_ref, key,
                           records.pool_record.get("uuid", ""), ""))
    for cls, key in (("host", keys.KEY_PIF), ("network", keys.KEY_VIF),
                     ("VM", keys.KEY_VIF)):
        table = records.table(cls)
        for ref in sorted(table):
            if key in (table[ref].get("other_config") or {}):
                result.append((cls, ref, key, table[ref].get("uuid", ""),
                               table[ref].get("name_label", "")))
    return result


# -- status ------------------------------------------------------------------------------

def status(session, args):
    _check_args(args, TARGET_KEYS + ("pool", "scope"))
    spec = parse_target(args, required=False)
    pool_wide = A.parse_bool(args, "pool")
    scope = _scope(args)
    ctx = _Context(session)
    targets = None
    selection = None
    if spec is not None:
        selection = reconcile.select(ctx.records, spec, ctx.host_ref)
        targets = selection.refs
    local = reconcile.local_devices(ctx.records, ctx.host_ref, targets)
    vif_refs = sorted(set(d.ref for d in local if d.kind != "pif"))
    plans = reconcile.plan_db(ctx.records, vif_refs)
    devices = reconcile.device_status(ctx.records, ctx.host_ref, targets,
                                      plans, _store())
    real = [d for d in devices if d.get("device") is not None]
    result = {"host": ctx.host_json(), "devices": devices,
              "summary": {"devices": len(real),
                          "compliant": sum(1 for d in real
                                           if d.get("compliant"))}}
    if scope == "pool":
        db_refs = selection.refs if selection else \
            R.eligible_vifs(ctx.records) + sorted(ctx.records.pifs)
        pending = [p for p in reconcile.plan_db(ctx.records, db_refs)
                   if p.changes]
        result["db"] = {"objects": len(db_refs), "pending": len(pending),
                        "pending_objects": [
                            {"class": p.cls, "uuid": p.uuid, "label": p.label}
                            for p in pending]}
    if pool_wide and scope == "pool":
        result["hosts"] = _fan_out(ctx, "status", args, {
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
    ctx = _Context(session)
    selection = reconcile.select(ctx.records, spec, ctx.host_ref)
    targets = None if spec[0] == "all" else selection.refs
    if revert and targets is not None:
        targets = _revert_scope(ctx, spec, selection)[1]
    base = {"host": ctx.host_json(), "dry_run": dry_run}
    if dry_run:
        if revert:
            devices = reconcile.revert_live(ctx.records, ctx.host_ref,
                                            _store(), targets, dry_run=True)
        else:
            devices = reconcile.enforce_live(ctx.records, ctx.host_ref,
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
            devices = reconcile.revert_live(ctx.records, ctx.host_ref, store,
                                            targets)
        else:
            devices = reconcile.enforce_live(ctx.records, ctx.host_ref, store,
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
    ctx = _Context(session)
    selection = reconcile.select(ctx.records, spec, ctx.host_ref, pool_wide)
    locations = []
    planned = ctx.records
    if policy is not None:
        locations = _apply_policy_locations(ctx, spec, pool_wide)
        planned = ctx.records.copy()
        for cls, ref, key, _, _ in locations:
            planned.table(cls)[ref]["other_config"][key] = policy.text
    plans = reconcile.plan_db(planned, selection.refs, force)
    policy_json = [_location_json(
        loc, policy.text, (ctx.records.table(loc[0])[loc[1]].get(
            "other_config") or {}).get(loc[2])) for loc in locations]
    live_targets = None if spec[0] == "all" else selection.refs
    base = {"host": ctx.host_json(), "target": selection.to_json(),
            "policy": policy_json, "dry_run": dry_run}
    if dry_run:
        devices = reconcile.enforce_live(_records_after(planned, plans),
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
            "confirm=yes", reconcile.saved_summary(plans))
    for location in locations:
        _write_policy(ctx, location, policy.text)
    results = _apply_db(ctx, plans)
    devices = reconcile.enforce_live(_records_after(planned, plans),
                                     ctx.host_ref, _store(), live_targets)
    objects = [r for r in results if r["status"] != "unchanged"]
    result = dict(base, objects=objects, devices=devices,
                  summary=_summary_of(results, devices))
    result["summary"]["xapi_calls"] = ctx.xapi.calls
    if pool_wide:
        result["hosts"] = _fan_out(ctx, "apply", args, {
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


def _covered_by(kind, value, level):
    """Does setting the target's level to none take the policy off an
    object that resolves from `level`? (Levels above it still apply.)"""
    if level is None or kind in ("all", "vm"):
        return True
    if level == "vm":
        return False
    if level.startswith("tag:"):
        return kind == "tag" and level == "tag:" + value
    return True  # network, pool: below tag and network


def _revert_scope(ctx, spec, selection):
    """(policy changes [(location, text)], refs to revert, kept [json]).

    Revert sets to `none` the level each selected object resolves from, so
    the watcher and later applies leave it reverted:
    - ALL: every policy key goes;
    - vm/tag/network: that level is set to none; an object whose policy
      comes from a level above the target (its VM's own policy, or an
      earlier tag) is not the target's doing: it is left as it is and
      reported in `kept` (revert vm= or that tag to undo it);
    - pif: a PIF's policy is its host's or the pool's; the host's
      `netoffload-pif` is set to none (only that host opts out), which
      takes every PIF of that host out, so all of them are reverted.
    """
    records = ctx.records
    kind, value = spec
    if kind == "all":
        changes = [(loc, None) for loc in _all_policy_locations(ctx)]
        return changes, selection.refs, []
    if kind == "pif":
        hosts = sorted(set(records.pifs[ref].get("host")
                           for ref in selection.pifs
                           if R.resolve_pif(records, ref).level is not None))
        changes = []
        refs = list(selection.pifs)
        for host_ref in hosts:
            host = records.hosts.get(host_ref) or {}
            if (host.get("other_config") or {}).get(keys.KEY_PIF) != "none":
                changes.append((("host", host_ref, keys.KEY_PIF,
                                 host.get("uuid", ""),
                                 host.get("name_label", "")), "none"))
            refs += [r for r in records.pifs_of_host(host_ref)
                     if r not in refs]
        return changes, refs, []
    changes = [(_policy_location(ctx, kind, "vif", value), "none")]
    refs, kept = [], []
    for ref in selection.vifs:
        level = R.resolve_vif(records, ref).level
        if _covered_by(kind, value, level):
            refs.append(ref)
        else:
            kept.append({"class": "VIF", "uuid": records.vifs[ref].get(
                "uuid", ""), "label": records.vif_label(ref),
                "level": level})
    return changes, refs + selection.pifs, kept


def _revert(session, args, spec, dry_run, confirm, pool_wide):
    ctx = _Context(session)
    selection = reconcile.select(ctx.records, spec, ctx.host_ref, pool_wide)
    changes, refs, kept = _revert_scope(ctx, spec, selection)
    plans = reconcile.plan_revert(ctx.records, refs)
    policy_json = [_location_json(loc, text, (ctx.records.table(loc[0])[
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
            reconcile.saved_summary(plans))
    for location, text in changes:
        _write_policy(ctx, location, text)
    results = _apply_db(ctx, plans)
    live_targets = None if spec[0] == "all" else refs
    devices = reconcile.revert_live(ctx.records, ctx.host_ref, _store(),
                                    live_targets)
    result = dict(base, objects=[r for r in results
                                 if r["status"] != "unchanged"],
                  devices=devices, summary=_summary_of(results, devices))
    result["summary"]["xapi_calls"] = ctx.xapi.calls
    if pool_wide:
        result["hosts"] = _fan_out(ctx, "revert", args, {
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
