"""check_checksums on a real veth pair between two namespaces, real tcpdump.

Host side "A" (vA, 10.77.0.1 / fd00:77::1) runs the check; peer "B" (vB)
sends traffic or injects packets with wrong checksums (scapy).

No sleeps decide what is captured: the check runs in a thread that has
entered A (so it reads A's /proc/net counters and starts tcpdump there),
and the traffic starts only once both tcpdump captures say they are
listening, however loaded the machine is.
"""
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import threading
import time

import pytest

from netoffload.diagnostics import checksums
from netoffload.errors import BadArgument, DeviceError, NotFound
from netoffload.plugin import diagnostics
from tests.support import layout
from tests.support.netns import NetNS

pytestmark = pytest.mark.root

PY = sys.executable
ROOT = layout.REPO

# Each traffic script prints "ready" once set up, then waits for a line on
# stdin before it sends anything.
SERVER = textwrap.dedent("""
    import socket, sys, threading
    def serve(s):
        s.listen(5); c, _ = s.accept(); c.recv(100); c.sendall(b"pong" * 10); c.close()
    def udp(u):
        d, a = u.recvfrom(100); u.sendto(b"reply", a)
    jobs = []
    for family, addr in ((socket.AF_INET, "10.77.0.2"), (socket.AF_INET6, "fd00:77::2")):
        s = socket.socket(family); s.bind((addr, 5001)); jobs.append((serve, s))
        u = socket.socket(family, socket.SOCK_DGRAM); u.bind((addr, 5002)); jobs.append((udp, u))
    for s in [s for f, s in jobs if f is serve]:
        s.listen(5)
    ts = [threading.Thread(target=f, args=(s,)) for f, s in jobs]
    [t.start() for t in ts]
    print("ready", flush=True)
""")

CLIENT = textwrap.dedent("""
    import socket, sys
    print("ready", flush=True); sys.stdin.readline()
    for fam, addr in ((socket.AF_INET, "10.77.0.2"), (socket.AF_INET6, "fd00:77::2")):
        c = socket.create_connection((addr, 5001)); c.sendall(b"ping"); c.recv(100); c.close()
        u = socket.socket(fam, socket.SOCK_DGRAM); u.sendto(b"hello", (addr, 5002)); u.recvfrom(100)
""")

INJECT = textwrap.dedent("""
    import sys
    from scapy.all import Ether, IP, IPv6, TCP, UDP, Raw, conf
    conf.verb = 0
    mac = sys.argv[1]
    v4 = Ether(dst=mac)/IP(src="10.77.0.2", dst="10.77.0.1")
    v6 = Ether(dst=mac)/IPv6(src="fd00:77::2", dst="fd00:77::1")
    bad = 0x1234  # a wrong checksum on purpose
    packets = [
        v4/TCP(sport=4444, dport=5555, flags="S", chksum=bad),
        v4/UDP(sport=4444, dport=5556, chksum=bad)/Raw(b"hello"),
        v6/TCP(sport=4444, dport=5555, flags="S", chksum=bad),
        v6/UDP(sport=4444, dport=5556, chksum=bad)/Raw(b"hello")]
    wire = conf.L2socket(iface="vB")
    print("ready", flush=True); sys.stdin.readline()
    for packet in packets:
        wire.send(packet)
    wire.close()
""")


@pytest.fixture
def pair():
    a, b = NetNS("cka"), NetNS("ckb")
    try:
        a.ip("link", "add", "vA", "type", "veth", "peer", "name", "vB",
             "netns", b.name)
        a.ip("addr", "add", "10.77.0.1/24", "dev", "vA")
        a.ip("addr", "add", "fd00:77::1/64", "dev", "vA", "nodad")
        b.ip("addr", "add", "10.77.0.2/24", "dev", "vB")
        b.ip("addr", "add", "fd00:77::2/64", "dev", "vB", "nodad")
        a.ip("link", "set", "vA", "up")
        b.ip("link", "set", "vB", "up")
        yield a, b
    finally:
        a.close()
        b.close()


def _mac(ns, dev):
    return ns.run(["cat", "/sys/class/net/%s/address" % dev]).stdout.strip()


def _started(ns, argv):
    """A traffic script in ns, once it has said it is ready."""
    proc = ns.popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE, universal_newlines=True)
    line = proc.stdout.readline()
    if line.strip() != "ready":
        proc.kill()
        raise AssertionError("%s did not start: %s" % (
            argv[:3], proc.communicate(timeout=20)[1]))
    return proc


def _go(proc):
    proc.stdin.write("go\n")
    proc.stdin.flush()


def _children_listening(name):
    """How many of this process's `name` children report they are
    listening (tcpdump says so on stderr once its capture is set up)."""
    count = 0
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % pid) as handle:
                stat = handle.read()
            comm = stat[stat.index("(") + 1:stat.rindex(")")]
            ppid = int(stat[stat.rindex(")") + 2:].split()[1])
            if ppid != os.getpid() or comm != name:
                continue
            with open("/proc/%s/fd/2" % pid) as handle:
                count += "listening on" in handle.read()
        except (OSError, ValueError, IndexError):
            continue
    return count


def check_during(ns, check, start_traffic, timeout=60):
    """check() run inside ns, start_traffic() called once both of its
    tcpdump captures (in and out) are listening; check()'s result."""
    outcome = {}

    def run():
        try:
            with ns.entered():  # this thread only: /proc/thread-self/net is ns's
                outcome["result"] = check()
        except BaseException as err:  # re-raised in the test's thread
            outcome["error"] = err

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    deadline = time.monotonic() + timeout
    while worker.is_alive() and _children_listening("tcpdump") < 2:
        assert time.monotonic() < deadline, "tcpdump never listened"
        time.sleep(0.02)
    start_traffic()
    worker.join(timeout)
    assert not worker.is_alive(), "the check did not finish"
    if "error" in outcome:
        raise outcome["error"]
    return outcome["result"]


def check_with_traffic(a, b, check):
    """check() in namespace a while a's CLIENT talks to b's SERVER; the
    result and the client's exit status."""
    server = _started(b, [PY, "-c", SERVER])
    client = _started(a, [PY, "-c", CLIENT])
    try:
        result = check_during(a, check, lambda: _go(client))
    finally:  # stdin closed: a script still waiting goes on and ends
        client.communicate(timeout=20)
        server.communicate(timeout=20)
    return result, client.returncode


def test_egress_with_tx_on_is_expected_not_corruption(pair):
    a, b = pair
    result, client_rc = check_with_traffic(a, b, lambda: diagnostics.check_checksums(
        None, {"device": "vA", "seconds": "3"}))
    assert client_rc == 0
    assert result["offload"]["tx"] == "on"
    assert result["classes"]["egress_local"] >= 8  # 2 handshakes + 2 UDP
    assert result["classes"]["egress_forwarded"] == 0
    assert result["ingress_detail"]["ingress_bad"] == 0
    assert all(v == 0 for v in result["kernel_counters_delta"].values())
    assert result["status"] == "no_corruption"
    assert result["verdict"].startswith("no evidence of checksum corruption")
    assert "outgoing and expected with tx offload on" in result["verdict"]
    assert 1 <= len(result["examples"]) <= checksums.MAX_EXAMPLES


def test_injected_bad_checksums_are_ingress_corruption(pair):
    a, b = pair
    injector = _started(b, [PY, "-c", INJECT, _mac(a, "vA")])
    try:
        result = check_during(a, lambda: diagnostics.check_checksums(
            None, {"device": "vA", "seconds": "3"}), lambda: _go(injector))
    finally:  # stdin closed: a script still waiting goes on and ends
        _out, err = injector.communicate(timeout=20)
    assert injector.returncode == 0, err
    assert result["classes"]["ingress"] == 4
    assert result["ingress_detail"] == {"ingress_partial": 0, "ingress_bad": 4}
    delta = result["kernel_counters_delta"]
    # Tcp counts IPv4 and IPv6; UDP has one counter per family
    assert (delta["TcpInCsumErrors"], delta["UdpInCsumErrors"],
            delta["Udp6InCsumErrors"]) == (2, 1, 1)
    assert result["status"] == "corruption"
    assert result["verdict"].startswith(
        "received packets arrive with bad checksums")
    assert "dropped 4 packet(s)" in result["verdict"]


def test_packet_cap_stops_capture_early(pair):
    a, b = pair
    result, _ = check_with_traffic(a, b, lambda: checksums.check_checksums(
        "vA", seconds=20, packets=2))
    assert result["stopped_by"] == {"out": "packet cap", "in": "packet cap"}
    assert result["elapsed"] < 10
    assert result["packets"]["captured"] == 4


@pytest.mark.parametrize("args", [
    pytest.param({"device": "vA", "seconds": "61"}, id="seconds-over-60"),
    pytest.param({"device": "vA", "seconds": "0"}, id="seconds-zero"),
    pytest.param({"device": "vA", "packets": "10001"}, id="packets-over-cap"),
    pytest.param({"device": "vA", "packets": "many"}, id="packets-not-int"),
    pytest.param({"device": "vA; reboot"}, id="shell-in-name"),
    pytest.param({"device": "a" * 16}, id="name-too-long"),
    pytest.param({"device": "../x"}, id="slash-in-name"),
    pytest.param({}, id="device-missing"),
    pytest.param({"device": "vA", "filter": "tcp"}, id="unknown-argument"),
])
def test_bad_arguments_refused_before_anything_runs(args, mocker):
    popen = mocker.patch("subprocess.Popen", autospec=True)
    with pytest.raises(BadArgument):
        diagnostics.check_checksums(None, args)
    assert popen.call_count == 0


def test_missing_device_is_not_found(netns):
    with netns.entered():
        with pytest.raises(NotFound):
            checksums.check_checksums("nosuch0", seconds=1)


def test_without_tcpdump_fails_with_device_error(netns, monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))  # /usr/bin is where tcpdump is
    with netns.entered():
        with pytest.raises(DeviceError) as caught:
            checksums.check_checksums("lo", seconds=1)
    assert caught.value.message == "tcpdump is not installed"


@pytest.fixture
def readable_package():
    """A copy of the package that user nobody can read: the checkout may sit
    in a directory only root can enter (tmp_path does too)."""
    top = tempfile.mkdtemp(prefix="netoffload-nobody-")
    try:
        shutil.copytree(os.path.join(ROOT, "netoffload"),
                        os.path.join(top, "netoffload"),
                        ignore=shutil.ignore_patterns("__pycache__"))
        for base, _dirs, files in os.walk(top):
            os.chmod(base, 0o755)
            for name in files:
                os.chmod(os.path.join(base, name), 0o644)
        yield top
    finally:
        shutil.rmtree(top, ignore_errors=True)


@pytest.mark.skipif(not os.access("/usr/bin/python3", os.X_OK),
                    reason="needs a system python3 that user nobody can run")
def test_without_rights_fails_with_clear_message(readable_package):
    # As nobody (with the system python3: nobody cannot read the venv's):
    # tcpdump itself refuses to open the capture.
    code = ("from netoffload.diagnostics import checksums\n"
            "from netoffload.errors import DeviceError\n"
            "try:\n"
            "    checksums.check_checksums('lo', seconds=2)\n"
            "except DeviceError as e:\n"
            "    print(e.code, e.message)\n")
    done = subprocess.run(["/usr/bin/python3", "-B", "-c", code],
                          cwd=readable_package, timeout=30,
                          env={"PATH": "/usr/bin:/bin",
                               "PYTHONPATH": readable_package},
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          universal_newlines=True,
                          preexec_fn=lambda: (os.setgroups([]),
                                              os.setgid(65534),
                                              os.setuid(65534)))
    assert done.stdout.startswith("NETOFFLOAD_DEVICE_ERROR tcpdump has no "
                                  "permission to capture on lo"), done.stderr
