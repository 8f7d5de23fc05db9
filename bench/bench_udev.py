#!/usr/bin/env python3
"""udev helper wall time per device, cold, against a bare `ethtool -K`.

In a throw-away netns, fresh devices are brought into policy (all-off) two
ways: by the helper run as udev runs it (a new Python process: start-up,
cache read, xenstore-read for guest devices, ioctl read, one ethtool -K,
the live-state record) and by a bare `ethtool -K dev rx off tx off ...`
on a twin device. Every device is fresh, so each run really changes it.

Guest devices (tapD.0) need xenstore-read; here that is the Python test
stand-in, far slower than dom0's C tool, so its own cost is measured too.
The cache holds --cache-vifs VIFs (default 10,000) like a big pool's would.

Target (issue 4): median helper time <= 40 ms. Prints a table and writes
bench/results/bench_udev.json. Needs root.
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from netoffload import cache  # noqa: E402
from tests.support.netns import NetNS  # noqa: E402

FEATURES = ("rx", "tx", "sg", "tso", "ufo", "gso", "gro", "lro")
ALL_OFF = dict((f, "off") for f in FEATURES)
PYTHON = shutil.which("python3") or sys.executable


def timed_run(ns, argv, env):
    start = time.perf_counter()
    proc = subprocess.run(["ip", "netns", "exec", ns.name] + argv, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          universal_newlines=True, timeout=60)
    return (time.perf_counter() - start) * 1000.0, proc


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--devices", type=int, default=30)
    parser.add_argument("--cache-vifs", type=int, default=10000)
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.stderr.write("bench_udev needs root for a network namespace\n")
        return 2
    work = tempfile.mkdtemp(prefix="nobenchudev")
    ns = NetNS("benchudev")
    try:
        state = os.path.join(work, "state")
        vm_uuids = [str(uuid.uuid4()) for _ in range(args.devices)]
        vifs = dict(("%s/0" % u, {"features": ALL_OFF, "source": "pool",
                                  "policy": "all-off", "vm": "vm%d" % i})
                    for i, u in enumerate(vm_uuids))
        for i in range(max(0, args.cache_vifs - len(vifs))):
            vifs["%s/%d" % (uuid.uuid4(), i % 4)] = {
                "features": ALL_OFF, "source": "pool", "policy": "all-off",
                "vm": "other%d" % i}
        pifs = dict(("eth%d" % i, {"features": ALL_OFF, "source": "pool",
                                   "policy": "all-off"})
                    for i in range(args.devices))
        cache.write({"format": cache.FORMAT, "generated_at": "bench",
                     "host": {"uuid": "h", "name": "bench"}, "policy": {},
                     "pifs": pifs, "vifs": vifs}, state)
        xenstore = os.path.join(work, "xenstore.json")
        with open(xenstore, "w") as handle:
            json.dump(dict(("/local/domain/%d/vm" % (i + 1), "/vm/" + u)
                           for i, u in enumerate(vm_uuids)), handle)
        env = {"PATH": "%s:/usr/sbin:/usr/bin:/sbin:/bin" % os.path.join(ROOT, "sim", "bin"),
               "PYTHONPATH": ROOT, "ACTION": "add", "SUBSYSTEM": "net",
               "NETOFFLOAD_STATE_DIR": state, "NETOFFLOAD_SIM_XENSTORE": xenstore}
        set_all_off = []
        for f in FEATURES:
            set_all_off += [f, "off"]
        rows = {"helper PIF (veth eth*)": [], "helper guest (tapD.0)": [],
                "bare ethtool -K (veth)": [], "bare ethtool -K (tap)": [],
                "xenstore-read stand-in": []}
        for i in range(args.devices):
            ns.add_veth("eth%d" % i, "peer%d" % i)
            ns.add_veth("bare%d" % i, "bpeer%d" % i)
            ns.add_tap("tap%d.0" % (i + 1))
            ns.add_tap("btap%d" % i)
        for i in range(args.devices):
            ms, proc = timed_run(ns, [PYTHON, "-m", "netoffload.udev", "eth%d" % i],
                                 dict(env, INTERFACE="eth%d" % i))
            assert proc.returncode == 0 and not proc.stderr, proc.stderr
            rows["helper PIF (veth eth*)"].append(ms)
            tap = "tap%d.0" % (i + 1)
            ms, proc = timed_run(ns, [PYTHON, "-m", "netoffload.udev", tap],
                                 dict(env, INTERFACE=tap))
            assert proc.returncode == 0 and not proc.stderr, proc.stderr
            rows["helper guest (tapD.0)"].append(ms)
            ms, _ = timed_run(ns, ["ethtool", "-K", "bare%d" % i] + set_all_off, env)
            rows["bare ethtool -K (veth)"].append(ms)
            ms, _ = timed_run(ns, ["ethtool", "-K", "btap%d" % i] + set_all_off, env)
            rows["bare ethtool -K (tap)"].append(ms)
            ms, _ = timed_run(ns, ["xenstore-read", "/local/domain/%d/vm" % (i + 1)], env)
            rows["xenstore-read stand-in"].append(ms)
        medians = dict((k, round(statistics.median(v), 1)) for k, v in rows.items())
        result = {"devices": args.devices, "cache_vifs": len(vifs),
                  "cache_bytes": os.path.getsize(cache.cache_path(state)),
                  "python": PYTHON, "median_ms": medians,
                  "max_ms": dict((k, round(max(v), 1)) for k, v in rows.items()),
                  "guest_minus_stand_in_ms": round(
                      medians["helper guest (tapD.0)"] - medians["xenstore-read stand-in"], 1),
                  "target_median_ms": 40}
        print("udev helper, cold, %d devices each, cache of %d VIFs (%d bytes)"
              % (args.devices, len(vifs), result["cache_bytes"]))
        print("%-28s %10s %10s" % ("run", "median ms", "max ms"))
        for key in rows:
            print("%-28s %10.1f %10.1f" % (key, medians[key], result["max_ms"][key]))
        print("%-28s %10.1f" % ("guest minus stand-in", result["guest_minus_stand_in_ms"]))
        os.makedirs(os.path.join(ROOT, "bench", "results"), exist_ok=True)
        with open(os.path.join(ROOT, "bench", "results", "bench_udev.json"), "w") as out:
            json.dump(result, out, indent=1, sort_keys=True)
        return 0 if medians["helper PIF (veth eth*)"] <= 40 else 1
    finally:
        ns.close()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
