"""The plugin as xapi runs it: through the simulator's host.call_plugin
(a subprocess with the XML-RPC call in argv[1], inside the host's network
namespace), against real veth/tap devices named as in dom0."""
import json
import os
import sys

import pytest

import netoffload
from netoffload.pool import keys
from tests.support import layout
from tests.support.simpool import live
from tests.support.tools import interpreter as find_interpreter

pytestmark = pytest.mark.root

REPO = layout.REPO
ALL_OFF = dict((f, "off") for f in ("rx", "tx", "sg", "tso", "ufo", "gso",
                                     "gro", "lro"))


# -- version / policy -----------------------------------------------------------

def test_version(pool):
    assert pool.call("version") == {"version": netoffload.__version__,
                                    "api": netoffload.API_LEVEL}


def test_set_and_get_policy_every_level(pool):
    calls = [
        dict(level="pool", kind="vif", policy="all-off"),
        dict(level="pool", kind="pif", policy="TX=False"),
        dict(level="host", host="h1", policy="none"),
        dict(level="network", network="LAN 1", policy="tx-off"),
        dict(level="tag", tag="bsd", policy="tx-off"),
        dict(level="vm", vm="web 01", policy="sg=off,tx=off"),
    ]
    stored = [json.loads(pool.api.host.call_plugin(
        pool.hosts["h1"], "netoffload", "set_policy",
        dict(c, confirm="yes")))["policy"] for c in calls]
    assert stored == ["all-off", "tx=off", "none", "tx-off", "tx-off",
                      "tx=off,sg=off"]
    found = pool.call("get_policy")["policies"]
    assert [(p["level"], p["kind"], p["policy"]) for p in found] == [
        ("pool", "pif", "tx=off"), ("pool", "vif", "all-off"),
        ("tag", "vif", "tx-off"), ("host", "pif", "none"),
        ("network", "vif", "tx-off"), ("vm", "vif", "tx=off,sg=off")]
    cleared = pool.call("set_policy", level="pool", kind="vif", policy="",
                        confirm="yes")
    assert (cleared["policy"], cleared["previous"]) == (None, "all-off")


# -- errors change nothing -------------------------------------------------------

ERROR_CASES = [
    ("unknown-function", "nosuch", {}, "UNKNOWN_XENAPI_PLUGIN_FUNCTION"),
    ("unknown-argument", "version", {"x": "1"}, "NETOFFLOAD_BAD_ARGUMENT"),
    ("no-target", "apply", {}, "NETOFFLOAD_BAD_ARGUMENT"),
    ("two-targets", "apply", {"vm": "bsd", "tag": "bsd"},
     "NETOFFLOAD_BAD_ARGUMENT"),
    ("lowercase-all", "apply", {"target": "all", "confirm": "yes"},
     "NETOFFLOAD_BAD_ARGUMENT"),
    ("unknown-feature", "apply", {"vm": "bsd", "policy": "tx=off,fly=off"},
     "NETOFFLOAD_BAD_ARGUMENT"),
    ("unknown-profile", "set_policy",
     {"level": "pool", "kind": "vif", "policy": "fast"},
     "NETOFFLOAD_BAD_ARGUMENT"),
    ("bad-level", "set_policy", {"level": "rack", "policy": "none"},
     "NETOFFLOAD_BAD_ARGUMENT"),
    ("kind-not-at-level", "set_policy",
     {"level": "vm", "vm": "bsd", "kind": "pif", "policy": "none"},
     "NETOFFLOAD_BAD_ARGUMENT"),
    ("10kB-string", "apply", {"vm": "x" * 10240}, "NETOFFLOAD_BAD_ARGUMENT"),
    ("shell-in-vm-name", "apply", {"vm": "a; rm -rf / $(reboot) `id`",
                                   "policy": "all-off"},
     "NETOFFLOAD_NOT_FOUND"),
    ("shell-in-device", "apply", {"pif": "eth0;reboot"},
     "NETOFFLOAD_BAD_ARGUMENT"),
    ("unknown-vm", "apply", {"vm": "nobody"}, "NETOFFLOAD_NOT_FOUND"),
    ("unknown-network", "status", {"network": "WAN"}, "NETOFFLOAD_NOT_FOUND"),
    ("unknown-pif", "apply", {"pif": "eth9"}, "NETOFFLOAD_NOT_FOUND"),
    ("template-is-not-a-target", "apply", {"vm": "a template"},
     "NETOFFLOAD_NOT_FOUND"),
    ("all-needs-confirm", "apply", {"target": "ALL", "policy": "all-off"},
     "NETOFFLOAD_CONFIRM_REQUIRED"),
    ("revert-all-needs-confirm", "revert", {"target": "ALL"},
     "NETOFFLOAD_CONFIRM_REQUIRED"),
    ("confirm-must-be-yes", "apply", {"target": "ALL", "confirm": "true"},
     "NETOFFLOAD_BAD_ARGUMENT"),
    ("bad-bool", "apply", {"vm": "bsd", "dry_run": "perhaps"},
     "NETOFFLOAD_BAD_ARGUMENT"),
    ("bad-scope", "status", {"scope": "galaxy"}, "NETOFFLOAD_BAD_ARGUMENT"),
    # wait= (seconds for the pool lease): 0..300, whole seconds
    ("wait-too-long", "apply", {"vm": "bsd", "policy": "all-off",
                                "wait": "301"}, "NETOFFLOAD_BAD_ARGUMENT"),
    ("wait-negative", "revert", {"target": "ALL", "confirm": "yes",
                                 "wait": "-1"}, "NETOFFLOAD_BAD_ARGUMENT"),
    ("wait-not-a-number", "set_policy",
     {"level": "pool", "kind": "vif", "policy": "tx-off", "confirm": "yes",
      "wait": "soon"}, "NETOFFLOAD_BAD_ARGUMENT"),
    ("wait-fraction", "apply", {"target": "ALL", "confirm": "yes",
                                "wait": "1.5"}, "NETOFFLOAD_BAD_ARGUMENT"),
    ("wait-where-no-lease", "status", {"wait": "5"},
     "NETOFFLOAD_BAD_ARGUMENT"),
]


@pytest.mark.parametrize("fn,args,code", [c[1:] for c in ERROR_CASES],
                         ids=[c[0] for c in ERROR_CASES])
def test_errors_change_nothing(pool, fn, args, code):
    pool.call("set_policy", level="pool", kind="pif", policy="all-off",
              confirm="yes")
    before = pool.state()
    details = pool.fail(fn, **args)
    assert details[0] == code
    assert all(isinstance(d, str) for d in details) and len(details) >= 2
    assert pool.state() == before


def test_ambiguous_vm_lists_uuids_and_changes_nothing(pool):
    other = pool.sim.add_vm("web 01")
    before = pool.state()
    details = pool.fail("apply", vm="web 01", policy="all-off")
    uuids = sorted(pool.session.xenapi.VM.get_uuid(ref)
                   for ref in (pool.web, other))
    assert details[0] == "NETOFFLOAD_AMBIGUOUS"
    assert sorted(details[2:]) == uuids
    assert pool.state() == before


def test_confirm_required_carries_the_plan(pool):
    details = pool.fail("apply", target="ALL", policy="all-off")
    plan = json.loads(details[2])
    labels = sorted(p["label"] for p in plan["plan"])
    assert "bsd/vif0" in labels and "h1/eth0" in labels
    assert "a template/vif0" not in labels


def test_busy_when_the_host_lock_is_held(pool):
    from netoffload.statedir import host_lock
    env_dir = pool.sim.plugin_env(pool.hosts["h1"])["NETOFFLOAD_STATE_DIR"]
    before = pool.state()
    with host_lock(env_dir):
        details = pool.fail("apply", vm="bsd", policy="all-off")
    assert details[0] == "NETOFFLOAD_BUSY"
    assert pool.state() == before


# -- apply / revert ----------------------------------------------------------------

def test_apply_all_then_revert_all_is_byte_for_byte(pool):
    before = pool.state()
    result = pool.call("apply", target="ALL", policy="all-off", confirm="yes")
    assert result["summary"]["devices_failed"] == []
    after = pool.other_configs()
    web_vif = pool.session.xenapi.VIF.get_uuid(pool.web_vif)
    # tx=true found before netoffload is a default (Xen Orchestra's
    # stamp, issue 11): the policy applies over it and saves it
    assert after["VIF/" + web_vif]["ethtool-tx"] == "off"
    assert keys.read_book(after["VIF/" + web_vif]).entries["tx"] == \
        keys.Entry("true", "off", None)
    assert keys.managed_features(after["VIF/" + web_vif]) == set(
        ("rx", "tx", "sg", "tso", "ufo", "gso"))
    assert live(pool, "h1", "vif6.0")["tx"] == "off"
    assert live(pool, "h1", "tap5.0")["gro"] == "off"
    assert live(pool, "h1", "vif5.0")["tx"] == "off"
    assert live(pool, "h1", "eth0")["sg"] == "off"
    assert pool.state() != before
    pool.call("revert", target="ALL", confirm="yes")
    assert pool.state() == before


def test_pool_wide_apply_reaches_other_hosts_and_reports_dead_ones(pool):
    dead = pool.sim.add_host("h3", netns=pool.ns["h1"].name)
    pool.sim.set_host_live(dead, False)
    before = pool.state()
    result = pool.call("apply", target="ALL", policy="all-off", confirm="yes",
                       pool="true")
    by_name = dict((h["name_label"], h) for h in result["hosts"])
    assert (by_name["h1"]["ok"], by_name["h2"]["ok"], by_name["h3"]["ok"]) == (
        True, True, False)
    assert by_name["h3"]["error"][0] == "HOST_OFFLINE"
    assert live(pool, "h2", "vif7.0")["tx"] == "off"
    assert live(pool, "h2", "eth0")["tx"] == "off"
    status = pool.call("status", pool="true")
    h2 = [h for h in status["hosts"] if h["name_label"] == "h2"][0]
    assert all(d["compliant"] for d in h2["result"]["devices"])
    pool.call("revert", target="ALL", confirm="yes", pool="true")
    assert pool.state() == before


def test_vm_target_apply_and_revert(pool):
    result = pool.call("apply", vm="bsd", policy="tx-off")
    assert [p["policy"] for p in result["policy"]] == ["tx-off"]
    [obj] = result["objects"]
    assert obj["written"][-1] == ["ethtool-tx", "off"]
    assert obj["reapplied_at_plug"] is True
    assert [d["device"] for d in result["devices"]] == ["vif6.0"]
    assert live(pool, "h1", "vif6.0")["tx"] == "off"
    assert live(pool, "h1", "vif5.0")["tx"] == "on"  # other VM untouched
    pool.call("revert", vm="bsd")
    vm_config = pool.session.xenapi.VM.get_other_config(pool.bsd)
    assert vm_config == {"netoffload-vif": "none"}
    assert pool.session.xenapi.VIF.get_other_config(pool.bsd_vif) == {}
    assert live(pool, "h1", "vif6.0")["tx"] == "on"


def test_vm_with_policy_none_is_untouched(pool):
    pool.call("set_policy", level="vm", vm="bsd", policy="none")
    pool.call("apply", target="ALL", policy="all-off", confirm="yes")
    assert pool.session.xenapi.VIF.get_other_config(pool.bsd_vif) == {}
    assert live(pool, "h1", "vif6.0")["tx"] == "on"
    assert live(pool, "h1", "tap5.0")["tx"] == "off"


def test_tag_and_network_levels(pool):
    pool.call("set_policy", level="network", network="LAN 1",
              policy="gso=off", confirm="yes")
    pool.call("apply", tag="bsd", policy="tx-off", confirm="yes")
    assert pool.session.xenapi.VIF.get_other_config(pool.bsd_vif)[
        "ethtool-tx"] == "off"
    result = pool.call("apply", network="LAN 1")
    halted = pool.session.xenapi.VIF.get_other_config(pool.halted_vif)
    assert halted["ethtool-gso"] == "off" and "ethtool-tx" not in halted
    bsd = pool.session.xenapi.VIF.get_other_config(pool.bsd_vif)
    assert "ethtool-gso" not in bsd  # the tag level wins over the network
    assert live(pool, "h1", "tap5.0")["gso"] == "off"
    assert result["target"]["kind"] == "network"


def test_explicit_key_kept_unless_forced(pool):
    api = pool.session.xenapi
    api.VIF.remove_from_other_config(pool.web_vif, "ethtool-tx")
    api.VIF.add_to_other_config(pool.web_vif, "ethtool-tx", "false")
    pool.call("apply", vm="web 01", policy="tx=on")
    assert api.VIF.get_other_config(pool.web_vif) == {"ethtool-tx": "false"}
    pool.call("apply", vm="web 01", force="true")
    forced = api.VIF.get_other_config(pool.web_vif)
    assert forced["ethtool-tx"] == "on"
    assert keys.read_book(forced).entries == {
        "tx": keys.Entry("false", "on", None)}
    pool.call("revert", vm="web 01")
    assert api.VIF.get_other_config(pool.web_vif) == {"ethtool-tx": "false"}


def test_xo_stamp_is_a_default_the_policy_applies_over(pool):
    """issue 11 item 1: XO 6 stamps ethtool-tx=true on the VIFs it
    creates; a tx-off policy must still reach them, and revert puts the
    stamp back."""
    api = pool.session.xenapi
    before = pool.state()
    pool.call("apply", vm="web 01", policy="tx-off")
    assert api.VIF.get_other_config(pool.web_vif)["ethtool-tx"] == "off"
    assert live(pool, "h1", "vif5.0")["tx"] == "off"
    status = pool.call("status", vm="web 01")
    vif = [d for d in status["devices"] if d["device"] == "vif5.0"][0]
    assert vif["desired"] == {"tx": "off"} and vif["compliant"]
    pool.call("revert", target="ALL", confirm="yes")
    assert pool.state() == before


def test_dry_run_returns_the_plan_and_changes_nothing(pool):
    before = pool.state()
    result = pool.call("apply", target="ALL", policy="all-off",
                       dry_run="true")
    assert pool.state() == before
    assert result["dry_run"] is True
    labels = sorted(o["label"] for o in result["objects"])
    assert labels == ["bsd/vif0", "h1/eth0", "h2/eth0", "halted/vif0",
                      "web 01/vif0", "db/vif0"] or len(labels) == 6
    vif = [d for d in result["devices"] if d["device"] == "vif6.0"][0]
    assert vif["features"]["tx"] == "would-change"
    tap = [d for d in result["devices"] if d["device"] == "tap5.0"][0]
    assert tap["desired"]["tx"] == "off"  # web 01's tx=true is a default


def test_status_reports_compliance_and_db_state(pool):
    pool.call("set_policy", level="pool", kind="vif", policy="tx-off",
              confirm="yes")
    status = pool.call("status")
    by_dev = dict((d["device"], d) for d in status["devices"])
    assert sorted(by_dev) == ["eth0", "tap5.0", "vif5.0", "vif6.0"]
    assert by_dev["vif6.0"]["desired"] == {"tx": "off"}
    assert (by_dev["vif6.0"]["compliant"], by_dev["vif6.0"]["db_compliant"],
            by_dev["vif6.0"]["reapplied_at_plug"]) == (False, False, False)
    # its tx=true is a default (issue 11): the policy covers it
    assert by_dev["vif5.0"]["desired"] == {"tx": "off"}
    assert by_dev["vif5.0"]["explicit"] == {"tx": "on"}
    assert by_dev["vif5.0"]["overrides"] == []
    assert by_dev["eth0"]["desired"] == {}
    pool.call("apply", vm="bsd")
    vif6 = [d for d in pool.call("status", vm="bsd")["devices"]][0]
    assert (vif6["compliant"], vif6["db_compliant"],
            vif6["reapplied_at_plug"]) == (True, True, True)


def test_pif_target_uses_the_host_level(pool):
    result = pool.call("apply", pif="eth0", policy="sg=off", confirm="yes")
    assert [p["class"] for p in result["policy"]] == ["host"]
    assert live(pool, "h1", "eth0")["sg"] == "off"
    assert live(pool, "h2", "eth0")["sg"] == "on"
    pool.call("revert", pif="eth0")
    assert live(pool, "h1", "eth0")["sg"] == "on"


def test_names_with_quotes_and_non_ascii(pool):
    name = "caf\u00e9 \"o'neil\" & <b>"
    vm = pool.sim.add_vm(name)
    vif = pool.sim.add_vif(vm, pool.lan, 0)
    pool.call("apply", vm=name, policy="tx-off")
    assert pool.session.xenapi.VIF.get_other_config(vif)["ethtool-tx"] == "off"


# -- the wrapper and the wire ----------------------------------------------------------

def run_plugin_directly(box, fn, args, dom0_files=None, interpreter=None):
    """Run the plugin file exactly like xapi does (CompletedProcess)."""
    return box.run_plugin(fn, python3=interpreter, dom0_files=dom0_files,
                          **args)


@pytest.mark.parametrize("fn,args", [
    ("version", {}), ("status", {}), ("apply", {"vm": "bsd"}),
    ("nosuch", {}), ("apply", {"vm": "$(reboot);`id`|<&>" * 300})],
    ids=["version", "status", "apply", "unknown", "hostile"])
def test_stdout_is_exactly_one_xmlrpc_response(pool, fn, args):
    import xmlrpc.client
    proc = run_plugin_directly(pool, fn, args)
    assert proc.returncode == 0
    (response,), method = xmlrpc.client.loads(proc.stdout)
    assert method is None and response["Status"] in ("Success", "Failure")


def test_unexpected_exception_is_a_wellformed_netoffload_failure(pool,
                                                                  tmp_path):
    # Fault injection at interpreter start-up (a .pth file in dom0's
    # site-packages): the version function hits a bug. The plugin process
    # itself is unmodified.
    from sim import dom0view
    (tmp_path / "netoffload_fault.py").write_text(
        "import sys\n"
        "sys.path.insert(0, '/usr/lib/netoffload/python')\n"
        "from netoffload.plugin import functions\n"
        "def broken(session, args):\n"
        "    return {}['no such key']\n"
        "functions.FUNCTIONS['version'] = broken\n")
    (tmp_path / "netoffload-fault.pth").write_text("import netoffload_fault\n")
    site = dom0view.purelib("/usr/bin/python3")
    proc = run_plugin_directly(pool, "version", {}, {
        site + "/netoffload_fault.py": str(tmp_path / "netoffload_fault.py"),
        site + "/netoffload-fault.pth": str(tmp_path / "netoffload-fault.pth")})
    import xmlrpc.client
    (response,), method = xmlrpc.client.loads(proc.stdout)
    assert method is None and response["Status"] == "Failure"
    code, message = response["ErrorDescription"]
    assert code == "NETOFFLOAD_XAPI_ERROR"
    assert message.startswith("internal error in version: KeyError")
    assert "Traceback" in proc.stderr  # logged, not lost


def test_wrapper_maps_a_bug_to_a_netoffload_failure(mocker):
    sys.path.insert(0, os.path.join(REPO, "sim", "pylib"))
    import XenAPIPlugin

    from netoffload.plugin import dispatch

    def broken(session, args):
        raise KeyError("oops")
    with pytest.raises(XenAPIPlugin.Failure) as err:
        dispatch.wrap("broken", broken)(None, {})
    assert err.value.params[0] == "NETOFFLOAD_XAPI_ERROR"
    assert "internal error in broken: KeyError" in err.value.params[1]


# dom0: XenServer 8 / XCP-ng 8.3 have 3.6, XCP-ng 9 has 3.12.
DOM0_PYTHONS = ["3.6", "3.12"]


@pytest.mark.parametrize("minor", DOM0_PYTHONS)
def test_plugin_runs_on_dom0_pythons(pool, minor):
    """XenServer 8 / XCP-ng 8.3 ship 3.6, XCP-ng 9 3.12: apply and revert."""
    interpreter = find_interpreter(minor)
    if interpreter is None:
        pytest.skip("no python%s on this machine" % minor)
    from sim.xapi_plugins import parse_output
    before = pool.state()
    for fn, args in (("apply", {"target": "ALL", "policy": "all-off",
                                "confirm": "yes"}),
                     ("revert", {"target": "ALL", "confirm": "yes"})):
        proc = run_plugin_directly(pool, fn, args, interpreter=interpreter)
        assert json.loads(parse_output(proc.stdout))["summary"][
            "devices_failed"] == [], proc.stderr
        if fn == "apply":
            assert live(pool, "h1", "tap5.0")["sg"] == "off"
    assert pool.state() == before


def test_a_mistyped_policy_set_with_xe_changes_nothing_on_apply(pool):
    """A typo set past set_policy's check (xe, XO) must not read as "no
    policy": keys and live state stay, status and get_policy say INVALID."""
    pool.call("apply", vm="bsd", policy="tx-off")
    before = pool.state()
    xe = pool.session.xenapi
    xe.VM.remove_from_other_config(pool.bsd, "netoffload-vif")
    xe.VM.add_to_other_config(pool.bsd, "netoffload-vif", "tx=of")
    before_db = json.loads(before[0])
    result = pool.call("apply", vm="bsd")
    assert [o for o in result["objects"] if o.get("written")] == []
    assert [(d["device"], d["action"]) for d in result["devices"]] == \
        [("vif6.0", "invalid")]
    assert xe.VIF.get_other_config(pool.bsd_vif) == \
        before_db["VIF"][pool.bsd_vif]["other_config"]
    assert pool.features() == before[1]
    [device] = pool.call("status", vm="bsd")["devices"]
    assert (device["policy"], device["compliant"]) == ("INVALID", False)
    assert "tx=of" in device["policy_error"]
    invalid = [p for p in pool.call("get_policy")["policies"] if not p["valid"]]
    assert [(p["level"], p["name"]) for p in invalid] == [("vm", "bsd")]


# -- issue 11: nothing changes what the command did not name --------------------

def test_revert_of_a_tag_netoffload_never_changed_changes_nothing(pool):
    """Issue 11 item 3: `revert tag=lab --pool` with no policy on lab wrote
    netoffload-tag:lab=none, and a VM tagged lab and pfsense lost its
    pfsense all-off (lab sorted first)."""
    api = pool.session.xenapi
    start = pool.state()
    for tag in ("lab", "pfsense"):
        api.VM.add_tags(pool.bsd, tag)
    pool.call("set_policy", level="tag", tag="pfsense", policy="all-off",
              confirm="yes")
    pool.call("apply", tag="pfsense")
    before = pool.state()
    result = pool.call("revert", tag="lab", pool="true")
    assert result["unchanged"] is True and "nothing to revert" in \
        result["message"]
    assert result["policy"] == [] and result["objects"] == []
    assert pool.state() == before
    assert "netoffload-tag:lab" not in api.pool.get_other_config(
        pool.pool_ref)
    [vif] = [d for d in pool.call("status", vm="bsd")["devices"]]
    assert vif["desired"]["tx"] == "off" and vif["compliant"]
    assert vif["contributing"] == ["tag:pfsense"]
    pool.call("revert", target="ALL", confirm="yes")
    for tag in ("lab", "pfsense"):
        api.VM.remove_tags(pool.bsd, tag)
    assert pool.state() == start


def test_tag_policies_combine_whatever_the_tag_names(pool):
    """Issue 11 item 3: per feature off wins, a tag's none adds nothing."""
    api = pool.session.xenapi
    start = pool.state()
    for tag in ("aaa", "zzz"):
        api.VM.add_tags(pool.bsd, tag)
    pool.call("set_policy", level="tag", tag="aaa", policy="none",
              confirm="yes")
    pool.call("set_policy", level="tag", tag="zzz", policy="tx-off",
              confirm="yes")
    pool.call("apply", vm="bsd")
    assert api.VIF.get_other_config(pool.bsd_vif)["ethtool-tx"] == "off"
    [vif] = pool.call("status", vm="bsd")["devices"]
    assert (vif["contributing"], vif["shadowed"]) == (
        ["tag:zzz"], [{"level": "tag:aaa", "policy": "none"}])
    pool.call("revert", target="ALL", confirm="yes")
    for tag in ("aaa", "zzz"):
        api.VM.remove_tags(pool.bsd, tag)
    assert pool.state() == start


# -- issue 12 item 4: state checked before anything changes ---------------------

def _live_state(pool):
    return os.path.join(pool.sim.plugin_env(pool.hosts["h1"])[
        "NETOFFLOAD_STATE_DIR"], "live-state.json")


def _assert_set_aside(reported, path):
    """The plugin reports the dom0 path (/var/lib/netoffload/...); the
    file is in the host's state directory here."""
    name = os.path.basename(reported)
    assert name.startswith("live-state.json.corrupt-")
    assert os.path.exists(os.path.join(os.path.dirname(path), name))
    assert not os.path.exists(path)


def test_a_corrupt_live_state_record_stops_apply_before_any_change(pool):
    path = _live_state(pool)
    with open(path, "w") as handle:
        handle.write('{"devices": {"vif5.0": ')  # truncated
    before = pool.state()
    details = pool.fail("apply", target="ALL", policy="all-off",
                        confirm="yes")
    assert details[0] == "NETOFFLOAD_DEVICE_ERROR"
    assert "live-state.json" in details[1]
    assert pool.state() == before


def test_revert_with_a_truncated_record_restores_the_database(pool):
    start = pool.other_configs()
    pool.call("apply", target="ALL", policy="all-off", confirm="yes")
    path = _live_state(pool)
    with open(path) as handle:
        text = handle.read()
    with open(path, "w") as handle:
        handle.write(text[:len(text) // 2])
    result = pool.call("revert", target="ALL", confirm="yes")
    assert pool.other_configs() == start
    _assert_set_aside(result["live_state_set_aside"], path)


def test_pif_property_gro_is_an_explicit_setting_the_policy_leaves(pool):
    """Issue 11 item 6: `xe pif-param-set properties:gro=off` is the
    admin's; a PIF policy must not write ethtool-gro over it."""
    api = pool.session.xenapi
    start = pool.state()
    [pif] = [ref for ref, rec in api.PIF.get_all_records().items()
             if rec["host"] == pool.hosts["h1"]]
    api.PIF.set_property(pif, "gro", "off")
    pool.call("apply", target="ALL", policy="all-off", confirm="yes")
    config = api.PIF.get_other_config(pif)
    assert "ethtool-gro" not in config and config["ethtool-tx"] == "off"
    [eth0] = [d for d in pool.call("status", pif="eth0")["devices"]]
    assert eth0["sources"]["gro"] == "property"
    assert eth0["overrides"] == [{"feature": "gro", "value": "off",
                                  "source": "property",
                                  "why": "PIF property gro=off"}]
    assert "gro" not in eth0["desired"]
    pool.call("revert", target="ALL", confirm="yes")
    api.PIF.set_property(pif, "gro", "on")
    assert pool.state() == start


def test_a_vif_xo6_created_gets_a_tag_policy_and_revert_restores_the_stamp(
        pool):
    """Issue 11 item 1: a VM created from Xen Orchestra 6 under a tag
    policy (XO stamps ethtool-tx=true on the VIF)."""
    api = pool.session.xenapi
    start = pool.other_configs()
    vm = pool.sim.add_vm("pfsense 2", tags=["pfsense"])
    vif = pool.create_vif(vm, pool.lan, 0, xo6=True)
    created = api.VIF.get_other_config(vif)
    assert created["ethtool-tx"] == "true"
    pool.call("set_policy", level="tag", tag="pfsense", policy="tx-off",
              confirm="yes")
    pool.call("apply", tag="pfsense")
    assert api.VIF.get_other_config(vif)["ethtool-tx"] == "off"
    pool.call("revert", target="ALL", confirm="yes")
    assert api.VIF.get_other_config(vif) == created
    after = pool.other_configs()
    assert dict((k, v) for k, v in after.items() if k in start) == start


def test_the_fan_out_checks_each_hosts_state_before_its_devices(pool):
    h2_state = os.path.join(pool.sim.plugin_env(pool.hosts["h2"])[
        "NETOFFLOAD_STATE_DIR"], "live-state.json")
    with open(h2_state, "w") as handle:
        handle.write("{not json")
    start = pool.state()
    h2_before = dict((k, v) for k, v in pool.features().items()
                     if k.startswith("h2/"))
    result = pool.call("apply", target="ALL", policy="all-off",
                       confirm="yes", pool="true")
    h2 = [h for h in result["hosts"] if h["name_label"] == "h2"][0]
    assert h2["ok"] is False and h2["error"][0] == "NETOFFLOAD_DEVICE_ERROR"
    assert dict((k, v) for k, v in pool.features().items()
                if k.startswith("h2/")) == h2_before
    reverted = pool.call("revert", target="ALL", confirm="yes", pool="true")
    h2 = [h for h in reverted["hosts"] if h["name_label"] == "h2"][0]
    assert h2["ok"] is True
    _assert_set_aside(h2["result"]["live_state_set_aside"], h2_state)
    assert pool.state() == start


def test_status_shows_drift_and_since_when_the_watcher_saw_it(pool):
    """A governed device set by hand (`ethtool -K`) is drift: status lists
    the live values that differ and, from the watcher's record, since
    when; the summary counts it. Policy-forced features are not drift."""
    from netoffload.agents import drift
    before = pool.state()
    pool.call("apply", target="ALL", policy="sg=off,gso=on,tx=off",
              confirm="yes")
    entry = _device(pool.call("status"), "vif6.0")
    assert entry["drift"] is None and entry["compliant"]
    assert entry["forced"] == ["gso"]   # sg off takes gso: not drift
    pool.ns["h1"].run(["ethtool", "-K", "vif6.0", "tx", "on"])
    result = pool.call("status")
    entry = _device(result, "vif6.0")
    assert entry["drift"] == {"features": {"tx": "on"}, "since": None,
                              "held": False}
    assert not entry["compliant"] and result["summary"]["drifted"] >= 1
    drift.write_drift({"vif6.0": drift.DriftEntry({"tx": "on"}, 1234.5,
                                                  False)},
                      pool.sim.state_dir(pool.hosts["h1"]))
    entry = _device(pool.call("status"), "vif6.0")
    assert entry["drift"]["since"] == 1234.5
    pool.call("revert", target="ALL", confirm="yes")
    assert pool.state() == before


def _device(result, name):
    return [d for d in result["devices"] if d["device"] == name][0]


def test_another_hosts_dry_run_plan_honours_the_new_policy(pool):
    """`apply ALL --policy P --pool --dry-run` previews every host: each
    host plans its live part over the database as P would leave it (not
    as the policy is stored now), and nothing is stored."""
    before = pool.state()
    stored_now = pool.call("apply", host="h2", target="ALL", scope="local",
                           dry_run="true")
    assert [d for d in stored_now["devices"] if d["action"] != "none"] == []
    preview = pool.call("apply", host="h2", target="ALL", scope="local",
                        dry_run="true", policy="all-off", pool="true")
    vif7 = [d for d in preview["devices"] if d["device"] == "vif7.0"][0]
    assert vif7["action"] == "plan" and preview["dry_run"] is True
    assert pool.state() == before
