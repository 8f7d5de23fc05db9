#!/usr/bin/env python3
"""Watcher benchmark against the XAPI simulator with 1 ms added per call.

1. A pool with --pool-vifs VIFs (default 10,000) whose keys are already in
   policy (the six keys and one book, as the pack leaves them) is loaded
   into the simulator; the watcher starts (in a throw-away
   netns, so it can never touch this machine's devices) and syncs.
2. VIF.create runs at a sustained --rate (default 100/s) for --seconds
   (default 60). The simulator times each VIF.create and each key write
   when it has changed its database: latency = the commit of a new VIF's
   last ethtool key minus the commit of its VIF.create. A listener on
   event.from (another event client, as Xen Orchestra is) also timestamps
   the first event in which a VIF carries all six keys, from the return
   of its VIF.create: "seen by an event client", reported beside it.
3. The watcher's RSS is sampled every second from /proc, its CPU time
   read from /proc before and after the load: CPU ms per event (per
   VIF.create) and the share of one core.
4. Then the simulator restarts --restarts times (default 2; sessions
   gone, like a master's xapi restart): each time, how long until the
   watcher has resynchronised the whole pool and written the keys of a VIF
   created right after the restart, and its RSS 2 s and 7 s after that
   (flat: no growth from one resync to the next).

Targets (issue 15 item 4): p99 <= 60 ms; CPU <= 25 % of one core; RSS <=
35 MiB and flat over the run. The floor of the latency in the same run:
the writes of one VIF one after the other, each costing the simulator's
round trip measured by a probe (`floor_ms`), and the ratio p99 / floor;
and the floor with a VIF's keys written at once after its book
(`floor_parallel_ms`): the create's event, the book, the keys: three
round trips.
`--watcher-root` runs another tree's watcher (e.g. an export of main) for
a before/after pair in the same session (as its working directory too).
BENCH_PROFILE=file profiles the watcher's whole run, BENCH_PROFILE_LOAD=file
its event loop during the load only.
Prints a table and writes bench/results/bench_watch.json (or --out). Needs
root.
"""
import argparse
import json
import os
import signal
import subprocess
import sys
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import XenAPI  # noqa: E402

from netoffload.pool import keys  # noqa: E402
from tests.support.netns import NetNS  # noqa: E402
from tests.support.simpool import SimPool  # noqa: E402

XAPI_SIX = ("rx", "tx", "sg", "tso", "ufo", "gso")
# In policy as the pack leaves an object today: the six keys and one book
# (written by a finished operation). The old two-key form would have the
# watcher migrate all 10,000 VIFs at its first sync, in the middle of the
# load.
IN_POLICY = dict([("ethtool-" + f, "off") for f in XAPI_SIX] + [
    (keys.KEY_BOOK, keys.Book(
        dict((f, keys.Entry(None, "off", None)) for f in XAPI_SIX),
        op="0123456789abcdef", gen=1).to_text())])


PROFILE_LOAD = """
import cProfile, signal, sys
from netoffload.agents import watch
profiler = cProfile.Profile()
signal.signal(signal.SIGUSR1, lambda *a: profiler.enable())
def _dump(*a):
    profiler.disable()
    profiler.dump_stats(%r)
signal.signal(signal.SIGUSR2, _dump)
sys.exit(watch.main(sys.argv[1:]))
"""


def rss_kib(pid):
    with open("/proc/%d/status" % pid) as handle:
        for line in handle:
            fields = line.split()
            if fields and fields[0] == "VmRSS:":
                return int(fields[1])
    return 0


def session(sock):
    s = XenAPI.Session("http://" + sock.replace("/", "_") + "/",
                       transport=XenAPI.UDSTransport())
    s.login_with_password("root", "", "1.0", "bench")
    return s


def percentile(values, p):
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, int(round(p / 100.0 * len(ordered) + 0.5)) - 1))
    return ordered[index]


def cpu_seconds(pid):
    """user+system CPU seconds of a process so far, from /proc."""
    with open("/proc/%d/stat" % pid) as handle:
        fields = handle.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / float(os.sysconf("SC_CLK_TCK"))


class Probe(threading.Thread):
    """Round trip of a cheap call (pool.get_all) every 50 ms: how loaded the
    simulator itself is, apart from the watcher."""

    def __init__(self, sock):
        threading.Thread.__init__(self, daemon=True)
        self.api = session(sock).xenapi
        self.samples = []
        self.stopping = False

    def run(self):
        while not self.stopping:
            start = time.monotonic()
            self.api.pool.get_all()
            self.samples.append(1000.0 * (time.monotonic() - start))
            time.sleep(0.05)


class Listener(threading.Thread):
    """Timestamps the first event in which a VIF carries all six keys."""

    def __init__(self, sock):
        threading.Thread.__init__(self, daemon=True)
        self.api = session(sock).xenapi
        self.done = {}
        self.stopping = False
        self.ready = threading.Event()

    def run(self):
        # tokens are pool-wide: take one from the smallest class rather than
        # have the simulator marshal all 10,000 VIFs at the start of the load
        token = getattr(self.api.event, "from")(["pool"], "", 0.0)["token"]
        self.ready.set()
        while not self.stopping:
            try:
                result = getattr(self.api.event, "from")(["vif"], token, 1.0)
            except Exception:
                if self.stopping:
                    return
                raise
            now = time.monotonic()
            token = result["token"]
            for event in result["events"]:
                snap = event.get("snapshot") or {}
                config = snap.get("other_config") or {}
                if event["ref"] not in self.done and all(
                        config.get("ethtool-" + f) == "off" for f in XAPI_SIX):
                    self.done[event["ref"]] = now


def keys_committed(trace):
    """{VIF ref: (VIF.create committed, last of its six keys committed
    "off")} from the simulator's commit times, for the VIFs that got all
    six."""
    created, keys_at = {}, {}
    for at, method, params, result in trace:
        if method == "VIF.create":
            created[result] = at
        elif params[1].startswith("ethtool-") and params[1][8:] in XAPI_SIX \
                and params[2] == "off":
            keys_at.setdefault(params[0], {})[params[1]] = at
    return dict((ref, (at, max(keys_at[ref].values())))
                for ref, at in created.items()
                if len(keys_at.get(ref, ())) == len(XAPI_SIX))


def restart_and_resync(admin, sock, net, vm, device="99"):
    """Restart the simulator (sessions gone, as when the master's xapi
    restarts); seconds until the watcher, resynchronised, has written the
    keys of a VIF created right after it came back."""
    old = session(sock)
    before = old._session
    started = time.monotonic()
    admin.restart()
    # back, with every session gone: the client had to log in again
    while True:
        try:
            old.xenapi.pool.get_all()
            if old._session != before:
                break
        except Exception:  # going down, or not up yet
            pass
        time.sleep(0.02)
    api = old.xenapi
    ref = api.VIF.create({"device": device, "network": net, "VM": vm, "MAC": "",
                          "MTU": "1500", "other_config": {},
                          "qos_algorithm_type": "", "qos_algorithm_params": {}})
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        config = api.VIF.get_other_config(ref)
        if all(config.get("ethtool-" + f) == "off" for f in XAPI_SIX):
            return round(time.monotonic() - started, 2)
        time.sleep(0.02)
    return None


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--rate", type=float, default=100.0)
    parser.add_argument("--pool-vifs", type=int, default=10000)
    parser.add_argument("--latency-ms", type=float, default=1.0)
    parser.add_argument("--coalesce", type=float, default=None,
                        help="the watcher's --coalesce (default: its own)")
    parser.add_argument("--watcher-root", default=ROOT,
                        help="the tree whose watcher runs (default: this one)")
    parser.add_argument("--out", default=os.path.join(
        ROOT, "bench", "results", "bench_watch.json"))
    parser.add_argument("--no-restart", action="store_true",
                        help="skip the resync after a restart")
    parser.add_argument("--watcher-log", default=None,
                        help="a file for the watcher's stderr (its log)")
    parser.add_argument("--restarts", type=int, default=2,
                        help="simulator restarts after the load, each "
                             "followed by a resync (RSS must stay flat)")
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.stderr.write("bench_watch needs root for a network namespace\n")
        return 2
    box = SimPool(process=True, keep_db=False)
    sim = box.proc
    sock = box.socket_path
    ns = NetNS("benchwatch")
    watcher = None
    try:
        admin = box.admin
        host = admin.add_host(name_label="xs1")
        net = admin.add_network(name_label="net0")
        admin.add_pif(host=host, network=net, device="eth0")
        per_vm = 10
        started = time.monotonic()
        for i in range(args.pool_vifs // per_vm):
            vm = admin.add_vm(name_label="pool-vm-%d" % i)
            for dev in range(per_vm):
                admin.add_vif(vm=vm, network=net, device=dev, other_config=IN_POLICY)
        load_seconds = time.monotonic() - started
        api = session(sock).xenapi
        pool = api.pool.get_all()[0]
        api.pool.add_to_other_config(pool, "netoffload-vif", "all-off")
        admin.set_latency_ms(latency_ms=args.latency_ms)

        env = dict(admin.host_env(host=host))
        env["PYTHONPATH"] = args.watcher_root + ":" + env["PYTHONPATH"]
        state = env["NETOFFLOAD_STATE_DIR"]
        profile = (["-m", "cProfile", "-o", os.environ["BENCH_PROFILE"]]
                   if os.environ.get("BENCH_PROFILE") else [])
        if os.environ.get("BENCH_PROFILE_LOAD"):
            # the event loop's thread profiled during the load only
            # (SIGUSR1 starts, SIGUSR2 stops and writes the file)
            profile = ["-c", PROFILE_LOAD % os.environ["BENCH_PROFILE_LOAD"]]
        extra = [] if args.coalesce is None else ["--coalesce", str(args.coalesce)]
        module = [] if os.environ.get("BENCH_PROFILE_LOAD") else [
            "-m", "netoffload.agents.watch"]
        watcher = ns.popen([sys.executable] + profile + module + [
                            "--event-timeout", "5"] + extra, env=env,
                           stdout=subprocess.DEVNULL,
                           stderr=open(args.watcher_log, "a") if args.watcher_log
                           else subprocess.DEVNULL,
                           # `-m` puts the working directory first on the
                           # path: it must be the tree under test
                           cwd=args.watcher_root)
        sync_start = time.monotonic()
        while not os.path.exists(os.path.join(state, "cache.json")):
            time.sleep(0.05)
        sync_seconds = time.monotonic() - sync_start
        rss = [(0.0, rss_kib(watcher.pid))]
        admin.reset_call_counts()

        listener = Listener(sock)
        listener.start()
        listener.ready.wait(30)
        probe = Probe(sock)
        probe.start()
        if os.environ.get("BENCH_PROFILE_LOAD"):
            watcher.send_signal(signal.SIGUSR1)
        admin.trace_commits(methods=["VIF.create", "VIF.add_to_other_config"])
        cpu_start = (cpu_seconds(sim.pid), cpu_seconds(watcher.pid), time.monotonic())
        time.sleep(0.5)
        vms = [admin.add_vm(name_label="load-vm-%d" % i) for i in range(100)]
        created = {}
        total = int(args.seconds * args.rate)
        t0 = time.monotonic()
        next_sample = t0 + 1.0
        for i in range(total):
            due = t0 + i / args.rate
            while True:
                now = time.monotonic()
                if now >= next_sample:
                    rss.append((now - t0, rss_kib(watcher.pid)))
                    next_sample += 1.0
                if now >= due:
                    break
                time.sleep(min(due - now, 0.002))
            ref = api.VIF.create({"device": str(i // 100), "network": net,
                                  "VM": vms[i % 100], "MAC": "", "MTU": "1500",
                                  "other_config": {}, "qos_algorithm_type": "",
                                  "qos_algorithm_params": {}})
            created[ref] = time.monotonic()
        achieved_rate = total / (time.monotonic() - t0)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not all(r in listener.done for r in created):
            time.sleep(0.05)
        rss.append((time.monotonic() - t0, rss_kib(watcher.pid)))
        listener.stopping = True
        probe.stopping = True
        if os.environ.get("BENCH_PROFILE_LOAD"):
            watcher.send_signal(signal.SIGUSR2)
        elapsed = time.monotonic() - cpu_start[2]
        watcher_cpu = cpu_seconds(watcher.pid) - cpu_start[1]
        cpu_share = {"simulator": round((cpu_seconds(sim.pid) - cpu_start[0]) / elapsed, 2),
                     "watcher": round(watcher_cpu / elapsed, 2)}
        cpu_ms_per_event = 1000.0 * watcher_cpu / max(1, len(created))
        with open("/proc/loadavg") as handle:
            loadavg = handle.read().split()[:3]
        committed = keys_committed(admin.traced_commits())
        admin.trace_commits(methods=[])
        latencies = [1000.0 * (committed[r][1] - committed[r][0])
                     for r in created if r in committed]
        missing = len(created) - len(latencies)
        seen = [1000.0 * (listener.done[r] - t) for r, t in created.items()
                if r in listener.done]
        by_second = {}
        for ref, t in created.items():
            if ref in committed:
                by_second.setdefault(int(t - t0), []).append(
                    1000.0 * (committed[ref][1] - committed[ref][0]))
        latency_by_second = [[sec, round(percentile(v, 50), 1), round(max(v), 1)]
                             for sec, v in sorted(by_second.items())]
        counts = admin.call_counts()
        writes_per_vif = sum(n for m, n in counts.items()
                             if m.startswith("VIF.") and m.endswith(
                                 ("add_to_other_config", "remove_from_other_config"))
                             ) / float(max(1, len(created)))
        probe_p50 = percentile(probe.samples, 50)
        floor_ms = writes_per_vif * probe_p50
        rss_load = [v for _, v in rss]
        resyncs, rss_resync, rss_settled = [], [], []
        for _ in range(0 if args.no_restart else args.restarts):
            resyncs.append(restart_and_resync(admin, sock, net, vms[0],
                                              str(99 - len(resyncs))))
            time.sleep(2.0)  # the resync's cache write done
            rss_resync.append(rss_kib(watcher.pid))
            rss.append((time.monotonic() - t0, rss_resync[-1]))
            time.sleep(3.0)  # settled: no transient of the resync left
            rss_settled.append(rss_kib(watcher.pid))
            rss.append((time.monotonic() - t0, rss_settled[-1]))
        resync_seconds = resyncs[0] if resyncs else None
        rss_values = [v for _, v in rss]
        result = {
            "pool_vifs": args.pool_vifs, "latency_ms_per_call": args.latency_ms,
            "seconds": args.seconds, "rate_target": args.rate,
            "rate_achieved": round(achieved_rate, 1), "created": len(created),
            "missing": missing,
            "latency_ms": {"p50": round(percentile(latencies, 50), 1),
                           "p99": round(percentile(latencies, 99), 1),
                           "max": round(max(latencies), 1) if latencies else None},
            "latency_seen_by_event_client_ms": {
                "p50": round(percentile(seen, 50), 1),
                "p99": round(percentile(seen, 99), 1)},
            "floor_ms": round(floor_ms, 1),
            "floor_parallel_ms": round(3 * probe_p50, 1),
            "p99_over_floor": round(percentile(latencies, 99) / floor_ms, 2)
            if floor_ms else None,
            "writes_per_vif": round(writes_per_vif, 2),
            "cpu_ms_per_event": round(cpu_ms_per_event, 2),
            "resync_after_restart_seconds": resync_seconds,
            "resyncs_seconds": resyncs,
            "watcher_root": args.watcher_root,
            "pool_load_seconds": round(load_seconds, 1),
            "initial_sync_seconds": round(sync_seconds, 2),
            "rss_mib": {"after_sync": round(rss_values[0] / 1024.0, 1),
                        "min": round(min(rss_values) / 1024.0, 1),
                        "max": round(max(rss_values) / 1024.0, 1),
                        "max_during_load": round(max(rss_load) / 1024.0, 1),
                        "after_resyncs": [round(v / 1024.0, 1)
                                          for v in rss_resync],
                        "after_resyncs_settled": [round(v / 1024.0, 1)
                                                  for v in rss_settled],
                        "end": round(rss_values[-1] / 1024.0, 1)},
            "rss_samples_kib": rss,
            "latency_by_second_p50_max_ms": latency_by_second,
            "xapi_calls_during_load": counts,
            "sim_probe_ms": {"p50": round(percentile(probe.samples, 50), 1),
                             "p99": round(percentile(probe.samples, 99), 1)},
            "cpu_share_during_load": cpu_share,
            "loadavg_at_end": loadavg,
            "python": sys.version.split()[0],
            "targets": {"p99_ms": 60, "rss_mib": 35, "cpu_share": 0.25},
        }
        print("VIF.create -> keys written, %d VIFs in pool, %.0f ms/call, %.0f s at %.1f/s"
              % (args.pool_vifs, args.latency_ms, args.seconds, achieved_rate))
        print("%-38s %10s" % ("metric", "value"))
        for name, value in (("created", len(created)), ("missing", missing),
                            ("latency p50 (ms)", result["latency_ms"]["p50"]),
                            ("latency p99 (ms)", result["latency_ms"]["p99"]),
                            ("latency max (ms)", result["latency_ms"]["max"]),
                            ("seen by an event client p50/p99 (ms)", "%s / %s" % (
                                result["latency_seen_by_event_client_ms"]["p50"],
                                result["latency_seen_by_event_client_ms"]["p99"])),
                            ("floor (ms)", result["floor_ms"]),
                            ("floor, keys at once (ms)", result["floor_parallel_ms"]),
                            ("p99 / floor", result["p99_over_floor"]),
                            ("writes per VIF", result["writes_per_vif"]),
                            ("CPU ms per event", result["cpu_ms_per_event"]),
                            ("resyncs after restarts (s)",
                             " ".join(str(r) for r in resyncs)),
                            ("initial sync (s)", result["initial_sync_seconds"]),
                            ("RSS after sync (MiB)", result["rss_mib"]["after_sync"]),
                            ("RSS max during load (MiB)",
                             result["rss_mib"]["max_during_load"]),
                            ("RSS after resyncs (MiB)", " ".join(
                                str(v) for v in result["rss_mib"]["after_resyncs"])),
                            ("... 5 s later (MiB)", " ".join(
                                str(round(v / 1024.0, 1)) for v in rss_settled)),
                            ("RSS end (MiB)", result["rss_mib"]["end"]),
                            ("sim probe p50 (ms)", result["sim_probe_ms"]["p50"]),
                            ("sim probe p99 (ms)", result["sim_probe_ms"]["p99"]),
                            ("sim CPU (cores)", cpu_share["simulator"]),
                            ("watcher CPU (cores)", cpu_share["watcher"]),
                            ("load average", " ".join(loadavg))):
            print("%-38s %10s" % (name, value))
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w") as out:
            json.dump(result, out, indent=1, sort_keys=True)
        ok = missing == 0 and result["latency_ms"]["p99"] <= 60 and \
            result["rss_mib"]["max"] <= 35 and cpu_share["watcher"] <= 0.25
        return 0 if ok else 1
    finally:
        if watcher is not None:
            watcher.terminate()
            watcher.wait(10)
        box.close()
        ns.close()


if __name__ == "__main__":
    sys.exit(main())
