"""CLI verbs: check-checksums, counters, doctor.

These diagnostics are host-local (they read this host's devices, kernel
counters and tcpdump), so the CLI calls the library directly rather than
going through the plugin; to diagnose another host, call the plugin there
(`xe host-call-plugin host-uuid=... plugin=netoffload fn=doctor`). doctor
opens its own local XAPI session for the policy section and carries on
without it when XAPI is unreachable.
"""
import json
import sys

from netoffload import exitcodes
from netoffload.cli import render
from netoffload.cli.output import add_json, examples
from netoffload.plugin import diagnostics


def _string_args(pairs):
    return dict((k, str(v)) for k, v in pairs if v is not None)


def _print_json(result):
    sys.stdout.write(json.dumps(result, indent=2, sort_keys=True) + "\n")


def _check_checksums(opts):
    result = diagnostics.check_checksums(None, _string_args([
        ("device", opts.device), ("seconds", opts.seconds),
        ("packets", opts.packets)]))
    if opts.json:
        _print_json(result)
    else:
        out = sys.stdout
        out.write("device %s (%s): %d packet(s) captured in %.1fs, %d flagged "
                  "by tcpdump\n" % (result["device"], result["kind"],
                                    result["packets"]["captured"],
                                    result["elapsed"],
                                    result["packets"]["flagged"]))
        for name, count in sorted(result["classes"].items()):
            out.write("  %-18s %d\n" % (name, count))
        out.write("  kernel checksum drops during capture: %s\n" % ", ".join(
            "%s +%d" % kv for kv in sorted(
                result["kernel_counters_delta"].items())))
        offload = result["offload"]
        out.write("  live offload: %s\n" % (offload.get("error") or " ".join(
            "%s=%s" % kv for kv in sorted(offload.items()))))
        for example in result["examples"]:
            out.write("  [%s] %s\n" % (example["class"], example["text"].replace(
                "\n", "\n      ")))
        out.write("verdict: %s\n" % result["verdict"])
    return exitcodes.PARTIAL if result["status"] == "corruption" else exitcodes.OK


def _counters(opts):
    result = diagnostics.counters(None, _string_args([
        ("device", opts.device), ("seconds", opts.seconds)]))
    if opts.json:
        _print_json(result)
        return exitcodes.OK
    out = sys.stdout
    window = result["seconds"]
    out.write("%-16s %-5s %s\n" % ("DEVICE", "KIND", "ERROR COUNTERS (%s)" % (
        "change over %ds" % window if window else "non-zero since boot")))
    for device in result["devices"]:
        values = device["delta"] if window else dict(
            (k, v) for k, v in list(device["link"].items()) +
            list(device["driver"].items()) if v)
        out.write("%-16s %-5s %s\n" % (device["device"], device["kind"], ", ".join(
            "%s=%d" % kv for kv in sorted(values.items())) or "-"))
    out.write("kernel checksum drops: %s\n" % ", ".join(
        "%s=%s%s" % (name, item["value"], " (+%d)" % item["delta"]
                     if "delta" in item else "")
        for name, item in sorted(result["kernel"].items())))
    for note in result["notes"]:
        out.write("note: %s\n" % note)
    return exitcodes.OK


def _doctor(opts):
    result = diagnostics.doctor(None, {})
    if opts.json:
        _print_json(result)
        return exitcodes.OK
    out = sys.stdout
    policy = result["policy"]
    if policy.get("available"):
        render.wrap("policy: %d device(s), %d covered, %d non-compliant, %d "
                    "pending replug(s), %d invalid policies, %d with explicit "
                    "settings, %d drifting" % (
                      policy["devices"], policy["covered"],
                      len(policy["non_compliant"]),
                      len(policy["pending_replugs"]),
                      len(policy.get("invalid_policies") or []),
                      len(policy.get("overrides") or []),
                      len(policy.get("drift") or [])), out)
    else:
        out.write("policy: not checked: %s\n" % policy.get("reason"))
    dom0 = result["dom0"]
    sched = dom0["scheduler"]
    out.write("dom0: %s vCPUs, scheduler %s, netback %s\n" % (
        dom0["vcpus"],
        "weight %s cap %s" % (sched["weight"], sched["cap"])
        if sched.get("available") else "unavailable (%s)" % sched["reason"],
        "max_queues %d" % dom0["netback"]["max_queues"]
        if dom0["netback"].get("available") else "unavailable"))
    for item in result["advice"]:
        render.wrap("* %s: %s" % (item["item"], item["advice"]), out)
        render.wrap("    why: %s" % item["reason"], out, indent="    ")
        if item.get("cost"):
            render.wrap("    cost: %s" % item["cost"], out, indent="    ")
    return exitcodes.OK


def register(subparsers):
    parser = subparsers.add_parser(
        "check-checksums", help="capture on a device and tell whether "
        "tcpdump's 'incorrect' checksums are real corruption",
        description="Run bounded tcpdump captures on DEV, sort every packet "
        "tcpdump flags 'incorrect' (egress_local, egress_forwarded, "
        "guest_to_dom0, ingress), sample the kernel's checksum-drop "
        "counters before and after, and give a verdict. Exit 1 when the "
        "kernel dropped packets for bad checksums.",
        epilog=examples("netoffload check-checksums vif1.0 --seconds 5",
                        "netoffload check-checksums eth0 --json"))
    parser.add_argument("device", metavar="DEV", help="the device to watch")
    parser.add_argument("--seconds", type=int, default=None,
                        help="capture at most this long (1-60, default 10)")
    parser.add_argument("--packets", type=int, default=None,
                        help="packet cap per direction (default 200)")
    add_json(parser)
    parser.set_defaults(handler=_check_checksums)

    parser = subparsers.add_parser(
        "counters", help="device error counters and kernel checksum drops",
        description="Link, driver and kernel checksum-drop counters: non-zero "
        "ones since boot, or (--seconds N) the change over N seconds.",
        epilog=examples("netoffload counters", "netoffload counters vif1.0 "
                        "--seconds 2"))
    parser.add_argument("device", metavar="DEV", nargs="?",
                        help="one device (default: every device)")
    parser.add_argument("--seconds", type=int, default=None,
                        help="report the change over this window (0-60; "
                        "0 = snapshot)")
    add_json(parser)
    parser.set_defaults(handler=_counters)

    parser = subparsers.add_parser(
        "doctor", help="one report for this host, with advice",
        description="Offload vs policy on this host (through XAPI), pending "
        "replugs, overrides and drift, kernel checksum counters, devices "
        "with errors, dom0 vCPUs, scheduler and netback queues; each piece "
        "of advice with its reason and, where it turns something off, its "
        "cost.", epilog=examples("netoffload doctor", "netoffload doctor --json"))
    add_json(parser)
    parser.set_defaults(handler=_doctor)
