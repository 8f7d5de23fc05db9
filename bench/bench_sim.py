#!/usr/bin/env python3
"""What the XAPI simulator itself costs, so other benchmarks can subtract it.

Measures, in-process, against the real XenAPI client:
- per-call round trip over the unix socket and HTTP (latency 0 and 1 ms);
- CPU per call on each side with the client in another process (as the
  plugin is), through the XenAPI client and through the pack's own wire;
- VIF.get_all_records with 10,000 VIFs;
- event.from wake-up delay after a write from another client;
- VIF.create throughput with and without the on-disk journal;
- host.call_plugin of a trivial plugin (process start included);
- one `sim/xe.py` process per command (what the original scripts paid);
- simulator RSS growth for 10,000 VMs + VIFs.
Prints a table and writes bench/results/bench_sim.json.
"""
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import XenAPI  # noqa: E402

from sim import xapi_plugins  # noqa: E402
from sim.xapi_sim import SIM_PYLIB, XapiSim, socket_dir  # noqa: E402

PLUGIN = """#!/usr/bin/env python3
import XenAPIPlugin
XenAPIPlugin.dispatch({"ping": lambda session, args: "pong"})
"""


def unix_session(sim, path=None):
    path = path or sim.socket_path
    session = XenAPI.Session("http://%s/" % path.replace("/", "_"),
                             transport=XenAPI.UDSTransport())
    session.login_with_password("root", "")
    return session


def http_session(sim):
    session = XenAPI.Session(sim.url)
    session.login_with_password("root", "")
    return session


def per_call_us(api, vif, calls):
    start = time.perf_counter()
    for _ in range(calls):
        api.VIF.get_record(vif)
    return (time.perf_counter() - start) / calls * 1e6


CPU_CALLS = 3000
CPU_CHILD = """
import sys, time, XenAPI
from netoffload.pool import xapi
socket_path, vif, transport, calls = sys.argv[1:5]
session = XenAPI.Session("http://%s/" % socket_path.replace("/", "_"),
                         transport=XenAPI.UDSTransport())
session.login_with_password("root", "")
client = xapi.Xapi(session, lean=transport == "lean")
start = time.process_time()
for i in range(int(calls)):
    if i % 3 == 0:
        client.call("VIF.get_other_config", vif)
    elif i % 3 == 1:
        client.call("VIF.add_to_other_config", vif, "cpu", "off")
    else:
        client.call("VIF.remove_from_other_config", vif, "cpu")
print(time.process_time() - start)
"""


def cpu_child(socket_path, vif, transport):
    """CPU_CALLS calls from another process, a third each a read, an add
    and a remove of one key; the child's CPU seconds for them."""
    out = subprocess.run(
        [sys.executable, "-c", CPU_CHILD, socket_path, vif, transport,
         str(CPU_CALLS)], cwd=ROOT, check=True, timeout=600,
        stdout=subprocess.PIPE, universal_newlines=True).stdout
    return float(out.strip().splitlines()[-1])


def rss_mib():
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def main():
    work = socket_dir("xbench")
    results = {}
    try:
        plugin_dir = os.path.join(work, "plugins")
        os.mkdir(plugin_dir)
        with open(os.path.join(plugin_dir, "ping"), "w") as fh:
            fh.write(PLUGIN)
        os.chmod(os.path.join(plugin_dir, "ping"), 0o755)
        sim = XapiSim(socket_path=work + "/xapi.sock", port=0,
                      plugin_dir=plugin_dir, state_root=work + "/state").start()
        host = sim.add_host("h1")
        net = sim.add_network("net0")
        vm = sim.add_vm("vm0", power_state="Running")
        vif = sim.add_vif(vm, net, 0)
        unix, http = unix_session(sim).xenapi, http_session(sim).xenapi
        for name, api in (("unix", unix), ("http", http)):
            per_call_us(api, vif, 200)  # warm up
            results["call_us_%s_0ms" % name] = per_call_us(api, vif, 2000)
        sim.set_latency_ms(1)
        results["call_us_unix_1ms"] = per_call_us(unix, vif, 500)
        sim.set_latency_ms(0)

        # CPU per call on each side, the client in another process (as the
        # plugin is): the simulator's serving, the XenAPI client's and the
        # pack's own wire's (netoffload.pool.xapi.Xapi)
        for transport in ("xenapi", "lean"):
            sim_cpu = time.process_time()
            client_cpu = cpu_child(sim.socket_path, vif, transport)
            sim_cpu = time.process_time() - sim_cpu
            results["sim_cpu_us_per_call_%s" % transport] = \
                sim_cpu / CPU_CALLS * 1e6
            results["client_cpu_us_per_call_%s" % transport] = \
                client_cpu / CPU_CALLS * 1e6

        # event.from wake-up delay
        token = getattr(unix.event, "from")(["vif"], "", 1.0)["token"]
        delays = []
        for i in range(200):
            stamp = []

            def write(i=i, stamp=stamp):
                stamp.append(time.perf_counter())
                http.VIF.add_to_other_config(vif, "k%d" % i, "v")
            timer = threading.Timer(0.002, write)
            timer.start()
            batch = getattr(unix.event, "from")(["vif"], token, 5.0)
            delays.append((time.perf_counter() - stamp[0]) * 1000.0)
            token = batch["token"]
            timer.join()
        delays.sort()
        results["event_wake_ms_p50"] = delays[len(delays) // 2]
        results["event_wake_ms_p99"] = delays[int(len(delays) * 0.99) - 1]

        # plugin round trip
        times = []
        for _ in range(20):
            start = time.perf_counter()
            assert unix.host.call_plugin(host, "ping", "ping", {}) == "pong"
            times.append((time.perf_counter() - start) * 1000.0)
        results["call_plugin_ms_median"] = statistics.median(times)
        # the same plugin run bare (no mount namespace, PYTHONPATH instead
        # of dom0's paths): what the dom0 view (sim/dom0view.py) costs
        bare_env = {"PATH": "/sbin:/usr/sbin:/bin:/usr/bin",
                    "PYTHONPATH": ":".join([SIM_PYLIB, os.path.dirname(
                        os.path.dirname(os.path.abspath(XenAPI.__file__)))])}
        argv = [os.path.join(plugin_dir, "ping"),
                xapi_plugins.method_call("ping", unix_session(sim)._session, {})]
        times = []
        for _ in range(20):
            start = time.perf_counter()
            out = xapi_plugins.run_plugin(argv, bare_env, "/", 60)
            assert xapi_plugins.parse_output(out) == "pong"
            times.append((time.perf_counter() - start) * 1000.0)
        results["plugin_bare_ms_median"] = statistics.median(times)
        results["dom0_view_overhead_ratio"] = (
            results["call_plugin_ms_median"] / results["plugin_bare_ms_median"])

        # xe process per command
        env = dict(os.environ, XE_SIM_SOCKET=sim.socket_path)
        vif_uuid = unix.VIF.get_uuid(vif)
        times = []
        for i in range(20):
            start = time.perf_counter()
            subprocess.run([sys.executable, "-m", "sim.xe", "vif-param-set",
                            "uuid=" + vif_uuid, "other-config:x%d=off" % i],
                           cwd=ROOT, env=env, check=True, timeout=30)
            times.append((time.perf_counter() - start) * 1000.0)
        results["xe_process_ms_median"] = statistics.median(times)

        # bulk: 10,000 VMs with a VIF each, RSS growth, get_all_records
        rss_before = rss_mib()
        start = time.perf_counter()
        for i in range(10000):
            sim.add_vif(sim.add_vm("bulk%d" % i), net, 0)
        results["admin_add_vm_vif_us"] = (time.perf_counter() - start) / 10000 * 1e6
        results["rss_mib_per_10k_vm_vif"] = rss_mib() - rss_before
        start = time.perf_counter()
        records = unix.VIF.get_all_records()
        results["get_all_records_10k_vifs_ms"] = (time.perf_counter() - start) * 1000.0
        results["vifs"] = len(records)
        sim.close()

        # VIF.create throughput, with and without the journal
        for label, db_path in (("memory", None), ("journal", work + "/db.json")):
            sim = XapiSim(socket_path=work + "/c%s.sock" % label, db_path=db_path,
                          state_root=work + "/state").start()
            net = sim.add_network("net")
            vms = [sim.add_vm("v%d" % i) for i in range(1000)]
            api = unix_session(sim).xenapi
            start = time.perf_counter()
            for vm in vms:
                api.VIF.create({"VM": vm, "network": net, "device": "0", "MAC": "",
                                "MTU": "1500", "other_config": {},
                                "qos_algorithm_type": "", "qos_algorithm_params": {}})
            results["vif_create_per_s_%s" % label] = 1000 / (time.perf_counter() - start)
            sim.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)

    rows = [
        ("round trip, unix socket, 0 ms added", "call_us_unix_0ms", "us"),
        ("round trip, HTTP, 0 ms added", "call_us_http_0ms", "us"),
        ("round trip, unix socket, 1 ms added", "call_us_unix_1ms", "us"),
        ("simulator CPU per call, XenAPI client", "sim_cpu_us_per_call_xenapi",
         "us"),
        ("simulator CPU per call, the pack's wire", "sim_cpu_us_per_call_lean",
         "us"),
        ("XenAPI client CPU per call", "client_cpu_us_per_call_xenapi", "us"),
        ("the pack's wire, CPU per call", "client_cpu_us_per_call_lean", "us"),
        ("event.from wake after a write, p50", "event_wake_ms_p50", "ms"),
        ("event.from wake after a write, p99", "event_wake_ms_p99", "ms"),
        ("host.call_plugin, trivial plugin", "call_plugin_ms_median", "ms"),
        ("same plugin run bare (no dom0 view)", "plugin_bare_ms_median", "ms"),
        ("dom0 view cost (ratio)", "dom0_view_overhead_ratio", "x"),
        ("one xe process per param-set", "xe_process_ms_median", "ms"),
        ("VIF.create/s, in memory", "vif_create_per_s_memory", "/s"),
        ("VIF.create/s, with journal", "vif_create_per_s_journal", "/s"),
        ("VIF.get_all_records, 10k VIFs", "get_all_records_10k_vifs_ms", "ms"),
        ("RSS growth for 10k VMs + 10k VIFs", "rss_mib_per_10k_vm_vif", "MiB"),
    ]
    print("%-42s %12s" % ("simulator", "value"))
    for label, key, unit in rows:
        print("%-42s %9.1f %s" % (label, results[key], unit))
    results["loadavg"] = [round(x, 2) for x in os.getloadavg()]
    out = os.path.join(ROOT, "bench", "results", "bench_sim.json")
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with open(out, "w") as fh:
        json.dump(results, fh, indent=2, sort_keys=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
