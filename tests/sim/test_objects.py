"""PIF.properties, VLANs, SR-IOV and XO 6's VIFs in the simulator, seen
through the real XenAPI client as xapi shows them (ocaml/idl/datamodel.ml,
ocaml/xapi/xapi_pif.ml, xapi_vlan.ml, xapi_network_sriov.ml)."""
import pytest
import XenAPI

from sim import xe
from tests.support.simpool import SimPool

EVENT_FROM = "from"


@pytest.fixture(params=[False, True], ids=["in-process", "process"])
def pool(request):
    """A host with eth0 (physical) on a network, a second network for VLANs
    and one for SR-IOV, and a halted VM; in-process and as a process."""
    with SimPool(process=request.param) as sp:
        sp.add_host("h1")
        source = sp.sim if sp.sim is not None else sp.admin
        sp.lan = source.add_network(name_label="LAN")
        sp.vlan_net = source.add_network(name_label="VLAN 100")
        sp.sriov_net = source.add_network(name_label="SR-IOV")
        sp.eth0 = source.add_pif(host=sp.hosts["h1"], network=sp.lan,
                                 device="eth0")
        sp.vm = sp.api.VM.create({"name_label": "guest"})
        yield sp


def failure_of(call, *args):
    with pytest.raises(XenAPI.Failure) as info:
        call(*args)
    return info.value.details


def test_physical_pif_has_gro_on_and_set_property_changes_it(pool):
    api = pool.api
    assert api.PIF.get_properties(pool.eth0) == {"gro": "on"}
    assert api.PIF.get_record(pool.eth0)["properties"] == {"gro": "on"}
    token = getattr(api.event, EVENT_FROM)(["pif"], "", 0.0)["token"]
    api.PIF.set_property(pool.eth0, "gro", "off")
    assert api.PIF.get_all_records()[pool.eth0]["properties"] == {"gro": "off"}
    events = getattr(api.event, EVENT_FROM)(["pif"], token, 1.0)["events"]
    assert [(e["operation"], e["ref"], e["snapshot"]["properties"])
            for e in events] == [("mod", pool.eth0, {"gro": "off"})]


@pytest.mark.parametrize("name, value", [("gro", "no"), ("lro", "off"),
                                         ("GRO", "on")])
def test_set_property_refuses_what_xapi_refuses(pool, name, value):
    assert failure_of(pool.api.PIF.set_property, pool.eth0, name, value) == [
        "INVALID_VALUE", "properties", "%s = %s" % (name, value)]
    assert pool.api.PIF.get_properties(pool.eth0) == {"gro": "on"}


def test_properties_is_read_only_like_xapis(pool):
    # DynamicRO in the datamodel: no setter, no map edits
    for call in ("set_properties", "add_to_properties"):
        details = failure_of(getattr(pool.api.PIF, call), pool.eth0, {})
        assert details[0] in ("MESSAGE_METHOD_UNKNOWN",
                              "MESSAGE_PARAMETER_COUNT_MISMATCH")


def test_vlan_pif_carries_the_tagged_device_and_its_tag(pool):
    api = pool.api
    vlan, vlan_pif = pool.add_vlan(pool.eth0, 100, pool.vlan_net)
    rec = api.PIF.get_record(vlan_pif)
    assert (rec["device"], rec["VLAN"], rec["physical"], rec["properties"],
            rec["VLAN_master_of"], rec["network"], rec["host"]) == (
        "eth0", "100", False, {}, vlan, pool.vlan_net, pool.hosts["h1"])
    assert api.PIF.get_VLAN(pool.eth0) == "-1"
    assert api.PIF.get_VLAN_slave_of(pool.eth0) == [vlan]
    assert api.VLAN.get_record(vlan) == {
        "uuid": api.VLAN.get_uuid(vlan), "tagged_PIF": pool.eth0,
        "untagged_PIF": vlan_pif, "tag": "100", "other_config": {}}
    # VLAN PIFs have no properties to set
    assert failure_of(api.PIF.set_property, vlan_pif, "gro", "off") == [
        "CANNOT_CHANGE_PIF_PROPERTIES", vlan_pif]
    assert failure_of(api.VLAN.create, pool.eth0, "100", pool.lan)[0] == \
        "NETWORK_ALREADY_CONNECTED"
    assert failure_of(api.VLAN.create, pool.eth0, "4095", pool.sriov_net) == [
        "VLAN_TAG_INVALID", "4095"]
    assert failure_of(api.VLAN.create, vlan_pif, "7", pool.sriov_net) == [
        "PIF_IS_VLAN", vlan_pif]
    api.VLAN.destroy(vlan)
    assert api.PIF.get_VLAN_slave_of(pool.eth0) == []
    assert vlan_pif not in api.PIF.get_all()


def test_vlan_objects_are_evented(pool):
    api = pool.api
    token = getattr(api.event, EVENT_FROM)(["vlan"], "", 0.0)["token"]
    vlan, _ = pool.add_vlan(pool.eth0, 200, pool.vlan_net)
    events = getattr(api.event, EVENT_FROM)(["vlan"], token, 1.0)["events"]
    assert [(e["class"], e["operation"], e["ref"]) for e in events] == [
        ("vlan", "add", vlan)]


def test_sriov_network_has_a_logical_pif_and_its_vif_knows(pool):
    api = pool.api
    sriov, logical = pool.add_sriov(pool.eth0, pool.sriov_net)
    rec = api.network_sriov.get_record(sriov)
    assert (rec["physical_PIF"], rec["logical_PIF"], rec["requires_reboot"],
            rec["configuration_mode"]) == (pool.eth0, logical, False, "unknown")
    assert api.PIF.get_sriov_physical_PIF_of(pool.eth0) == [sriov]
    lrec = api.PIF.get_record(logical)
    assert (lrec["device"], lrec["VLAN"], lrec["physical"],
            lrec["sriov_logical_PIF_of"], lrec["network"]) == (
        "eth0", "-1", False, [sriov], pool.sriov_net)
    vif = pool.create_vif(pool.vm, pool.sriov_net, 0)
    # what a client checks: the VIF's network has a PIF that is an SR-IOV
    # logical PIF
    network = api.VIF.get_network(vif)
    assert any(api.PIF.get_sriov_logical_PIF_of(p)
               for p in api.network.get_PIFs(network))
    assert not any(api.PIF.get_sriov_logical_PIF_of(p)
                   for p in api.network.get_PIFs(pool.lan))
    assert failure_of(api.network_sriov.create, pool.eth0, pool.vlan_net) == [
        "NETWORK_SRIOV_ALREADY_ENABLED", pool.eth0]
    api.VIF.destroy(vif)
    api.network_sriov.destroy(sriov)
    assert api.PIF.get_sriov_physical_PIF_of(pool.eth0) == []
    assert logical not in api.PIF.get_all()


def test_xo6_vif_carries_the_ethtool_tx_stamp(pool):
    stamped = pool.create_vif(pool.vm, pool.lan, 0, xo6=True)
    plain = pool.create_vif(pool.vm, pool.lan, 1)
    both = pool.create_vif(pool.vm, pool.lan, 2, xo6=True,
                           other_config={"owner": "x"})
    assert pool.vif_config(stamped) == {"ethtool-tx": "true"}
    assert pool.vif_config(plain) == {}
    assert pool.vif_config(both) == {"ethtool-tx": "true", "owner": "x"}


def test_builder_xo6_vif_and_vlan(pool):
    source = pool.sim if pool.sim is not None else pool.admin
    vif = source.add_vif(vm=pool.vm, network=pool.lan, device=3, xo6=True)
    assert pool.vif_config(vif) == {"ethtool-tx": "true"}
    made = source.add_vlan(tagged_pif=pool.eth0, tag=300,
                           network=pool.vlan_net)
    assert pool.api.PIF.get_device(made["PIF"]) == "eth0"
    assert pool.api.PIF.get_VLAN(made["PIF"]) == "300"


def test_records_survive_a_restart(pool):
    if pool.proc is None:
        pytest.skip("the in-process simulator keeps no database file")
    pool.api.PIF.set_property(pool.eth0, "gro", "off")
    vlan, vlan_pif = pool.add_vlan(pool.eth0, 100, pool.vlan_net)
    pool.kill()
    pool.start()
    assert pool.api.PIF.get_properties(pool.eth0) == {"gro": "off"}
    assert pool.api.PIF.get_VLAN_slave_of(pool.eth0) == [vlan]
    assert pool.api.PIF.get_VLAN_master_of(vlan_pif) == vlan


def test_xe_pif_param_set_properties(pool):
    uuid = pool.api.PIF.get_uuid(pool.eth0)
    xe.run(["pif-param-set", "uuid=%s" % uuid, "properties:gro=off"],
           socket_path=pool.socket_path)
    assert pool.api.PIF.get_properties(pool.eth0) == {"gro": "off"}
    assert xe.run(["pif-param-get", "uuid=%s" % uuid, "param-name=properties",
                   "param-key=gro"], socket_path=pool.socket_path) == "off"


@pytest.mark.root
def test_pool_in_a_box_xo6_option():
    """PoolBox(xo6=True): every VIF, at build time and created later, has
    XO 6's stamp; a spec's own vif_other_config still wins."""
    from sim import demo, poolbox
    specs = [demo.VMSpec("xo-vm", 1, 3, (0,), False, (), {}, {}, "tx-off"),
             demo.VMSpec("own-key", None, None, (0,), False, (), {},
                         {0: {"ethtool-tx": "false"}}, "explicit")]
    with poolbox.PoolBox(hosts=2, vm_specs=specs, xo6=True) as box:
        later = demo.VMSpec("later", None, None, (1,), False, (), {}, {},
                            "tx-off")
        box.create_vm(later)
        api = box.session().xenapi
        configs = dict(
            (name, api.VIF.get_other_config(
                api.VIF.get_by_uuid(box.vif_uuid(name, devid))))
            for name, devid in (("xo-vm", 0), ("own-key", 0), ("later", 1)))
    assert configs == {"xo-vm": {"ethtool-tx": "true"},
                       "own-key": {"ethtool-tx": "false"},
                       "later": {"ethtool-tx": "true"}}
