"""bench across a real veth pair: server in one namespace, CLI client in the
other; --compare applies a policy temporarily and always restores."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from netoffload.diagnostics import perftest
from netoffload.errors import BadArgument
from tests.support import layout
from tests.support.netns import NetNS

REPO = layout.REPO
PY = sys.executable
ENV = dict(os.environ, PYTHONPATH=REPO)
# Server and client on fixed, different CPUs, like two hosts: on this VM a
# 1-byte round trip takes ~10 us on one CPU but ~70 us across two idle
# vCPUs, so unpinned tcp_rr/tcp_crr figures jump by 10x with placement.
_CPUS = sorted(os.sched_getaffinity(0))
SERVER_CPU = ["taskset", "-c", str(_CPUS[-1])]
CLIENT_CPU = ["taskset", "-c", str(_CPUS[0])]


@pytest.fixture
def path():
    a, b = NetNS("bna"), NetNS("bnb")
    server = None
    try:
        a.ip("link", "add", "vA", "type", "veth", "peer", "name", "vB",
             "netns", b.name)
        a.ip("addr", "add", "10.78.0.1/24", "dev", "vA")
        b.ip("addr", "add", "10.78.0.2/24", "dev", "vB")
        a.ip("link", "set", "vA", "up")
        b.ip("link", "set", "vB", "up")
        server = b.popen(SERVER_CPU + [PY, "-m", "netoffload", "bench",
                                       "server", "--bind", "10.78.0.2"],
                         env=ENV, cwd=REPO, stderr=subprocess.PIPE,
                         universal_newlines=True)
        assert "listening" in server.stderr.readline()
        yield a, b
    finally:
        try:
            if server is not None:
                server.send_signal(signal.SIGINT)
                server.wait(10)  # a server deaf to Ctrl-C fails the test ...
        finally:  # ... but leaves no process or namespace behind
            if server is not None and server.poll() is None:
                server.kill()
                server.wait()
            a.close()
            b.close()


def cli(ns, *argv, **kw):
    return ns.run(CLIENT_CPU + [PY, "-m", "netoffload", "bench"] + list(argv),
                  env=ENV, cwd=REPO, check=False, **kw)


def live(ns, dev):
    return ns.ethtool_k(dev)


@pytest.mark.root
@pytest.mark.serial  # compares two throughput runs: other tests' load skews one
def test_client_gives_nonzero_consistent_figures(path):
    a, _b = path
    runs = []
    for _ in range(2):
        done = cli(a, "client", "10.78.0.2", "--duration", "1", "--json")
        assert done.returncode == 0, done.stderr
        runs.append(json.loads(done.stdout)["tests"])
    for test in perftest.TESTS:
        first, second = (perftest.headline(r[test]) for r in runs)
        assert first > 0 and second > 0
        # same path, same code: within a factor 3 even on a busy machine
        assert max(first, second) / min(first, second) < 3, (test, runs)
    assert runs[0]["tcp_rr"]["mean_latency_us"] > 0


@pytest.mark.root
def test_table_output_and_parallel(path):
    a, _b = path
    done = cli(a, "client", "10.78.0.2", "--duration", "1", "--parallel", "2",
               "--tests", "tcp_crr,stream")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].split() == ["TEST", "RESULT", "UNIT"]
    assert [line.split()[0] for line in lines[1:]] == ["tcp_crr", "stream"]


# The state before the bench: the veth defaults; tx off, so the tso bits
# read "off [requested on]"; one tso bit off while the group reads on (a
# restore by short name would turn it back on). An exact restore puts
# every requested bit back, so `ethtool -k` reads the same text after.
PRIOR_STATES = [
    pytest.param([], None, id="defaults"),
    pytest.param(["tx", "off"], "tx-tcp-segmentation: off [requested on]",
                 id="tx-off-tso-requested-on"),
    pytest.param(["tx-tcp6-segmentation", "off"], "tx-tcp6-segmentation: off\n",
                 id="one-tso-bit-off"),
]


def prepare(ns, dev, change, marker):
    if change:
        ns.run(["ethtool", "-K", dev] + change)
    text = live(ns, dev)
    if marker:
        assert marker in text, text  # the state this case is about
    return text


@pytest.mark.root
@pytest.mark.parametrize("change,marker", PRIOR_STATES)
def test_compare_applies_then_restores_exactly(path, change, marker):
    a, _b = path
    before = prepare(a, "vA", change, marker)
    done = cli(a, "--compare", "all-off", "vA", "--host", "10.78.0.2",
               "--duration", "1", "--tests", "stream", "--json")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["applied"]["vA"]["after"]["tx"] == "off"
    assert result["applied"]["vA"]["after"]["sg"] == "off"
    assert result["restored"]["vA"]["ok"] is True
    assert result["before"]["tests"]["stream"]["mbit_per_s"] > 0
    assert result["after"]["tests"]["stream"]["mbit_per_s"] > 0
    assert live(a, "vA") == before  # the full `ethtool -k` text


@pytest.mark.root
@pytest.mark.parametrize("change,marker", PRIOR_STATES)
def test_compare_restores_exactly_on_sigterm_while_policy_applied(
        path, change, marker):
    a, _b = path
    before = prepare(a, "vA", change, marker)
    proc = a.popen([PY, "-m", "netoffload", "bench", "--compare", "all-off",
                    "vA", "--host", "10.78.0.2", "--duration", "1",
                    "--tests", "tcp_rr"], env=ENV, cwd=REPO,
                   stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if "scatter-gather: off" in live(a, "vA"):
                break
            time.sleep(0.05)
        else:
            pytest.fail("the policy was never applied")
        proc.send_signal(signal.SIGTERM)
        proc.wait(15)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130  # interrupted, as the CLI reports it
    assert live(a, "vA") == before  # the full `ethtool -k` text


@pytest.mark.parametrize("kwargs", [
    pytest.param({"duration": 0}, id="duration-zero"),
    pytest.param({"duration": 301}, id="duration-over"),
    pytest.param({"parallel": 0}, id="parallel-zero"),
    pytest.param({"parallel": 65}, id="parallel-over"),
    pytest.param({"port": 70000}, id="port-over"),
    pytest.param({"tests": ("tcp_stream_x",)}, id="unknown-test"),
])
def test_client_bounds(kwargs):
    with pytest.raises(BadArgument):
        perftest.run_client("127.0.0.1", **kwargs)


@pytest.mark.parametrize("policy,devices", [
    pytest.param("none", ["vA"], id="policy-none"),
    pytest.param("all-off", [], id="no-device"),
    pytest.param("fast", ["vA"], id="unknown-profile"),
    pytest.param("all-off", ["vA; reboot"], id="bad-device-name"),
])
def test_compare_refuses_bad_input_before_running(policy, devices, mocker):
    run_client = mocker.patch("netoffload.diagnostics.perftest.run_client", autospec=True)
    with pytest.raises(BadArgument):
        perftest.compare(policy, devices, "127.0.0.1", duration=1)
    assert run_client.call_count == 0
