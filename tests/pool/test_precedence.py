"""Policy precedence (docs/policy.md) over plain records, table-driven."""
import pytest

from netoffload.engine.policy import PROFILES
from netoffload.pool import keys
from netoffload.pool.precedence import (
    all_policies,
    resolve_pif,
    resolve_vif,
    vif_level_rank,
    vif_levels,
)
from netoffload.pool.records import eligible_vifs, eligible_vms
from tests.support.poolrecords import build

ALL_OFF = PROFILES["all-off"]


VIF_CASES = [
    ("nothing-anywhere", {}, {}, {}, None, None),
    ("pool", dict(pool={"netoffload-vif": "all-off"}), ALL_OFF,
     dict((f, "pool") for f in ALL_OFF), "all-off", "pool"),
    ("network-beats-pool",
     dict(pool={"netoffload-vif": "all-off"},
          network={"netoffload-vif": "tx-off"}),
     {"tx": "off"}, {"tx": "network"}, "tx-off", "network"),
    ("tag-beats-network",
     dict(pool={"netoffload-tag:bsd": "tx=off,sg=off"},
          network={"netoffload-vif": "all-off"}, tags=["bsd"]),
     {"tx": "off", "sg": "off"}, {"tx": "tag:bsd", "sg": "tag:bsd"},
     "tx=off,sg=off", "tag:bsd"),
    ("first-tag-in-sorted-order-wins",
     dict(pool={"netoffload-tag:b": "tx-off", "netoffload-tag:c": "all-off"},
          tags=["c", "b", "a"]),
     {"tx": "off"}, {"tx": "tag:b"}, "tx-off", "tag:b"),
    ("tag-without-policy-falls-through",
     dict(pool={"netoffload-vif": "tx-off"}, tags=["plain"]),
     {"tx": "off"}, {"tx": "pool"}, "tx-off", "pool"),
    ("vm-beats-tag",
     dict(pool={"netoffload-tag:bsd": "all-off"},
          vm={"netoffload-vif": "rx=off"}, tags=["bsd"]),
     {"rx": "off"}, {"rx": "vm"}, "rx=off", "vm"),
    ("vm-none-stops-search",
     dict(pool={"netoffload-vif": "all-off"}, vm={"netoffload-vif": "none"}),
     {}, {}, "none", "vm"),
    ("network-none-stops-search",
     dict(pool={"netoffload-vif": "all-off"},
          network={"netoffload-vif": "none"}),
     {}, {}, "none", "network"),
    ("explicit-key-wins-per-feature",
     dict(pool={"netoffload-vif": "tx=off,sg=off"},
          vif={"ethtool-tx": "true"}),
     {"tx": "on", "sg": "off"}, {"tx": "explicit", "sg": "pool"},
     "tx=off,sg=off", "pool"),
    ("managed-key-is-not-explicit",
     dict(pool={"netoffload-vif": "tx-off"},
          vif={"ethtool-tx": "off", "ethtool-sg": "on",
               "netoffload-managed": "sg,tx",
               "netoffload-saved": '{"sg":null,"tx":null}'}),
     {"tx": "off"}, {"tx": "pool"}, "tx-off", "pool"),
    ("explicit-without-policy",
     dict(vif={"ethtool-gso": "false"}), {"gso": "off"}, {"gso": "explicit"},
     None, None),
    ("broken-policy-changes-nothing",
     dict(pool={"netoffload-vif": "all-off"}, vm={"netoffload-vif": "tx=of"}),
     {}, {}, None, "vm"),
]


@pytest.mark.parametrize("kw,features,sources,policy,level",
                         [c[1:] for c in VIF_CASES],
                         ids=[c[0] for c in VIF_CASES])
def test_resolve_vif(kw, features, sources, policy, level):
    resolution = resolve_vif(build(**kw), "OpaqueRef:vif")
    assert (resolution.features, resolution.sources, resolution.policy,
            resolution.level) == (features, sources, policy, level)


def test_vif_levels_come_in_precedence_order():
    records = build(pool={"netoffload-vif": "all-off",
                          "netoffload-tag:b": "tx-off",
                          "netoffload-tag:c": "all-off"},
                    vm={"netoffload-vif": "none"},
                    network={"netoffload-vif": "tx-off"}, tags=["c", "b"])
    levels = [level for level, _, _ in vif_levels(records, "OpaqueRef:vif")]
    assert levels == ["vm", "tag:b", "network", "pool"]
    assert [vif_level_rank(level) for level in levels] == [0, 1, 2, 3]


def test_broken_policy_is_reported():
    resolution = resolve_vif(build(vm={"netoffload-vif": "tx=of"}),
                               "OpaqueRef:vif")
    assert "tx=of" in resolution.error and "netoffload-vif" in resolution.error


def test_force_beats_explicit():
    records = build(pool={"netoffload-vif": "tx-off"},
                    vif={"ethtool-tx": "true"})
    resolution = resolve_vif(records, "OpaqueRef:vif", force=True)
    assert (resolution.features, resolution.sources) == (
        {"tx": "off"}, {"tx": "force"})


PIF_CASES = [
    ("nothing", {}, {}, None),
    ("pool", dict(pool={"netoffload-pif": "tx-off"}), {"tx": "off"}, "pool"),
    ("vif-policy-does-not-touch-pifs", dict(pool={"netoffload-vif": "all-off"}),
     {}, None),
    ("host-beats-pool", dict(pool={"netoffload-pif": "all-off"},
                             host={"netoffload-pif": "gro=on"}),
     {"gro": "on"}, "host"),
    ("host-none", dict(pool={"netoffload-pif": "all-off"},
                       host={"netoffload-pif": "none"}), {}, "host"),
    ("explicit-wins", dict(pool={"netoffload-pif": "all-off"},
                           pif={"ethtool-lro": "on", "mtu": "9000"}),
     dict(ALL_OFF, lro="on"), "pool"),
]


@pytest.mark.parametrize("kw,features,level", [c[1:] for c in PIF_CASES],
                         ids=[c[0] for c in PIF_CASES])
def test_resolve_pif(kw, features, level):
    resolution = resolve_pif(build(**kw), "OpaqueRef:pif")
    assert (resolution.features, resolution.level) == (features, level)


ELIGIBLE_CASES = [
    ("guest", {}, ["OpaqueRef:vm"]),
    ("template", {"is_a_template": True}, []),
    ("snapshot", {"is_a_snapshot": True}, []),
    ("dom0", {"is_control_domain": True}, []),
    ("halted-guest", {"power_state": "Halted", "domid": "-1"},
     ["OpaqueRef:vm"]),
]


@pytest.mark.parametrize("extra,expected", [c[1:] for c in ELIGIBLE_CASES],
                         ids=[c[0] for c in ELIGIBLE_CASES])
def test_eligible_vms(extra, expected):
    records = build(vm_extra=extra)
    assert eligible_vms(records) == expected
    assert eligible_vifs(records) == (["OpaqueRef:vif"] if expected else [])


BOOKKEEPING_CASES = [
    ("managed", keys.parse_managed, "tx, sg,bogus,,", {"tx", "sg"}),
    ("managed-empty", keys.parse_managed, None, set()),
    ("saved", keys.parse_saved, '{"tx":"true","sg":null,"x":"1"}',
     {"tx": "true", "sg": None}),
    ("saved-corrupt", keys.parse_saved, "{not json", {}),
    ("saved-not-object", keys.parse_saved, "[1]", {}),
]


@pytest.mark.parametrize("parse,text,expected",
                         [c[1:] for c in BOOKKEEPING_CASES],
                         ids=[c[0] for c in BOOKKEEPING_CASES])
def test_bookkeeping_parsers(parse, text, expected):
    assert parse(text) == expected


def test_bookkeeping_formats_are_compact_and_sorted():
    assert keys.format_managed({"tx", "gso", "rx"}) == "gso,rx,tx"
    assert keys.format_saved({"tx": "true", "sg": None}) == \
        '{"sg":null,"tx":"true"}'


def test_all_policies_lists_every_level():
    records = build(pool={"netoffload-vif": "all-off", "netoffload-pif": "bad",
                          "netoffload-tag:bsd": "tx-off", "other": "x"},
                    host={"netoffload-pif": "none"},
                    network={"netoffload-vif": "tx-off"},
                    vm={"netoffload-vif": "none"})
    found = [(p.level, p.kind, p.name, p.policy, p.valid)
             for p in all_policies(records)]
    assert found == [
        ("pool", "pif", "", "bad", False),
        ("pool", "vif", "", "all-off", True),
        ("tag", "vif", "bsd", "tx-off", True),
        ("host", "pif", "h1", "none", True),
        ("network", "vif", "LAN", "tx-off", True),
        ("vm", "vif", "web 01", "none", True),
    ]


def test_host_liveness():
    records = build()
    assert records.host_is_live("OpaqueRef:host")
    records.host_metrics["OpaqueRef:hm"]["live"] = False
    assert not records.host_is_live("OpaqueRef:host")
    records.host_metrics["OpaqueRef:hm"]["live"] = True
    records.hosts["OpaqueRef:host"]["enabled"] = False  # maintenance mode
    assert records.host_is_live("OpaqueRef:host")
    records.host_metrics = None
    assert records.host_is_live("OpaqueRef:host")


def test_a_policy_entry_says_why_it_is_invalid_in_its_json():
    records = build(pool={"netoffload-pif": "tx=sideways"})
    (entry,) = all_policies(records)
    assert not entry.valid
    assert entry.to_json() == {
        "level": "pool", "kind": "pif", "uuid": entry.uuid, "name": "",
        "key": "netoffload-pif", "policy": "tx=sideways", "valid": False,
        "error": entry.error}
    assert "sideways" in entry.error
    assert "error" not in all_policies(build(pool={"netoffload-pif": "none"}))[0].to_json()
