"""Holds: `set` holds a device, `release` (what `restore DEV` runs) undoes
exactly what `set` did and nothing of the policy's, on real devices."""
import pytest

from netoffload.engine import ethtool
from netoffload.engine.livestate import LiveStateStore
from netoffload.engine.policy import parse_policy

ALL_OFF = parse_policy("all-off").features
KINDS = ["veth", "tap"]


def _make(ns, kind):
    return ns.add_guest_like("dut", kind)


@pytest.mark.root
@pytest.mark.parametrize("kind", KINDS)
def test_restore_after_set_leaves_the_device_in_policy(netns, state_dir,
                                                       kind):
    dev = _make(netns, kind)
    original = netns.ethtool_k(dev)
    store = LiveStateStore(state_dir)
    with netns.entered():
        store.apply(dev, ALL_OFF, owner="vm/0")   # the policy
        in_policy = netns.ethtool_k(dev)
        assert store.held_devices() == set()
        result = store.hold(dev, {"gro": "on", "tx": "on"}, owner="vm/0")
        assert result.features["gro"] == "changed"
        assert store.held_devices() == {dev}
        assert store.holds()[dev]["wanted"] == {"gro": "on", "tx": "on"}
        # the name with another VM's owner (domids reused): not its hold
        assert store.holds({dev: "vm/0"})[dev]["by"] == "set"
        assert store.holds({dev: "other-vm/0"}) == {}
        assert netns.ethtool_k(dev) != in_policy
        # a second set adds to the hold, the first priors stay
        store.hold(dev, {"gro": "off", "sg": "on"}, owner="vm/0")
        released = store.release(dev)
    assert released.ok, released.to_json()
    assert netns.ethtool_k(dev) == in_policy    # exactly the policy's state
    assert store.held_devices() == set()
    # the policy's own record is untouched: revert still goes all the way
    assert set(store.recorded()[dev]) >= set(
        f for f, v in ethtool.parse_features_text(original).as_onoff().items()
        if v == "on" and f in ALL_OFF)
    with netns.entered():
        assert store.restore(dev).ok
    assert netns.ethtool_k(dev) == original
    assert store.recorded() == {}


@pytest.mark.root
def test_set_on_an_ungoverned_device_is_undone_and_forgotten(netns,
                                                             state_dir):
    dev = _make(netns, "veth")
    original = netns.ethtool_k(dev)
    store = LiveStateStore(state_dir)
    with netns.entered():
        store.hold(dev, {"sg": "off", "tx": "off"})
        assert set(store.recorded()[dev]) >= {"sg", "tx"}
        store.release(dev)
    assert netns.ethtool_k(dev) == original
    assert store.recorded() == {}
    assert store.held_devices() == set()


@pytest.mark.root
def test_a_set_that_changes_nothing_still_holds(netns, state_dir):
    dev = _make(netns, "veth")
    store = LiveStateStore(state_dir)
    with netns.entered():
        result = store.hold(dev, {"gro": "off"})   # veth: already off
        assert not result.ran_command
        assert store.held_devices() == {dev}
        released = store.release(dev)
    assert released.features == {} and not released.ran_command
    assert store.held_devices() == set()


@pytest.mark.root
def test_release_of_a_device_not_held_changes_nothing(netns, state_dir):
    dev = _make(netns, "veth")
    store = LiveStateStore(state_dir)
    with netns.entered():
        store.apply(dev, {"tx": "off"})
        text = netns.ethtool_k(dev)
        assert store.release(dev) is None
    assert netns.ethtool_k(dev) == text
    assert store.recorded() == {dev: {"tx": "on"}}


@pytest.mark.root
def test_revert_of_a_held_device_ends_the_hold(netns, state_dir):
    dev = _make(netns, "veth")
    original = netns.ethtool_k(dev)
    store = LiveStateStore(state_dir)
    with netns.entered():
        store.apply(dev, ALL_OFF)
        store.hold(dev, {"gro": "on"})
        assert store.restore(dev).ok
    assert netns.ethtool_k(dev) == original
    assert store.held_devices() == set() and store.recorded() == {}


@pytest.mark.root
def test_a_hold_ends_with_the_boot_it_was_made_in(netns, state_dir,
                                                   monkeypatch):
    """The kernel state `set` made does not survive a reboot (the udev
    helper and the boot pass put the device back into policy), so neither
    does its hold: the watcher and apply take the device again, restore
    has nothing to undo, and a new `set` starts a new hold."""
    from netoffload import paths
    dev = _make(netns, "veth")
    store = LiveStateStore(state_dir)
    with netns.entered():
        store.hold(dev, {"tx": "off"})
        assert store.held_devices() == {dev}
        monkeypatch.setattr(paths, "boot_id", lambda: "the-next-boot")
        assert store.held_devices() == set() and store.holds() == {}
        before = netns.ethtool_k(dev)
        assert store.release(dev) is None  # nothing of this boot to undo
        assert netns.ethtool_k(dev) == before
        assert "held" not in store._load()[dev]
        store.hold(dev, {"sg": "off"})
        hold = store._load()[dev]["held"]
        assert (hold["boot"], hold["wanted"]) == ("the-next-boot",
                                                  {"sg": "off"})
