"""Selection is exact (issue 11, items 6, 7 and 8), through host.call_plugin
on the simulator and real namespaced devices: `pif=eth0` names the untagged
PIF only and `pif=eth0.100` the VLAN PIF on it; a tag or network nothing
carries is NOT_FOUND and changes nothing. After each sequence `revert ALL`
returns every other-config map and device to where it started."""
import json

import pytest

from tests.support.simpool import live

pytestmark = pytest.mark.root


def h1_eth0(pool):
    [ref] = [r for r in pool.api.PIF.get_all()
             if pool.api.PIF.get_device(r) == "eth0"
             and pool.api.PIF.get_physical(r)
             and pool.api.PIF.get_host(r) == pool.hosts["h1"]]
    return ref


@pytest.fixture
def vlan(pool):
    """VLAN 100 on h1's eth0 as VLAN.create makes it: a PIF with device
    eth0 and VLAN 100, whose kernel device (bridge backend) is eth0.100."""
    net = pool.sim.add_network("VLAN 100")
    _, ref = pool.add_vlan(h1_eth0(pool), 100, net)
    pool.api.PIF.add_to_other_config(ref, "note", "vlan")
    pool.ns["h1"].add_veth("eth0.100", "peer100")
    return ref


@pytest.fixture
def sriov(pool):
    """SR-IOV on h1's eth0 (network "SR-IOV") and a running VM "fw" with
    vif0 on it (a VF: no dom0 device) and vif1 on LAN 1 (vif8.1)."""
    net = pool.sim.add_network("SR-IOV")
    pool.add_sriov(h1_eth0(pool), net)
    fw = pool.sim.add_vm("fw", power_state="Running",
                         resident_on=pool.hosts["h1"], domid=8)
    vf = pool.sim.add_vif(fw, net, 0)
    pool.sim.add_vif(fw, pool.lan, 1)
    pool.ns["h1"].add_veth("vif8.1", "guest8")
    return vf


def call_h1(pool, fn, **args):
    return json.loads(pool.api.host.call_plugin(pool.hosts["h1"],
                                                "netoffload", fn, args))


def revert_all(pool, before):
    pool.call("revert", target="ALL", confirm="yes", pool="true")
    assert pool.state() == before


def test_pif_eth0_names_the_untagged_pif_not_its_vlans(pool, vlan):
    before = pool.state()
    vlan_config = pool.api.PIF.get_other_config(vlan)
    vlan_live = live(pool, "h1", "eth0.100")
    result = pool.call("apply", pif="eth0", policy="sg=off", confirm="yes")
    assert result["target"]["pifs"] == 1
    assert [o["label"] for o in result["objects"]] == ["h1/eth0"]
    assert [d["device"] for d in result["devices"]] == ["eth0"]
    assert live(pool, "h1", "eth0")["sg"] == "off"
    # the VLAN PIF on eth0: neither its keys nor its device were touched
    assert pool.api.PIF.get_other_config(vlan) == vlan_config
    assert live(pool, "h1", "eth0.100") == vlan_live
    [status] = pool.call("status", pif="eth0")["devices"]
    assert status["device"] == "eth0"
    revert_all(pool, before)


def test_pif_eth0_dot_vlan_names_the_vlan_pif(pool, vlan):
    before = pool.state()
    call_h1(pool, "set_policy", level="host", host="h1", policy="sg=off",
            confirm="yes")
    result = pool.call("apply", pif="eth0.100")
    assert [o["label"] for o in result["objects"]] == ["h1/eth0.100"]
    assert [d["device"] for d in result["devices"]] == ["eth0.100"]
    assert pool.api.PIF.get_other_config(vlan)["ethtool-sg"] == "off"
    assert live(pool, "h1", "eth0.100")["sg"] == "off"
    # eth0 itself was not named: its keys wait for the watcher or its apply
    assert "ethtool-sg" not in pool.api.PIF.get_other_config(h1_eth0(pool))
    revert_all(pool, before)


def test_a_vlan_that_is_not_there_is_not_found(pool, vlan):
    before = pool.state()
    details = pool.fail("apply", pif="eth0.200", policy="sg=off",
                        confirm="yes")
    assert details[0] == "NETOFFLOAD_NOT_FOUND"
    assert "DEVICE.VLAN" in details[1]
    assert pool.state() == before


@pytest.mark.parametrize("fn,args", [
    ("apply", {"tag": "lab", "policy": "all-off", "confirm": "yes"}),
    ("apply", {"tag": "lab"}),
    ("status", {"tag": "lab"}),
    ("revert", {"tag": "lab", "pool": "true"}),
    ("apply", {"network": "WAN", "policy": "all-off", "confirm": "yes"}),
    ("revert", {"network": "WAN"}),
], ids=["apply-policy", "apply", "status", "revert", "network-apply",
        "network-revert"])
def test_a_tag_or_network_nothing_carries_is_not_found(pool, fn, args):
    before = pool.state()
    details = pool.fail(fn, **args)
    assert details[0] == "NETOFFLOAD_NOT_FOUND"
    assert pool.state() == before


def test_a_tag_only_a_policy_names_is_a_target(pool):
    before = pool.state()
    pool.call("set_policy", level="tag", tag="lab", policy="tx-off",
              confirm="yes")
    result = pool.call("apply", tag="lab")
    assert (result["target"]["vifs"], result["objects"]) == (0, [])
    revert_all(pool, before)


def test_a_vif_on_an_sriov_network_is_skipped_and_shown(pool, sriov):
    before = pool.state()
    vf_config = pool.vif_config(sriov)
    result = pool.call("apply", vm="fw", policy="all-off")
    assert result["target"]["vifs"] == 1
    assert result["target"]["skipped"] == [{
        "class": "VIF", "uuid": pool.api.VIF.get_uuid(sriov),
        "label": "fw/vif0", "reason": "sr-iov"}]
    assert [o["label"] for o in result["objects"]] == ["fw/vif1"]
    assert sorted(d["device"] for d in result["devices"]) == ["vif8.1"]
    assert pool.vif_config(sriov) == vf_config
    assert live(pool, "h1", "vif8.1")["tx"] == "off"
    status = pool.call("status", vm="fw")
    assert [s["label"] for s in status["skipped"]] == ["fw/vif0"]
    # everything: the VF and the SR-IOV logical PIF are skipped
    everything = pool.call("status")
    assert [s["label"] for s in everything["skipped"]] == ["fw/vif0"]
    plan = pool.call("set_policy", level="pool", kind="vif",
                     policy="tx-off", dry_run="true")["plan"]
    assert [s["label"] for s in plan["skipped"]] == ["fw/vif0"]
    assert "SR-IOV" in pool.call("set_policy", level="pool", kind="vif",
                                 policy="tx-off", dry_run="true")["message"]
    applied = pool.call("apply", target="ALL", policy="all-off",
                        confirm="yes")
    assert sorted((s["class"], s["label"]) for s in
                  applied["target"]["skipped"]) == [
        ("PIF", "h1/eth0"), ("VIF", "fw/vif0")]
    assert pool.vif_config(sriov) == vf_config
    revert_all(pool, before)


def test_pif_eth0_is_not_the_sriov_logical_pif(pool, sriov):
    before = pool.state()
    result = pool.call("apply", pif="eth0", policy="sg=off", confirm="yes")
    assert result["target"]["pifs"] == 1
    assert [o["uuid"] for o in result["objects"]] == [
        pool.api.PIF.get_uuid(h1_eth0(pool))]
    revert_all(pool, before)


def test_pif_dot_vlan_names_the_vlan_under_openvswitch_too(pool, vlan,
                                                           tmp_path):
    """Under openvswitch the VLAN is a fake bridge, no eth0.100 device:
    the name still selects the VLAN PIF (status shows it deviceless)."""
    conf = tmp_path / "network.conf"
    conf.write_text("openvswitch\n")
    pool.sim.configure_host(pool.hosts["h1"], dom0_files={
        "/etc/xensource/network.conf": str(conf)})
    result = pool.call("status", pif="eth0.100")
    assert result["devices"] == [{
        "device": None, "kind": "pif", "pif": "h1/eth0.100",
        "note": "no kernel device under openvswitch; carried by eth0"}]
    [eth0] = pool.call("status", pif="eth0")["devices"]
    assert eth0["device"] == "eth0"
