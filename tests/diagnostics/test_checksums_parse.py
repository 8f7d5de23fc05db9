"""Parsing real tcpdump output and classifying flagged packets (no root)."""
import os

import pytest

from netoffload.diagnostics import checksums
from tests.support import layout

FIXTURES = os.path.join(layout.FIXTURES, "tcpdump")


def fixture(name):
    with open(os.path.join(FIXTURES, name)) as handle:
        return handle.read()


def shape(packets):
    return [(p["family"], p["proto"], p["checksum"], p.get("partial"))
            for p in packets]


# (fixture, expected count of (family, proto, checksum, partial))
PARSE_CASES = [
    pytest.param("veth_txon_egress.txt", {
        (4, "tcp", "incorrect", True): 5, (6, "tcp", "incorrect", True): 6,
        (4, "udp", "incorrect", True): 1, (6, "udp", "incorrect", True): 1,
        (4, "tcp", "correct", None): 1}, id="egress-ipv4-ipv6-tcp-udp-partial"),
    pytest.param("veth_txon_ingress.txt", {
        (4, "tcp", "incorrect", True): 5, (6, "tcp", "incorrect", True): 5,
        (4, "udp", "incorrect", True): 1, (6, "udp", "incorrect", True): 1},
        id="ingress-from-veth-peer-partial"),
    pytest.param("injected_bad_ingress.txt", {
        (4, "tcp", "incorrect", False): 1, (4, "udp", "incorrect", False): 1,
        (6, "tcp", "incorrect", False): 1, (6, "udp", "incorrect", False): 1},
        id="injected-wrong-checksums-not-partial"),
    pytest.param("snaplen60_truncated.txt", {
        (4, "tcp", "unverified", None): 11, (6, "tcp", "unverified", None): 11,
        (6, "udp", "unverified", None): 2, (4, "udp", "incorrect", True): 2},
        id="truncated-by-snaplen-unverified"),
]


@pytest.mark.parametrize("name,expected", PARSE_CASES)
def test_parse_real_captures(name, expected):
    counts = {}
    for key in shape(checksums.parse_tcpdump(fixture(name))):
        counts[key] = counts.get(key, 0) + 1
    assert counts == expected


def test_parsed_fields_of_first_ipv4_and_ipv6_packets():
    packets = checksums.parse_tcpdump(fixture("veth_txon_egress.txt"))
    first4 = packets[0]
    assert (first4["src"], first4["sport"], first4["dst"], first4["dport"],
            first4["field"]) == ("10.9.0.1", 60176, "10.9.0.2", 5001, 0x1443)
    assert first4["text"].count("\n") == 1  # header line + transport line
    first6 = [p for p in packets if p["family"] == 6][0]
    assert (first6["src"], first6["dst"], first6["l4_length"]) == \
        ("fd00:9::1", "fd00:9::2", 40)


def test_cut_off_last_line_is_skipped_not_misread():
    text = fixture("veth_txon_egress.txt").rstrip("\n")
    lines = text.splitlines()
    # tcpdump killed mid-write: the IPv4 header line without its transport.
    cut = "\n".join(lines[:2] + [lines[2]] + [lines[3][:20]])
    packets = checksums.parse_tcpdump(cut)
    assert len(packets) == 1
    header_only = "\n".join(lines[:3])
    assert len(checksums.parse_tcpdump(header_only)) == 1


@pytest.mark.parametrize("text", [
    pytest.param("", id="empty"),
    pytest.param("tcpdump: listening on vA, link-type EN10MB\n", id="banner"),
    pytest.param("03:32:31.754045 ARP, Request who-has 10.9.0.2 tell 10.9.0.1,"
                 " length 28\n", id="arp"),
    pytest.param("03:32:31.754045 IP (tos 0x0, ttl 64, id 1, offset 0, flags "
                 "[DF], proto ICMP (1), length 84)\n    10.9.0.1 > 10.9.0.2: "
                 "ICMP echo request, id 1, seq 1, length 64\n", id="icmp"),
])
def test_other_lines_yield_nothing(text):
    assert checksums.parse_tcpdump(text) == []


@pytest.mark.parametrize("family,src,dst,proto,length,expected", [
    pytest.param(4, "10.9.0.1", "10.9.0.2", 6, 40, 0x1443, id="ipv4-tcp"),
    pytest.param(4, "10.9.0.1", "10.9.0.2", 17, 13, 0x1433, id="ipv4-udp"),
    pytest.param(6, "fd00:9::1", "fd00:9::2", 6, 40, 0xfa44, id="ipv6-tcp"),
    pytest.param(6, "fd00:9::1", "fd00:9::2", 17, 13, 0xfa34, id="ipv6-udp"),
])
def test_pseudo_header_sum_matches_kernel_partial_checksums(
        family, src, dst, proto, length, expected):
    # expected values are the cksum fields tcpdump printed in the fixtures
    assert checksums.pseudo_header_sum(family, src, dst, proto, length) == expected


@pytest.mark.parametrize("direction,device,src,expected", [
    pytest.param("out", "eth0", "10.9.0.1", "egress_local", id="out-local"),
    pytest.param("out", "vif3.0", "192.0.2.7", "egress_forwarded",
                 id="out-bridged-to-guest"),
    pytest.param("in", "vif3.0", "192.0.2.7", "guest_to_dom0", id="in-vif"),
    pytest.param("in", "tap3.0", "192.0.2.7", "guest_to_dom0", id="in-tap"),
    pytest.param("in", "eth0", "192.0.2.7", "ingress", id="in-pif"),
])
def test_classify(direction, device, src, expected):
    packet = {"src": src}
    assert checksums.classify(packet, direction, device, {"10.9.0.1"}) == expected


def test_summarise_egress_and_peer_partial_is_not_corruption():
    captured = {"out": fixture("veth_txon_egress.txt"),
                "in": fixture("veth_txon_ingress.txt")}
    counts, detail, seen, examples = checksums.summarise("vA", captured, {"10.9.0.1",
                                                                  "fd00:9::1"})
    assert counts == {"egress_local": 13, "egress_forwarded": 0,
                      "guest_to_dom0": 0, "ingress": 12}
    assert detail == {"ingress_partial": 12, "ingress_bad": 0}
    assert seen == {"captured": 26, "flagged": 25, "unverified": 0}
    assert len(examples) == checksums.MAX_EXAMPLES
    status, text = checksums.verdict(counts, detail, {"TcpInCsumErrors": 0}, {}, "on")
    assert status == "no_corruption"
    assert "expected with tx offload on" in text


def test_verdict_with_kernel_drops_names_the_problem():
    counts = {"egress_local": 0, "egress_forwarded": 0, "guest_to_dom0": 0,
              "ingress": 4}
    status, text = checksums.verdict(counts, {"ingress_partial": 0, "ingress_bad": 4},
                             {"TcpInCsumErrors": 2, "UdpInCsumErrors": 1,
                              "Udp6InCsumErrors": 1}, {}, "on")
    assert status == "corruption"
    assert text.startswith("received packets arrive with bad checksums")
    assert "TcpInCsumErrors +2" in text and "4 received packet(s)" in text


def test_verdict_rising_device_errors_without_checksum_drops():
    counts = dict((c, 0) for c in checksums.CLASSES)
    status, text = checksums.verdict(counts, {"ingress_partial": 0, "ingress_bad": 0},
                             {}, {"rx_crc_errors": 3}, "on")
    assert status == "device_errors" and "rx_crc_errors +3" in text
