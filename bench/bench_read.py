#!/usr/bin/env python3
"""Read all eight offload features of 500 veth devices two ways, in one run:
the SIOCETHTOOL ioctl path (one socket, no process) against one
`ethtool -k` process per device (the fallback path, parse included).

Needs root (a throw-away network namespace). Prints a table and writes
bench/results/bench_read.json. Target: ioctl at least 20x faster.
"""
import json
import os
import platform
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from netoffload.engine import ethtool  # noqa: E402
from tests.support.netns import NetNS  # noqa: E402

DEVICES = int(os.environ.get("BENCH_DEVICES", "500"))
TARGET = 20.0
RUNS = int(os.environ.get("BENCH_RUNS", "3"))


def make_veths(ns, count):
    with tempfile.NamedTemporaryFile("w", suffix=".batch") as batch:
        for i in range(count // 2):
            batch.write("link add bv%da type veth peer name bv%db\n" % (i, i))
        batch.flush()
        subprocess.run(["ip", "-n", ns.name, "-batch", batch.name],
                       check=True, timeout=300)
    return ["bv%d%s" % (i, s) for i in range(count // 2) for s in "ab"]


def timed(func):
    start = time.perf_counter()
    result = func()
    return time.perf_counter() - start, result


def main():
    if os.geteuid() != 0:
        sys.stderr.write("bench_read needs root for a network namespace\n")
        return 2
    ns = NetNS("bench")
    try:
        names = make_veths(ns, DEVICES)
        with ns.entered():
            # median of RUNS runs each, interleaved, so load hits both alike
            ioctl_runs, binary_runs = [], []
            for _ in range(RUNS):
                seconds, by_ioctl = timed(lambda: ethtool.read_many(names))
                ioctl_runs.append(seconds)
                seconds, by_binary = timed(
                    lambda: dict((n, ethtool.read_features_ethtool(n))
                                 for n in names))
                binary_runs.append(seconds)
        ioctl_s = sorted(ioctl_runs)[RUNS // 2]
        binary_s = sorted(binary_runs)[RUNS // 2]
    finally:
        ns.close()
    assert all(d.source == "ioctl" for d in by_ioctl.values())
    agree = all(by_ioctl[n].features == by_binary[n].features for n in names)
    ratio = binary_s / ioctl_s
    rows = [
        ("ioctl (one socket)", ioctl_s, ioctl_s / len(names)),
        ("ethtool -k per device", binary_s, binary_s / len(names)),
    ]
    print("read 8 features of %d veth devices (kernel %s), median of %d"
          % (len(names), platform.release(), RUNS))
    print("%-24s %10s %14s" % ("path", "total s", "per device ms"))
    for label, total, per in rows:
        print("%-24s %10.3f %14.3f" % (label, total, per * 1000))
    print("speed-up: %.1fx (target >= %.0fx) %s; results agree: %s" % (
        ratio, TARGET, "MET" if ratio >= TARGET else "MISSED", agree))
    os.makedirs(os.path.join(ROOT, "bench", "results"), exist_ok=True)
    out = os.path.join(ROOT, "bench", "results", "bench_read.json")
    with open(out, "w") as handle:
        json.dump({"devices": len(names), "kernel": platform.release(),
                   "ioctl_seconds": ioctl_s, "ethtool_seconds": binary_s,
                   "ioctl_runs": ioctl_runs, "ethtool_runs": binary_runs,
                   "speedup": ratio, "target": TARGET,
                   "met": ratio >= TARGET, "results_agree": agree,
                   "timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                              time.gmtime())},
                  handle, indent=2, sort_keys=True)
        handle.write("\n")
    return 0 if ratio >= TARGET and agree else 1


if __name__ == "__main__":
    sys.exit(main())
