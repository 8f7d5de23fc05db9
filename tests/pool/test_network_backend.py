"""VLAN and bond PIFs have kernel devices only with the Linux-bridge backend.

xen-api's networkd makes eth0.100 and bond0 only in its bridge branch; under
Open vSwitch (the XenServer 8 / XCP-ng default) a VLAN is a fake bridge and
a bond has no bond0 netdev, so no device name may be made up for them."""
import json
import os

import pytest

from netoffload.agents import cache, cache_writer
from netoffload.pool.records import (
    BACKEND_BRIDGE,
    BACKEND_OVS,
    PoolRecords,
    network_backend,
    pif_carriers,
    pif_device,
)
from tests.support.simpool import SimPool

ETH0 = {"device": "eth0", "VLAN": "-1", "host": "h"}
VLAN = {"device": "eth0", "VLAN": "100", "host": "h"}
BOND = {"device": "bond0", "VLAN": "-1", "host": "h",
        "bond_master_of": ["OpaqueRef:bond"]}
BOND_VLAN = {"device": "bond0", "VLAN": "7", "host": "h"}
MEMBER = {"device": "eth1", "VLAN": "-1", "host": "h",
          "bond_slave_of": "OpaqueRef:bond"}

DEVICE_CASES = [
    # (id, pif, backend, device)
    ("nic-ovs", ETH0, BACKEND_OVS, "eth0"),
    ("nic-bridge", ETH0, BACKEND_BRIDGE, "eth0"),
    ("vlan-ovs", VLAN, BACKEND_OVS, None),
    ("vlan-bridge", VLAN, BACKEND_BRIDGE, "eth0.100"),
    ("bond-ovs", BOND, BACKEND_OVS, None),
    ("bond-bridge", BOND, BACKEND_BRIDGE, "bond0"),
    ("vlan-on-bond-ovs", BOND_VLAN, BACKEND_OVS, None),
    ("vlan-on-bond-bridge", BOND_VLAN, BACKEND_BRIDGE, "bond0.7"),
    ("bond-member-ovs", MEMBER, BACKEND_OVS, "eth1"),
]


@pytest.mark.parametrize("pif, backend, device", [c[1:] for c in DEVICE_CASES],
                         ids=[c[0] for c in DEVICE_CASES])
def test_pif_device(pif, backend, device):
    assert pif_device(pif, backend=backend) == device


BACKEND_CASES = [
    # (id, file content or None for absent, backend)
    ("openvswitch", "openvswitch\n", BACKEND_OVS),
    ("old-vswitch", "vswitch", BACKEND_OVS),
    ("bridge", "bridge\n", BACKEND_BRIDGE),
    ("absent", None, BACKEND_BRIDGE),
    ("garbage", "what\n", BACKEND_BRIDGE),
]


@pytest.mark.parametrize("content, backend", [c[1:] for c in BACKEND_CASES],
                         ids=[c[0] for c in BACKEND_CASES])
def test_network_backend_from_network_conf(tmp_path, monkeypatch, content,
                                           backend):
    path = tmp_path / "network.conf"
    if content is not None:
        path.write_text(content)
    monkeypatch.setenv("NETOFFLOAD_NETWORK_CONF", str(path))
    assert network_backend() == backend


def test_bond_carriers_are_its_member_nics():
    records = PoolRecords({}, {}, {}, {"b": BOND, "m": MEMBER,
                                               "e": ETH0, "v": VLAN}, {}, {})
    assert pif_carriers(records, "b") == ["eth1"]
    assert pif_carriers(records, "v") == ["eth0"]


def _records():
    pool = {"OpaqueRef:p": {"uuid": "p", "master": "h",
                            "other_config": {"netoffload-pif": "tx-off"}}}
    hosts = {"h": {"uuid": "hu", "name_label": "xs1", "other_config": {}}}
    pifs = dict((name, dict(pif, other_config={})) for name, pif in (
        ("e", ETH0), ("v", VLAN), ("b", BOND), ("m", MEMBER)))
    return PoolRecords(pool, hosts, {}, pifs, {}, {})


@pytest.mark.parametrize("conf, pifs", [
    ("openvswitch", ["eth0", "eth1"]),
    ("bridge", ["bond0", "eth0", "eth0.100", "eth1"]),
], ids=["openvswitch", "bridge"])
def test_cache_and_markers_list_only_real_devices(tmp_path, monkeypatch, conf,
                                                  pifs):
    (tmp_path / "network.conf").write_text(conf + "\n")
    monkeypatch.setenv("NETOFFLOAD_NETWORK_CONF", str(tmp_path / "network.conf"))
    state = str(tmp_path / "state")
    cache_writer.write(cache_writer.build(_records(), "h"), state)
    assert sorted(cache.load(state).data["pifs"]) == pifs
    assert sorted(os.listdir(os.path.join(state, "pif"))) == pifs


@pytest.mark.root
def test_status_under_openvswitch_names_no_vlan_device(netns, tmp_path):
    conf = str(tmp_path / "network.conf")
    with open(conf, "w") as handle:
        handle.write("openvswitch\n")
    with SimPool() as simpool:
        sim = simpool.sim
        host = simpool.add_host("xs1", netns=netns.name, dom0_files={
            "/etc/xensource/network.conf": conf})
        net = sim.add_network("net0")
        sim.add_pif(host, net, "eth0")
        sim.add_pif(host, sim.add_network("vlan100"), "eth0", vlan=100)
        netns.add_veth("eth0", "peer0")
        session = simpool.session
        pool = session.xenapi.pool.get_all()[0]
        session.xenapi.pool.add_to_other_config(pool, "netoffload-pif", "tx-off")
        status = json.loads(session.xenapi.host.call_plugin(
            host, "netoffload", "status", {"target": "ALL"}))
        devices = status["devices"]
        assert [d["device"] for d in devices] == ["eth0", None]
        assert devices[1]["note"] == \
            "no kernel device under openvswitch; carried by eth0"
        assert status["summary"]["devices"] == 1
