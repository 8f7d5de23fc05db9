"""`netoffload set` holds a device; `restore DEV` undoes exactly what set
did and re-enforces the cached policy at once (issue 11 item 4), as a real
process in a namespace on real devices."""
import json
import os
import sys

import pytest

from netoffload.agents import cache_writer
from netoffload.engine.ethtool import parse_features_text
from netoffload.engine.livestate import LiveStateStore
from netoffload.engine.policy import parse_policy
from tests.support import layout

pytestmark = pytest.mark.root
ALL_OFF = parse_policy("all-off").features


@pytest.fixture
def cli(netns, state_dir):
    def run(*argv):
        env = dict(os.environ, NETOFFLOAD_STATE_DIR=state_dir,
                   PYTHONPATH=layout.REPO, LC_ALL="C")
        return netns.run([sys.executable, "-m", "netoffload"] + list(argv),
                         check=False, env=env, cwd=layout.REPO)
    return run


def _cache(state_dir, pifs):
    cache_writer.write({
        "format": 1, "host": {"uuid": None, "name": "h"}, "policy": {},
        "pifs": dict((dev, {"features": dict(features), "source": "pool",
                            "sources": {}, "policy": "all-off"})
                     for dev, features in pifs.items()),
        "vifs": {}}, state_dir)


def _live(netns, dev):
    return parse_features_text(netns.ethtool_k(dev)).as_onoff()


@pytest.mark.parametrize("kind", ["veth", "tap"])
def test_restore_after_set_is_back_in_policy(cli, netns, state_dir, kind):
    if kind == "veth":
        netns.add_veth("vif4.1", "peer4")
    else:
        netns.add_tap("vif4.1")
    dev = "vif4.1"
    _cache(state_dir, {})  # a cache (its PIF entry is what the policy is)
    store = LiveStateStore(state_dir)
    with netns.entered():
        store.apply(dev, ALL_OFF)          # under all-off, as enforced
    in_policy = netns.ethtool_k(dev)
    policy_record = store.recorded()
    assert policy_record[dev]
    done = cli("set", dev, "gro=on")
    assert done.returncode == 0, done.stderr
    assert _live(netns, dev)["gro"] == "on"
    assert store.held_devices() == {dev}
    done = cli("restore", dev)
    assert done.returncode == 0, done.stdout + done.stderr
    assert netns.ethtool_k(dev) == in_policy   # not the pre-policy state
    assert store.held_devices() == set()
    assert store.recorded() == policy_record  # revert still goes all the way


def test_restore_re_enforces_a_policy_that_changed_meanwhile(cli, netns,
                                                             state_dir):
    netns.add_veth("dut", "dutpeer")
    original = netns.ethtool_k("dut")
    done = cli("set", "dut", "tx=off", "--json")
    assert done.returncode == 0, done.stderr
    # the policy now covers dut (the watcher leaves it alone: held)
    _cache(state_dir, {"dut": {"sg": "off", "gso": "off"}})
    done = cli("restore", "dut", "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    result = json.loads(done.stdout)["results"][0]
    assert result["features"]["tx"] == "changed"
    assert any("applied all-off" in note for note in result["notes"]), result
    live = _live(netns, "dut")
    assert (live["tx"], live["sg"], live["gso"]) == ("on", "off", "off")
    # and revert goes back to where it all started
    with netns.entered():
        assert LiveStateStore(state_dir).restore("dut").ok
    assert netns.ethtool_k("dut") == original


def test_restore_of_a_device_not_held_changes_nothing(cli, netns, state_dir):
    netns.add_veth("dut", "dutpeer")
    with netns.entered():
        LiveStateStore(state_dir).apply("dut", {"tx": "off"})
    before = netns.ethtool_k("dut")
    done = cli("restore", "dut")
    assert done.returncode == 0, done.stderr
    assert "not held by `netoffload set`" in done.stdout
    assert netns.ethtool_k("dut") == before


def test_restore_without_a_cache_says_so(cli, netns, state_dir):
    netns.add_veth("dut", "dutpeer")
    original = netns.ethtool_k("dut")
    assert cli("set", "dut", "all-off").returncode == 0
    done = cli("restore", "dut")
    assert done.returncode == 0, done.stderr
    assert "not re-enforced" in done.stdout
    assert netns.ethtool_k("dut") == original
