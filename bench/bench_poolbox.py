#!/usr/bin/env python3
"""The pool in a box: how long building, tearing down and the story take.

1. PoolBox build (namespaces, devices, simulator populated) and close
   (everything removed), median of ROUNDS, for 2 and 3 hosts;
2. the whole demo story (`sim.demo.run`), per step, for 3 hosts.

Targets: the end-to-end test (and `make demo`) under ~60 s. Needs root.
Prints a table and writes bench/results/bench_poolbox.json.
"""
import json
import os
import platform
import statistics
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from sim import demo, poolbox  # noqa: E402

ROUNDS = int(os.environ.get("BENCH_POOLBOX_ROUNDS", "3"))


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
