"""CLI verbs over the plugin: status, policy get|set, apply, revert, report.

A thin client: it opens a local session (netoffload.pool.xapi.open_session),
calls host.call_plugin(<this host>, "netoffload", fn, args), and prints the
JSON result as tables (render.py) or, with --json, as one JSON document.
TARGET is `ALL`, `vm=NAME`, `tag=T`, `network=N` or `pif=DEV`.

`apply ALL` / `revert ALL` without --yes show the plan (a dry run) and ask
for `YES` on the terminal, like the original script's sanity check; with no
terminal and no --yes they stop with exit code 2 (with --json: the plan in
the error document).

`--wait SECONDS` (apply, revert, policy set/clear): how long the change
waits for another writer's pool lease before NETOFFLOAD_BUSY (the
plugin's `wait=`; default 20 s).
"""
import argparse
import csv
import json
import sys
import time

from netoffload import errors, exitcodes
from netoffload.cli import output, render
from netoffload.cli.output import add_json, emit_json, examples, progress
from netoffload.pool import lease, xapi

PLUGIN = "netoffload"
TARGET_KINDS = ("vm", "tag", "network", "pif")
TARGET_HELP = "ALL (in capitals), vm=NAME-or-UUID, tag=TAG, network=NAME-or-UUID " \
    "or pif=DEVICE"


def parse_target(text):
    """ALL | vm=NAME | tag=T | network=N | pif=DEV -> plugin args."""
    if text == "ALL":
        return {"target": "ALL"}
    kind, sep, value = text.partition("=")
    if not sep or kind not in TARGET_KINDS or not value:
        raise errors.BadArgument(
            "target %r: use ALL (in capitals), vm=NAME, tag=T, network=N or "
            "pif=DEV" % text[:60])
    return {kind: value}


class Client(object):
    """One local XAPI session for a verb: plugin calls on this host or on
    another one, and the few record reads the hints need."""

    def __init__(self):
        self.session = xapi.open_session()
        self._local = None

    def close(self):
        xapi.close_session(self.session)

    @property
    def local_host(self):
        if self._local is None:
            self._local = xapi.Xapi(self.session).local_host_ref()
        return self._local

    def call(self, fn, args, host_ref=None):
        """host.call_plugin on this host (or host_ref); the parsed JSON."""
        # XenAPI costs ~30 ms to import: only the verbs that talk to xapi pay it
        import XenAPI  # noqa: PLC0415
        try:
            text = self.session.xenapi.host.call_plugin(
                host_ref or self.local_host, PLUGIN, fn, args)
        except XenAPI.Failure as failure:
            raise plugin_error(xapi.failure_details(failure)) from failure
        return json.loads(text)

    def records(self, cls):
        return xapi.Xapi(self.session).get_all_records(cls)


def plugin_error(details):
    """A plugin Failure's details as our NetoffloadError."""
    cls = errors.BY_CODE.get(details[0], errors.XapiError)
    if cls is errors.XapiError and details[0] != errors.XAPI_ERROR:
        return errors.XapiError("the plugin call failed: %s" % " ".join(
            details), *details)
    return cls(details[1] if len(details) > 1 else details[0], *details[2:])


def call_plugin(fn, args):
    """Call the plugin on this host; the parsed JSON result."""
    client = Client()
    try:
        return client.call(fn, args)
    finally:
        client.close()


# -- results -------------------------------------------------------------------

def _partial(result):
    summary = result.get("summary") or {}
    if summary.get("devices_failed"):
        return True
    if any(k in ("failed", "gone") for k in summary.get("objects") or {}):
        return True
    for host in result.get("hosts") or []:
        if not host["ok"] or (host["result"].get("summary") or {}).get(
                "devices_failed"):
            return True
    return False


def pool_summary(result):
    """Counts over every host of a --pool result (the plugin's `summary`
    is this host's): hosts, unreachable ones, devices and their outcome."""
    hosts = result.get("hosts") or []
    answered = [h["result"] for h in hosts if h.get("ok")]
    devices = [d for r in answered for d in r.get("devices") or []
               if d.get("device") is not None]
    summary = {"hosts": len(hosts),
               "unreachable": sorted(h.get("name_label") or h.get("uuid")
                                     for h in hosts if not h.get("ok")),
               "devices": len(devices)}
    if any("compliant" in d for d in devices):
        summary["compliant"] = sum(1 for d in devices if d.get("compliant"))
    else:
        summary["devices_changed"] = sum(1 for d in devices
                                         if d.get("ran_command"))
        summary["devices_failed"] = sorted(
            "%s/%s" % (h["name_label"], d) for h in hosts if h.get("ok")
            for d in (h["result"].get("summary") or {}).get(
                "devices_failed") or [])
    return summary


def _emit(result, as_json, printer):
    if result.get("hosts"):
        result["pool_summary"] = pool_summary(result)
    if as_json:
        emit_json(result)
    else:
        printer(result, sys.stdout)
    return exitcodes.PARTIAL if _partial(result) else exitcodes.OK


def _pool_progress(verb, client, started):
    """On a terminal, a line on stderr before and after a --pool run."""
    hosts = client.records("host")
    names = sorted(h.get("name_label", "") for h in hosts.values())
    if started is None:
        progress("%s on %d host(s): %s ..." % (verb, len(names),
                                                 ", ".join(names)))
        return time.time()
    progress("%s: every host answered or timed out in %.1f s" % (
        verb, time.time() - started))
    return None


def _run(client, fn, args, pool_wide, verb):
    if not pool_wide:
        return client.call(fn, args)
    started = _pool_progress(verb, client, None)
    result = client.call(fn, args)
    _pool_progress(verb, client, started)
    return result


# -- status --------------------------------------------------------------------

def _vm_hint(client, name):
    """For vm=NAME with no device here: where the VM runs, in words."""
    vms = client.records("VM")
    hosts = client.records("host")
    found = [vm for vm in vms.values()
             if not vm.get("is_a_template") and not vm.get("is_control_domain")
             and name in (vm.get("name_label"), vm.get("uuid"))]
    if len(found) != 1:
        return None, None
    vm = found[0]
    if vm.get("power_state") != "Running":
        return None, "%s is %s: it has no devices now; its database keys " \
            "take effect when it starts" % (vm.get("name_label"),
                                            (vm.get("power_state") or
                                             "not running").lower())
    resident = hosts.get(vm.get("resident_on")) or {}
    if vm.get("resident_on") == client.local_host:
        return None, None
    return resident.get("name_label") or "another host", None


def _empty_note(client, args):
    """Why a tag= or network= target selected nothing, in words."""
    vms = [vm for vm in client.records("VM").values()
           if not vm.get("is_a_template") and not vm.get("is_control_domain")]
    if "tag" in args:
        tags = sorted(set(t for vm in vms for t in vm.get("tags") or []))
        return "no VM carries the tag %r (tags in the pool: %s)" % (
            args["tag"], ", ".join(tags) or "none")
    if "network" in args:
        return "no VM has a VIF on network %r" % args["network"]
    return None


def _status(ns):
    args = parse_target(ns.target) if ns.target else {}
    if ns.pool:
        args["pool"] = "true"
    client = Client()
    try:
        result = _run(client, "status", args, ns.pool, "status")
        elsewhere, note = None, None
        if "vm" in args and not ns.pool and not result["devices"]:
            elsewhere, note = _vm_hint(client, args["vm"])
        if ("tag" in args or "network" in args) and \
                (result.get("db") or {}).get("objects") == 0:
            note = _empty_note(client, args)
    finally:
        client.close()
    hint = None
    if elsewhere:
        hint = "%s runs on %s, not on this host (%s): add --pool, or run " \
            "netoffload on %s" % (args["vm"], elsewhere,
                                  result["host"]["name_label"], elsewhere)
        result["hint"] = hint
    elif note:
        result["note"] = note

    def printer(res, out):
        out.write("host %s\n" % res["host"]["name_label"])
        render.print_devices(res["devices"], out)
        render.print_skipped(res.get("skipped"), out)
        db = res.get("db")
        if db:
            out.write("\ndatabase: %d objects, %d with keys to write\n" % (
                db["objects"], db["pending"]))
        render.print_hosts([h for h in res.get("hosts") or []
                            if h["uuid"] != res["host"]["uuid"]], out)
        if note:
            out.write("note: %s\n" % note)
    code = _emit(result, ns.json, printer)
    if hint:
        if not ns.json:
            sys.stderr.write("netoffload: %s\n" % hint)
        return exitcodes.PARTIAL
    devices = list(result["devices"])
    for host in result.get("hosts") or []:
        if host["ok"] and host["uuid"] != result["host"]["uuid"]:
            devices.extend(host["result"].get("devices") or [])
    noncompliant = [d for d in devices if not d.get("compliant")]
    return code or (exitcodes.PARTIAL if noncompliant else exitcodes.OK)


# -- policy --------------------------------------------------------------------

def _policy_object(entry, pool_name):
    if entry["level"] == "pool":
        return pool_name or "(the pool)"
    return entry.get("name") or entry.get("uuid")


def _pool_name():
    client = Client()
    try:
        pools = client.records("pool")
    finally:
        client.close()
    return next(iter(pools.values()), {}).get("name_label") if pools else None


def _policy_get(ns):
    result = call_plugin("get_policy", {})

    def printer(res, out):
        pool_name = _pool_name() if any(p["level"] == "pool" for p in
                                        res["policies"]) else None
        rows = [[p["level"], p["kind"], _policy_object(p, pool_name),
                 p["policy"] + ("" if p["valid"] else "  (INVALID)")]
                for p in res["policies"]]
        if rows:
            render.table(rows, ["LEVEL", "KIND", "OBJECT", "POLICY"], out,
                         shrink=(2, 3))
            for p in res["policies"]:
                if not p["valid"]:
                    render.wrap("  INVALID %s on %s %s: %s; treated as none" % (
                        p["key"], p["level"], _policy_object(p, pool_name),
                        p.get("error")), out)
        else:
            out.write("no policy is set: netoffload changes nothing\n")
    return _emit(result, ns.json, printer)


def _policy_args(ns, text):
    args = {"level": ns.level, "kind": ns.kind, "policy": text}
    for key in ("vm", "network", "tag", "host"):
        if getattr(ns, key):
            args[key] = getattr(ns, key)
    _add_wait(args, ns)
    return args


def wait_seconds(text):
    """--wait's value: whole seconds, 0..lease.MAX_WAIT_S."""
    try:
        seconds = int(text, 10)
    except ValueError:
        seconds = -1
    if not 0 <= seconds <= lease.MAX_WAIT_S:
        raise argparse.ArgumentTypeError(
            "%r is not a number of seconds from 0 to %d" % (
                text[:40], lease.MAX_WAIT_S))
    return seconds


def _add_wait(args, ns):
    if ns.wait is not None:
        args["wait"] = str(ns.wait)


def _add_wait_option(parser):
    parser.add_argument(
        "--wait", type=wait_seconds, metavar="SECONDS",
        help="wait up to SECONDS (0..%d) for another netoffload writer in "
        "the pool to finish, then fail with NETOFFLOAD_BUSY (default %d)"
        % (lease.MAX_WAIT_S, lease.DEFAULT_WAIT_S))


def print_policy(res, out):
    """A set_policy result: the change, then its plan per host."""
    where = res["name"] or res["uuid"]
    if res["level"] == "pool":
        where = _pool_name() or "(the pool)"
    out.write("%s %s %s: %s -> %s\n" % (
        res["level"], res["kind"], where, render.policy_text(res["previous"]),
        render.policy_text(res["policy"])))
    plan = res.get("plan") or {}
    for host in plan.get("hosts") or []:
        out.write("\nhost %s: %d object(s) with keys to write" % (
            host["name_label"], len(host["objects"])))
        if not host["ok"]:
            out.write(", devices unknown: NOT ANSWERING %s\n" % " ".join(
                host.get("error") or []))
            render.print_objects(host["objects"], out)
            continue
        out.write(", %d device(s) to change\n" % len(host["devices"]))
        render.print_objects(host["objects"], out)
        if host["devices"]:
            render.print_devices(host["devices"], out, explain=False)
    if plan.get("not_running"):
        out.write("\nVMs not running (their keys apply when they start):\n")
        render.print_objects(plan["not_running"], out)
    render.print_skipped(plan.get("skipped"), out)
    if res.get("message"):
        out.write("\n")
        render.wrap(res["message"], out)


def _policy_change(ns, text):
    """policy set / clear: a dry run with --dry-run; a policy wider than
    one VM shows its plan and asks for YES first (or --yes)."""
    args = _policy_args(ns, text)
    if ns.dry_run:
        args["dry_run"] = "true"
    elif ns.yes:
        args["confirm"] = "yes"
    elif ns.level != "vm":
        plan = call_plugin("set_policy", dict(args, dry_run="true"))
        # with --json the plan is the refusal's JSON; people read it on stderr
        print_policy(plan, sys.stderr if ns.json else sys.stdout)
        _ask_yes("policy %s" % ns.level, "This stores a policy that governs "
                 "more than one VM; the watcher enforces it within seconds.",
                 plan, ns.json)
        args["confirm"] = "yes"
    return _emit(call_plugin("set_policy", args), ns.json, print_policy)


def _policy_set(ns):
    return _policy_change(ns, ns.policy)


def _policy_clear(ns):
    return _policy_change(ns, "")


# -- apply / revert -------------------------------------------------------------

def _plan_everywhere(client, fn, args, plan):
    """A --pool dry run: the plan here, and each other live host's live
    plan (scope=local dry_run=true), as `hosts` like a fan-out's."""
    hosts = client.records("host")
    metrics = client.records("host_metrics")
    entries = []
    for ref in sorted(hosts, key=lambda r: hosts[r].get("name_label", "")):
        host = hosts[ref]
        entry = {"uuid": host.get("uuid"), "name_label": host.get("name_label")}
        entries.append(entry)
        if ref == client.local_host:
            entry.update(ok=True, result={
                "host": plan["host"], "devices": plan.get("devices") or [],
                "summary": plan.get("summary") or {}})
            continue
        live = (metrics.get(host.get("metrics")) or {}).get("live", True)
        if not live or not host.get("enabled", True):
            entry.update(ok=False, error=["HOST_OFFLINE", "the host is not live"])
            continue
        progress("%s: planning on %s ..." % (fn, host.get("name_label")))
        # with --policy/--force the host plans over the database as it
        # would be (pool= says where a pif= policy would be stored)
        local_args = dict(args, scope="local", dry_run="true")
        try:
            entry.update(ok=True, result=client.call(fn, local_args, ref))
        except errors.NetoffloadError as err:
            entry.update(ok=False, error=[err.code, err.message])
    plan["hosts"] = entries
    return plan


def _plan(client, fn, args, pool_wide):
    plan = client.call(fn, dict(args, dry_run="true"))
    if pool_wide and fn == "apply":
        _plan_everywhere(client, fn, args, plan)
    return plan


def _ask_yes(what, sentence, plan, as_json):
    """Ask for YES on the terminal; go on only then. With no terminal, or
    another answer: Refused (exit 2; with --json the plan in the error
    document), naming --yes."""
    if not sys.stdin.isatty():
        raise output.Refused(
            "%s needs a confirmation: run it on a terminal to confirm, or "
            "pass --yes; nothing was changed" % what, plan)
    prompt_out = sys.stderr if as_json else sys.stdout
    prompt_out.write("\n%s Type YES to continue: " % sentence)
    prompt_out.flush()
    answer = sys.stdin.readline().strip()
    if answer != "YES":
        raise output.Refused("not confirmed (%r is not YES): nothing was "
                             "changed" % answer[:20], plan)


def _confirm_on_tty(client, fn, args, as_json):
    """Show the dry-run plan and ask."""
    plan = _plan(client, fn, args, "pool" in args)
    # with --json the plan is the refusal's JSON; people read it on stderr
    render.print_result(plan, sys.stderr if as_json else sys.stdout)
    if "target" in args:
        _ask_yes("%s ALL" % fn, "This changes every VIF and PIF in the "
                 "pool.", plan, as_json)
    else:
        _ask_yes("%s --policy" % fn, "This stores a policy that governs "
                 "more than one VM.", plan, as_json)


def _apply(ns):
    args = parse_target(ns.target)
    if ns.policy is not None:
        args["policy"] = ns.policy
    for flag, key in ((ns.pool, "pool"), (ns.force, "force"),
                      (ns.dry_run, "dry_run")):
        if flag:
            args[key] = "true"
    _add_wait(args, ns)
    return _run_change("apply", args, ns)


def _revert(ns):
    args = parse_target(ns.target)
    if ns.pool:
        args["pool"] = "true"
    if ns.dry_run:
        args["dry_run"] = "true"
    _add_wait(args, ns)
    return _run_change("revert", args, ns)


def _run_change(fn, args, ns):
    client = Client()
    try:
        if ns.dry_run:
            args.pop("dry_run", None)
            result = _plan(client, fn, args, ns.pool)
        else:
            # ALL, or a policy stored for more than one VM (tag, network,
            # pif): the same YES as set_policy asks
            wide = "target" in args or ("policy" in args and "vm" not in args)
            if wide:
                if not ns.yes:
                    _confirm_on_tty(client, fn, args, ns.json)
                args["confirm"] = "yes"
            result = _run(client, fn, args, ns.pool, fn)
    finally:
        client.close()

    def printer(res, out):
        render.print_result(res, out)
        if res.get("note"):
            render.wrap("note: " + res["note"], out)
    return _emit(result, ns.json, printer)


# -- report --------------------------------------------------------------------

REPORT_COLUMNS = ("vm", "power_state", "host", "vif", "network", "device",
                  "off", "why", "explicit", "policy", "level", "drift")


def _report_rows(result):
    """One row per VIF in the report: the columns of REPORT_COLUMNS."""
    rows = []
    for vif in result.get("vifs") or []:
        rows.append({
            "vm": vif.get("vm"), "power_state": vif.get("power_state"),
            "host": vif.get("host") or "",
            "vif": vif.get("vif"), "network": vif.get("network") or "",
            "device": ",".join(vif.get("devices") or []),
            "off": render.off_text(vif.get("off") or []),
            "why": render.why(vif),
            "explicit": ",".join(
                "%s=%s" % (o["feature"], o["value"])
                for o in vif["overrides"]) if "overrides" in vif else
            ",".join("%s=%s" % kv for kv in sorted(
                (vif.get("explicit") or {}).items())),
            "policy": vif.get("policy") or "",
            "level": vif.get("level") or "",
            "drift": render.features_text((vif.get("drift") or {}).get(
                "features")) if vif.get("drift") else ""})
    return rows


def print_report(result, out):
    vifs = result.get("vifs") or []
    if not vifs:
        out.write("no VM has an offload feature off (running or halted)\n")
    else:
        rows = [[r["vm"], r["power_state"], r["host"] or "-", r["vif"],
                 r["off"], r["why"]] for r in _report_rows(result)]
        render.table(rows, ["VM", "POWER", "HOST", "VIF", "OFF", "WHY"], out,
                     shrink=(5, 4, 0))
        notes = []
        for vif in vifs:
            label = "%s/%s" % (vif["vm"], vif["vif"])
            notes.extend(render.why_notes(dict(vif, device=label)))
        for note in render.merge_notes(notes):
            render.wrap("  " + note, out)
    invalid = result.get("invalid_policies") or []
    for entry in invalid:
        render.wrap("INVALID policy %s on %s %s: %s; treated as none" % (
            entry.get("key"), entry.get("level"), entry.get("name") or
            entry.get("uuid"), entry.get("error")), out)
    summary = result.get("summary") or {}
    out.write("%d VIF(s) of %d VM(s) with offload off; %d with an explicit "
              "key; %d drifting; %d invalid policies\n" % (
                  summary.get("vifs_off", len(vifs)),
                  summary.get("vms_off", 0), summary.get("explicit", 0),
                  summary.get("drift", 0), len(invalid)))
    for host in result.get("hosts_unreachable") or []:
        out.write("note: live state of host %s unknown (%s)\n" % (
            host.get("name_label"), " ".join(host.get("error") or [])))


def print_report_csv(result, out):
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(REPORT_COLUMNS)
    for row in _report_rows(result):
        writer.writerow([row[c] for c in REPORT_COLUMNS])


def _report(ns):
    args = {}
    if ns.all:
        args["all"] = "true"
    result = call_plugin("report", args)
    if ns.json:
        emit_json(result)
    elif ns.csv:
        print_report_csv(result, sys.stdout)
    else:
        print_report(result, sys.stdout)
    return exitcodes.OK


# -- parser ----------------------------------------------------------------------

def _parser(subparsers, name, summary, description, epilog, handler):
    parser = subparsers.add_parser(name, help=summary, description=description,
                                   epilog=epilog)
    add_json(parser)
    parser.set_defaults(handler=handler)
    return parser


def register(subparsers):
    p = _parser(subparsers, "status", "live vs desired offload, and why",
                "Show this host's devices (with --pool: every host's): the "
                "features the policy wants, where each comes from (pool, "
                "host, network, tag:<t>, vm, explicit, opt-out, INVALID), "
                "what was shadowed, and whether the live device matches. "
                "Exit 1 when a device is not compliant.",
                examples("netoffload status",
                         "netoffload status --pool",
                         "netoffload status vm='db 01 (prod)' --pool",
                         "netoffload status tag=pfsense --json"), _status)
    p.add_argument("target", nargs="?", metavar="TARGET",
                   help="only this target: " + TARGET_HELP)
    p.add_argument("--pool", action="store_true",
                   help="every live host, through host.call_plugin")

    p = subparsers.add_parser(
        "policy", help="show or store policies",
        description="Policies live in other-config in the pool database: "
        "netoffload-vif (pool, network, VM), netoffload-tag:<tag> (pool) and "
        "netoffload-pif (pool, host).",
        epilog=examples("netoffload policy get",
                        "netoffload policy set pool vif tx-off",
                        "netoffload policy set tag vif all-off --tag pfsense",
                        "netoffload policy set vm vif none --vm 'legacy appliance'",
                        "netoffload policy set host pif gro=off --host host2",
                        "netoffload policy set pool vif ''   # clear"))
    p.set_defaults(handler=output.show_group_help, group_parser=p)
    verbs = p.add_subparsers(dest="policy_verb", metavar="VERB",
                             help="get, set or clear")
    _parser(verbs, "get", "every policy key in the pool",
            "List every policy key in the pool; an INVALID one (a typo "
            "stored with xe) is treated as none.", None, _policy_get)
    for verb, handler, summary, description, epilog in (
            ("set", _policy_set, "store a policy (shows its plan; wider "
             "than one VM: asks YES)",
             "Store POLICY at LEVEL for KIND after showing what it will do: "
             "per host, the objects whose ethtool-* keys change and the "
             "devices that change. A policy that governs more than one VM "
             "(pool, host, network or tag level) is stored only after you "
             "type YES or pass --yes. The watcher enforces it within "
             "seconds.",
             examples("netoffload policy set pool vif tx-off --dry-run",
                      "netoffload policy set tag vif all-off --tag pfsense "
                      "--yes",
                      "netoffload policy set vm vif none --vm 'legacy "
                      "appliance'")),
            ("clear", _policy_clear, "remove a policy (shows its plan; "
             "wider than one VM: asks YES)",
             "Remove the policy at LEVEL for KIND, after showing what that "
             "changes (the objects go back to the next level's policy).",
             examples("netoffload policy clear vm vif --vm web01",
                      "netoffload policy clear pool vif --yes"))):
        s = _parser(verbs, verb, summary, description, epilog, handler)
        s.add_argument("level", choices=("pool", "host", "network", "tag",
                                         "vm"), help="where the policy is "
                       "stored")
        s.add_argument("kind", choices=("vif", "pif"),
                       help="vif: guest VIFs and their vif/tap devices; pif: "
                       "PIFs")
        if verb == "set":
            s.add_argument("policy", help="all-off, tx-off, none, a list "
                           "such as tx=off,sg=off, or '' to clear the level")
        group = s.add_mutually_exclusive_group()
        for key, what in (("vm", "the VM (level vm)"),
                          ("network", "the network (level network)"),
                          ("tag", "the tag (level tag)"),
                          ("host", "the host (level host)")):
            group.add_argument("--" + key, metavar=key.upper(),
                               help="name-label or uuid of %s" % what
                               if key != "tag" else what)
        s.add_argument("--dry-run", action="store_true",
                       help="show the plan, store nothing")
        s.add_argument("--yes", action="store_true",
                       help="do not ask (pool, host, network, tag levels)")
        _add_wait_option(s)

    p = _parser(subparsers, "apply", "bring keys and devices in line with "
                "the policy",
                "Write the ethtool-* keys of TARGET's VIFs and PIFs into the "
                "database (xapi re-applies them at every plug) and enforce "
                "the live devices of this host (--pool: of every host). "
                "ALL asks you to type YES, or needs --yes.",
                examples("netoffload apply vm=web01 --policy all-off",
                         "netoffload apply ALL --pool --dry-run",
                         "netoffload apply ALL --pool --yes",
                         "netoffload apply tag=pfsense --pool --json"), _apply)
    p.add_argument("target", metavar="TARGET", help=TARGET_HELP)
    p.add_argument("--policy", help="store this policy at the target's level "
                   "first")
    p.add_argument("--pool", action="store_true",
                   help="enforce live state on every host")
    p.add_argument("--dry-run", action="store_true",
                   help="show the plan (every host's with --pool); change "
                   "nothing")
    p.add_argument("--yes", action="store_true",
                   help="do not ask before changing ALL")
    p.add_argument("--force", action="store_true",
                   help="also overwrite explicit ethtool-* keys (saved first)")
    _add_wait_option(p)

    p = _parser(subparsers, "revert", "restore saved keys and live state",
                "Restore the ethtool-* keys and live features netoffload "
                "changed for TARGET, and take the policy off it (ALL: remove "
                "every policy; vm/tag/network: set that level to none).",
                examples("netoffload revert vm=web01 --pool",
                         "netoffload revert ALL --pool --dry-run",
                         "netoffload revert ALL --pool --yes"), _revert)
    p.add_argument("target", metavar="TARGET", help=TARGET_HELP)
    p.add_argument("--pool", action="store_true",
                   help="restore live state on every host")
    p.add_argument("--dry-run", action="store_true",
                   help="show what would be restored; change nothing")
    p.add_argument("--yes", action="store_true",
                   help="do not ask before reverting ALL")
    _add_wait_option(p)

    p = _parser(subparsers, "report", "which VMs have offload off, and why",
                "Pool-wide, from the database: every VIF of every VM "
                "(running or halted) with an offload feature off, where that "
                "comes from (policy level, explicit key and who set it), "
                "invalid policies and drift.",
                examples("netoffload report",
                         "netoffload report --csv > offload.csv",
                         "netoffload report --json"), _report)
    p.add_argument("--csv", action="store_true", help="print CSV")
    p.add_argument("--all", action="store_true",
                   help="every VIF, also those with nothing off")
