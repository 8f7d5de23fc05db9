"""Parsing `ethtool -k` text: captured ethtool 6.1 output per device kind,
the old "Offload parameters" format, [fixed] and [requested on]."""
import os

import pytest

from netoffload.engine.ethtool import FeatureState, parse_features_text
from netoffload.errors import DeviceError
from tests.support import layout

FIXTURES = os.path.join(layout.FIXTURES, "ethtool")

ON, OFF = True, False
ABSENT = FeatureState(None, False, None)


def fixture(name):
    with open(os.path.join(FIXTURES, name)) as handle:
        return handle.read()


def state(active, fixed=False, requested="same"):
    """Expected state; requested defaults to active (no [requested] note)."""
    if requested == "same":
        requested = None if fixed else active
    return FeatureState(active, fixed, requested)


# Expected short-feature states, read by eye from each fixture.
CASES = [
    ("ethtool-6.1-veth.txt", "v0", {
        "rx": state(ON), "tx": state(ON), "sg": state(ON), "tso": state(ON), "ufo": ABSENT,
        "gso": state(ON), "gro": state(OFF), "lro": state(OFF, fixed=True)}),
    ("ethtool-6.1-tap.txt", "tp0", {
        "rx": state(OFF, fixed=True), "tx": state(OFF, requested=True),
        "sg": state(ON), "tso": state(OFF, requested=True), "ufo": ABSENT,
        "gso": state(ON), "gro": state(ON), "lro": state(OFF, fixed=True)}),
    ("ethtool-6.1-bridge.txt", "br0", {
        "rx": state(OFF, fixed=True), "tx": state(ON), "sg": state(ON), "tso": state(ON),
        "ufo": ABSENT, "gso": state(ON), "gro": state(ON), "lro": state(OFF, fixed=True)}),
    ("ethtool-6.1-macvlan.txt", "mv0", {
        "rx": state(ON, fixed=True), "tx": state(ON, fixed=True),
        "sg": state(ON, fixed=True), "tso": state(ON, fixed=True), "ufo": ABSENT,
        "gso": state(ON), "gro": state(OFF, requested=True), "lro": state(OFF)}),
    ("ethtool-6.1-ifb.txt", "ifb0", {
        "rx": state(OFF, fixed=True), "tx": state(ON), "sg": state(ON), "tso": state(ON),
        "ufo": ABSENT, "gso": state(ON), "gro": state(ON), "lro": state(OFF, fixed=True)}),
    ("ethtool-6.1-loopback.txt", "lo", {
        "rx": state(ON, fixed=True), "tx": state(ON, fixed=True),
        "sg": state(ON, fixed=True), "tso": state(ON), "ufo": ABSENT, "gso": state(ON),
        "gro": state(ON), "lro": state(OFF, fixed=True)}),
    # tx off forced the four classic tso bits off (requested on), but
    # tx-tcp-accecn-segmentation stays on, so tso as ethtool shows it is on.
    ("ethtool-6.1-veth-after-tx-off.txt", "v0", {
        "rx": state(ON), "tx": state(OFF), "sg": state(ON), "tso": state(ON, requested=True),
        "ufo": ABSENT, "gso": state(ON), "gro": state(OFF),
        "lro": state(OFF, fixed=True)}),
    ("old-offload-parameters.txt", "eth0", {
        "rx": state(ON), "tx": state(ON), "sg": state(ON), "tso": state(ON), "ufo": state(OFF),
        "gso": state(ON), "gro": state(ON), "lro": state(OFF)}),
    ("ethtool-3.x-kernel-4.4-vif.txt", "vif3.0", {
        "rx": state(ON), "tx": state(ON), "sg": state(ON), "tso": state(ON),
        "ufo": state(OFF, fixed=True), "gso": state(ON), "gro": state(ON),
        "lro": state(OFF, fixed=True)}),
]


@pytest.mark.parametrize("name,device,expected", CASES,
                         ids=[c[0][:-4] for c in CASES])
def test_short_features_from_fixture(name, device, expected):
    parsed = parse_features_text(fixture(name))
    assert parsed.device == device
    assert parsed.source == "ethtool"
    assert parsed.features == expected


@pytest.mark.parametrize("name", [c[0] for c in CASES if "6.1" in c[0]],
                         ids=lambda n: n[:-4])
def test_every_kernel_line_is_kept(name):
    text = fixture(name)
    parsed = parse_features_text(text)
    # one title line, three multi-bit headings (tx, sg, tso); every other
    # line is exactly one kernel bit.
    lines = [line for line in text.splitlines() if line.strip()]
    assert len(parsed.kernel) == len(lines) - 1 - 3
    assert parsed.kernel["rx-checksum"] == parsed.features["rx"]
    assert "tx-tcp-accecn-segmentation" in parsed.kernel
    assert "tx-checksumming" not in parsed.kernel


def test_kernel_bits_carry_notes():
    parsed = parse_features_text(fixture("ethtool-6.1-tap.txt"))
    assert parsed.kernel["tx-checksum-ip-generic"] == FeatureState(OFF, False, True)
    assert parsed.kernel["tx-checksum-ipv4"] == FeatureState(OFF, True, None)
    assert parsed.kernel["tx-scatter-gather"] == FeatureState(ON, False, ON)
    # a lone group heading names its single bit
    assert parsed.kernel["rx-lro"] == FeatureState(OFF, True, None)
    assert parsed.kernel["tx-generic-segmentation"] == FeatureState(ON, False, ON)


def test_requested_off_note():
    text = ("Features for x0:\nrx-checksumming: on\n"
            "generic-receive-offload: on [requested off]\n")
    parsed = parse_features_text(text)
    assert parsed.features["gro"] == FeatureState(ON, False, False)
    assert parsed.features["tx"] == ABSENT


@pytest.mark.parametrize("name,expected", [
    ("ethtool-6.1-veth.txt", {"rx": "on", "tx": "on", "sg": "on", "tso": "on",
                              "gso": "on", "gro": "off", "lro": "off"}),
    ("old-offload-parameters.txt", {"rx": "on", "tx": "on", "sg": "on",
                                    "tso": "on", "ufo": "off", "gso": "on",
                                    "gro": "on", "lro": "off"}),
], ids=["veth", "old-format"])
def test_as_onoff_leaves_out_absent(name, expected):
    assert parse_features_text(fixture(name)).as_onoff() == expected


def test_old_format_ignores_cannot_get_lines():
    text = ("Offload parameters for eth1:\n"
            "Cannot get device udp large send offload settings: "
            "Operation not supported\n"
            "rx-checksumming: off\ntx-checksumming: on\n")
    parsed = parse_features_text(text)
    assert parsed.device == "eth1"
    assert parsed.features["rx"] == FeatureState(OFF, False, OFF)
    assert parsed.features["tx"] == FeatureState(ON, False, ON)
    assert parsed.features["ufo"] == ABSENT


def test_only_first_device_of_many_is_read():
    text = fixture("ethtool-6.1-veth.txt") + "\n" + fixture("ethtool-6.1-tap.txt")
    parsed = parse_features_text(text)
    assert parsed.device == "v0"
    assert parsed.features["tx"].active is ON


def test_similar_names_are_not_taken_for_ours():
    # "rx-gro-hw" and "rx-gro-list" must not be read as gro, nor
    # "tx-udp-segmentation" as ufo: exact names only.
    text = ("Features for x0:\nrx-gro-hw: on\nrx-gro-list: on\n"
            "tx-udp-segmentation: on\n")
    parsed = parse_features_text(text)
    assert parsed.features["gro"] == ABSENT
    assert parsed.features["ufo"] == ABSENT


@pytest.mark.parametrize("text", ["", "garbage\n", "rx-checksumming: on\n"],
                         ids=["empty", "garbage", "no-title"])
def test_not_ethtool_output_is_an_error(text):
    with pytest.raises(DeviceError):
        parse_features_text(text)
