#!/usr/bin/env python3
"""The boot pass against one `ethtool -K` process per device.

Issue 15 target 3: enforcing 1,000 devices (500 vif + 500 tap in a
namespace) at least 10x faster than one `ethtool -K` process per device,
measured in the same run.

In a throw-away netns: 500 domains, each with vif<d>.0 (a veth) and
tap<d>.0 (a tap), all fresh; a local cache that covers all of them (all-off,
plus --cache-vifs other VIFs of the pool) and a xenstore-read stand-in (one
awk process, as dom0's C tool is one small process) mapping each domain to
its VM. Timed:

- boot: `netoffload.agents.boot.enforce_from_cache()`, in this process
  inside the netns, as the boot unit runs it when it works from the cache:
  the cache read, one xenstore-read for every domain, every device read,
  one write of the live-state record (every prior, before any change), one
  ETHTOOL_SFEATURES per device and a read back;
- baseline: one `ethtool -K <dev> rx off tx off ... lro off` process per
  device on 1,000 twin devices (500 veth, 500 tap), the rc.local loop the
  pack replaces.

Each round (baseline, then boot) runs in a fresh namespace on fresh
devices; the result keeps every round and the median speedup. Prints a
line per round and writes bench/results/bench_boot.json. Needs root.
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

from netoffload.agents import boot, cache, cache_writer  # noqa: E402
from netoffload.engine.livestate import LiveStateStore  # noqa: E402
from tests.support.netns import NetNS  # noqa: E402

FEATURES = ("rx", "tx", "sg", "tso", "ufo", "gso", "gro", "lro")
ALL_OFF = dict((f, "off") for f in FEATURES)
# dom0's xenstore-read is a small C tool; stand in with one awk process
# (sim/bin/xenstore-read is Python: its start-up would be most of the time)
AWK_STAND_IN = """#!/bin/sh
# bench stand-in for xenstore-read PATH...: "path value" lines in
# $NETOFFLOAD_SIM_XENSTORE_TXT; fails on the first missing path like the tool
exec awk -v paths="$*" '
BEGIN { n = split(paths, want, " ") }
{ value[$1] = $2 }
END {
    for (i = 1; i <= n; i++) {
        if (!(want[i] in value)) {
            print "xenstore-read: could not read path " want[i] > "/dev/stderr"
            exit 1
        }
        print value[want[i]]
    }
}' "$NETOFFLOAD_SIM_XENSTORE_TXT"
"""


def make_devices(ns, work, prefix_vif, prefix_tap, count, first_domid):
    """count veths (vif-like) and count taps, with one `ip -batch`."""
    batch = os.path.join(work, "%s.batch" % prefix_vif)
    with open(batch, "w") as handle:
        for i in range(count):
            d = first_domid + i
            handle.write("link add %s%d.0 type veth peer name %sp%d\n"
                         % (prefix_vif, d, prefix_vif, d))
            handle.write("tuntap add dev %s%d.0 mode tap\n" % (prefix_tap, d))
    ns.run(["ip", "-batch", batch], timeout=600)
    names = []
    for i in range(count):
        d = first_domid + i
        names += ["%s%d.0" % (prefix_vif, d), "%s%d.0" % (prefix_tap, d)]
    return names


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--domains", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--cache-vifs", type=int, default=10000)
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.stderr.write("bench_boot needs root for a network namespace\n")
        return 2
    work = tempfile.mkdtemp(prefix="nobenchboot")
    ns = None
    set_all_off = []
    for f in FEATURES:
        set_all_off += [f, "off"]
    rounds = []
    bin_dir = os.path.join(work, "bin")
    os.makedirs(bin_dir)
    with open(os.path.join(bin_dir, "xenstore-read"), "w") as handle:
        handle.write(AWK_STAND_IN)
    os.chmod(os.path.join(bin_dir, "xenstore-read"), 0o755)
    try:
        for r in range(args.rounds):
            # a fresh namespace each round: the kernel slows down with
            # thousands of devices, and the rounds should be alike
            if ns is not None:
                ns.close()
            ns = NetNS("benchboot")
            state = os.path.join(work, "state%d" % r)
            first = 1 + r * args.domains
            vm_uuids = dict((first + i, str(uuid.uuid4()))
                            for i in range(args.domains))
            vifs = dict(("%s/0" % u, {"features": ALL_OFF, "source": "pool",
                                      "policy": "all-off", "vm": "vm%d" % d})
                        for d, u in vm_uuids.items())
            for i in range(max(0, args.cache_vifs - len(vifs))):
                vifs["%s/%d" % (uuid.uuid4(), i % 4)] = {
                    "features": ALL_OFF, "source": "pool",
                    "policy": "all-off", "vm": "other%d" % i}
            cache_writer.write({"format": cache.FORMAT, "generated_at": "bench",
                                "host": {"uuid": "h", "name": "bench"},
                                "policy": {}, "pifs": {}, "vifs": vifs}, state)
            xenstore = os.path.join(work, "xenstore%d.txt" % r)
            with open(xenstore, "w") as handle:
                handle.writelines("/local/domain/%d/vm /vm/%s\n" % (d, u)
                                  for d, u in vm_uuids.items())
            mine = make_devices(ns, work, "vif", "tap", args.domains, first)
            theirs = make_devices(ns, work, "bvif", "btap", args.domains,
                                  first)
            os.environ["PATH"] = "%s:%s" % (bin_dir, os.environ["PATH"])
            os.environ["NETOFFLOAD_SIM_XENSTORE_TXT"] = xenstore
            with ns.entered():
                start = time.perf_counter()
                for dev in theirs:
                    subprocess.run(["ethtool", "-K", dev] + set_all_off,
                                   stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL, timeout=30)
                baseline = time.perf_counter() - start
                start = time.perf_counter()
                results = boot.enforce_from_cache(state)
                ours = time.perf_counter() - start
            done = [d for d, ok, line in results
                    if ok and " applied all-off" in line]
            assert sorted(done) == sorted(mine), (
                len(done), [r for r in results if r[0] not in done][:3])
            recorded = LiveStateStore(state).recorded()
            assert set(mine) <= set(recorded)
            rounds.append({"devices": len(mine), "boot_s": round(ours, 3),
                           "ethtool_per_device_s": round(baseline, 3),
                           "speedup": round(baseline / ours, 1)})
            print("round %d: %d devices: boot %.3f s, one ethtool -K per "
                  "device %.3f s: %.1fx" % (r + 1, len(mine), ours, baseline,
                                             baseline / ours))
        speedups = sorted(x["speedup"] for x in rounds)
        median = round(statistics.median(speedups), 1)  # even counts too
        result = {"domains": args.domains, "cache_vifs": args.cache_vifs,
                  "rounds": rounds, "median_speedup": median,
                  "worst_speedup": speedups[0], "target_speedup": 10,
                  "loadavg": open("/proc/loadavg").read().split()[:3]}
        print("median round: %.1fx, worst %.1fx (target >= 10x); load "
              "average %s" % (median, speedups[0], " ".join(result["loadavg"])))
        os.makedirs(os.path.join(ROOT, "bench", "results"), exist_ok=True)
        with open(os.path.join(ROOT, "bench", "results", "bench_boot.json"),
                  "w") as out:
            json.dump(result, out, indent=1, sort_keys=True)
        return 0 if median >= 10 else 1
    finally:
        if ns is not None:
            ns.close()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
