"""What storing a policy will do, planned over the records as they will be
(set_policy's plan): the reach of each level, the objects whose keys
change by host, the VIFs of VMs not running, the SR-IOV VIFs skipped."""
import pytest

from netoffload.pool import policychange
from netoffload.pool.keys import KEY_PIF, KEY_VIF, tag_key
from netoffload.pool.levels import PolicyLocation
from tests.support.poolrecords import build

POOL = ("pool", "OpaqueRef:pool")


def records():
    """web 01 (running on h1, tag fw) and a halted VM with a VIF on LAN;
    a VIF of web 01 on an SR-IOV network."""
    recs = build(tags=["fw"])
    recs.vms["OpaqueRef:halted"] = dict(
        recs.vms["OpaqueRef:vm"], uuid="halted-uuid", name_label="halted",
        tags=[], power_state="Halted", resident_on="OpaqueRef:NULL")
    recs.vifs["OpaqueRef:hvif"] = dict(recs.vifs["OpaqueRef:vif"],
                                       uuid="hvif-uuid", VM="OpaqueRef:halted")
    recs.networks["OpaqueRef:sriovnet"] = {
        "uuid": "sn-uuid", "name_label": "SR-IOV", "other_config": {}}
    recs.pifs["OpaqueRef:logical"] = dict(
        recs.pifs["OpaqueRef:pif"], uuid="logical-uuid", VLAN="-1",
        device="eth1", network="OpaqueRef:sriovnet",
        sriov_logical_PIF_of=["OpaqueRef:ns"])
    recs.vifs["OpaqueRef:vf"] = dict(recs.vifs["OpaqueRef:vif"],
                                     uuid="vf-uuid", device="1",
                                     network="OpaqueRef:sriovnet")
    return recs


def location(cls, ref, key):
    return PolicyLocation(cls, ref, key, ref[10:], "")


@pytest.mark.parametrize("where,reach", [
    (location("pool", "OpaqueRef:pool", KEY_VIF),
     ["OpaqueRef:hvif", "OpaqueRef:vif"]),
    (location("pool", "OpaqueRef:pool", KEY_PIF), ["OpaqueRef:pif"]),
    (location("pool", "OpaqueRef:pool", tag_key("fw")), ["OpaqueRef:vif"]),
    (location("host", "OpaqueRef:host", KEY_PIF), ["OpaqueRef:pif"]),
    (location("network", "OpaqueRef:net", KEY_VIF),
     ["OpaqueRef:hvif", "OpaqueRef:vif"]),
    (location("VM", "OpaqueRef:vm", KEY_VIF), ["OpaqueRef:vif"]),
], ids=["pool-vif", "pool-pif", "tag", "host", "network", "vm"])
def test_the_reach_of_each_level(where, reach):
    refs, skipped = where.reach(records())
    assert refs == reach
    if where.key == KEY_PIF:  # the SR-IOV logical PIF is no device
        expected = ["OpaqueRef:logical"]
    else:
        expected = [] if where.cls == "network" else ["OpaqueRef:vf"]
    assert [s.ref for s in skipped] == expected
    assert where.wide is (where.cls != "VM")


def test_the_plan_groups_changes_by_host_and_stores_nothing():
    recs = records()
    before = dict((ref, dict(v["other_config"])) for ref, v in
                  recs.vifs.items())
    change = policychange.plan_change(
        recs, location("pool", "OpaqueRef:pool", KEY_VIF), "tx-off")
    assert [p.ref for p in change.objects_on("OpaqueRef:host")] == [
        "OpaqueRef:vif"]
    assert [p.ref for p in change.not_running()] == ["OpaqueRef:hvif"]
    assert change.hosts() == ["OpaqueRef:host"]
    assert change.previous is None
    assert [s.ref for s in change.skipped] == ["OpaqueRef:vf"]
    # planned on a copy: the records given are as they were
    assert recs.pool_other_config == {}
    assert dict((ref, v["other_config"]) for ref, v in
                recs.vifs.items()) == before
    # the copy holds the policy and the keys as they will be
    assert change.records.pool_other_config == {KEY_VIF: "tx-off"}
    assert change.records.vifs["OpaqueRef:vif"]["other_config"][
        "ethtool-tx"] == "off"


def test_removing_a_policy_plans_the_keys_it_gives_back():
    recs = records()
    recs.pool["OpaqueRef:pool"]["other_config"][KEY_VIF] = "tx-off"
    recs.vifs["OpaqueRef:vif"]["other_config"] = {
        "ethtool-tx": "off", "netoffload-managed": "tx",
        "netoffload-saved": '{"tx":[null,"off"]}'}
    change = policychange.plan_change(
        recs, location("pool", "OpaqueRef:pool", KEY_VIF), None)
    [plan] = change.changing
    assert plan.ref == "OpaqueRef:vif" and plan.final == {}
    assert change.previous == "tx-off"
