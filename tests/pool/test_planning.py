"""Pure planning of database keys and their bookkeeping (no XAPI)."""
import pytest

from netoffload.errors import Ambiguous, NotFound
from netoffload.pool import enforce, keys, planning, targeting
from tests.support.poolrecords import build

SIX_OFF = dict(("ethtool-" + f, "off") for f in ("rx", "tx", "sg", "tso", "ufo", "gso"))
FRESH_BOOK = {"netoffload-managed": "gso,rx,sg,tso,tx,ufo",
              "netoffload-saved": '{"gso":[null,"off"],"rx":[null,"off"],'
                                  '"sg":[null,"off"],"tso":[null,"off"],'
                                  '"tx":[null,"off"],"ufo":[null,"off"]}'}
# Written before the pack kept the value it wrote: prior values only.
OLD_BOOK = {"netoffload-managed": "gso,rx,sg,tso,tx,ufo",
            "netoffload-saved": '{"gso":null,"rx":null,"sg":null,'
                                '"tso":null,"tx":null,"ufo":null}'}


def final_vif_config(records, force=False):
    [plan] = planning.plan_db(records, ["OpaqueRef:vif"], force=force)
    return plan


def run_plan(config, plan):
    """Carry out plan.writes on a dict the way xapi would."""
    config = dict(config)
    for key, value, expected in plan.writes:
        assert config.get(key) == expected
        if value is None:
            config.pop(key, None)
        else:
            config[key] = value
    return config


PLAN_CASES = [
    ("no-policy-no-writes", {}, {}, {}),
    ("all-off-fresh-vif", {"netoffload-vif": "all-off"}, {"other": "x"},
     dict(SIX_OFF, other="x", **FRESH_BOOK)),
    ("explicit-kept",
     {"netoffload-vif": "tx-off"}, {"ethtool-tx": "true"},
     {"ethtool-tx": "true"}),
    ("already-off-by-someone-else-untouched",
     {"netoffload-vif": "tx-off"}, {"ethtool-tx": "off"}, {"ethtool-tx": "off"}),
    ("policy-shrinks-restores-and-unmanages",
     {"netoffload-vif": "tx-off"},
     dict(SIX_OFF, **FRESH_BOOK),
     {"ethtool-tx": "off", "netoffload-managed": "tx",
      "netoffload-saved": '{"tx":[null,"off"]}'}),
    ("old-book-shrinks-too",
     {"netoffload-vif": "tx-off"},
     dict(SIX_OFF, **OLD_BOOK),
     {"ethtool-tx": "off", "netoffload-managed": "tx",
      "netoffload-saved": '{"tx":null}'}),
    ("policy-gone-removes-everything", {},
     dict(SIX_OFF, other="x", **FRESH_BOOK), {"other": "x"}),
    ("saved-value-restored", {},
     {"ethtool-tx": "off", "netoffload-managed": "tx",
      "netoffload-saved": '{"tx":"true"}'}, {"ethtool-tx": "true"}),
    ("managed-value-changed-by-policy", {"netoffload-vif": "tx=on"},
     {"ethtool-tx": "off", "netoffload-managed": "tx",
      "netoffload-saved": '{"tx":null}'},
     {"ethtool-tx": "on", "netoffload-managed": "tx",
      "netoffload-saved": '{"tx":[null,"on"]}'}),
    # Someone set or removed a key after the pack wrote it: theirs now.
    ("admin-changed-managed-key-is-unmanaged-and-kept",
     {"netoffload-vif": "all-off"},
     dict(SIX_OFF, **dict(FRESH_BOOK, **{"ethtool-tx": "on"})),
     dict(SIX_OFF, **{"ethtool-tx": "on",
                      "netoffload-managed": "gso,rx,sg,tso,ufo",
                      "netoffload-saved": '{"gso":[null,"off"],"rx":[null,'
                      '"off"],"sg":[null,"off"],"tso":[null,"off"],'
                      '"ufo":[null,"off"]}'})),
    ("admin-removed-managed-key-policy-claims-it-afresh",
     {"netoffload-vif": "tx-off"},
     {"netoffload-managed": "tx", "netoffload-saved": '{"tx":["true","off"]}'},
     {"ethtool-tx": "off", "netoffload-managed": "tx",
      "netoffload-saved": '{"tx":[null,"off"]}'}),
    ("admin-changed-key-survives-policy-removal", {},
     {"ethtool-tx": "TRUE", "netoffload-managed": "tx",
      "netoffload-saved": '{"tx":["false","off"]}'},
     {"ethtool-tx": "TRUE"}),
]


@pytest.mark.parametrize("pool,vif,expected", [c[1:] for c in PLAN_CASES],
                         ids=[c[0] for c in PLAN_CASES])
def test_plan_vif(pool, vif, expected):
    records = build(pool=pool, vif=vif)
    plan = final_vif_config(records)
    assert run_plan(vif, plan) == expected == plan.final


def test_plan_is_idempotent():
    records = build(pool={"netoffload-vif": "all-off"}, vif={"a": "b"})
    first = final_vif_config(records)
    records.vifs["OpaqueRef:vif"]["other_config"] = first.final
    assert final_vif_config(records).writes == []


def test_fresh_apply_costs_one_write_per_key_and_keys_come_after_bookkeeping():
    plan = final_vif_config(build(pool={"netoffload-vif": "all-off"}))
    written = [k for k, _, _ in plan.writes]
    assert written[:2] == ["netoffload-managed", "netoffload-saved"]
    assert len(written) == 8
    assert all(expected is None for _, _, expected in plan.writes)


def test_shrinking_writes_keys_before_bookkeeping():
    plan = final_vif_config(build(vif=dict(SIX_OFF, **FRESH_BOOK)))
    written = [k for k, _, _ in plan.writes]
    assert written[-2:] == ["netoffload-managed", "netoffload-saved"]


def test_force_saves_explicit_and_revert_restores_it():
    vif = {"ethtool-tx": "true", "unrelated": "1"}
    records = build(pool={"netoffload-vif": "tx-off"}, vif=vif)
    plan = final_vif_config(records, force=True)
    assert plan.final == {"ethtool-tx": "off", "unrelated": "1",
                          "netoffload-managed": "tx",
                          "netoffload-saved": '{"tx":["true","off"]}'}
    records.vifs["OpaqueRef:vif"]["other_config"] = plan.final
    [back] = planning.plan_revert(records, ["OpaqueRef:vif"])
    assert back.final == vif


def test_vif_gro_lro_are_live_only_and_not_written():
    records = build(pool={"netoffload-vif": "all-off"})
    plan = final_vif_config(records)
    assert plan.live_only == {"gro": "off", "lro": "off"}
    assert not any(k in plan.final for k in ("ethtool-gro", "ethtool-lro"))
    assert plan.reapplied_at_plug and not plan.reapplied_now


def test_pif_gets_all_eight_and_unrelated_keys_survive():
    records = build(pool={"netoffload-pif": "all-off"},
                    pif={"ethtool-autoneg": "off", "mtu": "9000"})
    [plan] = planning.plan_db(records, ["OpaqueRef:pif"])
    assert sorted(k for k in plan.final if k.startswith("ethtool-")) == sorted(
        ["ethtool-%s" % f for f in ("rx", "tx", "sg", "tso", "ufo", "gso",
                                    "gro", "lro", "autoneg")])
    assert plan.final["mtu"] == "9000"


def test_revert_of_unmanaged_object_is_empty():
    records = build(vif={"ethtool-tx": "on"})
    assert [p.writes for p in planning.plan_revert(
        records, ["OpaqueRef:vif", "OpaqueRef:pif"])] == [[], []]


def test_replan_after_lost_race_respects_the_new_explicit_key():
    records = build(pool={"netoffload-vif": "tx-off,sg=off".replace(
        "tx-off,", "tx=off,")})
    plan = final_vif_config(records)
    fresh = {"ethtool-tx": "on"}  # someone set tx meanwhile
    again = planning.replan(plan, fresh)
    assert again.final == {"ethtool-tx": "on", "ethtool-sg": "off",
                           "netoffload-managed": "sg",
                           "netoffload-saved": '{"sg":[null,"off"]}'}


def two_vms(name_a="web", name_b="web"):
    records = build(tags=["bsd"])
    records.vms["OpaqueRef:vm2"] = dict(records.vms["OpaqueRef:vm"],
                                        uuid="vm2-uuid", name_label=name_b,
                                        tags=[])
    records.vms["OpaqueRef:vm"]["name_label"] = name_a
    records.vms["OpaqueRef:tpl"] = dict(records.vms["OpaqueRef:vm"],
                                        uuid="tpl-uuid", is_a_template=True)
    records.vifs["OpaqueRef:vif2"] = dict(records.vifs["OpaqueRef:vif"],
                                          uuid="vif2-uuid", VM="OpaqueRef:vm2")
    records.vifs["OpaqueRef:tplvif"] = dict(records.vifs["OpaqueRef:vif"],
                                            VM="OpaqueRef:tpl")
    return records


SELECT_CASES = [
    ("all", ("all", "ALL"), ["OpaqueRef:vif", "OpaqueRef:vif2"],
     ["OpaqueRef:pif"]),
    ("vm-by-uuid", ("vm", "vm2-uuid"), ["OpaqueRef:vif2"], []),
    ("vm-by-name", ("vm", "a b"), ["OpaqueRef:vif"], []),
    ("tag", ("tag", "bsd"), ["OpaqueRef:vif"], []),
    ("network", ("network", "LAN"), ["OpaqueRef:vif", "OpaqueRef:vif2"], []),
    ("pif", ("pif", "eth0"), [], ["OpaqueRef:pif"]),
]


@pytest.mark.parametrize("spec,vifs,pifs", [c[1:] for c in SELECT_CASES],
                         ids=[c[0] for c in SELECT_CASES])
def test_select(spec, vifs, pifs):
    selection = targeting.select(two_vms("a b", "c"), spec, "OpaqueRef:host")
    assert (sorted(selection.vifs), selection.pifs) == (vifs, pifs)


def test_select_ambiguous_lists_uuids():
    with pytest.raises(Ambiguous) as err:
        targeting.select(two_vms(), ("vm", "web"), "OpaqueRef:host")
    assert err.value.params == ["vm-uuid", "vm2-uuid"]


@pytest.mark.parametrize("spec", [("vm", "nope"), ("network", "nope"),
                                  ("pif", "eth9"), ("vm", "tpl-uuid")],
                         ids=["vm", "network", "pif", "template"])
def test_select_not_found(spec):
    with pytest.raises(NotFound):
        targeting.select(two_vms(), spec, "OpaqueRef:host")


def test_local_devices_names_guest_devices_like_dom0():
    records = build(pool={"netoffload-vif": "all-off"})
    devices = [(d.device, d.kind) for d in
               enforce.local_devices(records, "OpaqueRef:host")]
    assert devices == [("eth0", "pif"), ("vif5.0", "vif"), ("tap5.0", "tap")]
    records.vms["OpaqueRef:vm"]["resident_on"] = "OpaqueRef:other"
    assert [d.device for d in enforce.local_devices(
        records, "OpaqueRef:host")] == ["eth0"]


def test_resolution_for_missing_ref_is_not_found():
    with pytest.raises(NotFound):
        planning.plan_db(build(), ["OpaqueRef:missing"])


def test_bookkeeping_round_trips_through_the_parsers():
    plan = final_vif_config(build(pool={"netoffload-vif": "all-off"},
                                  vif={"ethtool-rx": "on"}))
    managed = keys.parse_managed(plan.final["netoffload-managed"])
    assert managed == {"tx", "sg", "tso", "ufo", "gso"}
    assert keys.parse_saved(plan.final["netoffload-saved"]) == dict(
        (f, None) for f in managed)
