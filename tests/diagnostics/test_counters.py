"""counters: parsers over real captured output, and real kernel counters."""
import os
import sys
import textwrap

import pytest

from netoffload.diagnostics import counters
from netoffload.errors import BadArgument, NotFound
from netoffload.plugin import diagnostics
from tests.support import layout

FIXTURES = os.path.join(layout.FIXTURES, "diag")
PY = sys.executable


def fixture(name):
    with open(os.path.join(FIXTURES, name)) as handle:
        return handle.read()


def test_parse_ethtool_stats_of_real_veth():
    stats = counters.parse_ethtool_stats(fixture("ethtool_S_veth.txt"))
    assert stats["peer_ifindex"] == 2
    assert stats["rx_queue_0_drops"] == 0
    assert "NIC statistics" not in stats
    assert len(stats) == 10


@pytest.mark.parametrize("line,expected", [
    pytest.param("     rx_crc_errors: 12", {"rx_crc_errors": 12}, id="plain"),
    pytest.param("     tx_queue_0_packets: 0", {"tx_queue_0_packets": 0},
                 id="zero"),
    pytest.param("     rx_gso_checksum_fixup: 7",
                 {"rx_gso_checksum_fixup": 7}, id="netback-fixup"),
    pytest.param("NIC statistics:", {}, id="heading"),
    pytest.param("no stats available", {}, id="no-stats"),
    pytest.param("     weird: 1x", {}, id="not-a-number"),
])
def test_parse_ethtool_stats_lines(line, expected):
    assert counters.parse_ethtool_stats(line + "\n") == expected


def test_parse_real_proc_tables():
    snmp = counters.parse_proc_table(fixture("proc_net_snmp.txt"))
    assert "InCsumErrors" in snmp["Tcp"] and "InCsumErrors" in snmp["Udp"]
    assert isinstance(snmp["Tcp"]["InSegs"], int)
    netstat = counters.parse_proc_table(fixture("proc_net_netstat.txt"))
    assert "InCsumErrors" in netstat["IpExt"]
    snmp6 = counters.parse_snmp6(fixture("proc_net_snmp6.txt"))
    assert "Udp6InCsumErrors" in snmp6


@pytest.mark.parametrize("args", [
    pytest.param({"seconds": "61"}, id="seconds-over-60"),
    pytest.param({"seconds": "-1"}, id="negative-seconds"),
    pytest.param({"device": "eth0 eth1"}, id="space-in-name"),
    pytest.param({"device": "x" * 20}, id="too-long"),
    pytest.param({"dev": "eth0"}, id="unknown-argument"),
])
def test_bad_arguments_refused(args):
    with pytest.raises(BadArgument):
        diagnostics.counters(None, args)


SEND_TO_TAP = textwrap.dedent("""
    import socket, time
    time.sleep(0.3)
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
    s.setsockopt(263, 20, 1)  # PACKET_QDISC_BYPASS: straight to tun_net_xmit
    s.bind(("tap9", 0))
    for _ in range(5):
        try:
            s.send(b"\\xff" * 6 + b"\\x02" * 6 + b"\\x08\\x00" + b"\\0" * 50)
        except OSError:
            pass
""")


@pytest.mark.root
def test_drops_on_a_tap_without_reader_show_as_rising(netns):
    # A tap with no process attached drops what it is given: tx_dropped.
    netns.add_tap("tap9")
    sender = netns.popen([PY, "-c", SEND_TO_TAP])
    try:
        with netns.entered():
            result = diagnostics.counters(None, {"device": "tap9",
                                                 "seconds": "1"})
    finally:
        sender.wait(10)
    assert sender.returncode == 0
    (device,) = result["devices"]
    assert device["device"] == "tap9" and device["kind"] == "host"
    assert device["delta"]["tx_dropped"] >= 1
    assert "tx_dropped" in device["rising"]
    assert set(result["kernel"]) == set(
        name for name, _f, _t, _c in counters.KERNEL_CSUM_COUNTERS)
    assert all(item["delta"] == 0 for item in result["kernel"].values())
    assert any("MAC filter" in note for note in result["notes"])


@pytest.mark.root
def test_snapshot_lists_every_device_but_lo(netns):
    netns.add_veth("vif5.0", "guest5")
    with netns.entered():
        result = counters.counters(None, 0)
        with pytest.raises(NotFound):
            counters.counters("eth9", 0)
    kinds = dict((d["device"], d["kind"]) for d in result["devices"])
    assert kinds == {"vif5.0": "vif", "guest5": "host"}
    assert all("delta" not in d for d in result["devices"])
    assert all(d["link"]["rx_errors"] == 0 for d in result["devices"])
