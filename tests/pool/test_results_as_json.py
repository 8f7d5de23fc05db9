"""Device outcomes, device status and object writes become the plugin's
JSON (docs/policy.md) only through to_json; these are their shapes."""
from netoffload.engine.ethtool import CHANGED, FAILED, UNCHANGED, ApplyResult
from netoffload.errors import DeviceError
from netoffload.pool import enforce, planning, writer
from netoffload.pool.enforce import (
    DeviceOutcome,
    DeviceStatus,
    LocalDevice,
    RecordedDevice,
)
from netoffload.pool.precedence import Resolution

VM = {"uuid": "vm-uuid", "name_label": "web"}


def _resolution(features, explicit=None, error=None):
    resolution = Resolution()
    resolution.features = dict(features)
    resolution.sources = dict((f, "pool") for f in features)
    resolution.explicit = dict(explicit or {})
    resolution.policy = "tx-off"
    resolution.level = "pool"
    resolution.error = error
    return resolution


def _vif(features=None, **kw):
    return LocalDevice("vif5.0", "vif", "OpaqueRef:vif",
                       _resolution(features or {"tx": "off"}, **kw), VM)


def _result(status, ran_command=True, errors=None):
    return ApplyResult("vif5.0", status, {"tx": "on"}, {"tx": "off"},
                       ran_command=ran_command, errors=errors)


def test_local_device_json_names_its_policy_and_what_xapi_ignores():
    entry = _vif(explicit={"sg": "TRUE", "rx": "off"}).to_json()
    assert entry == {"device": "vif5.0", "kind": "vif",
                     "desired": {"tx": "off"},
                     "explicit": {"sg": "TRUE", "rx": "off"},
                     "ignored_by_xapi": ["sg"], "policy": "tx-off",
                     "level": "pool", "vm": VM,
                     # provenance (docs/policy.md)
                     "sources": {"tx": "pool"}, "contributing": [],
                     "shadowed": [], "overrides": []}


def test_broken_policy_shows_as_invalid_with_its_error():
    entry = _vif(error="netoffload-vif='tx=of': bad value").to_json()
    assert entry["policy"] == "INVALID"
    assert entry["policy_error"] == "netoffload-vif='tx=of': bad value"


def test_applied_device_carries_the_engine_result():
    outcome = DeviceOutcome(_vif(), enforce.ACTION_APPLY)
    outcome.result = _result({"tx": CHANGED})
    entry = outcome.to_json()
    assert entry["action"] == "apply"
    assert (entry["ok"], entry["ran_command"], entry["errors"]) == (
        True, True, [])
    assert (entry["before"], entry["after"]) == ({"tx": "on"}, {"tx": "off"})
    assert "restored" not in entry and "pending_restore" not in entry
    assert (outcome.ok, outcome.failed, outcome.ran_command) == (
        True, False, True)


def test_apply_then_restore_reports_both_together():
    outcome = DeviceOutcome(_vif(), enforce.ACTION_APPLY)
    outcome.pending_restore = {"sg": "on"}
    outcome.result = _result({"tx": UNCHANGED}, ran_command=False)
    outcome.restored = _result({"sg": FAILED}, errors=["sg: refused"])
    entry = outcome.to_json()
    assert entry["pending_restore"] == {"sg": "on"}
    assert entry["restored"]["errors"] == ["sg: refused"]
    # the restore ran a command and failed: the device did both
    assert (entry["ran_command"], entry["ok"], entry["errors"]) == (
        True, False, ["sg: refused"])
    assert outcome.failed


def test_device_error_after_apply_keeps_the_apply_and_says_failed():
    outcome = DeviceOutcome(_vif(), enforce.ACTION_APPLY)
    outcome.result = _result({"tx": CHANGED})
    outcome.fail(DeviceError("vif5.0: no such device"))
    entry = outcome.to_json()
    assert (entry["action"], entry["ok"], entry["errors"]) == (
        "failed", False, ["vif5.0: no such device"])
    assert entry["ran_command"] is True  # the apply did run
    assert "restored" not in entry


def test_device_error_before_anything_ran_has_no_engine_keys():
    outcome = DeviceOutcome(_vif())
    outcome.fail(DeviceError("vif5.0: no such device"))
    entry = outcome.to_json()
    assert (entry["action"], entry["ok"], entry["errors"]) == (
        "failed", False, ["vif5.0: no such device"])
    assert "ran_command" not in entry and "features" not in entry
    assert outcome.failed and not outcome.ran_command


def test_nothing_to_do_is_neither_ok_nor_failed():
    outcome = DeviceOutcome(_vif())
    entry = outcome.to_json()
    assert entry["action"] == "none"
    assert "ok" not in entry and "errors" not in entry
    assert outcome.ok is None and not outcome.failed and not outcome.errors


def test_revert_plan_lists_what_it_would_restore():
    outcome = DeviceOutcome(RecordedDevice("tap5.0"), enforce.ACTION_PLAN)
    outcome.restore_plan = {"tx": "on"}
    assert outcome.to_json() == {"device": "tap5.0", "kind": "tap",
                                 "restore": {"tx": "on"}, "action": "plan"}


def test_recorded_device_kind_follows_dom0_guest_names():
    assert [RecordedDevice(d).kind for d in
            ("vif5.0", "tap12.3", "eth0", "vif5", "vifx.0")] == [
        "vif", "tap", "pif", "pif", "pif"]


def test_vanished_device_status_is_not_compliant_and_says_why():
    status = DeviceStatus(_vif())
    status.read_error = "device vanished while reading"
    entry = status.to_json()
    assert (entry["live"], entry["compliant"], entry["error"]) == (
        {}, False, "device vanished while reading")
    assert "differs" not in entry and "pending_restore" not in entry


def test_device_status_compliance_and_database_state():
    status = DeviceStatus(_vif())
    status.live = {"tx": "off"}
    assert status.compliant
    assert "db_compliant" not in status.to_json()
    status.db_compliant, status.reapplied_at_plug = False, True
    status.pending_restore = {"sg": "on"}
    entry = status.to_json()
    assert (entry["compliant"], entry["db_compliant"],
            entry["reapplied_at_plug"]) == (False, False, True)
    assert entry["differs"] == [] and entry["pending_restore"] == {"sg": "on"}


def test_deviceless_pif_names_its_carriers():
    pif = enforce.DevicelessPif("h1/eth0.100", ["h1/eth0", "h1/eth1"])
    assert pif.to_json() == {
        "device": None, "kind": "pif", "pif": "h1/eth0.100",
        "note": "no kernel device under openvswitch; carried by h1/eth0, "
                "h1/eth1"}
    assert pif.desired == {}


def _plan():
    record = {"uuid": "vif-uuid", "other_config": {}}
    return planning.plan_object("VIF", "OpaqueRef:vif", record, "web/0",
                                _resolution({"tx": "off", "gro": "off"}))


def test_object_write_that_finished_reports_the_plan_carried_out():
    plan = _plan()
    write = writer.ObjectWrite(plan)
    write.status = writer.STATUS_CHANGED
    write.written = [("ethtool-tx", "off")]
    write.done_plan = plan
    assert write.to_json() == {
        "class": "VIF", "uuid": "vif-uuid", "label": "web/0",
        "written": [["ethtool-tx", "off"]], "status": "changed",
        "live_only": {"gro": "off"}, "reapplied_at_plug": True,
        "desired": {"tx": "off", "gro": "off"}}


def test_failed_object_write_carries_its_error_and_no_plan():
    write = writer.ObjectWrite.failed(_plan(), ["VIF gone", "OpaqueRef:vif"])
    assert write.to_json() == {
        "class": "VIF", "uuid": "vif-uuid", "label": "web/0", "written": [],
        "status": "failed", "error": ["VIF gone", "OpaqueRef:vif"]}
