"""check_checksums on a real veth pair between two namespaces, real tcpdump.

Host side "A" (vA, 10.77.0.1 / fd00:77::1) runs the check; peer "B" (vB)
sends traffic or injects packets with wrong checksums (scapy).
"""
import os
import subprocess
import sys
import textwrap

import pytest

from netoffload.diagnostics import checksums
from netoffload.errors import BadArgument, DeviceError, NotFound
from netoffload.plugin import diagnostics
from tests.support import paths
from tests.support.netns import NetNS

pytestmark = pytest.mark.root

PY = sys.executable
ROOT = paths.REPO

TRAFFIC = textwrap.dedent("""
    import socket, threading, time, sys
    time.sleep(float(sys.argv[1]))
    def serve(family, addr):
        s = socket.socket(family); s.bind((addr, 5001)); s.listen(5)
        c, _ = s.accept(); c.recv(100); c.sendall(b"pong" * 10); c.close()
    def udp(family, addr):
        u = socket.socket(family, socket.SOCK_DGRAM); u.bind((addr, 5002))
        d, a = u.recvfrom(100); u.sendto(b"reply", a)
    ts = [threading.Thread(target=f, args=a) for f, a in (
        (serve, (socket.AF_INET, "10.77.0.2")), (serve, (socket.AF_INET6, "fd00:77::2")),
        (udp, (socket.AF_INET, "10.77.0.2")), (udp, (socket.AF_INET6, "fd00:77::2")))]
    [t.start() for t in ts]
""")

CLIENT = textwrap.dedent("""
    import socket, time, sys
    time.sleep(float(sys.argv[1]))
    for fam, addr in ((socket.AF_INET, "10.77.0.2"), (socket.AF_INET6, "fd00:77::2")):
        c = socket.create_connection((addr, 5001)); c.sendall(b"ping"); c.recv(100); c.close()
        u = socket.socket(fam, socket.SOCK_DGRAM); u.sendto(b"hello", (addr, 5002)); u.recvfrom(100)
""")

INJECT = textwrap.dedent("""
    import sys, time
    from scapy.all import Ether, IP, IPv6, TCP, UDP, Raw, sendp, conf
    conf.verb = 0
    mac = sys.argv[2]
    time.sleep(float(sys.argv[1]))
    sendp([Ether(dst=mac)/IP(src="10.77.0.2", dst="10.77.0.1")/TCP(sport=4444, dport=5555, flags="S", chksum=0x1234),
           Ether(dst=mac)/IP(src="10.77.0.2", dst="10.77.0.1")/UDP(sport=4444, dport=5556, chksum=0x1234)/Raw(b"hello"),
           Ether(dst=mac)/IPv6(src="fd00:77::2", dst="fd00:77::1")/TCP(sport=4444, dport=5555, flags="S", chksum=0x1234),
           Ether(dst=mac)/IPv6(src="fd00:77::2", dst="fd00:77::1")/UDP(sport=4444, dport=5556, chksum=0x1234)/Raw(b"hello")],
          iface="vB")
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


def test_egress_with_tx_on_is_expected_not_corruption(pair):
    a, b = pair
    server = b.popen([PY, "-c", TRAFFIC, "0"])
    client = a.popen([PY, "-c", CLIENT, "1.0"])
    try:
        with a.entered():
            result = diagnostics.check_checksums(None, {"device": "vA",
                                                     "seconds": "3"})
    finally:
        client.wait(10)
        server.wait(10)
    assert client.returncode == 0
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
    injector = b.popen([PY, "-c", INJECT, "1.2", _mac(a, "vA")],
                       stderr=subprocess.PIPE, universal_newlines=True)
    try:
        with a.entered():
            result = diagnostics.check_checksums(None, {"device": "vA",
                                                     "seconds": "3"})
    finally:
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
    server = b.popen([PY, "-c", TRAFFIC, "0"])
    client = a.popen([PY, "-c", CLIENT, "1.0"])
    try:
        with a.entered():
            result = checksums.check_checksums("vA", seconds=20, packets=2)
    finally:
        client.wait(10)
        server.wait(10)
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


@pytest.mark.skipif(not os.access("/usr/bin/python3", os.X_OK),
                    reason="needs a system python3 that user nobody can run")
def test_without_rights_fails_with_clear_message():
    # As nobody (with the system python3: nobody cannot read the venv's):
    # tcpdump itself refuses to open the capture.
    code = ("from netoffload.diagnostics import checksums\n"
            "from netoffload.errors import DeviceError\n"
            "try:\n"
            "    checksums.check_checksums('lo', seconds=2)\n"
            "except DeviceError as e:\n"
            "    print(e.code, e.message)\n")
    done = subprocess.run(["/usr/bin/python3", "-c", code], cwd=ROOT,
                          timeout=30, env={"PATH": "/usr/bin:/bin",
                                           "PYTHONPATH": ROOT},
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          universal_newlines=True,
                          preexec_fn=lambda: (os.setgid(65534),
                                              os.setuid(65534)))
    assert done.stdout.startswith("NETOFFLOAD_DEVICE_ERROR tcpdump has no "
                                  "permission to capture on lo"), done.stderr
