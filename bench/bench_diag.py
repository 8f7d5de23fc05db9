#!/usr/bin/env python3
"""netoffload bench on one veth path between two network namespaces:

1. stream throughput: `netoffload bench` vs `iperf3`, apples to apples: same
   direction (client sends), same duration, same block size (128 KiB), both
   rates as the receiver counted them; single stream (`--parallel 1` vs
   `iperf3 -P 1`) and parallel (`--parallel 2` vs `-P 2`). Target: within
   15% for the single stream.
2. TCP_CRR: `netoffload bench` (Python) vs a minimal C client + server
   compiled with gcc here, speaking the same protocol (shows how much of
   the rate is the tool and how much the path);
3. all-off vs default offload on the same path (`bench --compare all-off`):
   throughput, TCP_RR and TCP_CRR, the evidence to look at before disabling
   offload.

Placement: every server runs on one CPU and every client on another, like
two hosts (on a VM an unpinned 1-byte exchange takes ~10 us when both ends
share a CPU and ~70 us across two idle vCPUs, so unpinned RR/CRR figures
jump tenfold with the scheduler's choice). TCP_CRR is also measured with
both ends on one CPU, where the rate is bounded by CPU per connection, i.e.
by the tool's own cost. The machine is shared, so the tool and its reference run back to back in
each round, in alternating order (ABBA), and the ratio is the median of the
per-round ratios; every round records the load average. Each figure is the
median of ROUNDS runs of DURATION whole seconds (env BENCH_DIAG_DURATION,
BENCH_DIAG_ROUNDS; BENCH_DIAG_CODE = a directory holding another netoffload
package to measure instead, e.g. an older checkout). Prints a table and
writes bench/results/bench_diag.json.
"""
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from tests.support.netns import NetNS  # noqa: E402

DURATION = int(os.environ.get("BENCH_DIAG_DURATION", "3"))
ROUNDS = int(os.environ.get("BENCH_DIAG_ROUNDS", "5"))
COMPARE_ROUNDS = int(os.environ.get("BENCH_DIAG_COMPARE_ROUNDS", "3"))
CODE = os.environ.get("BENCH_DIAG_CODE", ROOT)
PY = sys.executable
ENV = dict(os.environ, PYTHONPATH=CODE)
SERVER_IP = "10.79.0.2"
PORT = 12866
C_PORT = 12867
IPERF_PORT = 5209
STREAM_TARGET = 0.15
PARALLEL = 2
_CPUS = sorted(os.sched_getaffinity(0))
CLIENT_CPU, SERVER_CPU = _CPUS[0], _CPUS[-1]

CRR_C = r"""
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static double now(void) {
    struct timespec ts; clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

int main(int argc, char **argv) {
    struct sockaddr_in sa; memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET; sa.sin_port = htons(atoi(argv[3]));
    inet_pton(AF_INET, argv[2], &sa.sin_addr);
    int one = 1; char buf[16];
    if (strcmp(argv[1], "server") == 0) {
        int l = socket(AF_INET, SOCK_STREAM, 0);
        setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        if (bind(l, (struct sockaddr *)&sa, sizeof sa) || listen(l, 1024)) return 1;
        fprintf(stderr, "listening\n");
        for (;;) {   /* like netoffload's server: answer, then close first */
            int c = accept(l, NULL, NULL);
            if (c < 0) continue;
            setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
            int got = 0;
            while (got < 2) { int n = read(c, buf, 2 - got); if (n <= 0) break; got += n; }
            if (got == 2) write(c, "r", 1);
            close(c);
        }
    }
    double duration = atof(argv[4]), end = now() + duration, start = now();
    long count = 0;
    while (now() < end) {
        int s = socket(AF_INET, SOCK_STREAM, 0);
        setsockopt(s, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        if (connect(s, (struct sockaddr *)&sa, sizeof sa)) { perror("connect"); return 1; }
        write(s, "Cq", 2);
        if (read(s, buf, 1) != 1) return 1;
        read(s, buf, 1);  /* the server's FIN */
        close(s);
        count++;
    }
    printf("%.1f\n", count / (now() - start));
    return 0;
}
"""


def median(values):
    return round(statistics.median(values), 3 if max(values) < 10 else 1)


def load():
    return [round(v, 2) for v in os.getloadavg()]


def pinned(cpu, argv):
    return ["taskset", "-c", str(cpu)] + argv


def pin_servers(servers, cpu):
    for proc in servers:
        os.sched_setaffinity(proc.pid, {cpu})


def bench_client(ns, tests, parallel=1, duration=DURATION):
    done = ns.run(pinned(CLIENT_CPU, [PY, "-m", "netoffload", "bench", "client", SERVER_IP,
                   "--duration", str(duration), "--parallel", str(parallel),
                   "--tests", ",".join(tests), "--json"]), env=ENV, cwd=CODE,
                  timeout=duration * 10 + 30)
    return json.loads(done.stdout)["tests"]


def iperf3_mbit(ns, parallel):
    done = ns.run(pinned(CLIENT_CPU, [
        "iperf3", "-c", SERVER_IP, "-p", str(IPERF_PORT), "-t",
        str(DURATION), "-P", str(parallel), "-J"]),
                  timeout=DURATION + 30)
    report = json.loads(done.stdout)
    return round(report["end"]["sum_received"]["bits_per_second"] / 1e6, 1)


def build_c(workdir):
    if not shutil.which("gcc"):
        return None
    source = os.path.join(workdir, "crr.c")
    binary = os.path.join(workdir, "crr")
    with open(source, "w") as handle:
        handle.write(CRR_C)
    subprocess.run(["gcc", "-O2", "-o", binary, source], check=True,
                   timeout=60)
    return binary


def paired(rounds, ours_key, ref_key):
    """Medians of both sides and the median of per-round ratios."""
    pairs = [r for r in rounds if r.get(ref_key)]
    result = {"netoffload": median([r[ours_key] for r in rounds]),
              "runs": [r[ours_key] for r in rounds]}
    if pairs:
        result["reference"] = median([r[ref_key] for r in pairs])
        result["reference_runs"] = [r[ref_key] for r in pairs]
        result["ratio"] = median([r[ours_key] / r[ref_key] for r in pairs])
    return result


def c_crr(a, c_binary):
    return float(a.run(pinned(CLIENT_CPU, [
        c_binary, "client", SERVER_IP, str(C_PORT), str(DURATION)]),
        timeout=DURATION + 30).stdout.strip())


def measure_round(a, index, have_iperf, c_binary, servers):
    """One round; the order flips every round so drift hits both sides."""
    row = {"load_before": load()}
    pin_servers(servers, SERVER_CPU)
    steps = [
        ("stream_p1", lambda: bench_client(a, ("stream",))["stream"][
            "mbit_per_s"]),
        ("iperf3_p1", (lambda: iperf3_mbit(a, 1)) if have_iperf else None),
        ("stream_p%d" % PARALLEL, lambda: bench_client(
            a, ("stream",), PARALLEL)["stream"]["mbit_per_s"]),
        ("iperf3_p%d" % PARALLEL,
         (lambda: iperf3_mbit(a, PARALLEL)) if have_iperf else None),
        ("crr", lambda: bench_client(a, ("tcp_crr",))["tcp_crr"][
            "per_second"]),
        ("c_crr", (lambda: c_crr(a, c_binary)) if c_binary else None),
        ("crr_one_cpu", lambda: (pin_servers(servers, CLIENT_CPU), bench_client(
            a, ("tcp_crr",))["tcp_crr"]["per_second"])[1]),
        ("c_crr_one_cpu", (lambda: (pin_servers(servers, CLIENT_CPU), c_crr(
            a, c_binary))[1]) if c_binary else None),
    ]
    for pair_start in range(0, len(steps), 2):
        pair = steps[pair_start:pair_start + 2]
        if index % 2:
            pair.reverse()
        for name, step in pair:
            if step is not None:
                row[name] = step()
    pin_servers(servers, SERVER_CPU)
    row["load_after"] = load()
    return row


def main():
    results = {"machine": {"python": platform.python_version(),
                           "kernel": platform.release(),
                           "cpus": os.cpu_count(),
                           "iperf3": (subprocess.run(
                               ["iperf3", "--version"], stdout=subprocess.PIPE,
                               universal_newlines=True).stdout.split("\n")[0]
                               if shutil.which("iperf3") else None)},
               "code": CODE, "duration": DURATION, "rounds": ROUNDS,
               "started": time.strftime("%Y-%m-%d %H:%M:%S"),
               "load_start": load()}
    a, b = NetNS("bda"), NetNS("bdb")
    servers = []
    workdir = tempfile.mkdtemp(prefix="bench-diag-")
    try:
        a.ip("link", "add", "vA", "type", "veth", "peer", "name", "vB",
             "netns", b.name)
        a.ip("addr", "add", "10.79.0.1/24", "dev", "vA")
        b.ip("addr", "add", SERVER_IP + "/24", "dev", "vB")
        a.ip("link", "set", "vA", "up")
        b.ip("link", "set", "vB", "up")
        server = b.popen(pinned(SERVER_CPU, [
            PY, "-m", "netoffload", "bench", "server", "--bind", SERVER_IP,
            "--port", str(PORT)]), env=ENV, cwd=CODE,
                         stderr=subprocess.PIPE, universal_newlines=True)
        servers.append(server)
        server.stderr.readline()
        have_iperf = shutil.which("iperf3") is not None
        if have_iperf:
            servers.append(b.popen(pinned(SERVER_CPU, [
                "iperf3", "-s", "-p", str(IPERF_PORT)]),
                                   stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL))
        c_binary = build_c(workdir)
        if c_binary:
            c_server = b.popen(pinned(SERVER_CPU, [
                c_binary, "server", SERVER_IP, str(C_PORT)]),
                               stderr=subprocess.PIPE, universal_newlines=True)
            servers.append(c_server)
            c_server.stderr.readline()
        time.sleep(0.5)

        rounds = []
        for index in range(ROUNDS):
            rounds.append(measure_round(a, index, have_iperf, c_binary,
                                        servers))
            sys.stderr.write("round %d: %s\n" % (index + 1, json.dumps(
                rounds[-1], sort_keys=True)))
        results["rounds_raw"] = rounds
        results["stream_p1"] = paired(rounds, "stream_p1", "iperf3_p1")
        results["stream_p%d" % PARALLEL] = paired(
            rounds, "stream_p%d" % PARALLEL, "iperf3_p%d" % PARALLEL)
        results["tcp_crr"] = paired(rounds, "crr", "c_crr")
        results["tcp_crr_one_cpu"] = paired(rounds, "crr_one_cpu",
                                            "c_crr_one_cpu")
        if "ratio" in results["stream_p1"]:
            results["stream_p1"]["within_target"] = abs(
                1 - results["stream_p1"]["ratio"]) <= STREAM_TARGET

        compares = []
        for _ in range(COMPARE_ROUNDS):
            load_before = load()
            done = a.run(pinned(CLIENT_CPU, [
                PY, "-m", "netoffload", "bench", "--compare", "all-off", "vA",
                "--host", SERVER_IP, "--duration", str(DURATION), "--json"]),
                env=ENV, cwd=CODE,
                         timeout=DURATION * 20 + 60)
            compare = json.loads(done.stdout)
            compare["load_before"] = load_before
            compares.append(compare)
        offload = {"loads": [c["load_before"] for c in compares]}
        for test, key in (("stream", "mbit_per_s"), ("tcp_rr", "per_second"),
                          ("tcp_crr", "per_second")):
            default = median([c["before"]["tests"][test][key] for c in compares])
            all_off = median([c["after"]["tests"][test][key] for c in compares])
            offload[test] = {"default": default, "all_off": all_off,
                             "change_percent": round(
                                 (all_off - default) * 100.0 / default, 1)}
        offload["restored"] = all(r["ok"] for c in compares
                                  for r in c["restored"].values())
        results["all_off_vs_default"] = offload
    finally:
        for proc in servers:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        a.close()
        b.close()
        shutil.rmtree(workdir, ignore_errors=True)
    results["load_end"] = load()

    print("one veth path, %ds x %d rounds (median; ratio = median of per-round"
          " ratios); servers on CPU %d, clients on CPU %d"
          % (DURATION, ROUNDS, SERVER_CPU, CLIENT_CPU))
    print("load average (1/5/15 min): start %s, end %s; per round 1-min: %s"
          % (results["load_start"], results["load_end"],
             [r["load_before"][0] for r in rounds]))
    print("%-36s %12s %12s %7s" % ("MEASURE", "NETOFFLOAD", "REFERENCE",
                                   "RATIO"))
    for key, label in (("stream_p1", "stream -P1 Mbit/s (iperf3)"),
                       ("stream_p%d" % PARALLEL,
                        "stream -P%d Mbit/s (iperf3)" % PARALLEL),
                       ("tcp_crr", "TCP_CRR conn/s (C client+srv)"),
                       ("tcp_crr_one_cpu", "TCP_CRR both ends 1 CPU (C)")):
        entry = results[key]
        print("%-36s %12.1f %12s %7s" % (
            label, entry["netoffload"], entry.get("reference", "n/a"),
            entry.get("ratio", "n/a")))
    print()
    print("%-36s %12s %12s %7s" % ("OFFLOAD (netoffload bench)", "DEFAULT",
                                   "ALL-OFF", "CHANGE"))
    for test in ("stream", "tcp_rr", "tcp_crr"):
        o = results["all_off_vs_default"][test]
        print("%-36s %12.1f %12.1f %6.1f%%" % (test, o["default"], o["all_off"],
                                               o["change_percent"]))
    print("state restored after every compare: %s"
          % results["all_off_vs_default"]["restored"])
    if "within_target" in results["stream_p1"]:
        print("single stream within %d%% of iperf3: %s" % (
            STREAM_TARGET * 100, results["stream_p1"]["within_target"]))
    out_dir = os.path.join(ROOT, "bench", "results")
    if not os.path.isdir(out_dir):
        os.makedirs(out_dir)
    with open(os.path.join(out_dir, "bench_diag.json"), "w") as handle:
        json.dump(results, handle, indent=2, sort_keys=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
