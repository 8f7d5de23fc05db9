"""A guest device's live-state record belongs to one VM's device.

Domids restart at 1 after a dom0 reboot, so vif1.0 can be another VM's
device than the one recorded. Real devices in a namespace, real ethtool."""
import pytest

from netoffload.engine import ethtool
from netoffload.engine.livestate import LiveStateStore
from netoffload.pool import enforce
from netoffload.pool.records import PoolRecords

pytestmark = pytest.mark.root

VM_A = "aaaaaaaa-1111-2222-3333-444444444444"
VM_B = "bbbbbbbb-1111-2222-3333-444444444444"


def _records(vm_uuid, vm_config, vif_config, pool_config):
    """One host, one running VM on domid 1 with one VIF (device 0)."""
    return PoolRecords(
        {"OpaqueRef:p": {"uuid": "p", "master": "OpaqueRef:h",
                         "other_config": pool_config}},
        {"OpaqueRef:h": {"uuid": "h", "name_label": "h", "enabled": True,
                         "other_config": {}}},
        {"OpaqueRef:n": {"uuid": "n", "name_label": "n", "other_config": {}}},
        {},
        {"OpaqueRef:vm": {"uuid": vm_uuid, "name_label": "vm",
                          "other_config": vm_config, "tags": [],
                          "is_a_template": False, "is_a_snapshot": False,
                          "is_control_domain": False,
                          "power_state": "Running",
                          "resident_on": "OpaqueRef:h", "domid": "1"}},
        {"OpaqueRef:vif": {"uuid": "v", "device": "0", "VM": "OpaqueRef:vm",
                           "network": "OpaqueRef:n",
                           "other_config": vif_config}})


def _tx(device):
    return ethtool.read_features(device).as_onoff()["tx"]


def test_new_vm_on_a_reused_domid_does_not_inherit_the_old_record(netns,
                                                                  state_dir):
    store = LiveStateStore(state_dir)
    netns.add_veth("vif1.0", "guest0")
    with netns.entered():
        # VM A on domid 1, pool policy tx-off: tx on -> off, recorded
        enforce.enforce_live(_records(VM_A, {}, {}, {"netoffload-vif": "tx-off"}),
                               "OpaqueRef:h", store)
        assert store.recorded() == {"vif1.0": {"tx": "on"}}
    # dom0 reboots; VM B gets domid 1; vif-real applies its explicit key
    netns.ip("link", "del", "vif1.0")
    netns.add_veth("vif1.0", "guest0")
    with netns.entered():
        ethtool.apply_features("vif1.0", {"tx": "off"})
        results = enforce.enforce_live(
            _records(VM_B, {"netoffload-vif": "none"}, {"ethtool-tx": "off"},
                     {"netoffload-vif": "tx-off"}), "OpaqueRef:h", store)
        assert [(r.device, r.action, r.pending_restore)
                for r in results] == [("vif1.0", "none", {})]
        assert _tx("vif1.0") == "off"


def test_apply_for_a_new_owner_replaces_the_old_record(netns, state_dir):
    store = LiveStateStore(state_dir)
    netns.add_veth("vif1.0", "guest0")
    with netns.entered():
        store.apply("vif1.0", {"sg": "off"}, owner=VM_A + "/0")
        # the device comes back for VM B with sg on again (kernel default)
        ethtool.apply_features("vif1.0", {"sg": "on"})
        store.apply("vif1.0", {"tx": "off"}, owner=VM_B + "/0")
        assert store.owners() == {"vif1.0": VM_B + "/0"}
        assert store.recorded() == {"vif1.0": {"tx": "on"}}
        # restore for VM B gives back only its own past
        store.restore("vif1.0", owner=VM_B + "/0")
        live = ethtool.read_features("vif1.0").as_onoff()
        assert (live["tx"], live["sg"]) == ("on", "on")
        assert store.recorded() == {}


def test_restore_for_another_owner_drops_the_record_and_changes_nothing(
        netns, state_dir):
    store = LiveStateStore(state_dir)
    netns.add_veth("vif1.0", "guest0")
    with netns.entered():
        store.apply("vif1.0", {"tx": "off"}, owner=VM_A + "/0")
        result = store.restore("vif1.0", owner=VM_B + "/0")
        assert (result.ran_command, _tx("vif1.0")) == (False, "off")
        assert store.recorded() == {}


def test_an_ownerless_record_is_adopted(netns, state_dir):
    store = LiveStateStore(state_dir)
    netns.add_veth("vif1.0", "guest0")
    with netns.entered():
        store.apply("vif1.0", {"tx": "off"})  # an older record: no owner
        store.apply("vif1.0", {"sg": "off"}, owner=VM_A + "/0")
        assert store.owners() == {"vif1.0": VM_A + "/0"}
        assert set(store.recorded()["vif1.0"]) >= {"tx", "sg"}
