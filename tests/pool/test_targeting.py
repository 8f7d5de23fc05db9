"""Selection is exact (issue 11, items 6 and 8), on plain records: a VLAN
PIF is named DEVICE.VLAN and never by its parent's device, a VIF on an
SR-IOV network is skipped and listed, a tag nothing carries is NOT_FOUND."""
import pytest

from netoffload.errors import NotFound
from netoffload.pool import targeting
from netoffload.pool.keys import tag_key
from tests.support.poolrecords import build

HOST = "OpaqueRef:host"


def with_vlans():
    """h1: eth0 (untagged), eth0 VLAN 100 and 200, eth1; h2: eth0."""
    records = build()
    base = records.pifs["OpaqueRef:pif"]
    for ref, device, vlan, host in (
            ("OpaqueRef:vlan100", "eth0", "100", HOST),
            ("OpaqueRef:vlan200", "eth0", "200", HOST),
            ("OpaqueRef:eth1", "eth1", "-1", HOST),
            ("OpaqueRef:h2eth0", "eth0", "-1", "OpaqueRef:h2")):
        records.pifs[ref] = dict(base, uuid=ref[10:], device=device,
                                 VLAN=vlan, host=host)
    return records


@pytest.mark.parametrize("value,pool_wide,pifs", [
    ("eth0", False, ["OpaqueRef:pif"]),
    ("eth0.100", False, ["OpaqueRef:vlan100"]),
    ("eth0.200", False, ["OpaqueRef:vlan200"]),
    ("eth1", False, ["OpaqueRef:eth1"]),
    ("eth0", True, ["OpaqueRef:h2eth0", "OpaqueRef:pif"]),
    ("eth0.100", True, ["OpaqueRef:vlan100"]),
], ids=["untagged", "vlan100", "vlan200", "other-nic", "pool-untagged",
        "pool-vlan"])
def test_pif_selects_the_untagged_pif_or_the_named_vlan(value, pool_wide,
                                                       pifs):
    selection = targeting.select(with_vlans(), ("pif", value), HOST,
                                 pool_wide)
    assert (selection.vifs, selection.pifs) == ([], pifs)


@pytest.mark.parametrize("value", ["eth0.300", "eth1.100", "eth9",
                                   "eth0.5000"])
def test_a_pif_or_vlan_that_is_not_there_is_not_found(value):
    with pytest.raises(NotFound) as err:
        targeting.select(with_vlans(), ("pif", value), HOST)
    assert "DEVICE.VLAN" in err.value.message


def test_pif_names_parse():
    assert targeting.parse_pif_name("eth0") == ("eth0", -1)
    assert targeting.parse_pif_name("eth0.100") == ("eth0", 100)
    assert targeting.parse_pif_name("bond0.4094") == ("bond0", 4094)
    assert targeting.parse_pif_name("eth0.4095") == ("eth0.4095", -1)


def with_sriov():
    """web 01 has vif0 on LAN and vif1 on an SR-IOV network."""
    records = build(tags=["fw"])
    records.networks["OpaqueRef:sriovnet"] = {
        "uuid": "sriovnet-uuid", "name_label": "SR-IOV", "other_config": {}}
    records.pifs["OpaqueRef:logical"] = dict(
        records.pifs["OpaqueRef:pif"], uuid="logical-uuid",
        network="OpaqueRef:sriovnet",
        sriov_logical_PIF_of=["OpaqueRef:network_sriov"])
    records.vifs["OpaqueRef:vf"] = dict(
        records.vifs["OpaqueRef:vif"], uuid="vf-uuid", device="1",
        network="OpaqueRef:sriovnet")
    return records


@pytest.mark.parametrize("spec", [("all", "ALL"), ("vm", "web 01"),
                                  ("tag", "fw"), ("network", "SR-IOV")],
                         ids=["all", "vm", "tag", "network"])
def test_a_vif_on_an_sriov_network_is_skipped_and_listed(spec):
    selection = targeting.select(with_sriov(), spec, HOST)
    assert "OpaqueRef:vf" not in selection.refs
    assert selection.skipped_refs[0] == "OpaqueRef:vf"
    assert selection.to_json()["skipped"][0] == {
        "class": "VIF", "uuid": "vf-uuid", "label": "web 01/vif1",
        "reason": "sr-iov"}
    if spec[0] != "network":
        assert "OpaqueRef:vif" in selection.vifs


def test_the_sriov_logical_pif_is_no_device_of_its_own():
    """It carries its NIC's device name and VLAN -1: pif=eth0 names the
    physical PIF only, ALL lists the logical one as skipped."""
    records = with_sriov()
    selection = targeting.select(records, ("pif", "eth0"), HOST)
    assert selection.pifs == ["OpaqueRef:pif"]
    everything = targeting.select(records, ("all", "ALL"), HOST)
    assert everything.pifs == ["OpaqueRef:pif"]
    assert everything.skipped_refs == ["OpaqueRef:vf", "OpaqueRef:logical"]
    assert everything.to_json()["skipped"][1]["class"] == "PIF"


def test_without_sriov_nothing_is_skipped():
    selection = targeting.select(build(), ("all", "ALL"), HOST)
    assert selection.skipped == [] and "skipped" not in selection.to_json()


def test_a_tag_nothing_carries_and_no_policy_names_is_not_found():
    records = build(tags=["bsd"])
    with pytest.raises(NotFound) as err:
        targeting.select(records, ("tag", "lab"), HOST)
    assert "lab" in err.value.message


def test_a_tag_only_a_policy_names_selects_nothing_but_is_known():
    records = build(pool={tag_key("lab"): "tx-off"})
    selection = targeting.select(records, ("tag", "lab"), HOST)
    assert selection.refs == []


def test_a_tag_on_a_template_only_is_not_found():
    records = build()
    records.vms["OpaqueRef:vm"].update(is_a_template=True, tags=["lab"])
    with pytest.raises(NotFound):
        targeting.select(records, ("tag", "lab"), HOST)


def test_an_unknown_network_is_not_found():
    with pytest.raises(NotFound):
        targeting.select(build(), ("network", "WAN"), HOST)
