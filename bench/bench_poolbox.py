#!/usr/bin/env python3
"""The pool in a box: how long building, tearing down and the story take.

1. PoolBox build (namespaces, devices, simulator populated) and close
   (everything removed), median of ROUNDS, for 2 and 3 hosts;
2. the whole demo story (`sim.demo.run`), per step, for 3 hosts;
3. scale (issue 15 item 6): a 2-host and a 64-host box (XenServer's pool
   limit; the demo's guests on the first hosts) built in the same run; on
   each, SCALE_ROUNDS rounds of (the floor, then `netoffload status ALL
   --pool`), medians, then `apply ALL --pool --yes` and `revert ALL --pool
   --yes` with a pool VIF and PIF policy set, run on the master as an admin
   would. The floor is the box's own: the fan-out (netoffload.pool.fanout,
   same bound) of the trivial plugin function `version` to every other
   host, from the master's dom0. Every member call runs a real plugin
   process in its private mount namespace, so on one machine the members'
   work adds up on its cores where a real pool spreads it over its hosts.
   Ratios: 64/2 hosts (target at most 3x) and 64 hosts / its floor. One
   more status run, not timed, is watched through /proc: the most member
   plugin processes alive at once (the fan-out's concurrency as xapi sees
   it) and the peak RSS (VmHWM) of the calling plugin process; also the
   XAPI logins and XAPI calls (all, and get_all_records) of a status run,
   one whole-pool snapshot's time (what a member took before) and one local
   snapshot's (what a member's scope=local call takes now: its host's part,
   context.local_snapshot; for a member with guests and one without), and
   the peak RSS of this process (the box: simulator and namespaces' driver)
   and of any child.

Targets: the end-to-end test (and `make demo`) under ~60 s. Needs root.
Prints a table and writes bench/results/bench_poolbox.json.
"""
import json
import os
import platform
import resource
import statistics
import sys
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from netoffload.pool import context  # noqa: E402
from netoffload.pool import xapi as pool_xapi  # noqa: E402
from sim import demo, poolbox  # noqa: E402

ROUNDS = int(os.environ.get("BENCH_POOLBOX_ROUNDS", "3"))
SCALE_ROUNDS = int(os.environ.get("BENCH_POOLBOX_SCALE_ROUNDS", "3"))
# 1: the scale part only (no build rounds, no story), not for the record
SCALE_ONLY = os.environ.get("BENCH_POOLBOX_SCALE_ONLY") == "1"
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


# The floor, run in the master's dom0 (its namespace and environment): the
# fan-out of `version` to every other live host.
FLOOR_CODE = r"""
import json, sys
from netoffload.pool import context, fanout, xapi
if len(sys.argv) > 1:  # another bound, for comparison
    fanout.FANOUT_WORKERS = int(sys.argv[1])
session = xapi.open_session()
try:
    ctx = context.CallContext(session)
    refs = [r for r in sorted(ctx.records.hosts)
            if r != ctx.host_ref and ctx.records.host_is_live(r)]
    done = fanout.call_hosts(refs, "version", {})
finally:
    xapi.close_session(session)
print(json.dumps({
    "seconds": done.seconds, "peak": done.peak, "hosts": len(refs),
    "ok": sum(1 for o in done.outcomes.values() if o["ok"]),
    "workers": fanout.FANOUT_WORKERS,
    # VmHWM, not ru_maxrss: that survives exec, and this process began as
    # a vfork of the benchmark, whose pages it would count
    "maxrss_kib": [int(l.split()[1]) for l in open("/proc/self/status")
                   if l.startswith("VmHWM:")][0]}))
"""


def floor(host, workers=None):
    started = time.time()
    argv = [sys.executable, "-c", FLOOR_CODE]
    if workers is not None:
        argv.append(str(workers))
    proc = host.run(argv, timeout=900)
    if proc.returncode != 0:
        raise SystemExit("floor failed (%d): %s" % (proc.returncode,
                                                    proc.stderr[-2000:]))
    result = json.loads(proc.stdout)
    if result["ok"] != result["hosts"]:
        raise SystemExit("floor: %d of %d hosts answered" % (
            result["ok"], result["hosts"]))
    result["process_s"] = time.time() - started
    return result


class Watcher(threading.Thread):
    """Samples /proc while a pool-wide call runs: the most member plugin
    processes alive at once (their methodCall carries scope=local), the
    largest VmHWM of one of them and of the calling plugin process
    (pool=true)."""
    MEMBER = b"<name>scope</name><value>local</value>"
    CALLER = b"<name>pool</name><value>true</value>"

    def __init__(self, interval=0.05):
        threading.Thread.__init__(self)
        self.daemon = True
        self.interval = interval
        self.stop = threading.Event()
        self.members_max = 0
        self.caller_hwm_kib = 0
        self.member_hwm_kib = 0
        self.samples = 0
        self.parent = os.getpid()

    @staticmethod
    def _status_number(pid, field):
        """A number field of /proc/<pid>/status (VmHWM: KiB), 0 if gone."""
        try:
            with open("/proc/%s/status" % pid, "rb") as f:
                for line in f:
                    if line.startswith(field):
                        return int(line.split()[1])
        except (OSError, ValueError, IndexError):
            pass
        return 0

    def run(self):
        while not self.stop.is_set():
            members = 0
            for pid in os.listdir("/proc"):
                if not pid.isdigit():
                    continue
                try:
                    with open("/proc/%s/cmdline" % pid, "rb") as f:
                        cmdline = f.read()
                except OSError:
                    continue
                # this box's plugins only: the simulator (this process)
                # starts them; other tests on the machine run their own
                if b"<methodCall>" not in cmdline or \
                        self._status_number(pid, b"PPid:") != self.parent:
                    continue
                if self.MEMBER in cmdline:
                    members += 1
                    self.member_hwm_kib = max(
                        self.member_hwm_kib,
                        self._status_number(pid, b"VmHWM:"))
                elif self.CALLER in cmdline:
                    self.caller_hwm_kib = max(self.caller_hwm_kib,
                                              self._status_number(pid, b"VmHWM:"))
            self.members_max = max(self.members_max, members)
            self.samples += 1
            self.stop.wait(self.interval)


def snapshot_seconds(box, rounds=5):
    """Median wall time of one whole-pool snapshot (what every member's
    plugin reads), through the XenAPI client."""
    api = pool_xapi.Xapi(box.session())
    times = []
    for _ in range(rounds):
        started = time.time()
        api.snapshot()
        times.append(time.time() - started)
    return statistics.median(times)


def local_snapshot_seconds(box, host_ref, rounds=5):
    """Median wall time and XAPI calls of one local snapshot of a host
    (what its scope=local call reads)."""
    api = pool_xapi.Xapi(box.session())
    times = []
    for _ in range(rounds):
        calls = api.calls
        started = time.time()
        context.local_snapshot(api, host_ref)
        times.append(time.time() - started)
    return statistics.median(times), api.calls - calls


def logins(box):
    return box.sim.call_counts().get("session.login_with_password", 0)


def calls_since(box, before):
    """(all XAPI calls, get_all_records calls) served since `before`."""
    now = box.sim.call_counts()
    diff = dict((m, n - before.get(m, 0)) for m, n in now.items())
    return (sum(diff.values()),
            sum(n for m, n in diff.items() if m.endswith(".get_all_records")))


def scale(hosts):
    """Build a box of `hosts`, time the floor and the pool-wide verbs."""
    box = poolbox.PoolBox(hosts=hosts, vm_specs=demo.VM_SPECS,
                          pif_other_config=demo.PIF_OTHER_CONFIG)
    started = time.time()
    try:
        box.start()
        built = time.time() - started
        master = box.master
        statuses, floors, unbounded = [], [], []
        for _ in range(SCALE_ROUNDS):  # interleaved: the same conditions
            floors.append(floor(master))
            # one thread per host, as before the bound
            unbounded.append(floor(master, workers=hosts - 1))
            seconds, proc = timed_cli(master, "status", "ALL", "--pool",
                                      "--json")
            statuses.append(seconds)
        answered = len(json.loads(proc.stdout).get("hosts", []))
        before = logins(box)
        counts = box.sim.call_counts()
        watcher = Watcher()
        watcher.start()
        try:
            watched, _ = timed_cli(master, "status", "ALL", "--pool",
                                   "--json")
        finally:
            watcher.stop.set()
            watcher.join()
        status_logins = logins(box) - before
        status_calls, status_get_all = calls_since(box, counts)
        snapshot_s = snapshot_seconds(box)
        # a member with guests (the demo's are on the first hosts) and the
        # last host, which has none
        local_guests_s, local_guests_calls = local_snapshot_seconds(
            box, box.hosts[1].ref)
        local_bare_s, local_bare_calls = local_snapshot_seconds(
            box, box.hosts[-1].ref)
        timed_cli(master, "policy", "set", "pool", "vif", "tx-off", "--yes")
        timed_cli(master, "policy", "set", "pool", "pif", "gro=off",
                  "--yes")
        applied, proc = timed_cli(master, "apply", "ALL", "--pool", "--yes",
                                  "--json")
        apply_failed = [h["name_label"] for h in
                        json.loads(proc.stdout).get("hosts", [])
                        if not h.get("ok")]
        reverted, _ = timed_cli(master, "revert", "ALL", "--pool", "--yes",
                                "--json")
        devices = sum(len(h.devices()) for h in box.hosts)
    finally:
        box.close()
    floor_s = statistics.median(f["seconds"] for f in floors)
    return {"hosts": hosts, "devices": devices, "build_s": round(built, 2),
            "floor_version_fanout_s_median": round(floor_s, 3),
            "floor_version_fanout_s": [round(f["seconds"], 3)
                                       for f in floors],
            "floor_peak_in_flight": max(f["peak"] for f in floors),
            "floor_caller_rss_mib": round(max(
                f["maxrss_kib"] for f in floors) / 1024.0, 1),
            "fanout_workers": floors[0]["workers"],
            "floor_unbounded_s_median": round(statistics.median(
                f["seconds"] for f in unbounded), 3),
            "floor_unbounded_s": [round(f["seconds"], 3)
                                  for f in unbounded],
            "floor_unbounded_peak_in_flight": max(
                f["peak"] for f in unbounded),
            "floor_unbounded_caller_rss_mib": round(max(
                f["maxrss_kib"] for f in unbounded) / 1024.0, 1),
            "status_pool_s_median": round(statistics.median(statuses), 3),
            "status_pool_s": [round(s, 3) for s in statuses],
            "status_hosts_answered": answered,
            "watched_status_s": round(watched, 3),
            "watched_member_plugins_max": watcher.members_max,
            "watched_caller_rss_mib": round(
                watcher.caller_hwm_kib / 1024.0, 1),
            "watched_member_rss_mib": round(
                watcher.member_hwm_kib / 1024.0, 1),
            "watched_samples": watcher.samples,
            "status_logins": status_logins,
            "status_xapi_calls": status_calls,
            "status_get_all_records_calls": status_get_all,
            "snapshot_s_median": round(snapshot_s, 4),
            "local_snapshot_guests_s_median": round(local_guests_s, 4),
            "local_snapshot_guests_calls": local_guests_calls,
            "local_snapshot_bare_s_median": round(local_bare_s, 4),
            "local_snapshot_bare_calls": local_bare_calls,
            "apply_all_pool_s": round(applied, 3),
            "apply_hosts_failed": apply_failed,
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
    for hosts in () if SCALE_ONLY else (2, 3):
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
    results["scale"] = {"loadavg_before": list(os.getloadavg()),
                        "cpus": os.cpu_count()}
    for hosts in SCALE_HOSTS:
        entry = scale(hosts)
        results["scale"][str(hosts)] = entry
        rows.append(("scale %d hosts (%d devices): build" % (
            hosts, entry["devices"]), "%.2f s" % entry["build_s"]))
        rows.append(("scale %d hosts: floor, version fan-out to %d" % (
            hosts, hosts - 1), "%.2f s" % entry[
                "floor_version_fanout_s_median"]))
        rows.append(("scale %d hosts: floor, unbounded (%d threads)" % (
            hosts, entry["floor_unbounded_peak_in_flight"]),
            "%.2f s" % entry["floor_unbounded_s_median"]))
        rows.append(("scale %d hosts: status ALL --pool (%d answered)" % (
            hosts, entry["status_hosts_answered"]),
            "%.2f s" % entry["status_pool_s_median"]))
        rows.append(("scale %d hosts: apply ALL --pool" % hosts,
                     "%.2f s" % entry["apply_all_pool_s"]))
        rows.append(("scale %d hosts: revert ALL --pool" % hosts,
                     "%.2f s" % entry["revert_all_pool_s"]))
        rows.append(("scale %d hosts: member plugins at once (bound %d)" % (
            hosts, entry["fanout_workers"]),
            "%d" % entry["watched_member_plugins_max"]))
        rows.append(("scale %d hosts: peak RSS, caller plugin / a member" %
                     hosts, "%.1f / %.1f MiB" % (
                         entry["watched_caller_rss_mib"],
                         entry["watched_member_rss_mib"])))
        rows.append(("scale %d hosts: peak RSS of the floor's caller, "
                     "bounded / unbounded" % hosts, "%.1f / %.1f MiB" % (
                         entry["floor_caller_rss_mib"],
                         entry["floor_unbounded_caller_rss_mib"])))
        rows.append(("scale %d hosts: XAPI logins in one status --pool" %
                     hosts, "%d" % entry["status_logins"]))
        rows.append(("scale %d hosts: XAPI calls in one status --pool "
                     "(get_all_records)" % hosts, "%d (%d)" % (
                         entry["status_xapi_calls"],
                         entry["status_get_all_records_calls"])))
        rows.append(("scale %d hosts: one whole-pool snapshot" % hosts,
                     "%.1f ms" % (entry["snapshot_s_median"] * 1000)))
        rows.append(("scale %d hosts: one local snapshot, member with "
                     "guests / without (calls)" % hosts,
                     "%.1f / %.1f ms (%d / %d)" % (
                         entry["local_snapshot_guests_s_median"] * 1000,
                         entry["local_snapshot_bare_s_median"] * 1000,
                         entry["local_snapshot_guests_calls"],
                         entry["local_snapshot_bare_calls"])))
    small, big = (results["scale"][str(h)] for h in SCALE_HOSTS)
    ratios = {}
    for name, key in (("status", "status_pool_s_median"),
                      ("apply", "apply_all_pool_s"),
                      ("revert", "revert_all_pool_s"),
                      ("floor", "floor_version_fanout_s_median")):
        ratios[name] = round(big[key] / small[key], 2)
    for name, key in (("status", "status_pool_s_median"),
                      ("apply", "apply_all_pool_s"),
                      ("revert", "revert_all_pool_s")):
        # to the box's floor: what the 64-host call costs per unit of the
        # floor; and what the extra hosts added beyond their floor
        ratios[name + "_to_floor"] = round(
            big[key] / big["floor_version_fanout_s_median"], 2)
        ratios[name + "_growth_to_floor_growth"] = round(
            (big[key] - small[key]) /
            (big["floor_version_fanout_s_median"] -
             small["floor_version_fanout_s_median"]), 2)
    results["scale"]["ratios"] = ratios
    results["scale"]["loadavg_after"] = list(os.getloadavg())
    # ru_maxrss: KiB on Linux. This process holds the simulator and drives
    # the box. (Not RUSAGE_CHILDREN: a child started by vfork counts this
    # process's pages, even after it execs; the watcher reads the plugins.)
    results["scale"]["box_process_peak_rss_mib"] = round(resource.getrusage(
        resource.RUSAGE_SELF).ru_maxrss / 1024.0, 1)
    label = "%d/%d hosts" % (SCALE_HOSTS[1], SCALE_HOSTS[0])
    rows.append(("scale %s: status, apply, revert (target <= 3x)" % label,
                 "%.2fx, %.2fx, %.2fx" % (ratios["status"], ratios["apply"],
                                          ratios["revert"])))
    rows.append(("scale %s: the floor itself" % label,
                 "%.2fx" % ratios["floor"]))
    rows.append(("scale %d hosts to its floor: status, apply, revert" %
                 SCALE_HOSTS[1], "%.2fx, %.2fx, %.2fx" % (
                     ratios["status_to_floor"], ratios["apply_to_floor"],
                     ratios["revert_to_floor"])))
    rows.append(("scale growth 2->%d over floor growth: status, apply, "
                 "revert" % SCALE_HOSTS[1], "%.2fx, %.2fx, %.2fx" % (
                     ratios["status_growth_to_floor_growth"],
                     ratios["apply_growth_to_floor_growth"],
                     ratios["revert_growth_to_floor_growth"])))
    rows.append(("peak RSS of the box (this process, with the simulator)",
                 "%.1f MiB" % results["scale"]["box_process_peak_rss_mib"]))
    ok = True
    if not SCALE_ONLY:
        ok, record = demo.run(hosts=3)
        results["story"] = {"ok": ok, "seconds": record["seconds"],
                            "steps": dict((s["key"], s["seconds"])
                                          for s in record["steps"]),
                            "checks": sum(len(s["checks"])
                                          for s in record["steps"])}
        for step in record["steps"]:
            rows.append(("story: %s" % step["key"],
                         "%.2f s" % step["seconds"]))
        rows.append(("story total (%s, %d checks)" % (
            "PASS" if ok else "FAIL", results["story"]["checks"]),
            "%.2f s" % record["seconds"]))
    width = max(len(r[0]) for r in rows)
    for name, value in rows:
        print("%-*s  %s" % (width, name, value))
    if SCALE_ONLY:
        return 0 if ok else 1
    out_dir = os.path.join(ROOT, "bench", "results")
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "bench_poolbox.json"), "w") as f:
        json.dump(results, f, indent=1, sort_keys=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
