"""Review findings, each through the simulator's host.call_plugin and real
namespaced devices (the dom0 pool of tests/support/simpool.py)."""
import json
import os

import pytest

from netoffload.pool import context, fanout, keys, planning
from tests.support.poolrecords import build
from tests.support.simpool import live

pytestmark = pytest.mark.root


# -- 1: scope=local honours dry_run and confirm ---------------------------------

def test_local_scope_dry_run_changes_nothing(pool):
    pool.call("set_policy", level="vm", vm="bsd", policy="all-off")
    before = pool.state()
    result = pool.call("apply", vm="bsd", dry_run="true", scope="local")
    assert pool.state() == before
    assert result["dry_run"] is True
    [vif] = result["devices"]
    assert (vif["device"], vif["action"]) == ("vif6.0", "plan")
    assert vif["features"]["tx"] == "would-change"


def test_local_scope_revert_dry_run_changes_nothing(pool):
    pool.call("apply", vm="bsd", policy="all-off")
    before = pool.state()
    result = pool.call("revert", vm="bsd", dry_run="true", scope="local")
    assert pool.state() == before
    [vif] = result["devices"]
    assert (vif["action"], vif["restore"]["tx"]) == ("plan", "on")


@pytest.mark.parametrize("fn", ["apply", "revert"])
def test_local_scope_all_needs_confirm(pool, fn):
    pool.call("set_policy", level="pool", kind="vif", policy="all-off",
              confirm="yes")
    pool.call("set_policy", level="pool", kind="pif", policy="all-off",
              confirm="yes")
    if fn == "revert":
        pool.call("apply", target="ALL", confirm="yes")
    before = pool.state()
    details = pool.fail(fn, target="ALL", scope="local")
    assert details[0] == "NETOFFLOAD_CONFIRM_REQUIRED"
    assert pool.state() == before
    done = pool.call(fn, target="ALL", scope="local", confirm="yes")
    assert done["summary"]["devices_failed"] == []
    assert pool.state() != before


# -- 5, 6, 8: the pool fan-out ---------------------------------------------------

def test_fan_out_reaches_a_host_in_maintenance_mode(pool):
    with pool.sim.db.lock:  # what host.disable leaves: enabled=false, live
        pool.sim.db.set_field("host", pool.hosts["h2"], "enabled", False)
    result = pool.call("apply", target="ALL", policy="all-off", confirm="yes",
                       pool="true")
    h2 = [h for h in result["hosts"] if h["name_label"] == "h2"][0]
    assert h2["ok"] is True, h2
    assert live(pool, "h2", "vif7.0")["tx"] == "off"


def test_fan_out_reports_live_but_unreachable_hosts(pool, tmp_path):
    # Live in the database, yet the call fails when it is made: a host
    # whose dom0 namespace is gone, and one without the plugin installed.
    gone = pool.sim.add_host("h3", netns="nosuch-netns-%d" % id(pool))
    bare = pool.sim.add_host("h4", netns=pool.ns["h2"].name,
                             plugin_dir=str(tmp_path))
    result = pool.call("apply", target="ALL", policy="tx-off", confirm="yes",
                       pool="true")
    by_name = dict((h["name_label"], h) for h in result["hosts"])
    assert sorted(by_name) == ["h1", "h2", "h3", "h4"]
    assert (by_name["h1"]["ok"], by_name["h2"]["ok"]) == (True, True)
    assert by_name["h2"]["result"]["summary"]["devices_failed"] == []
    assert live(pool, "h2", "vif7.0")["tx"] == "off"
    assert (by_name["h3"]["ok"], by_name["h3"]["error"][0]) == (
        False, "XENAPI_PLUGIN_FAILURE")
    assert (by_name["h4"]["ok"], by_name["h4"]["error"][0]) == (
        False, "XENAPI_MISSING_PLUGIN")
    assert gone and bare


@pytest.fixture
def in_process(pool, monkeypatch):
    """This process as the plugin on h1 (its env), for fan-out internals."""
    for key, value in pool.sim.plugin_env(pool.hosts["h1"]).items():
        if key.startswith("NETOFFLOAD_"):
            monkeypatch.setenv(key, value)
    return context.CallContext(pool.session)


def test_fan_out_thread_bug_is_reported_not_raised(pool, in_process, mocker):
    mocker.patch.object(fanout.xapi, "open_session", autospec=True,
                        side_effect=RuntimeError("injected"))
    entries = fanout.fan_out(in_process, "version", {}, {"here": True})
    by_name = dict((h["name_label"], h) for h in entries)
    assert by_name["h1"] == dict(by_name["h1"], ok=True,
                                 result={"here": True})
    assert by_name["h2"]["ok"] is False
    assert by_name["h2"]["error"] == ["RuntimeError", "injected"]
    json.dumps(entries)


def test_fan_out_timeout_marks_the_host_and_late_answers_change_nothing(
        pool, in_process, mocker):
    mocker.patch.object(fanout, "FANOUT_TIMEOUT", 0.3)
    pool.sim.set_latency_ms(400)  # every call of the h2 thread is slow
    try:
        entries = fanout.fan_out(in_process, "version", {}, {})
        snapshot = json.dumps(entries, sort_keys=True)
        by_name = dict((h["name_label"], h) for h in entries)
        assert by_name["h2"]["ok"] is False
        assert by_name["h2"]["error"][0] == "TIMEOUT"
    finally:
        pool.sim.set_latency_ms(0)
    import time
    time.sleep(1.5)  # the late thread finishes now
    assert json.dumps(entries, sort_keys=True) == snapshot


# -- 2: narrowing a policy restores what it no longer covers --------------------

def set_host_policy(pool, policy):
    """set_policy level=host host=h1 (pool.call takes host= as the host
    to call)."""
    pool.api.host.call_plugin(pool.hosts["h1"], "netoffload", "set_policy", {
        "level": "host", "host": "h1", "policy": policy, "confirm": "yes"})


def test_narrowing_a_policy_restores_the_features_it_drops(pool):
    from netoffload.engine.livestate import LiveStateStore
    state_dir = pool.sim.plugin_env(pool.hosts["h1"])["NETOFFLOAD_STATE_DIR"]
    before = pool.state()
    original = live(pool, "h1", "eth0")
    pool.call("apply", pif="eth0", policy="all-off", confirm="yes")
    assert live(pool, "h1", "eth0")["sg"] == "off"
    set_host_policy(pool, "tx-off")
    # not yet enforced: status says so, dry-run shows the pending restores
    [eth0] = pool.call("status", pif="eth0")["devices"]
    assert eth0["compliant"] is False
    assert eth0["pending_restore"]["sg"] == "on"
    doctor = pool.call("doctor")
    [owed] = [d for d in doctor["policy"]["non_compliant"]
              if d["device"] == "eth0"]
    assert owed["pending_restore"]["sg"] == "on"
    [planned] = pool.call("apply", pif="eth0", dry_run="true")["devices"]
    assert planned["action"] == "plan"
    assert planned["pending_restore"]["rx"] == "on"
    assert live(pool, "h1", "eth0")["sg"] == "off"  # the dry run did nothing
    result = pool.call("apply", pif="eth0")
    [done] = result["devices"]
    assert done["ok"] is True and done["restored"]["ok"] is True
    now = live(pool, "h1", "eth0")
    assert now["tx"] == "off"
    assert dict((f, now[f]) for f in ("rx", "sg", "gso", "gro")) == dict(
        (f, original[f]) for f in ("rx", "sg", "gso", "gro"))
    recorded = LiveStateStore(state_dir).recorded()["eth0"]
    assert "tx" in recorded and "sg" not in recorded and "rx" not in recorded
    [eth0] = pool.call("status", pif="eth0")["devices"]
    assert (eth0["compliant"], eth0["pending_restore"]) == (True, {})
    pool.call("revert", pif="eth0")
    set_host_policy(pool, "")
    assert pool.state() == before


# -- 3: a key someone sets after the pack wrote it is theirs -------------------

def test_key_changed_by_an_admin_after_apply_is_kept_and_survives_revert(pool):
    api = pool.session.xenapi
    pool.call("apply", vm="bsd", policy="all-off")
    assert api.VIF.get_other_config(pool.bsd_vif)["ethtool-tx"] == "off"
    # Xen Orchestra's "TX checksumming" toggle, later on
    api.VIF.remove_from_other_config(pool.bsd_vif, "ethtool-tx")
    api.VIF.add_to_other_config(pool.bsd_vif, "ethtool-tx", "on")
    [plan] = pool.call("apply", vm="bsd", dry_run="true")["objects"]
    assert ["ethtool-tx", "off"] not in plan["writes"]
    assert plan["sources"]["tx"] == "explicit"
    pool.call("apply", vm="bsd")
    config = api.VIF.get_other_config(pool.bsd_vif)
    assert config["ethtool-tx"] == "on"
    assert "tx" not in keys.managed_features(config)
    # their decision, shown as such (docs/policy.md)
    [vif] = pool.call("status", vm="bsd")["devices"]
    assert vif["overrides"] == [{
        "feature": "tx", "value": "on", "source": "explicit",
        "why": "changed by someone after netoffload wrote it"}]
    pool.call("revert", vm="bsd")
    assert api.VIF.get_other_config(pool.bsd_vif) == {"ethtool-tx": "on"}


# -- 7: xapi compares key values exactly -----------------------------------------

def test_explicit_value_xapi_ignores_is_not_reported_as_honoured(pool):
    api = pool.session.xenapi
    api.VIF.remove_from_other_config(pool.web_vif, "ethtool-tx")
    api.VIF.add_to_other_config(pool.web_vif, "ethtool-tx", "TRUE")
    pool.call("set_policy", level="vm", vm="web 01", policy="tx-off")
    [vif] = [d for d in pool.call("status", vm="web 01")["devices"]
             if d["device"] == "vif5.0"]
    assert vif["explicit"] == {"tx": "TRUE"}
    assert vif["ignored_by_xapi"] == ["tx"]
    result = pool.call("apply", vm="web 01")
    assert api.VIF.get_other_config(pool.web_vif) == {"ethtool-tx": "TRUE"}
    assert result["objects"] == []  # not overwritten without force
    forced = pool.call("apply", vm="web 01", force="true")
    [obj] = forced["objects"]
    assert obj["reapplied_at_plug"] is True
    assert api.VIF.get_other_config(pool.web_vif)["ethtool-tx"] == "off"
    pool.call("revert", vm="web 01")
    assert api.VIF.get_other_config(pool.web_vif) == {"ethtool-tx": "TRUE"}


def test_reapplied_at_plug_compares_exactly():
    records = build(pool={"netoffload-vif": "tx-off"},
                    vif={"ethtool-tx": "Off"})
    [plan] = planning.plan_db(records, ["OpaqueRef:vif"], force=True)
    assert plan.final["ethtool-tx"] == "off"  # "Off" does nothing in xapi
    assert plan.reapplied_at_plug is True and plan.reapplied_now is False


# -- 9: revert ALL forgets records of guest devices that are gone ---------------

def test_revert_all_forgets_records_of_vanished_guest_devices(pool):
    from netoffload.engine.livestate import LiveStateStore
    state_dir = pool.sim.plugin_env(pool.hosts["h1"])["NETOFFLOAD_STATE_DIR"]
    pool.call("apply", target="ALL", policy="all-off", confirm="yes")
    assert "vif6.0" in LiveStateStore(state_dir).recorded()
    pool.ns["h1"].run(["ip", "link", "del", "vif6.0"])  # the domain died
    result = pool.call("revert", target="ALL", confirm="yes")
    by_dev = dict((d["device"], d) for d in result["devices"])
    assert by_dev["vif6.0"]["action"] == "gone"
    assert by_dev["eth0"]["action"] == "restore"
    assert LiveStateStore(state_dir).recorded() == {}


# -- a device-level failure is NETOFFLOAD_DEVICE_ERROR and changes nothing -------

def test_check_checksums_without_tcpdump_is_a_device_error(pool):
    # dom0 without tcpdump (the RPM only Recommends it): absent from the
    # host's dom0 view.
    tcpdump = [os.path.join(d, "tcpdump") for d in
               "/sbin:/usr/sbin:/bin:/usr/bin".split(":")
               if os.path.exists(os.path.join(d, "tcpdump"))]
    assert tcpdump
    pool.sim.configure_host(pool.hosts["h1"], dom0_files=dict(
        (path, None) for path in tcpdump))
    pool.call("set_policy", level="pool", kind="vif", policy="all-off",
              confirm="yes")
    before = pool.state()
    details = pool.fail("check_checksums", device="vif6.0", seconds="1")
    assert details[:2] == ["NETOFFLOAD_DEVICE_ERROR", "tcpdump is not installed"]
    assert pool.state() == before
