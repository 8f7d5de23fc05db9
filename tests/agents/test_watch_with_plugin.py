"""Revert against a running watcher: what revert takes out stays out.

The watcher (python -m netoffload.agents.watch) and the plugin (through the
simulator's host.call_plugin) run in the same host namespace, against the
simulator process of the `pool` fixture (tests/agents/conftest.py).
"""
import time

import pytest

from netoffload.pool import keys
from tests.support.wait import wait_for

pytestmark = pytest.mark.root


@pytest.fixture
def host(pool, netns):
    ref = pool.admin.add_host(name_label="xs1", netns=netns.name)
    net = pool.admin.add_network(name_label="net0")
    netns.add_veth("eth0", "peer0")
    pif = pool.admin.add_pif(host=ref, network=net, device="eth0")
    return {"ref": ref, "net": net, "pif": pif, "ns": netns}


def call(pool, host, fn, **args):
    import json
    return json.loads(pool.api.host.call_plugin(host["ref"], "netoffload",
                                                fn, args))


XAPI_VIF_KEYS = ("rx", "tx", "sg", "tso", "ufo", "gso")


def fully_written(config, features):
    """The pack's keys for `features` and its book are there."""
    return (all("ethtool-%s" % f in config for f in features)
            and keys.managed_features(config) == set(features))


def stays(predicate, seconds=2.0):
    """predicate() holds now and for `seconds` (the watcher had its go)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert predicate()
        time.sleep(0.1)
    return True


def test_revert_pif_is_not_undone_by_the_watcher(pool, host):
    pool.set_pool_policy("netoffload-pif", "tx-off")
    pool.watch(host["ref"], host["ns"])
    pif_config = lambda: pool.api.PIF.get_other_config(host["pif"])  # noqa
    wait_for(lambda: pif_config().get("ethtool-tx") == "off",
             what="the watcher writing the PIF")
    result = call(pool, host, "revert", pif="eth0")
    time.sleep(0.5)
    assert stays(lambda: pif_config() == {})
    assert [(p["class"], p["policy"]) for p in result["policy"]] == [
        ("host", "none")]
    assert pool.api.host.get_other_config(host["ref"])[
        "netoffload-pif"] == "none"


def test_revert_tag_is_not_undone_and_keeps_what_the_vm_level_covers(
        pool, host):
    pool.set_pool_policy("netoffload-tag:bsd", "tx-off")
    fw = pool.admin.add_vm(name_label="fw", tags=["bsd"])
    pinned = pool.admin.add_vm(name_label="pinned", tags=["bsd"],
                               other_config={"netoffload-vif": "all-off"})
    pool.watch(host["ref"], host["ns"])
    fw_vif = pool.create_vif(fw, host["net"], 0)
    pinned_vif = pool.create_vif(pinned, host["net"], 0)
    # every key and both bookkeeping keys: the watcher's writes are done
    wait_for(lambda: fully_written(pool.vif_config(fw_vif), ("tx",))
             and fully_written(pool.vif_config(pinned_vif), XAPI_VIF_KEYS),
             what="the watcher writing both VIFs")
    pinned_before = pool.vif_config(pinned_vif)
    result = call(pool, host, "revert", tag="bsd")
    assert [k["label"] for k in result["kept"]] == ["pinned/vif0"]
    assert result["kept"][0]["level"] == "vm"
    reverted = lambda: (pool.vif_config(fw_vif) == {}  # noqa: E731
                        and pool.vif_config(pinned_vif) == pinned_before)
    assert reverted()
    assert stays(reverted)
