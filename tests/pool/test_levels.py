"""Where policies live and what a revert takes off: the level order of
precedence.py decides which objects a vm/tag/network revert covers."""
import pytest

from netoffload.pool.levels import KeptObject, PolicyLocation, covered_by
from netoffload.pool.records import PoolRecords


@pytest.mark.parametrize("kind, value, level, covered", [
    # nothing resolved, or everything reverted: always covered
    ("network", "LAN", None, True),
    ("all", "ALL", "vm", True),
    # a VM's own policy is above every other level
    ("vm", "web", "vm", True),
    ("vm", "web", "tag:bsd", True),
    ("vm", "web", "pool", True),
    ("tag", "bsd", "vm", False),
    ("network", "LAN", "vm", False),
    # a tag covers its own level and the levels below it, not another tag
    ("tag", "bsd", "tag:bsd", True),
    ("tag", "bsd", "tag:alpha", False),
    ("tag", "bsd", "network", True),
    ("tag", "bsd", "pool", True),
    # a network is below the tags
    ("network", "LAN", "tag:bsd", False),
    ("network", "LAN", "network", True),
    ("network", "LAN", "pool", True),
])
def test_covered_by_follows_the_vif_level_order(kind, value, level, covered):
    assert covered_by(kind, value, level) is covered


def test_unknown_level_is_an_error_not_a_guess():
    with pytest.raises(ValueError):
        covered_by("network", "LAN", "host")


def _records(vm_config):
    return PoolRecords(pool={"OpaqueRef:pool": {"uuid": "pool-uuid",
                                                "other_config": {}}},
                       hosts={}, networks={}, pifs={}, vifs={},
                       vms={"OpaqueRef:vm": {"uuid": "vm-uuid",
                                             "name_label": "web",
                                             "other_config": vm_config}})


def test_policy_location_reads_what_its_key_holds():
    location = PolicyLocation("VM", "OpaqueRef:vm", "netoffload-vif",
                              "vm-uuid", "web")
    assert location.held(_records({"netoffload-vif": "tx-off"})) == "tx-off"
    assert location.held(_records({})) is None
    assert location.key == "netoffload-vif"  # fields by name, not index


def test_policy_location_json_is_the_plugin_shape():
    location = PolicyLocation("pool", "OpaqueRef:pool", "netoffload-tag:bsd",
                              "pool-uuid", "bsd")
    assert location.to_json("tx-off", None) == {
        "class": "pool", "uuid": "pool-uuid", "name": "bsd",
        "key": "netoffload-tag:bsd", "policy": "tx-off", "previous": None}


def test_kept_object_json_is_the_plugin_shape():
    assert KeptObject("VIF", "vif-uuid", "web/0", "vm").to_json() == {
        "class": "VIF", "uuid": "vif-uuid", "label": "web/0", "level": "vm"}
