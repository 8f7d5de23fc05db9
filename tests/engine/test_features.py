"""Feature tables: short names, long names, kernel-bit patterns."""
import pytest

from netoffload.engine import features

# Kernel 6.18's ETH_SS_FEATURES names that belong to our eight groups, plus
# neighbours that must NOT be swept in by a pattern.
KERNEL_BITS = [
    ("rx-checksum", "rx"),
    ("tx-checksum-ipv4", "tx"),
    ("tx-checksum-ip-generic", "tx"),
    ("tx-checksum-ipv6", "tx"),
    ("tx-checksum-fcoe-crc", "tx"),
    ("tx-checksum-sctp", "tx"),
    ("tx-scatter-gather", "sg"),
    ("tx-scatter-gather-fraglist", "sg"),
    ("tx-tcp-segmentation", "tso"),
    ("tx-tcp-ecn-segmentation", "tso"),
    ("tx-tcp-mangleid-segmentation", "tso"),
    ("tx-tcp6-segmentation", "tso"),
    ("tx-tcp-accecn-segmentation", "tso"),
    ("tx-udp-fragmentation", "ufo"),
    ("tx-generic-segmentation", "gso"),
    ("rx-gro", "gro"),
    ("rx-lro", "lro"),
    ("rx-vlan-hw-parse", "rxvlan"),
    ("tx-vlan-hw-insert", "txvlan"),
    ("rx-gro-hw", None),
    ("rx-gro-list", None),
    ("rx-udp-gro-forwarding", None),
    ("tx-udp-segmentation", None),
    ("tx-gso-list", None),
    ("tx-sctp-segmentation", None),
    ("tx-fcoe-segmentation", None),
    ("esp-tx-csum-hw-offload", None),
    ("highdma", None),
]


@pytest.mark.parametrize("kernel_name,short", KERNEL_BITS,
                         ids=[k for k, _ in KERNEL_BITS])
def test_kernel_bit_groups(kernel_name, short):
    assert features.short_for_kernel_bit(kernel_name) == short


def test_kernel_bits_for_keeps_kernel_order():
    names = [k for k, _ in KERNEL_BITS]
    assert features.kernel_bits_for("tso", names) == [
        "tx-tcp-segmentation", "tx-tcp-ecn-segmentation",
        "tx-tcp-mangleid-segmentation", "tx-tcp6-segmentation",
        "tx-tcp-accecn-segmentation"]
    assert features.kernel_bits_for("ufo", ["rx-gro", "rx-lro"]) == []


def test_every_short_feature_has_long_name_and_pattern():
    for short in features.FEATURES:
        assert features.LONG_TO_SHORT[features.SHORT_TO_LONG[short]] == short
        assert features.KERNEL_PATTERNS[short]


def test_vif_xapi_features_are_the_six_xenopsd_passes():
    assert features.VIF_XAPI_FEATURES == ("rx", "tx", "sg", "tso", "ufo", "gso")
    assert set(features.VIF_XAPI_FEATURES) < set(features.FEATURES)


def test_single_bit_names_are_plain_kernel_names():
    assert features.SINGLE_BIT_NAME["rx"] == "rx-checksum"
    assert features.SINGLE_BIT_NAME["gso"] == "tx-generic-segmentation"
    assert "tx" not in features.SINGLE_BIT_NAME
    assert "tso" not in features.SINGLE_BIT_NAME


@pytest.mark.parametrize("raw,expected", [
    ("on", "on"), ("true", "on"), ("False", "off"), (True, "on"),
    (False, "off"), ("yes", None), (1, None)], ids=lambda v: repr(v))
def test_value_or_none(raw, expected):
    assert features.value_or_none(raw) == expected
