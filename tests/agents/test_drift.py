"""agents/drift.py: the pure drift core, the record, and the kernel's
ethtool netlink notifications on real veth devices."""
import json
import os

import pytest

from netoffload.agents import drift
from netoffload.engine import ethtool
from netoffload.engine.ethtool import parse_features_text

ALL_OFF = dict((f, "off") for f in ("rx", "tx", "sg", "tso", "gso", "gro"))


def features(text_lines, device="d0"):
    """DeviceFeatures parsed from `ethtool -k`-style lines."""
    return parse_features_text("Features for %s:\n%s\n" % (
        device, "\n".join(text_lines)), device)


ON = ["rx-checksumming: on", "tx-checksumming: on",
      "scatter-gather: on", "tcp-segmentation-offload: on",
      "generic-segmentation-offload: on", "generic-receive-offload: on",
      "large-receive-offload: off [fixed]"]
OFF = [line.replace(": on", ": off") for line in ON]


# -- the pure core -------------------------------------------------------------
def test_a_device_whose_live_state_differs_drifted_and_is_put_back():
    live = {"vif1.0": features(ON, "vif1.0"), "vif2.0": features(OFF, "vif2.0")}
    found = drift.find_drift({"vif1.0": ALL_OFF, "vif2.0": ALL_OFF}, live)
    assert found.drifted == {"vif1.0": dict((f, "on") for f in ALL_OFF)}
    assert found.reenforce == ["vif1.0"] and found.held == []


def test_held_devices_drift_but_are_left_alone():
    live = {"vif1.0": features(ON, "vif1.0"), "tap1.0": features(ON, "tap1.0")}
    found = drift.find_drift({"vif1.0": {"tx": "off"}, "tap1.0": {"tx": "off"}},
                             live, held={"tap1.0"})
    assert sorted(found.drifted) == ["tap1.0", "vif1.0"]
    assert found.reenforce == ["vif1.0"] and found.held == ["tap1.0"]


def test_fixed_absent_and_vanished_features_are_not_drift():
    live = {"pif0": features(ON, "pif0"), "gone": None}
    # lro is fixed off and cannot change; ufo is absent on this kernel
    found = drift.find_drift({"pif0": {"lro": "on", "ufo": "on", "rx": "on"},
                              "gone": {"tx": "off"}, "missing": {"tx": "off"}},
                             live)
    assert found == drift.Drift({}, [], [])


def test_only_the_desired_features_count():
    live = {"vif1.0": features(ON, "vif1.0")}
    assert drift.find_drift({"vif1.0": {"tx": "on"}}, live).drifted == {}
    assert drift.find_drift({"vif1.0": {"tx": "off"}}, live).drifted == \
        {"vif1.0": {"tx": "on"}}
    assert drift.find_drift({"vif1.0": {}}, live).drifted == {}


def test_the_record_keeps_the_first_seen_time_while_drift_lasts():
    first = drift.next_record({}, {"a": {"tx": "on"}}, {"a"}, set(), 100.0)
    assert first == {"a": drift.DriftEntry({"tx": "on"}, 100.0, False)}
    later = drift.next_record(first, {"a": {"tx": "on", "sg": "on"}},
                              {"a"}, {"a"}, 200.0)
    assert later == {"a": drift.DriftEntry({"tx": "on", "sg": "on"}, 100.0,
                                           True)}
    # checking other devices leaves its entry; checking it clean removes it
    assert drift.next_record(later, {}, {"b"}, set(), 300.0) == later
    assert drift.next_record(later, {}, {"a"}, set(), 300.0) == {}


def test_read_and_write_the_record(tmp_path):
    state = str(tmp_path)
    assert drift.read_drift(state) == {}
    record = {"vif3.0": drift.DriftEntry({"tx": "on"}, 1234.5, True)}
    drift.write_drift(record, state)
    assert drift.read_drift(state) == record
    path = drift.drift_path(state)
    assert oct(os.stat(path).st_mode & 0o777) == "0o600"
    assert json.load(open(path))["devices"]["vif3.0"] == \
        {"features": {"tx": "on"}, "since": 1234.5, "held": True}
    for broken in ("{", "[]", '{"devices": {"x": {"features": 3}}}'):
        with open(path, "w") as handle:
            handle.write(broken)
        assert drift.read_drift(state) == {}


# -- the kernel's notifications --------------------------------------------------
@pytest.mark.root
def test_the_kernel_notifies_feature_changes_on_veth(netns):
    netns.add_veth("dra", "drb")
    netns.add_veth("drc", "drd")
    with netns.entered():
        monitor = drift.FeatureMonitor.open()
    if monitor is None:
        pytest.skip("this kernel has no ethtool netlink family (before 5.6)")
    try:
        assert monitor.wait(0.0) == set()
        netns.run(["ethtool", "-K", "dra", "tx", "off"])
        assert monitor.wait(2.0) == {"dra"}
        # the ioctl path (what the engine's reads and writes use) too
        with netns.entered():
            ethtool.apply_features("drc", {"sg": "off"})
        names = (monitor.wait(2.0) or set()) | (monitor.wait(0.2) or set())
        assert "drc" in names
        # a read is no change
        with netns.entered():
            ethtool.read_many(["dra", "drc"])
        assert monitor.wait(0.3) == set()
    finally:
        monitor.close()


def test_feature_changes_ignores_other_messages():
    assert drift.feature_changes(b"", 21) == set()
    assert drift.feature_changes(b"\x00" * 12, 21) == set()
