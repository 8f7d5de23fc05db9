"""Where policies live and what a revert takes off: the level order of
precedence.py decides which objects a vm/tag/network revert covers."""
from collections import namedtuple

import pytest

from netoffload.pool import levels
from netoffload.pool.levels import KeptObject, PolicyLocation
from netoffload.pool.records import PoolRecords
from netoffload.pool.targeting import select
from tests.support.poolrecords import build

Ctx = namedtuple("Ctx", "records host_ref")
BOOK = {"ethtool-tx": "off",
        "netoffload-book": '{"f":{"tx":[null,"off"]},"g":1,"op":"aaaaaaaa"}'}


def _scope(kind, value, **build_args):
    records = build(**build_args)
    ctx = Ctx(records, "OpaqueRef:host")
    return levels.revert_scope(ctx, (kind, value),
                               select(records, (kind, value),
                                      "OpaqueRef:host"))


def _written(scope):
    return [(w.location.key, w.policy) for w in scope.policy_writes]


# Which objects a vm/tag/network revert takes the policy off: those no
# other level still governs once the target's level says none.
@pytest.mark.parametrize("kind, value, build_args, covered", [
    ("vm", "web 01", dict(vm={"netoffload-vif": "all-off"},
                          pool={"netoffload-vif": "tx-off"}), True),
    ("tag", "bsd", dict(tags=["bsd"], vm={"netoffload-vif": "all-off"},
                        pool={"netoffload-tag:bsd": "tx-off"}), False),
    ("network", "LAN", dict(vm={"netoffload-vif": "tx-off"},
                            network={"netoffload-vif": "all-off"}), False),
    ("tag", "bsd", dict(tags=["bsd"], pool={"netoffload-tag:bsd": "tx-off",
                                           "netoffload-vif": "all-off"}),
     True),
    # another tag that still contributes keeps the object, whatever the
    # tags' names (alpha sorts before bsd, zulu after)
    ("tag", "bsd", dict(tags=["bsd", "alpha"], pool={
        "netoffload-tag:bsd": "tx-off", "netoffload-tag:alpha": "all-off"}),
     False),
    ("tag", "bsd", dict(tags=["bsd", "zulu"], pool={
        "netoffload-tag:bsd": "tx-off", "netoffload-tag:zulu": "all-off"}),
     False),
    # ... and one that says none does not
    ("tag", "bsd", dict(tags=["bsd", "alpha"], pool={
        "netoffload-tag:bsd": "tx-off", "netoffload-tag:alpha": "none"}),
     True),
    ("network", "LAN", dict(tags=["bsd"], pool={
        "netoffload-tag:bsd": "tx-off"},
        network={"netoffload-vif": "all-off"}), False),
    ("network", "LAN", dict(network={"netoffload-vif": "all-off"},
                            pool={"netoffload-vif": "tx-off"}), True),
])
def test_revert_covers_what_no_other_level_still_governs(kind, value,
                                                         build_args, covered):
    scope = _scope(kind, value, **build_args)
    assert ("OpaqueRef:vif" in scope.refs) is covered
    assert bool(scope.kept) is not covered


def test_revert_of_a_tag_without_policy_writes_nothing():
    # issue 11 item 3: `revert tag=lab` with no policy on lab must not
    # write netoffload-tag:lab=none (it would shadow pfsense's all-off).
    scope = _scope("tag", "lab", tags=["lab", "pfsense"], vif=BOOK,
                   pool={"netoffload-tag:pfsense": "all-off"})
    assert _written(scope) == []
    assert scope.refs == [] and len(scope.kept) == 1


def test_revert_sets_none_where_a_policy_is_or_where_the_pack_wrote():
    assert _written(_scope("tag", "bsd", tags=["bsd"], pool={
        "netoffload-tag:bsd": "tx-off"})) == [("netoffload-tag:bsd", "none")]
    # no policy at the VM, but its VIF carries keys the pool policy put
    # there: none at the VM keeps the watcher from putting them back
    assert _written(_scope("vm", "web 01", vif=BOOK, pool={
        "netoffload-vif": "tx-off"})) == [("netoffload-vif", "none")]
    assert _written(_scope("vm", "web 01", pool={
        "netoffload-vif": "tx-off"})) == []
    assert _written(_scope("vm", "web 01", vm={"netoffload-vif": "none"},
                           vif=BOOK)) == []


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
