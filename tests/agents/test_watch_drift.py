"""Drift is seen and corrected: a manual `ethtool -K` on a governed device
is put back by the watcher (issue 11 item 5), on real veth devices in a
network namespace, with the watcher following XAPI events from the
simulator.

- with ethtool netlink notifications (kernel 5.6+), at once: the periodic
  read is set to an hour, so only a notification can explain a fix;
- with the periodic read (`--drift-poll`), within its interval;
- a device an admin holds (`netoffload set`: LiveStateStore.held_devices) is
  left alone and recorded in drift.json with the time first seen.
"""
import subprocess
import sys
import time

import pytest

from netoffload.agents import cache, drift
from netoffload.agents import watch as watch_mod
from netoffload.engine import livestate
from netoffload.engine.ethtool import parse_features_text
from tests.support import layout
from tests.support.wait import wait_for

pytestmark = pytest.mark.root

WANTED_OFF = ("rx", "tx", "sg", "tso", "gso")


def live(netns, device):
    return parse_features_text(netns.ethtool_k(device), device).as_onoff()


def in_policy(netns, device):
    now = live(netns, device)
    return all(now[f] == "off" for f in WANTED_OFF)


@pytest.fixture
def running(pool, netns):
    """xs1 (master) with all-off, a running VM with its vif device (a veth
    named vif<domid>.0 in netns) and its VIF."""
    host = pool.admin.add_host(name_label="xs1")
    net = pool.admin.add_network(name_label="net0")
    pool.admin.add_pif(host=host, network=net, device="eth0")
    pool.set_pool_policy("netoffload-vif", "all-off")
    vm = pool.admin.add_vm(name_label="drifty", power_state="Running",
                           resident_on=host)
    device = "vif%s.0" % pool.api.VM.get_domid(vm)
    netns.add_veth(device, "guest0")
    vif = pool.create_vif(vm, net, 0)
    return {"host": host, "vm": vm, "vif": vif, "device": device}


def start_watcher(pool, running, netns, log_path, *options):
    env = dict(pool.admin.host_env(host=running["host"]))
    env["PYTHONPATH"] = layout.REPO + ":" + env["PYTHONPATH"]
    log = open(log_path, "a")
    proc = netns.popen([sys.executable, "-m", "netoffload.agents.watch"]
                       + pool.watch_options + list(options), env=env,
                       stdout=subprocess.DEVNULL, stderr=log)
    pool.watchers.append(proc)
    return proc, env["NETOFFLOAD_STATE_DIR"]


def drift_lines(log_path, device):
    with open(log_path) as handle:
        return [line for line in handle if "drift on %s" % device in line]


@pytest.mark.parametrize("mode,options,bound", [
    # an hour between reads: only a notification fixes it within 5 s
    ("netlink", ("--drift-interval", "3600"), 5.0),
    ("poll", ("--drift-poll", "--drift-interval", "1"), 5.0),
])
def test_a_manual_ethtool_change_is_put_back_and_logged(
        pool, running, netns, tmp_path, mode, options, bound):
    if mode == "netlink":
        with netns.entered():
            monitor = drift.FeatureMonitor.open()
        if monitor is None:
            pytest.skip("no ethtool netlink notifications on this kernel")
        monitor.close()
    log_path = str(tmp_path / "watch.log")
    proc, state = start_watcher(pool, running, netns, log_path, *options)
    device = running["device"]
    wait_for(lambda: in_policy(netns, device), timeout=30,
             what="all-off live on %s" % device)
    time.sleep(0.3)  # the notifications of the watcher's own changes pass
    for round_ in range(2):
        time.sleep(0.3)
        netns.run(["ethtool", "-K", device, "tx", "on", "sg", "on"])
        changed = time.monotonic()
        wait_for(lambda: in_policy(netns, device), timeout=bound,
                 interval=0.02, what="drift on %s corrected" % device)
        took = time.monotonic() - changed
        lines = wait_for(lambda n=round_: len(drift_lines(log_path, device)) > n
                         and drift_lines(log_path, device), timeout=5,
                         what="the re-enforcement logged")
        # once per change: the notifications of the watcher's own fix
        # find nothing to do
        time.sleep(0.5)
        assert len(drift_lines(log_path, device)) == round_ + 1, lines
        assert "tx=on" in lines[-1] and "sg=on" in lines[-1], lines
        assert "re-enforced" in lines[-1] and "tx off" in lines[-1], lines
        assert took < bound
    # corrected: nothing stays recorded as drifted
    assert drift.read_drift(state) == {}
    assert proc.poll() is None


def test_a_held_device_is_left_alone_and_its_drift_recorded_since(
        pool, running, netns, monkeypatch, tmp_path):
    """In process, so the hold can be set (LiveStateStore.hold/release,
    what `netoffload set` and `restore` run)."""
    env = pool.admin.host_env(host=running["host"])
    for key, value in env.items():
        if key.startswith("NETOFFLOAD_"):
            monkeypatch.setenv(key, value)
    device = running["device"]
    state = env["NETOFFLOAD_STATE_DIR"]
    store = livestate.LiveStateStore(state)
    watcher = watch_mod.Watcher(state_dir=state, drift_interval=0)
    with netns.entered():
        watcher._connect()
        watcher._full_sync()  # enforces the device
        try:
            assert in_policy(netns, device)
            store.hold(device, {"tx": "on"})
            watcher.check_drift()
            assert live(netns, device)["tx"] == "on"  # held: left alone
            first = drift.read_drift(state)
            assert list(first) == [device]
            assert first[device].features["tx"] == "on" and first[device].held
            since = first[device].since
            assert time.time() - 30 < since <= time.time()
            time.sleep(0.05)
            watcher.check_drift([device])
            assert drift.read_drift(state)[device].since == since
            # a policy change or a resync does not touch it either
            watcher._enforce(None)
            assert live(netns, device)["tx"] == "on"
            # the hold is released (`restore`): back in policy
            store.release(device)
            watcher.check_drift()
            assert in_policy(netns, device)
            assert drift.read_drift(state) == {}
        finally:
            watcher._disconnect()
    assert cache.cache_path(state)
