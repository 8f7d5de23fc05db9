#!/usr/bin/env python3
"""netoffload bench on one veth path between two network namespaces:

1. stream throughput: `netoffload bench` vs `iperf3` (target: within 15%);
2. TCP_CRR: `netoffload bench` (Python) vs a minimal C client + server
   compiled with gcc here, speaking the same protocol (shows how much of
   the rate is the tool and how much the path);
3. all-off vs default offload on the same path (`bench --compare all-off`):
   throughput, TCP_RR and TCP_CRR, the evidence to look at before disabling
   offload.

Each figure is the median of ROUNDS runs of DURATION seconds (env
BENCH_DIAG_DURATION, BENCH_DIAG_ROUNDS). Prints a table and writes
bench/results/bench_diag.json.
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

DURATION = float(os.environ.get("BENCH_DIAG_DURATION", "3"))
ROUNDS = int(os.environ.get("BENCH_DIAG_ROUNDS", "3"))
PY = sys.executable
ENV = dict(os.environ, PYTHONPATH=ROOT)
SERVER_IP = "10.79.0.2"
PORT = 12866
C_PORT = 12867
IPERF_PORT = 5209
STREAM_TARGET = 0.15

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
    return round(statistics.median(values), 1)


def bench_client(ns, tests):
    done = ns.run([PY, "-m", "netoffload", "bench", "client", SERVER_IP,
                   "--duration", str(DURATION), "--tests", ",".join(tests),
                   "--json"], env=ENV, cwd=ROOT, timeout=DURATION * 10 + 30)
    return json.loads(done.stdout)["tests"]


def iperf3_mbit(ns):
    done = ns.run(["iperf3", "-c", SERVER_IP, "-p", str(IPERF_PORT), "-t",
                   str(int(max(1, DURATION))), "-J"], timeout=DURATION + 30)
    report = json.loads(done.stdout)
    return report["end"]["sum_received"]["bits_per_second"] / 1e6


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


def main():
    results = {"machine": {"python": platform.python_version(),
                           "kernel": platform.release(),
                           "cpus": os.cpu_count()},
               "duration": DURATION, "rounds": ROUNDS}
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
        server = b.popen([PY, "-m", "netoffload", "bench", "server", "--bind",
                          SERVER_IP, "--port", str(PORT)], env=ENV, cwd=ROOT,
                         stderr=subprocess.PIPE, universal_newlines=True)
        servers.append(server)
        server.stderr.readline()
        have_iperf = shutil.which("iperf3") is not None
        if have_iperf:
            servers.append(b.popen(["iperf3", "-s", "-p", str(IPERF_PORT)],
                                   stdout=subprocess.DEVNULL))
        c_binary = build_c(workdir)
        if c_binary:
            c_server = b.popen([c_binary, "server", SERVER_IP, str(C_PORT)],
                               stderr=subprocess.PIPE, universal_newlines=True)
            servers.append(c_server)
            c_server.stderr.readline()
        time.sleep(0.5)

        ours_stream, iperf, ours_crr, c_crr = [], [], [], []
        for _ in range(ROUNDS):
            tests = bench_client(a, ("stream", "tcp_crr"))
            ours_stream.append(tests["stream"]["mbit_per_s"])
            ours_crr.append(tests["tcp_crr"]["per_second"])
            if have_iperf:
                iperf.append(iperf3_mbit(a))
            if c_binary:
                done = a.run([c_binary, "client", SERVER_IP, str(C_PORT),
                              str(DURATION)], timeout=DURATION + 30)
                c_crr.append(float(done.stdout.strip()))
        stream = {"netoffload_mbit_s": median(ours_stream),
                  "runs": ours_stream}
        if iperf:
            stream["iperf3_mbit_s"] = median(iperf)
            stream["iperf3_runs"] = [round(v, 1) for v in iperf]
            stream["ratio"] = round(median(ours_stream) / median(iperf), 3)
            stream["within_target"] = abs(1 - stream["ratio"]) <= STREAM_TARGET
        crr = {"netoffload_per_s": median(ours_crr), "runs": ours_crr}
        if c_crr:
            crr["c_reference_per_s"] = median(c_crr)
            crr["c_runs"] = c_crr
            crr["ratio"] = round(median(ours_crr) / median(c_crr), 3)
        results["stream"] = stream
        results["tcp_crr"] = crr

        compares = []
        for _ in range(ROUNDS):
            done = a.run([PY, "-m", "netoffload", "bench", "--compare",
                          "all-off", "vA", "--host", SERVER_IP, "--duration",
                          str(DURATION), "--json"], env=ENV, cwd=ROOT,
                         timeout=DURATION * 20 + 60)
            compares.append(json.loads(done.stdout))
        offload = {}
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

    print("one veth path, %ss x %d rounds (median)" % (DURATION, ROUNDS))
    print("%-34s %14s %14s %8s" % ("MEASURE", "NETOFFLOAD", "REFERENCE",
                                   "RATIO"))
    s = results["stream"]
    print("%-34s %14.1f %14s %8s" % (
        "stream Mbit/s (ref iperf3)", s["netoffload_mbit_s"],
        s.get("iperf3_mbit_s", "n/a"), s.get("ratio", "n/a")))
    c = results["tcp_crr"]
    print("%-34s %14.1f %14s %8s" % (
        "TCP_CRR conn/s (ref C client+srv)", c["netoffload_per_s"],
        c.get("c_reference_per_s", "n/a"), c.get("ratio", "n/a")))
    print()
    print("%-34s %14s %14s %8s" % ("OFFLOAD (netoffload bench)", "DEFAULT",
                                   "ALL-OFF", "CHANGE"))
    for test in ("stream", "tcp_rr", "tcp_crr"):
        o = results["all_off_vs_default"][test]
        print("%-34s %14.1f %14.1f %7.1f%%" % (test, o["default"], o["all_off"],
                                               o["change_percent"]))
    print("state restored after every compare: %s"
          % results["all_off_vs_default"]["restored"])
    if "within_target" in s:
        print("stream within %d%% of iperf3: %s" % (STREAM_TARGET * 100,
                                                    s["within_target"]))
    out_dir = os.path.join(ROOT, "bench", "results")
    if not os.path.isdir(out_dir):
        os.makedirs(out_dir)
    with open(os.path.join(out_dir, "bench_diag.json"), "w") as handle:
        json.dump(results, handle, indent=2, sort_keys=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
