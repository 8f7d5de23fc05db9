"""doctor: one report for this host, with advice and the reason for each item.

Sections: offload vs policy (through XAPI; if XAPI cannot be reached the
report says so and goes on), pending replugs, kernel checksum counters,
devices with errors, dom0 vCPUs and scheduler weight, netback queues.
"""
import os
import shlex
import time

from netoffload import runner
from netoffload.diagnostics import counters
from netoffload.engine import ethtool
from netoffload.engine.devices import KIND_VIF
from netoffload.engine.features import VIF_XAPI_FEATURES
from netoffload.engine.livestate import LiveStateStore
from netoffload.errors import DeviceError, NetoffloadError
from netoffload.log import get_logger
from netoffload.pool import enforce, keys, planning, targeting, xapi
from netoffload.pool.precedence import all_policies

NETBACK_MAX_QUEUES = "/sys/module/xen_netback/parameters/max_queues"
DEFAULT_CREDIT_WEIGHT = 256

COST_TX_OFF = ("tx off also forces tso (and gso with sg) off, so the host or "
               "guest segments and checksums every packet in software")
COST_BLANKET = ("disabling every offload everywhere lowers throughput and "
                "raises CPU use for all guests, not only the one with a "
                "problem")
CRR_NOTE = ("a gap in small-packet or connection rate (TCP_CRR) under Xen is "
            "per-packet hypervisor and netback cost; offload settings do not "
            "change it (measure with `netoffload bench`)")


def parse_sched_table(text):
    """`xl sched-credit[2] -d 0` output -> [{column: value}].

    xl prints `%-33s %4s %6s %4s` (Name ID Weight Cap); the name may hold
    spaces, so numeric columns are taken from the right.
    """
    rows = []
    header = None
    for line in text.splitlines():
        fields = line.split()
        if not fields:
            continue
        if fields[0] == "Name" and "Weight" in fields:
            header = fields
            continue
        if header is None or len(fields) < len(header):
            continue
        numbers = fields[-(len(header) - 1):]
        if not all(n.lstrip("-").isdigit() for n in numbers):
            continue
        row = {"Name": " ".join(fields[:len(fields) - len(numbers)])}  # type: dict
        for name, value in zip(header[1:], numbers):
            row[name] = int(value)
        rows.append(row)
    return rows


def dom0_scheduler():
    """dom0's scheduler weight and cap, or why they are unavailable."""
    reasons = []
    for verb in ("sched-credit", "sched-credit2"):
        try:
            done = runner.run(["xl", verb, "-d", "0"], timeout=10)
        except DeviceError as err:
            return {"available": False, "reason": err.message}
        if done.returncode == 0:
            for row in parse_sched_table(done.stdout):
                if row.get("ID") == 0:
                    return {"available": True, "scheduler": verb[6:],
                            "weight": row.get("Weight"), "cap": row.get("Cap")}
        reasons.append("xl %s: %s" % (verb, (done.stderr.strip() or
                                             "no Domain-0 row")[:200]))
    return {"available": False, "reason": "; ".join(reasons)}


def netback_queues(path=NETBACK_MAX_QUEUES):
    try:
        with open(path) as handle:
            return {"available": True, "max_queues": int(handle.read().strip())}
    except (IOError, OSError):
        return {"available": False,
                "reason": "xen_netback is not loaded (%s is absent)" % path}
    except ValueError as err:
        return {"available": False, "reason": "unreadable %s: %s" % (path, err)}


def _open_session():
    return xapi.open_session(), xapi.close_session


def policy_section(session=None):
    """Offload vs policy for this host's devices, through XAPI."""
    close = None
    try:
        if session is None:
            session, close = _open_session()
        client = xapi.Xapi(session)
        records = client.snapshot()
        host_ref = client.local_host_ref()
        selection = targeting.select(records, ("all", "ALL"), host_ref)
        plans = planning.plan_db(records, selection.refs)
        # the store lets doctor see features a narrowed policy still owes back
        devices = enforce.device_status(records, host_ref, plans=plans,
                                          store=LiveStateStore())
        pending = _pending_replugs(records, host_ref)
        invalid = [p.to_json() for p in all_policies(records)
                   if not p.valid]
    except NetoffloadError as err:
        return {"available": False,
                "reason": "XAPI unreachable or failing: %s" % err.message}
    except (IOError, OSError) as err:
        return {"available": False, "reason": "XAPI unreachable: %s" % err}
    finally:
        if close is not None:
            close(session)
    entries = [(d, d.to_json()) for d in devices if d.device is not None]
    # covered: a policy decides something here, or an INVALID one would
    # (status counts that device as not compliant; so does the doctor)
    covered = [(d, e) for d, e in entries
               if d.desired or e.get("policy") == "INVALID" or
               d.pending_restore]
    return {
        "available": True,
        "devices": len(entries),
        "covered": len(covered),
        "non_compliant": [{"device": d.device, "kind": d.kind,
                           "differs": list(d.differs),
                           "desired": d.desired,
                           "live": dict(d.live),
                           "pending_restore": dict(d.pending_restore),
                           "policy_error": e.get("policy_error")}
                          for d, e in entries if not d.compliant],
        "db_out_of_date": sorted(d.device for d, _ in covered
                                 if d.db_compliant is False),
        "pending_replugs": pending,
        "invalid_policies": invalid,
        # docs/policy.md: present once the pool side reports them
        "overrides": [{"device": d.device, "overrides": e["overrides"]}
                      for d, e in entries if e.get("overrides")],
        "drift": [{"device": d.device, "drift": e["drift"]}
                  for d, e in entries if e.get("drift")],
    }


def _pending_replugs(records, host_ref):
    """VIF devices whose ethtool-* keys in the database differ from live.

    xapi applies those keys only when the VIF is plugged (VM start), so a
    difference means the next replug will change the live state.
    """
    present = set(ethtool.list_devices())
    result = []
    for local in enforce.local_devices(records, host_ref):
        if local.kind != KIND_VIF or local.device not in present:
            continue
        config = records.vifs[local.ref].get("other_config") or {}
        # xapi's exact rule: "TRUE" or " on" is ignored at plug, not "on"
        db = dict((f, keys.xapi_value(config.get(keys.ethtool_key(f))))
                  for f in VIF_XAPI_FEATURES if keys.ethtool_key(f) in config)
        db = dict((f, v) for f, v in db.items() if v)
        if not db:
            continue
        try:
            live = ethtool.read_features(local.device).as_onoff()
        except DeviceError:
            continue
        differs = sorted(f for f, v in db.items() if f in live and live[f] != v)
        if differs:
            enforced = local.resolution.live_features
            result.append({"device": local.device, "vm": local.vm,
                           "database": db, "differs": differs,
                           # not the policy's: xapi's business at plug
                           "explicit": [f for f in differs
                                        if f not in enforced]})
    return result


def policy_set_command(entry):
    """The `netoffload policy set` line that replaces the policy of `entry`
    (a get_policy item) with POLICY."""
    words = ["netoffload", "policy", "set", entry["level"], entry["kind"],
             "POLICY"]
    if entry["level"] != "pool":
        words += ["--" + entry["level"],
                  entry["name"] if entry["level"] == "tag" else entry["uuid"]]
    return " ".join(shlex.quote(word) for word in words)


def _when(since):
    if not isinstance(since, (int, float)):
        return "an unknown time"
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(since))


def _advice(report):
    items = []
    policy = report["policy"]
    if not policy.get("available"):
        items.append({
            "item": "policy",
            "advice": "policy compliance was not checked",
            "reason": policy.get("reason")})
    else:
        for device in policy["non_compliant"]:
            if device.get("policy_error"):
                continue  # the invalid policy's own item says what to do
            what = []
            if device["differs"]:
                what.append("live %s differ from the policy"
                            % ", ".join(device["differs"]))
            if device.get("pending_restore"):
                what.append("%s still to be restored (the policy no longer "
                            "sets them)" % ", ".join(
                                sorted(device["pending_restore"])))
            items.append({
                "item": "non-compliant device %s" % device["device"],
                "advice": "the watcher re-enforces a drifted device within "
                          "seconds (held ones excepted); if it stays out of "
                          "policy, check `systemctl status netoffload-watch` "
                          "and run `netoffload apply TARGET` for its target "
                          "(live, no VM restart needed)",
                "reason": "; ".join(what) or "not compliant"})
        for entry in policy.get("invalid_policies", []):
            items.append({
                "item": "invalid policy %s on %s %s" % (
                    entry["key"], entry["level"], entry["name"] or entry["uuid"]),
                "advice": "fix it with `%s` (which checks POLICY; an empty "
                          "one clears it); until then the objects it governs "
                          "are left as they are" % policy_set_command(entry),
                "reason": entry.get("error") or "%r does not parse"
                          % entry["policy"]})
        out_of_policy = set(d["device"] for d in policy["non_compliant"])
        for device in policy["pending_replugs"]:
            explicit = device.get("explicit", [])
            if explicit:
                advice = ("the next VM start applies the database keys %s, "
                          "which were not set by netoffload (it leaves them "
                          "to xapi); nothing to do if that is intended" %
                          ", ".join("ethtool-%s=%s" % (f, device["database"][
                              f]) for f in explicit))
            elif device["device"] in out_of_policy:
                advice = ("run `netoffload apply TARGET` for its target: it "
                          "enforces the policy live now, so the next VM "
                          "start changes nothing")
            else:
                advice = "nothing to do: the next VM start applies the same " \
                    "values"
            items.append({
                "item": "pending replug %s" % device["device"],
                "advice": advice,
                "reason": "database ethtool keys (%s) differ from the live "
                          "device" % ", ".join(device["differs"])})
        for device in policy.get("drift", []):
            drift = device["drift"] or {}
            items.append({
                "item": "drift %s" % device["device"],
                "advice": "the watcher puts it back; if it keeps drifting, "
                          "look for a script or tool running `ethtool -K` "
                          "on it",
                "reason": "live %s differ from the policy since %s" % (
                    ", ".join("%s=%s" % kv for kv in sorted(
                        (drift.get("features") or {}).items())),
                    _when(drift.get("since")))})
        if policy.get("overrides"):
            items.append({
                "item": "explicit settings",
                "advice": "`netoffload status` shows each one and why it "
                          "beats the policy; `netoffload apply TARGET "
                          "--force` overrides them (saved first)",
                "reason": "%d device(s) have explicit ethtool settings "
                          "that beat a policy (%s)" % (
                              len(policy["overrides"]), ", ".join(
                                  d["device"] for d in policy["overrides"]))})
        if policy["db_out_of_date"]:
            items.append({
                "item": "database keys",
                "advice": "the watcher on the pool master writes them "
                          "within seconds; if they stay out of date, check "
                          "`systemctl status netoffload-watch` on the master "
                          "and run `netoffload apply TARGET`",
                "reason": "%d device(s) have keys the policy does not match"
                          % len(policy["db_out_of_date"])})
    dropped = dict((k, v["value"]) for k, v in report["checksum_counters"].items()
                   if v.get("value"))
    if dropped:
        items.append({
            "item": "checksum drops",
            "advice": "run `netoffload check-checksums DEV` on the suspected "
                      "device to see which received packets are bad; if a "
                      "single guest sends them, set tx-off on that guest's "
                      "VIFs only (`netoffload policy set vm vif tx-off --vm "
                      "NAME`)",
            "reason": "the kernel has dropped packets for bad checksums since "
                      "boot (%s)" % ", ".join("%s=%d" % kv for kv in
                                               sorted(dropped.items())),
            "cost": COST_TX_OFF})
    else:
        items.append({
            "item": "checksum drops",
            "advice": "do not disable offload to fix checksums",
            "reason": "the kernel has dropped no packet for a bad checksum; "
                      "tcpdump's 'incorrect' on outgoing packets is expected "
                      "with tx offload on",
            "cost": COST_BLANKET})
    for device in report["devices_with_errors"]:
        items.append({
            "item": "device errors %s" % device["device"],
            "advice": "check the NIC, cable, switch port and driver (offload "
                      "does not cause link-level errors)",
            "reason": "non-zero %s" % ", ".join(device["nonzero"])})
    sched = report["dom0"]["scheduler"]
    if sched.get("available") and sched.get("weight") is not None \
            and sched["weight"] <= DEFAULT_CREDIT_WEIGHT \
            and report["dom0"]["vcpus"] is not None:
        items.append({
            "item": "dom0 scheduling",
            "advice": "if many guests push small packets, consider a higher "
                      "dom0 weight (xl sched-credit -d 0 -w 512) or more dom0 "
                      "vCPUs",
            "reason": "dom0 (weight %d, %d vCPUs) does netback work for every "
                      "guest; %s" % (sched["weight"], report["dom0"]["vcpus"],
                                     CRR_NOTE)})
    queues = report["dom0"]["netback"]
    if queues.get("available") and report["dom0"]["vcpus"] and \
            queues["max_queues"] < report["dom0"]["vcpus"]:
        items.append({
            "item": "netback queues",
            "advice": "multi-queue guests can use up to max_queues per VIF; "
                      "raising it to the dom0 vCPU count spreads the load",
            "reason": "max_queues=%d is below dom0's %d vCPUs"
                      % (queues["max_queues"], report["dom0"]["vcpus"])})
    items.append({"item": "connection rate", "advice": "do not expect offload "
                  "changes to close a TCP_CRR gap", "reason": CRR_NOTE})
    return items


def doctor(session=None):
    """The host report (see the module docstring)."""
    snapshot = counters.counters(None, 0)
    with_errors = [{"device": d["device"], "kind": d["kind"],
                    "nonzero": d["nonzero"]}
                   for d in snapshot["devices"] if d["nonzero"]]
    report = {
        "policy": policy_section(session),
        "checksum_counters": snapshot["kernel"],
        "devices_with_errors": with_errors,
        "dom0": {"vcpus": os.cpu_count(), "scheduler": dom0_scheduler(),
                 "netback": netback_queues()},
        "notes": snapshot["notes"] + [CRR_NOTE],
    }
    report["advice"] = _advice(report)
    get_logger().info("doctor: %d advice item(s)", len(report["advice"]))
    return report
