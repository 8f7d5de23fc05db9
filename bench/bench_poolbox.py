#!/usr/bin/env python3
"""The pool in a box: how long building, tearing down and the story take.

1. PoolBox build (namespaces, devices, simulator populated) and close
   (everything removed), median of ROUNDS, for 2 and 3 hosts;
2. the whole demo story (`sim.demo.run`), per step, for 3 hosts;
3. scale (issue 15 item 6): a 2-host and a 64-host box (XenServer's pool
   limit; the demo's guests on the first hosts) built in the same run, and
   the wall time of `netoffload status ALL --pool` (median of SCALE_ROUNDS)
   and `apply ALL --pool --yes` with a pool VIF and PIF policy set, run on
   the master as an admin would; the ratio 64/2 (target at most 3x) and
   the peak RSS of any child process (the CLI, or a plugin: the fan-out
   runs in the master's plugin process).

Targets: the end-to-end test (and `make demo`) under ~60 s. Needs root.
Prints a table and writes bench/results/bench_poolbox.json.
"""
import json
import os
import platform
import resource
import statistics
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from sim import demo, poolbox  # noqa: E402

ROUNDS = int(os.environ.get("BENCH_POOLBOX_ROUNDS", "3"))
SCALE_ROUNDS = int(os.environ.get("BENCH_POOLBOX_SCALE_ROUNDS", "3"))
SCALE_HOSTS = (2, int(os.environ.get("BENCH_POOLBOX_MAX_HOSTS",
                                     str(poolbox.MAX_HOSTS))))


def timed_cli(host, *args):
    started = time.time()
    proc = host.cli(*args, timeout=900)
    seconds = time.time() - started
    if proc.returncode not in (0, 1):
        raise SystemExit("netoffload %s failed (%d): %s" % (
            " ".join(args), proc.returncode, proc.stderr[-2000:]))
    return seconds, proc


def scale(hosts):
    """Build a box of `hosts`, time the pool-wide verbs on its master."""
    box = poolbox.PoolBox(hosts=hosts, vm_specs=demo.VM_SPECS,
                          pif_other_config=demo.PIF_OTHER_CONFIG)
    started = time.time()
    try:
        box.start()
        built = time.time() - started
        master = box.master
        statuses = []
        for _ in range(SCALE_ROUNDS):
            seconds, proc = timed_cli(master, "status", "ALL", "--pool",
                                      "--json")
            statuses.append(seconds)
        answered = len(json.loads(proc.stdout).get("hosts", []))
        timed_cli(master, "policy", "set", "pool", "vif", "tx-off")
        timed_cli(master, "policy", "set", "pool", "pif", "gro=off")
        applied, proc = timed_cli(master, "apply", "ALL", "--pool", "--yes",
                                  "--json")
        reverted, _ = timed_cli(master, "revert", "ALL", "--pool", "--yes",
                                "--json")
        devices = sum(len(h.devices()) for h in box.hosts)
    finally:
        box.close()
    return {"hosts": hosts, "devices": devices, "build_s": round(built, 2),
            "status_pool_s_median": round(statistics.median(statuses), 3),
            "status_hosts_answered": answered,
            "apply_all_pool_s": round(applied, 3),
            "revert_all_pool_s": round(reverted, 3)}


def build_and_close(hosts):
    box = poolbox.PoolBox(hosts=hosts, vm_specs=demo.VM_SPECS,
                          pif_other_config=demo.PIF_OTHER_CONFIG)
    started = time.time()
    try:
        box.start()
        built = time.time() - started
        devices = sum(len(h.devices()) for h in box.hosts)
    finally:
        closing = time.time()
        box.close()
    left = box.namespaces()
    return built, time.time() - closing, devices, left


def main():
    if os.geteuid() != 0:
        sys.stderr.write("bench_poolbox: needs root\n")
        return 2
    results = {"python": platform.python_version(),
               "kernel": platform.release(), "rounds": ROUNDS, "build": {}}
    rows = []
    for hosts in (2, 3):
        builds, closes = [], []
        for _ in range(ROUNDS):
            built, closed, devices, left = build_and_close(hosts)
            if left:
                raise SystemExit("namespaces left behind: %s" % left)
            builds.append(built)
            closes.append(closed)
        entry = {"hosts": hosts, "devices": devices,
                 "build_s_median": round(statistics.median(builds), 3),
                 "close_s_median": round(statistics.median(closes), 3)}
        results["build"][str(hosts)] = entry
        rows.append(("build %d hosts (%d devices)" % (hosts, devices),
                     "%.2f s" % entry["build_s_median"]))
        rows.append(("close %d hosts" % hosts,
                     "%.2f s" % entry["close_s_median"]))
    results["scale"] = {"loadavg_before": list(os.getloadavg())}
    for hosts in SCALE_HOSTS:
        entry = scale(hosts)
        results["scale"][str(hosts)] = entry
        rows.append(("scale %d hosts (%d devices): build" % (
            hosts, entry["devices"]), "%.2f s" % entry["build_s"]))
        rows.append(("scale %d hosts: status ALL --pool (%d answered)" % (
            hosts, entry["status_hosts_answered"]),
            "%.2f s" % entry["status_pool_s_median"]))
        rows.append(("scale %d hosts: apply ALL --pool" % hosts,
                     "%.2f s" % entry["apply_all_pool_s"]))
        rows.append(("scale %d hosts: revert ALL --pool" % hosts,
                     "%.2f s" % entry["revert_all_pool_s"]))
    small, big = (results["scale"][str(h)] for h in SCALE_HOSTS)
    results["scale"]["ratio_status"] = round(
        big["status_pool_s_median"] / small["status_pool_s_median"], 2)
    results["scale"]["ratio_apply"] = round(
        big["apply_all_pool_s"] / small["apply_all_pool_s"], 2)
    results["scale"]["loadavg_after"] = list(os.getloadavg())
    # ru_maxrss of waited-for children: KiB on Linux
    results["scale"]["peak_child_rss_mib"] = round(resource.getrusage(
        resource.RUSAGE_CHILDREN).ru_maxrss / 1024.0, 1)
    rows.append(("scale ratio %d/%d hosts: status, apply (target <= 3x)" %
                 (SCALE_HOSTS[1], SCALE_HOSTS[0]), "%.2fx, %.2fx" % (
                     results["scale"]["ratio_status"],
                     results["scale"]["ratio_apply"])))
    rows.append(("peak RSS of a child (CLI or plugin)",
                 "%.1f MiB" % results["scale"]["peak_child_rss_mib"]))
    ok, record = demo.run(hosts=3)
    results["story"] = {"ok": ok, "seconds": record["seconds"],
                        "steps": dict((s["key"], s["seconds"])
                                      for s in record["steps"]),
                        "checks": sum(len(s["checks"])
                                      for s in record["steps"])}
    for step in record["steps"]:
        rows.append(("story: %s" % step["key"], "%.2f s" % step["seconds"]))
    rows.append(("story total (%s, %d checks)" % (
        "PASS" if ok else "FAIL", results["story"]["checks"]),
        "%.2f s" % record["seconds"]))
    width = max(len(r[0]) for r in rows)
    for name, value in rows:
        print("%-*s  %s" % (width, name, value))
    out_dir = os.path.join(ROOT, "bench", "results")
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "bench_poolbox.json"), "w") as f:
        json.dump(results, f, indent=1, sort_keys=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
