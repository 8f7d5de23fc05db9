"""set_policy previews and confirms like apply (issue 11, item 2), through
host.call_plugin on the simulator, against real veth/tap devices.

Every sequence ends with `revert ALL`, after which every other-config map
(and every device) is back where it started."""
import json

import pytest
import XenAPI

from tests.support.simpool import live

pytestmark = pytest.mark.root


def labels(objects):
    return sorted(o["label"] for o in objects)


def by_host(plan):
    return dict((h["name_label"], h) for h in plan["hosts"])


def call_h1(pool, fn, **args):
    """pool.call on h1 with any argument, host= included (pool.call takes
    host= as the host to call)."""
    return json.loads(pool.api.host.call_plugin(pool.hosts["h1"],
                                                "netoffload", fn, args))


def revert_all(pool, before):
    pool.call("revert", target="ALL", confirm="yes", pool="true")
    assert pool.state() == before


def test_pool_policy_without_confirm_stores_nothing_and_carries_the_plan(
        pool):
    before = pool.state()
    details = pool.fail("set_policy", level="pool", kind="vif",
                        policy="all-off")
    assert details[0] == "NETOFFLOAD_CONFIRM_REQUIRED"
    assert "nothing was stored" in details[1]
    assert "confirm=yes" in details[1]
    assert pool.state() == before
    plan = json.loads(details[2])
    hosts = by_host(plan)
    assert sorted(hosts) == ["h1", "h2"]
    # web 01's ethtool-tx=true is someone else's: its VIF still changes
    # (the other five keys), its devices all but tx
    assert labels(hosts["h1"]["objects"]) == ["bsd/vif0", "web 01/vif0"]
    assert labels(hosts["h2"]["objects"]) == ["db/vif0"]
    assert labels(plan["not_running"]) == ["halted/vif0"]
    assert sorted(d["device"] for d in hosts["h1"]["devices"]) == [
        "tap5.0", "vif5.0", "vif6.0"]
    [vif7] = hosts["h2"]["devices"]
    assert (vif7["device"], vif7["features"]["sg"]) == (
        "vif7.0", "would-change")
    assert plan["summary"]["objects_changing"] == 4
    assert plan["summary"]["devices_changing"] == 4
    assert plan["summary"]["hosts_not_answering"] == []


def test_dry_run_returns_the_same_plan_and_stores_nothing(pool):
    before = pool.state()
    details = pool.fail("set_policy", level="pool", kind="pif",
                        policy="gro=off")
    result = pool.call("set_policy", level="pool", kind="pif",
                       policy="gro=off", dry_run="true")
    assert pool.state() == before
    assert (result["dry_run"], result["stored"]) == (True, False)
    assert result["plan"] == json.loads(details[2])
    assert labels(by_host(result["plan"])["h1"]["objects"]) == ["h1/eth0"]
    assert result["message"].startswith("dry run, nothing was stored.")
    # a vm-level dry run stores nothing either
    pool.call("set_policy", level="vm", vm="bsd", policy="all-off",
              dry_run="true")
    assert pool.state() == before


def test_confirm_stores_and_says_what_the_watcher_does(pool):
    before = pool.state()
    result = pool.call("set_policy", level="pool", kind="vif",
                       policy="tx-off", confirm="yes")
    assert (result["stored"], result["policy"], result["previous"]) == (
        True, "tx-off", None)
    assert "watcher" in result["message"]
    assert "within seconds" in result["message"]
    assert "next plugged" in result["message"]
    assert "netoffload apply" not in result["message"]
    policies = pool.call("get_policy")["policies"]
    assert [(p["level"], p["policy"]) for p in policies] == [
        ("pool", "tx-off")]
    # set_policy stores only: keys and devices are the watcher's to change
    assert pool.vif_config(pool.bsd_vif) == {}
    assert live(pool, "h1", "vif6.0")["tx"] == "on"
    revert_all(pool, before)


def test_a_vm_policy_needs_no_confirm_and_plans_only_its_host(pool):
    before = pool.state()
    result = pool.call("set_policy", level="vm", vm="bsd", policy="tx-off")
    assert result["stored"] is True
    [h1] = result["plan"]["hosts"]
    assert h1["name_label"] == "h1"
    assert labels(h1["objects"]) == ["bsd/vif0"]
    assert [d["device"] for d in h1["devices"]] == ["vif6.0"]
    assert result["plan"]["not_running"] == []
    revert_all(pool, before)


def test_clearing_a_wide_policy_is_confirmed_too(pool):
    before = pool.state()
    pool.call("set_policy", level="tag", tag="bsd", policy="tx-off",
              confirm="yes")
    stored = pool.state()
    details = pool.fail("set_policy", level="tag", tag="bsd", policy="")
    assert details[0] == "NETOFFLOAD_CONFIRM_REQUIRED"
    assert pool.state() == stored
    cleared = pool.call("set_policy", level="tag", tag="bsd", policy="",
                        confirm="yes")
    assert (cleared["policy"], cleared["previous"]) == (None, "tx-off")
    revert_all(pool, before)


def test_host_policy_plans_that_host_only(pool):
    before = pool.state()
    result = call_h1(pool, "set_policy", level="host", host="h2",
                     policy="sg=off", dry_run="true")
    [h2] = result["plan"]["hosts"]
    assert h2["name_label"] == "h2"
    assert labels(h2["objects"]) == ["h2/eth0"]
    assert [d["device"] for d in h2["devices"]] == ["eth0"]
    assert pool.state() == before


@pytest.mark.parametrize("args", [
    dict(level="host", kind="pif", policy="gro=off"),
    dict(level="host", kind="pif", policy="gro=off", selector=""),
    dict(level="vm", policy="tx-off"),
    dict(level="network", policy="tx-off"),
    dict(level="tag", policy="tx-off"),
], ids=["host", "host-empty", "vm", "network", "tag"])
def test_an_omitted_selector_is_an_error_at_every_level(pool, args):
    before = pool.state()
    args = dict(args)
    if "selector" in args:
        args["host"] = args.pop("selector")
    with pytest.raises(XenAPI.Failure) as err:
        call_h1(pool, "set_policy", confirm="yes", **args)
    details = err.value.details
    assert details[0] == "NETOFFLOAD_BAD_ARGUMENT"
    assert "level=%s needs %s=" % (args["level"], args["level"]) in details[1]
    assert pool.state() == before


def test_an_unreachable_host_is_reported_in_the_plan(pool):
    dead = pool.sim.add_host("h3", netns=pool.ns["h1"].name)
    pool.sim.add_pif(dead, pool.lan, "eth0")
    pool.sim.set_host_live(dead, False)
    result = pool.call("set_policy", level="pool", kind="pif",
                       policy="gro=off", dry_run="true")
    h3 = by_host(result["plan"])["h3"]
    assert (h3["ok"], h3["error"][0]) == (False, "HOST_OFFLINE")
    assert labels(h3["objects"]) == ["h3/eth0"]
    assert result["plan"]["summary"]["hosts_not_answering"] == ["h3"]
    assert "h3" in result["message"]


def test_apply_with_a_wide_policy_is_confirmed_like_set_policy(pool):
    before = pool.state()
    details = pool.fail("apply", tag="bsd", policy="tx-off")
    assert details[0] == "NETOFFLOAD_CONFIRM_REQUIRED"
    assert pool.state() == before
    result = pool.call("apply", tag="bsd", policy="tx-off", confirm="yes")
    assert [p["policy"] for p in result["policy"]] == ["tx-off"]
    assert live(pool, "h1", "vif6.0")["tx"] == "off"
    # a VM's own policy reaches one VM: no confirm, as with set_policy
    pool.call("apply", vm="web 01", policy="sg=off")
    revert_all(pool, before)


def test_the_store_waits_for_the_pool_writer_lease(pool):
    """Another writer holds the pool-wide lease (CONTRACTS E): set_policy
    fails with BUSY naming it and stores nothing."""
    import time

    from netoffload.pool import lease
    # (the plugin waits the 2 s it asks for, wait=; its default is 20 s)
    pool.api.pool.add_to_other_config(pool.pool_ref, "netoffload-lease",
                                      json.dumps({
                                          "holder": "apply@elsewhere:1",
                                          "op": "0123456789abcdef",
                                          "expires": time.time() + 600}))
    before = pool.state()
    started = time.time()
    details = pool.fail("set_policy", level="pool", kind="vif",
                        policy="tx-off", confirm="yes", wait="2")
    assert 2 <= time.time() - started < lease.DEFAULT_WAIT_S
    assert details[0] == "NETOFFLOAD_BUSY"
    assert "apply@elsewhere" in " ".join(details)
    assert pool.state() == before


def test_a_tag_policy_may_come_before_its_vms(pool):
    """Storing a policy for a tag no VM carries yet is allowed (it names
    the tag); the message says it applies as VMs are tagged."""
    before = pool.state()
    result = pool.call("set_policy", level="tag", tag="later",
                       policy="tx-off", dry_run="true")
    assert result["plan"]["hosts"] == [] and result["plan"]["not_running"] \
        == []
    assert "No VM carries the tag 'later' yet" in result["message"]
    assert pool.state() == before


def test_the_watcher_does_what_the_plan_said_within_seconds(pool):
    """The message is true on an installed pool: with the watcher running
    (on the master, h1), a stored policy's keys and live changes happen
    with no `apply`, as the plan listed them."""
    from tests.support.wait import wait_for
    before = pool.state()
    pool.watch(pool.hosts["h1"], pool.ns["h1"])
    result = pool.call("set_policy", level="tag", tag="bsd", policy="tx-off",
                       confirm="yes")
    [h1] = result["plan"]["hosts"]
    [obj] = h1["objects"]
    wanted = dict((k, v) for k, v in obj["writes"]
                  if k.startswith("ethtool-"))
    assert wanted == {"ethtool-tx": "off"}
    assert [d["device"] for d in h1["devices"]] == ["vif6.0"]
    wait_for(lambda: live(pool, "h1", "vif6.0")["tx"] == "off", timeout=15,
             what="the watcher changing vif6.0")
    wait_for(lambda: pool.vif_config(pool.bsd_vif).get("ethtool-tx") == "off",
             timeout=15, what="the watcher writing bsd's VIF key")
    assert live(pool, "h1", "vif5.0")["tx"] == "on"  # not tagged bsd
    pool.call("revert", target="ALL", confirm="yes", pool="true")
    wait_for(lambda: pool.state() == before, timeout=15,
             what="revert ALL restoring the start")
