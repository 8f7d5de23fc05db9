#!/usr/bin/env python3
"""Bring 1,000 VIFs on 500 VMs into the `all-off` policy, two ways, against
the XAPI simulator with 1 ms added to every call:

- netoffload: one `host.call_plugin ... apply target=ALL policy=all-off
  confirm=yes` (the plugin runs as xapi runs it: a subprocess, in a
  throw-away network namespace so no real interface is touched);
- the original scripts: one `xe vif-param-set uuid=U
  other-config:ethtool-X=off` process per key (sim/xe.py: a process that
  logs in, makes the call, logs out). 6,000 processes take minutes, so by
  default a sample of VIFs is timed and the rest extrapolated linearly
  (BENCH_XE_SAMPLE=1000 runs them all).

Counts XAPI calls (simulator counters; the bench's host.call_plugin
itself excluded; the plugin's own logins are counted). Targets (issue 15
item 5): at most 7 XAPI calls per VIF (6 ethtool keys + 1 book write) plus
a constant, writes over at most 8 parallel sessions, wall time at most
1.5 s; revert ALL measured the same way; and at least 20x faster than the
`xe` loop. The floor of the same run: the calls per VIF times the VIFs
times the latency, divided by the sessions (8), is printed beside it.
Prints a table and writes bench/results/bench_apply.json.
"""
import json
import os
import platform
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import XenAPI  # noqa: E402

from tests.support.simpool import SimPool  # noqa: E402

VMS = int(os.environ.get("BENCH_VMS", "500"))
VIFS_PER_VM = 2
LATENCY_MS = float(os.environ.get("BENCH_LATENCY_MS", "1"))
XE_SAMPLE = int(os.environ.get("BENCH_XE_SAMPLE", "25"))
TARGET_SPEEDUP = 20.0
TARGET_CALLS_PER_VIF = 7
TARGET_WALL_S = 1.5
SESSIONS = 8
VIF_KEYS = ("rx", "tx", "sg", "tso", "ufo", "gso")
# The bench's own call; everything the plugin does (its extra sessions'
# logins and logouts included) is counted.
UNCOUNTED = ("host.call_plugin",)


def build(pool):
    sim = pool.sim
    host = pool.add_host("bench-host", netns=True)
    lan = sim.add_network("LAN")
    vifs = []
    for i in range(VMS):
        vm = sim.add_vm("vm %03d" % i)
        for devid in range(VIFS_PER_VM):
            vifs.append(sim.add_vif(vm, lan, devid))
    return host, vifs


def session_for(sim):
    session = XenAPI.Session("http://%s/" % sim.socket_path.replace("/", "_"),
                             transport=XenAPI.UDSTransport())
    session.login_with_password("root", "", "1.0", "bench")
    return session


def plugin_calls(sim):
    counts = sim.call_counts()
    return sum(n for method, n in counts.items() if method not in UNCOUNTED)


def run_netoffload(sim, host):
    session = session_for(sim)
    try:
        sim.reset_call_counts()
        start = time.perf_counter()
        text = session.xenapi.host.call_plugin(host, "netoffload", "apply", {
            "target": "ALL", "policy": "all-off", "confirm": "yes"})
        wall = time.perf_counter() - start
        calls = plugin_calls(sim)
        result = json.loads(text)
        sim.reset_call_counts()
        start = time.perf_counter()
        session.xenapi.host.call_plugin(host, "netoffload", "revert", {
            "target": "ALL", "confirm": "yes"})
        revert_wall = time.perf_counter() - start
        revert_calls = plugin_calls(sim)
    finally:
        session.xenapi.session.logout()
    return wall, calls, result, revert_wall, revert_calls


def run_floor(sim, calls):
    """The floor in this run: `calls` bare XAPI calls (VIF.get_other_config
    on one VIF) over SESSIONS sessions in parallel, from this process, and
    nothing else: what the same number of calls costs on this machine now."""
    import threading
    vif = sim.db.tables["VIF"] and sorted(sim.db.tables["VIF"])[0]
    sessions = [session_for(sim) for _ in range(SESSIONS)]
    share = [calls // SESSIONS + (1 if i < calls % SESSIONS else 0)
             for i in range(SESSIONS)]

    def work(session, count):
        for _ in range(count):
            session.xenapi.VIF.get_other_config(vif)
    threads = [threading.Thread(target=work, args=(s, n))
               for s, n in zip(sessions, share)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - start
    for session in sessions:
        session.xenapi.session.logout()
    return wall


def run_xe(sim, vif_uuids):
    env = dict(os.environ, XE_SIM_SOCKET=sim.socket_path,
               PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    sim.reset_call_counts()
    start = time.perf_counter()
    for uuid in vif_uuids:
        for key in VIF_KEYS:
            subprocess.run([sys.executable, "-m", "sim.xe", "vif-param-set",
                            "uuid=%s" % uuid,
                            "other-config:ethtool-%s=off" % key],
                           check=True, env=env, cwd=ROOT, timeout=60,
                           stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    return wall, sum(sim.call_counts().values())


def main():
    with SimPool(latency_ms=LATENCY_MS) as pool:
        sim = pool.sim
        host, vif_refs = build(pool)
        nvifs = len(vif_refs)
        wall, calls, result, revert_wall, revert_calls = run_netoffload(
            sim, host)
        changed = sum(1 for o in result["objects"] if o["status"] == "changed")
        keys_written = sum(len(o["written"]) for o in result["objects"])
        policy_writes = len(result["policy"])
        session = session_for(sim)
        uuids = [session.xenapi.VIF.get_uuid(r) for r in vif_refs]
        session.xenapi.session.logout()
        measured_floor = run_floor(sim, calls)
        sample = uuids[:min(XE_SAMPLE, nvifs)]
        xe_wall_sample, xe_calls_sample = run_xe(sim, sample)
        xe_wall = xe_wall_sample * nvifs / len(sample)
        xe_calls = xe_calls_sample * nvifs / len(sample)

    constant = calls - keys_written
    floor = keys_written * LATENCY_MS / 1000.0 / SESSIONS
    data = {
        "vms": VMS, "vifs": nvifs, "latency_ms": LATENCY_MS,
        "netoffload": {
            "wall_s": round(wall, 3), "xapi_calls": calls,
            "calls_per_vif": round(calls / float(nvifs), 3),
            "vifs_changed": changed,
            "keys_written": keys_written,
            "changed_keys_per_vif": round(keys_written / float(nvifs), 3),
            "policy_keys_written": policy_writes,
            "constant_calls": constant,
            "revert_wall_s": round(revert_wall, 3),
            "revert_xapi_calls": revert_calls,
            "revert_calls_per_vif": round(revert_calls / float(nvifs), 3),
            "floor_s": round(floor, 3),
            "wall_over_floor": round(wall / floor, 2) if floor else None,
            "measured_floor_s": round(measured_floor, 3),
            "wall_over_measured_floor": round(wall / measured_floor, 2),
        },
        "original_scripts": {
            "wall_s": round(xe_wall, 3), "xapi_calls": int(xe_calls),
            "calls_per_vif": round(xe_calls / nvifs, 3),
            "processes": nvifs * len(VIF_KEYS),
            "measured_vifs": len(sample),
            "extrapolated": len(sample) < nvifs,
        },
        "speedup": round(xe_wall / wall, 1),
        "targets": {"calls": "<= %d per VIF + constant"
                             % TARGET_CALLS_PER_VIF,
                    "wall_s": "<= %.1f" % TARGET_WALL_S,
                    "speedup": ">= %dx" % TARGET_SPEEDUP},
        "python": platform.python_version(),
    }
    data["meets_targets"] = bool(
        calls - constant <= TARGET_CALLS_PER_VIF * nvifs and constant <= 30
        and wall <= TARGET_WALL_S and data["speedup"] >= TARGET_SPEEDUP)

    rows = [
        ("", "netoffload", "xe per key"),
        ("wall time (s)", "%.2f" % wall, "%.1f%s" % (
            xe_wall, " (extrap. from %d VIFs)" % len(sample)
            if len(sample) < nvifs else "")),
        ("XAPI calls", str(calls), "%d" % xe_calls),
        ("calls per VIF", "%.2f" % (calls / float(nvifs)),
         "%.2f" % (xe_calls / nvifs)),
        ("changed keys per VIF", "%.2f" % (keys_written / float(nvifs)),
         "%d" % len(VIF_KEYS)),
        ("constant calls", str(constant), "-"),
        ("revert ALL (s / calls)", "%.2f / %d" % (revert_wall, revert_calls),
         "(no undo)"),
        ("latency floor (s), wall/it", "%.2f, %.2fx" % (floor, wall / floor)
         if floor else "-", "-"),
        ("same calls bare (s), wall/it", "%.2f, %.2fx" % (
            measured_floor, wall / measured_floor), "-"),
    ]
    print("bench_apply: %d VMs x %d VIFs, all-off, %.0f ms per XAPI call" % (
        VMS, VIFS_PER_VM, LATENCY_MS))
    for row in rows:
        print("  %-24s %-18s %s" % row)
    print("  speedup: %.1fx (target >= %dx); meets targets: %s" % (
        data["speedup"], TARGET_SPEEDUP, data["meets_targets"]))
    os.makedirs(os.path.join(ROOT, "bench", "results"), exist_ok=True)
    with open(os.path.join(ROOT, "bench", "results", "bench_apply.json"),
              "w") as handle:
        json.dump(data, handle, indent=1, sort_keys=True)
        handle.write("\n")
    return 0 if data["meets_targets"] else 1


if __name__ == "__main__":
    sys.exit(main())
