"""The udev helper, run the way udev runs it, on real devices in a netns.

The helper gets udev's environment (ACTION, SUBSYSTEM, INTERFACE, DEVPATH,
a bare PATH) plus the test `xenstore-read` stand-in first on PATH, and an
`ethtool` wrapper that logs each invocation before running the real one, so
the tests can see that no `ethtool -K` runs (the helper sets features with
the ETHTOOL_SFEATURES ioctl).
"""
import os
import stat

import pytest

from netoffload.agents import cache, cache_writer, udev
from netoffload.engine import ethtool_ioctl
from netoffload.engine.livestate import LiveStateStore
from tests.support.dom0 import ALL_OFF, OTHER_VM_UUID, TX_OFF, VM_UUID, cache_data

pytestmark = pytest.mark.root


def _covered(features, wanted):
    return dict((f, v) for f, v in features.items() if f in wanted)


GOOD_CASES = [
    # id, argv, env overrides, device, wanted
    ("tap-add", ["tap5.0"], {}, "tap5.0", ALL_OFF),
    ("vif-net-add", ["vif5.1"], {}, "vif5.1", TX_OFF),
    ("vif-backend-online", ["vif-5-1"],
     {"SUBSYSTEM": "xen-backend", "ACTION": "online",
      "XENBUS_PATH": "backend/vif/5/1", "INTERFACE": ""}, "vif5.1", TX_OFF),
    ("vm-path-needs-uuid-lookup", ["vif8.0"], {}, "vif8.0", ALL_OFF),
    ("pif", ["eth0"], {}, "eth0", {"gro": "off", "sg": "off"}),
    ("name-from-INTERFACE", [], {"INTERFACE": "tap5.0"}, "tap5.0", ALL_OFF),
]


@pytest.mark.parametrize("argv, overrides, device, wanted",
                         [c[1:] for c in GOOD_CASES],
                         ids=[c[0] for c in GOOD_CASES])
def test_helper_brings_a_fresh_device_into_policy(dom0, argv, overrides,
                                                  device, wanted):
    before = dom0.features(device)
    assert _covered(before, wanted) != {f: v for f, v in wanted.items()
                                        if f in before}
    env = dom0.env(device)
    env.update(overrides)
    proc = dom0.helper(argv, env)
    assert (proc.returncode, proc.stdout) == (0, "")
    assert proc.stderr == ""  # success logs at info level, to syslog only
    after = dom0.features(device)
    present = dict((f, v) for f, v in wanted.items() if f in after)
    # tx off takes tso/gso with it on Linux; nothing else may move
    assert _covered(after, wanted) == present
    recorded = LiveStateStore(dom0.state).recorded()[device]
    assert all(recorded[f] == before[f] for f in recorded)


def test_second_run_is_idempotent_and_changes_nothing(dom0):
    first = dom0.helper(["tap5.0"], dom0.env("tap5.0"))
    assert first.returncode == 0
    assert dom0.set_calls() == []  # the ioctl, not the ethtool binary
    live_state = os.path.join(dom0.state, "live-state.json")
    text = dom0.ethtool_text("tap5.0")
    before = os.stat(live_state)
    second = dom0.helper(["tap5.0"], dom0.env("tap5.0"))
    assert (second.returncode, second.stderr) == (0, "")
    assert dom0.ethtool_text("tap5.0") == text
    after = os.stat(live_state)
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino,
                                                 before.st_mtime_ns)


def test_second_run_sends_no_set_request(dom0, monkeypatch, mocker):
    """In process, to count the ETHTOOL_SFEATURES requests."""
    for name, value in dom0.env("tap5.0").items():
        monkeypatch.setenv(name, value)
    writes = mocker.spy(ethtool_ioctl.IoctlReader, "write")
    with dom0.ns.entered():
        udev.handle("tap5.0", dom0.state)
        assert writes.call_count == 1
        udev.handle("tap5.0", dom0.state)
    assert writes.call_count == 1
    assert dom0.set_calls() == []


def test_restore_after_the_helper_gives_back_the_original_device(dom0):
    original = dom0.ethtool_text("tap5.0")
    dom0.helper(["tap5.0"], dom0.env("tap5.0"))
    assert dom0.ethtool_text("tap5.0") != original
    with dom0.ns.entered():
        LiveStateStore(dom0.state).restore("tap5.0")
    assert dom0.ethtool_text("tap5.0") == original


def _corrupt(dom0):
    with open(cache.cache_path(dom0.state), "w") as handle:
        handle.write('{"format": 1, "pifs": {"eth0": ')


def _missing(dom0):
    os.unlink(cache.cache_path(dom0.state))


def _bad_entry(dom0):
    data = cache_data()
    data["vifs"][VM_UUID + "/0"]["features"] = {"tx": "sideways"}
    cache_writer.write(data, dom0.state)


def _no_xenstore(dom0):
    os.unlink(dom0.xenstore)


def _nothing(dom0):
    pass


LEFT_ALONE = [
    # id, break the setup, argv, device to watch, message
    ("corrupt-cache", _corrupt, ["tap5.0"], "tap5.0", "corrupt"),
    ("missing-cache", _missing, ["tap5.0"], "tap5.0", "cannot be read"),
    ("corrupt-entry", _bad_entry, ["tap5.0"], "tap5.0", "corrupt"),
    ("unknown-domid", _nothing, ["tap9.0"], "tap9.0", "couldn't read path"),
    ("xenstore-down", _no_xenstore, ["tap5.0"], "tap5.0", "xenstore has no"),
    ("not-in-cache", _nothing, ["peer0"], "peer0", None),
    ("device-gone", _nothing, ["vif5.7"], "tap5.0", None),
    ("name-with-slash", _nothing, ["../tap5.0"], "tap5.0", "refused"),
    ("name-too-long", _nothing, ["tap5.0000000000000"], "tap5.0", "refused"),
    ("name-with-semicolon", _nothing, ["tap5.0;reboot"], "tap5.0", "refused"),
    ("name-empty", _nothing, [""], "tap5.0", "refused"),
    ("backend-name-mangled", _nothing, ["vif-5-x"], "tap5.0", None),
]


@pytest.mark.parametrize("breakage, argv, device, message",
                         [c[1:] for c in LEFT_ALONE],
                         ids=[c[0] for c in LEFT_ALONE])
def test_failures_leave_the_device_alone_and_exit_0(dom0, breakage, argv,
                                                    device, message):
    breakage(dom0)
    before = dom0.ethtool_text(device)
    env = dom0.env(argv[0] if argv else "")
    proc = dom0.helper(argv, env)
    assert (proc.returncode, proc.stdout) == (0, "")
    if message:
        assert message in proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1
    assert dom0.ethtool_text(device) == before
    assert dom0.set_calls() == []


def test_device_gone_is_logged_once(dom0):
    # a Windows PV vif may vanish between its two registrations
    data = cache_data()
    data["vifs"][VM_UUID + "/7"] = {"features": ALL_OFF, "source": "vm"}
    cache_writer.write(data, dom0.state)
    proc = dom0.helper(["vif5.7"], dom0.env("vif5.7"))
    assert proc.returncode == 0
    assert "left alone" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_remove_forgets_the_guest_device_record_and_changes_nothing(dom0):
    assert dom0.helper(["tap5.0"], dom0.env("tap5.0")).returncode == 0
    assert dom0.helper(["eth0"], dom0.env("eth0")).returncode == 0
    store = LiveStateStore(dom0.state)
    assert set(store.recorded()) == {"tap5.0", "eth0"}
    before = dom0.ethtool_text("tap5.0")
    for device in ("tap5.0", "eth0"):
        proc = dom0.helper([device], dom0.env(device, action="remove"))
        assert (proc.returncode, proc.stderr) == (0, "")
    assert dom0.ethtool_text("tap5.0") == before
    # a PIF's device may come back (driver reload): its record stays
    assert set(store.recorded()) == {"eth0"}


def test_helper_replaces_another_vms_record_of_a_reused_name(dom0):
    """vif5.1 was another VM's device before a dom0 reboot (domids restart):
    its old record is not this device's past."""
    store = LiveStateStore(dom0.state)
    with dom0.ns.entered():
        store.apply("vif5.1", {"sg": "off"}, owner=OTHER_VM_UUID + "/1")
        from netoffload.engine import ethtool
        ethtool.apply_features("vif5.1", {"sg": "on"})  # the new device
    proc = dom0.helper(["vif5.1"], dom0.env("vif5.1"))
    assert (proc.returncode, proc.stderr) == (0, "")
    assert store.owners() == {"vif5.1": VM_UUID + "/1"}
    assert store.recorded() == {"vif5.1": {"tx": "on"}}


def test_cache_file_stays_root_only(dom0):
    assert stat.S_IMODE(os.stat(cache.cache_path(dom0.state)).st_mode) == 0o600
