"""CLI verbs over the plugin: status, policy get|set, apply, revert.

A thin client: it opens a local session (netoffload.pool.xapi.open_session),
calls host.call_plugin(<this host>, "netoffload", fn, args), and prints the
JSON result as tables (or as JSON with --json). TARGET is `ALL`,
`vm=NAME`, `tag=T`, `network=N` or `pif=DEV`.

`apply ALL` / `revert ALL` without --yes show the plan (a dry run) and ask
for `YES` on the terminal, like the original script's sanity check; with no
terminal and no --yes they stop with exit code 2.
"""
import json
import sys

from netoffload import errors, exitcodes
from netoffload.pool import keys, xapi

PLUGIN = "netoffload"
TARGET_KINDS = ("vm", "tag", "network", "pif")


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


def call_plugin(fn, args):
    """Call the plugin on this host; the parsed JSON result."""
    # XenAPI costs ~30 ms to import: only the verbs that talk to xapi pay it
    import XenAPI  # noqa: PLC0415
    session = xapi.open_session()
    try:
        host = xapi.Xapi(session).local_host_ref()
        try:
            text = session.xenapi.host.call_plugin(host, PLUGIN, fn, args)
        except XenAPI.Failure as failure:
            details = xapi.failure_details(failure)
            cls = errors.BY_CODE.get(details[0], errors.XapiError)
            if cls is errors.XapiError and details[0] != errors.XAPI_ERROR:
                raise errors.XapiError("the plugin call failed: %s" % " ".join(
                    details), *details) from failure
            raise cls(details[1] if len(details) > 1 else details[0],
                      *details[2:]) from failure
        return json.loads(text)
    finally:
        xapi.close_session(session)


# -- output ------------------------------------------------------------------------

def _table(rows, headers, out):
    rows = [[str(c) for c in row] for row in rows]
    widths = [max([len(h)] + [len(r[i]) for r in rows])
              for i, h in enumerate(headers)]
    for row in [headers] + rows:
        out.write("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip()
                  + "\n")


def _features(mapping):
    return ",".join("%s=%s" % (k, mapping[k]) for k in sorted(mapping)) or "-"


def _print_devices(devices, out):
    rows = []
    for dev in devices:
        vm = (dev.get("vm") or {}).get("name_label", "")
        if dev.get("device") is None:  # a PIF with no kernel device (OVS)
            rows.append([dev.get("pif") or "-", dev.get("kind", "pif"), "-",
                         "-", dev.get("note", "")])
            continue
        if "compliant" in dev:
            state = "ok" if dev["compliant"] else \
                "differs: " + ",".join(dev.get("differs") or [])
            if dev.get("db_compliant") is False:
                state += " (db keys pending)"
        else:
            changed = sorted(f for f, s in (dev.get("features") or {}).items()
                             if s in ("changed", "forced", "would-change"))
            failed = sorted(f for f, s in (dev.get("features") or {}).items()
                            if s == "failed")
            state = dev.get("action", "")
            if changed:
                state += " changed:" + ",".join(changed)
            if failed:
                state += " FAILED:" + ",".join(failed)
        rows.append([dev["device"], dev["kind"], vm or "-",
                     _features(dev.get("desired") or {}), state])
    if rows:
        _table(rows, ["DEVICE", "KIND", "VM", "DESIRED", "STATE"], out)
    else:
        out.write("(no devices)\n")


def _print_objects(objects, out):
    rows = []
    for obj in objects:
        writes = obj.get("writes", obj.get("written")) or []
        shown = ",".join("%s=%s" % (keys.feature_of_key(k),
                                    v if v is not None else "(removed)")
                         for k, v in writes if keys.feature_of_key(k))
        rows.append([obj["class"], obj["label"], obj.get("status", "planned"),
                     shown or "-"])
    if rows:
        _table(rows, ["CLASS", "OBJECT", "STATUS", "ETHTOOL KEYS"], out)


def _print_hosts(hosts, out):
    for host in hosts or []:
        out.write("\nhost %s (%s)" % (host["name_label"], host["uuid"]))
        if not host["ok"]:
            out.write(": UNREACHABLE %s\n" % " ".join(host["error"]))
            continue
        out.write("\n")
        _print_devices(host["result"].get("devices") or [], out)


def _print_skipped(skipped, out):
    for entry in skipped or []:
        out.write("skipped %s: %s (no dom0 device)\n" % (entry["label"],
                                                       entry["reason"]))


def _print_result(result, out):
    for pol in result.get("policy") or []:
        out.write("policy %s %s %s: %s -> %s\n" % (
            pol["class"], pol["name"] or pol["uuid"], pol["key"],
            pol["previous"], pol["policy"]))
    _print_objects(result.get("objects") or [], out)
    if not result.get("hosts"):
        out.write("\nthis host (%s):\n" % result["host"]["name_label"])
        _print_devices(result.get("devices") or [], out)
    _print_hosts(result.get("hosts"), out)
    _print_skipped((result.get("target") or {}).get("skipped"), out)
    live_only = sorted(set(f for o in result.get("objects") or []
                           for f in (o.get("live_only") or {})))
    if live_only:
        out.write("\nnote: %s on VIFs are enforced live only (xapi ignores "
                  "ethtool-gro/lro on VIFs)\n" % ",".join(live_only))
    out.write("summary: %s\n" % json.dumps(result.get("summary"),
                                           sort_keys=True))


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


def _emit(result, as_json, printer):
    if as_json:
        sys.stdout.write(json.dumps(result, sort_keys=True, indent=1) + "\n")
    else:
        printer(result, sys.stdout)
    return exitcodes.PARTIAL if _partial(result) else exitcodes.OK


# -- verbs ---------------------------------------------------------------------------

def _status(ns):
    args = parse_target(ns.target) if ns.target else {}
    if ns.pool:
        args["pool"] = "true"
    result = call_plugin("status", args)

    def printer(res, out):
        out.write("host %s (%s)\n" % (res["host"]["name_label"],
                                      res["host"]["uuid"]))
        _print_devices(res["devices"], out)
        _print_skipped(res.get("skipped"), out)
        db = res.get("db")
        if db:
            out.write("\ndatabase: %d objects, %d with keys to write\n" % (
                db["objects"], db["pending"]))
        _print_hosts([h for h in res.get("hosts") or []
                      if h["uuid"] != res["host"]["uuid"]], out)
    code = _emit(result, ns.json, printer)
    noncompliant = [d for d in result["devices"] if not d.get("compliant")]
    return code or (exitcodes.PARTIAL if noncompliant else exitcodes.OK)


def _policy_get(ns):
    result = call_plugin("get_policy", {})

    def printer(res, out):
        rows = [[p["level"], p["kind"], p["name"] or p["uuid"], p["policy"]
                 + ("" if p["valid"] else "  (INVALID: %s)" % p["error"])]
                for p in res["policies"]]
        if rows:
            _table(rows, ["LEVEL", "KIND", "OBJECT", "POLICY"], out)
        else:
            out.write("no policy is set: netoffload changes nothing\n")
    return _emit(result, ns.json, printer)


def _policy_args(ns, text):
    args = {"level": ns.level, "kind": ns.kind, "policy": text}
    for key in ("vm", "network", "tag", "host"):
        if getattr(ns, key):
            args[key] = getattr(ns, key)
    return args


def _print_policy(res, out):
    out.write("%s %s %s: %s -> %s\n" % (
        res["level"], res["kind"], res["name"] or res["uuid"],
        res["previous"], res["policy"]))
    plan = res.get("plan") or {}
    for host in plan.get("hosts") or []:
        out.write("\nhost %s: %d object(s) with keys to write" % (
            host["name_label"], len(host["objects"])))
        if not host["ok"]:
            out.write(", devices unknown: NOT ANSWERING %s\n" % " ".join(
                host.get("error") or []))
            _print_objects(host["objects"], out)
            continue
        out.write(", %d device(s) to change\n" % len(host["devices"]))
        _print_objects(host["objects"], out)
        if host["devices"]:
            _print_devices(host["devices"], out)
    if plan.get("not_running"):
        out.write("\nVMs not running (their keys apply when they start):\n")
        _print_objects(plan["not_running"], out)
    _print_skipped(plan.get("skipped"), out)
    out.write("\n%s\n" % res.get("message", ""))


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
        if ns.json:
            sys.stderr.write(json.dumps(plan, sort_keys=True, indent=1) + "\n")
        else:
            _print_policy(plan, sys.stdout)
        if not _ask_yes("policy %s" % ns.level, "This stores a policy that "
                        "governs more than one VM; the watcher enforces it "
                        "within seconds."):
            return exitcodes.USAGE
        args["confirm"] = "yes"
    return _emit(call_plugin("set_policy", args), ns.json, _print_policy)


def _policy_set(ns):
    return _policy_change(ns, ns.policy)


def _policy_clear(ns):
    return _policy_change(ns, "")


def _ask_yes(what, sentence):
    """Ask for YES on the terminal; True to go on. With no terminal:
    ConfirmRequired (exit 2), naming --yes."""
    if not sys.stdin.isatty():
        raise errors.ConfirmRequired(
            "%s needs a confirmation: run it on a terminal to confirm, or "
            "pass --yes" % what)
    sys.stdout.write("\n%s Type YES to continue: " % sentence)
    sys.stdout.flush()
    answer = sys.stdin.readline().strip()
    if answer != "YES":
        sys.stdout.write("nothing was changed\n")
        return False
    return True


def _confirm_on_tty(fn, args, as_json):
    """Show the dry-run plan and ask; True to go on."""
    plan = call_plugin(fn, dict(args, dry_run="true"))
    if as_json:
        sys.stderr.write(json.dumps(plan, sort_keys=True, indent=1) + "\n")
    else:
        _print_result(plan, sys.stdout)
    if "target" in args:
        return _ask_yes("%s ALL" % fn, "This changes every VIF and PIF in "
                        "the pool.")
    return _ask_yes("%s --policy" % fn, "This stores a policy that governs "
                    "more than one VM.")


def _apply(ns):
    args = parse_target(ns.target)
    if ns.policy is not None:
        args["policy"] = ns.policy
    for flag, key in ((ns.pool, "pool"), (ns.force, "force"),
                      (ns.dry_run, "dry_run")):
        if flag:
            args[key] = "true"
    return _run_change("apply", args, ns)


def _revert(ns):
    args = parse_target(ns.target)
    if ns.pool:
        args["pool"] = "true"
    if ns.dry_run:
        args["dry_run"] = "true"
    return _run_change("revert", args, ns)


def _run_change(fn, args, ns):
    # ALL, or a policy stored for more than one VM (tag, network, pif):
    # the same YES as set_policy asks
    wide = "target" in args or ("policy" in args and "vm" not in args)
    if wide and not ns.dry_run:
        if not ns.yes and not _confirm_on_tty(fn, args, ns.json):
            return exitcodes.USAGE
        args["confirm"] = "yes"
    return _emit(call_plugin(fn, args), ns.json, _print_result)


def register(subparsers):
    target_help = "ALL, vm=NAME, tag=T, network=N or pif=DEV"
    p = subparsers.add_parser("status", help="live vs desired on this host "
                              "(--pool: every host)")
    p.add_argument("target", nargs="?", help=target_help)
    p.add_argument("--pool", action="store_true")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=_status)

    p = subparsers.add_parser("policy", help="get or set policies")
    verbs = p.add_subparsers(dest="policy_verb", metavar="get|set|clear")
    g = verbs.add_parser("get", help="every policy key in the pool")
    g.add_argument("--json", action="store_true")
    g.set_defaults(handler=_policy_get)
    for verb, handler, text in (
            ("set", _policy_set, "store a policy (shows its plan; wider "
             "than one VM: asks YES)"),
            ("clear", _policy_clear, "remove a policy (shows its plan; "
             "wider than one VM: asks YES)")):
        s = verbs.add_parser(verb, help=text)
        s.add_argument("level", choices=("pool", "host", "network", "tag",
                                         "vm"))
        s.add_argument("kind", choices=("vif", "pif"))
        if verb == "set":
            s.add_argument("policy", help="all-off, tx-off, none, or e.g. "
                           "tx=off,sg=off (an empty string clears)")
        group = s.add_mutually_exclusive_group()
        for key in ("vm", "network", "tag", "host"):
            group.add_argument("--" + key, metavar=key.upper())
        s.add_argument("--dry-run", action="store_true",
                       help="show the plan, store nothing")
        s.add_argument("--yes", action="store_true",
                       help="do not ask (pool, host, network, tag levels)")
        s.add_argument("--json", action="store_true")
        s.set_defaults(handler=handler)

    p = subparsers.add_parser("apply", help="bring keys and devices in line "
                              "with the policy")
    p.add_argument("target", help=target_help)
    p.add_argument("--policy", help="store this policy at the target's level "
                   "first")
    p.add_argument("--pool", action="store_true",
                   help="enforce live state on every host")
    p.add_argument("--dry-run", action="store_true")
    p.add_argument("--yes", action="store_true", help="do not ask for ALL")
    p.add_argument("--force", action="store_true",
                   help="also overwrite explicit ethtool-* keys (saved first)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=_apply)

    p = subparsers.add_parser("revert", help="restore saved keys and live "
                              "state")
    p.add_argument("target", help=target_help)
    p.add_argument("--pool", action="store_true")
    p.add_argument("--dry-run", action="store_true")
    p.add_argument("--yes", action="store_true")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=_revert)
