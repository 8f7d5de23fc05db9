"""Local verbs on this host's devices, straight through the engine:

  netoffload show [DEV...] [--json]
  netoffload set DEV... POLICY [--dry-run] [--json]
  netoffload restore (DEV... | --all) [--json]

`set` holds a device (the watcher leaves it alone); `restore` undoes
exactly what `set` did, ends the hold and brings the device back into the
cached policy at once.

Exit codes: 0 ok, 1 some device failed, 2 bad usage (bad name or policy:
then nothing is changed at all).
"""
import json
import sys

from netoffload import exitcodes
from netoffload.agents import cached
from netoffload.cli.output import add_json, examples
from netoffload.engine import ethtool
from netoffload.engine.features import FEATURES
from netoffload.engine.livestate import LiveStateStore
from netoffload.engine.policy import parse_policy
from netoffload.errors import BadArgument, NetoffloadError, NotFound


def _verb(subparsers, name, handler, summary, epilog):
    """A verb: its one-line help, the handler's docstring as its
    description, examples, and --json."""
    parser = subparsers.add_parser(name, help=summary,
                                   description=handler.__doc__, epilog=epilog)
    add_json(parser)
    parser.set_defaults(handler=handler)
    return parser


def register(subparsers):
    show = _verb(subparsers, "show", cmd_show,
                 "show the offload features of local devices",
                 examples("netoffload show", "netoffload show eth0 --json"))
    show.add_argument("devices", nargs="*", metavar="DEV",
                      help="devices to show (default: every device)")

    setp = _verb(subparsers, "set", cmd_set,
                 "apply a policy to local devices now",
                 examples("netoffload set eth1 tx=off,sg=off --dry-run",
                          "netoffload set eth1 tx=off,sg=off",
                          "netoffload restore eth1"))
    setp.add_argument("devices", nargs="+", metavar="DEV",
                      help="local network devices")
    setp.add_argument("policy", metavar="POLICY",
                      help="all-off, tx-off, none, or a list such as "
                      "tx=off,sg=off")
    setp.add_argument("--dry-run", action="store_true",
                      help="show what would change, change nothing")

    restore = _verb(subparsers, "restore", cmd_restore,
                    "undo what `set` did and end the hold",
                    examples("netoffload restore eth1",
                             "netoffload restore --all"))
    restore.add_argument("devices", nargs="*", metavar="DEV",
                         help="devices `set` holds")
    restore.add_argument("--all", action="store_true",
                         help="every device held by `set`")


def _cell(state):
    if state.active is None:
        return "-"
    return ("on" if state.active else "off") + ("*" if state.fixed else "")


def format_table(device_features):
    """A device x feature table as text."""
    rows = [["DEVICE"] + list(FEATURES)]
    for dev in device_features:
        rows.append([dev.device] + [_cell(dev.features[f]) for f in FEATURES])
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row))
             .rstrip() for row in rows]
    lines.append("(* fixed: the driver does not allow a change; "
                 "- not on this kernel)")
    return "\n".join(lines) + "\n"


def _print_json(data):
    sys.stdout.write(json.dumps(data, indent=2, sort_keys=True) + "\n")


def _check_devices(devices, present=False):
    """Refuse bad names (and, with `present`, devices this host does not
    have) before anything is read or changed: exit 2."""
    for dev in devices:
        ethtool.check_device(dev)
    if len(set(devices)) != len(devices):
        raise BadArgument("a device is named more than once")
    if present and devices:
        have = set(ethtool.list_devices())
        missing = [dev for dev in devices if dev not in have]
        if missing:
            raise NotFound("no network device %s on this host" %
                           ", ".join(missing))


def cmd_show(args):
    """Show the eight offload features of local devices (all devices by
    default). '*' marks a fixed feature, '-' one this kernel does not
    have."""
    _check_devices(args.devices, present=True)
    names = args.devices or ethtool.list_devices()
    found = []
    errors = []
    with ethtool.Reader() as reader:
        for name in names:
            try:
                found.append(reader.read(name))
            except NetoffloadError as err:
                errors.append({"device": name, "code": err.code,
                               "message": err.message})
    if args.json:
        _print_json({"devices": [d.to_json() for d in found],
                     "errors": errors})
    else:
        sys.stdout.write(format_table(found))
        for err in errors:
            sys.stderr.write("netoffload: %s: %s\n" % (err["device"],
                                                       err["message"]))
    return exitcodes.PARTIAL if errors else exitcodes.OK


def describe(result):
    """One line per device: what happened to each feature."""
    parts = []
    for short in FEATURES:
        outcome = result.features.get(short)
        if outcome is None:
            continue
        if outcome in ("changed", "forced"):
            parts.append("%s %s->%s" % (short, result.before.get(short),
                                        result.after.get(short)) +
                         (" (forced)" if outcome == "forced" else ""))
        elif outcome == "would-change":
            parts.append("%s %s->%s (dry run)" % (
                short, result.before.get(short),
                "off" if result.before.get(short) == "on" else "on"))
        else:
            parts.append("%s %s" % (short, outcome))
    line = "%s: %s" % (result.device, ", ".join(parts) or "nothing to do")
    for err in result.errors + result.notes:
        line += "\n  %s" % err
    return line + "\n"


def _run_each(devices, action, json_out):
    results = []
    errors = []
    for dev in devices:
        try:
            results.append(action(dev))
        except NetoffloadError as err:
            errors.append({"device": dev, "code": err.code,
                           "message": err.message})
    if json_out:
        _print_json({"results": [r.to_json() for r in results],
                     "errors": errors})
    else:
        for result in results:
            sys.stdout.write(describe(result))
        for err in errors:
            sys.stderr.write("netoffload: %s: %s\n" % (err["device"],
                                                       err["message"]))
    failed = errors or [r for r in results if not r.ok]
    return exitcodes.PARTIAL if failed else exitcodes.OK


def cmd_set(args):
    """Apply POLICY (all-off, tx-off, none, or a list like tx=off,sg=off)
    to the devices with ethtool and hold them: the watcher leaves a held
    device alone until `restore`, which puts back what was there before."""
    devices = args.devices
    policy = parse_policy(args.policy)  # refuse bad input before anything
    _check_devices(devices, present=True)
    if args.dry_run:
        return _run_each(
            devices, lambda dev: ethtool.plan_features(dev, policy.features),
            args.json)
    store = LiveStateStore()
    return _run_each(devices, lambda dev: store.hold(dev, policy.features),
                     args.json)


def _release(store, dev):
    result = store.release(dev)
    if result is None:
        return ethtool.ApplyResult(dev, {}, {}, {}, notes=[
            "not held by `netoffload set`: nothing to restore"])
    result.notes.append(cached.reenforce(dev))
    return result


def cmd_restore(args):
    """Undo exactly what `set` did to the devices (the state from just
    before the first `set`), end the hold, and bring each device back into
    the policy of the local cache at once."""
    _check_devices(args.devices)
    if args.all == bool(args.devices):
        raise BadArgument("name the devices to restore, or give --all")
    store = LiveStateStore()
    devices = args.devices or sorted(store.held_devices())
    return _run_each(devices, lambda dev: _release(store, dev), args.json)
