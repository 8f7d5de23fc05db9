"""Record and restore of live state, on real devices in a namespace."""
import json
import os
import stat

import pytest

from netoffload import runner
from netoffload.engine import ethtool
from netoffload.engine.livestate import LiveStateStore, atomic_write_json
from netoffload.engine.policy import parse_policy
from netoffload.errors import BadArgument, DeviceError

KINDS = ["veth", "tap", "bridge", "macvlan", "ifb"]


def make(ns, kind):
    if kind == "veth":
        ns.add_veth("dut", "dutpeer")
    elif kind == "tap":
        ns.add_tap("dut")
    elif kind == "macvlan":
        ns.add_veth("parent0", "parent1")
        ns.add_macvlan("dut", "parent0")
    else:
        ns.add_link("dut", kind)
    return "dut"


@pytest.mark.root
@pytest.mark.parametrize("policy", ["all-off", "tx-off", "sg=off",
                                    "gro=on,lro=on"])
@pytest.mark.parametrize("kind", KINDS)
def test_restore_returns_exact_prior_state(netns, state_dir, kind, policy):
    dev = make(netns, kind)
    original = netns.ethtool_k(dev)
    store = LiveStateStore(state_dir)
    with netns.entered():
        first = store.apply(dev, parse_policy(policy).features)
        # a second, different policy must not overwrite the original record
        store.apply(dev, parse_policy("tx=on,gso=off").features)
    if first.ran_command and first.changed:
        assert netns.ethtool_k(dev) != original
    with netns.entered():
        result = store.restore(dev)
    assert result.ok, result.to_json()
    assert netns.ethtool_k(dev) == original
    assert store.recorded() == {}


@pytest.mark.root
def test_record_holds_first_prior_values_not_forced_ones(netns, state_dir):
    dev = make(netns, "veth")
    store = LiveStateStore(state_dir)
    with netns.entered():
        store.apply(dev, {"sg": "off"})       # forces gso off
        # gso's requests never changed: it comes back with sg, so a record
        # of it would only look like a restore still owed
        assert store.recorded() == {dev: {"sg": "on"}}
        store.apply(dev, {"sg": "on", "tx": "off"})
    assert store.recorded() == {dev: {"sg": "on", "tx": "on"}}


@pytest.mark.root
def test_nothing_to_change_records_nothing(netns, state_dir):
    dev = make(netns, "veth")
    store = LiveStateStore(state_dir)
    with netns.entered():
        result = store.apply(dev, {"gro": "off", "ufo": "off"})
    assert not result.ran_command
    assert store.recorded() == {}


@pytest.mark.root
def test_dry_run_records_and_changes_nothing(netns, state_dir):
    dev = make(netns, "veth")
    text = netns.ethtool_k(dev)
    store = LiveStateStore(state_dir)
    with netns.entered():
        result = ethtool.plan_features(dev, {"tx": "off"})
    assert result.features == {"tx": "would-change"}
    assert store.recorded() == {}
    assert netns.ethtool_k(dev) == text


@pytest.mark.root
def test_restore_without_record_runs_nothing(netns, state_dir, mocker):
    spy = mocker.patch("netoffload.runner.run", autospec=True,
                       side_effect=runner.run)
    result = LiveStateStore(state_dir).restore("dut")
    assert result.features == {} and not result.ran_command
    assert not spy.called


@pytest.mark.root
def test_restore_of_vanished_device_keeps_record_until_forgotten(netns,
                                                               state_dir):
    dev = make(netns, "veth")
    store = LiveStateStore(state_dir)
    with netns.entered():
        store.apply(dev, {"tx": "off"})
    netns.ip("link", "del", dev)
    with netns.entered():
        with pytest.raises(DeviceError):
            store.restore(dev)
    assert store.recorded() == {dev: {"tx": "on"}}
    assert store.forget(dev) is True
    assert store.recorded() == {}
    assert store.forget(dev) is False


@pytest.mark.root
def test_files_are_private(netns, tmp_path):
    state_dir = str(tmp_path / "fresh" / "state")
    dev = make(netns, "veth")
    with netns.entered():
        LiveStateStore(state_dir).apply(dev, {"tx": "off"})
    assert stat.S_IMODE(os.stat(state_dir).st_mode) == 0o700
    path = os.path.join(state_dir, "live-state.json")
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    with open(path) as handle:
        assert json.load(handle) == {"version": 1, "devices": {dev: {
            "features": {"tx": "on"},
            "requested": {"tx-checksum-ip-generic": "on",
                          "tx-checksum-sctp": "on"}}}}
    # no temp files left behind
    assert sorted(os.listdir(state_dir)) == ["live-state.json",
                                             "live-state.lock"]


def test_state_dir_from_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("NETOFFLOAD_STATE_DIR", str(tmp_path))
    assert LiveStateStore().state_dir == str(tmp_path)
    monkeypatch.delenv("NETOFFLOAD_STATE_DIR")
    assert LiveStateStore().state_dir == "/var/lib/netoffload"


def test_corrupt_record_is_never_overwritten(state_dir):
    path = os.path.join(state_dir, "live-state.json")
    with open(path, "w") as handle:
        handle.write("{not json")
    store = LiveStateStore(state_dir)
    with pytest.raises(DeviceError) as info:
        store.recorded()
    assert "corrupt" in info.value.message
    with pytest.raises(DeviceError):
        store.forget("eth0")
    with open(path) as handle:
        assert handle.read() == "{not json"


@pytest.mark.parametrize("device,wanted", [
    ("bad name", {"tx": "off"}), ("eth0", {"tx": "perhaps"}),
    ("eth0", {"nope": "off"})], ids=["bad-device", "bad-value", "bad-feature"])
def test_bad_input_writes_nothing(state_dir, device, wanted):
    with pytest.raises(BadArgument):
        LiveStateStore(state_dir).apply(device, wanted)
    assert os.listdir(state_dir) == []


def test_atomic_write_replaces_whole_file(tmp_path):
    path = str(tmp_path / "f.json")
    atomic_write_json(path, {"a": 1})
    atomic_write_json(path, {"b": 2})
    with open(path) as handle:
        assert json.load(handle) == {"b": 2}
    assert os.listdir(str(tmp_path)) == ["f.json"]


@pytest.mark.root
def test_apply_many_records_once_then_applies_each(netns, state_dir, mocker):
    for i in range(4):
        netns.add_veth("many%d" % i, "manyp%d" % i)
    netns.add_tap("manyt0")
    names = ["many%d" % i for i in range(4)] + ["manyt0"]
    original = dict((n, netns.ethtool_k(n)) for n in names)
    store = LiveStateStore(state_dir)
    import netoffload.engine.livestate as livestate_module
    writes = mocker.spy(livestate_module, "atomic_write_json")
    all_off = parse_policy("all-off").features
    with netns.entered():
        results = store.apply_many([(n, all_off, "vm/%d" % i)
                                    for i, n in enumerate(names)]
                                   + [("gone0", all_off, None)])
    assert writes.call_count == 1  # every prior, before any device changed
    assert isinstance(results["gone0"], DeviceError)
    for name in names:
        assert results[name].ok and results[name].ran_command
        live = ethtool.parse_features_text(netns.ethtool_k(name))
        assert "on" not in [v for f, v in live.as_onoff().items()
                            if not live.features[f].fixed]
    assert store.owners() == dict((n, "vm/%d" % i)
                                  for i, n in enumerate(names))
    with netns.entered():
        for name in names:
            assert store.restore(name).ok
    assert dict((n, netns.ethtool_k(n)) for n in names) == original


@pytest.mark.root
def test_a_batch_reads_the_record_once_under_one_lock(netns, state_dir,
                                                      mocker):
    netns.add_veth("dut", "dutpeer")
    store = LiveStateStore(state_dir)
    with netns.entered():
        store.apply("dut", {"tx": "off"})
        reads = mocker.spy(store, "_read")
        locks = mocker.spy(livestate_statedir(), "locked")
        with store.batch():
            store.apply("dut", {"sg": "off"})
            store.recorded()
            store.apply("dut", {"sg": "off"})
            assert store.restore("dut", {"sg"}).ok
        assert reads.call_count == 1 and locks.call_count == 1
    assert store.recorded() == {"dut": {"tx": "on"}}


def livestate_statedir():
    import netoffload.engine.livestate as livestate_module
    return livestate_module.statedir


def test_a_hand_edited_record_is_read_as_before(tmp_path):
    """The short way for 'on'/'off' takes nothing the long way would
    not: other spellings are normalised, junk is dropped."""
    path = tmp_path / "live-state.json"
    path.write_text(json.dumps({"version": 1, "devices": {
        "eth0": {"features": {"tx": "On ", "sg": "false", "rx": "off",
                              "tso": ["on"], "gso": None, "bogus": "on",
                              "gro": True},
                 "requested": {"tx-checksum-ipv4": "TRUE", "rx-gro": "off",
                               "x": "maybe", "y": 1}}}}))
    recorded = LiveStateStore(str(tmp_path))._read()
    assert recorded == {"eth0": {
        "features": {"tx": "on", "sg": "off", "rx": "off", "gro": "on"},
        "requested": {"tx-checksum-ipv4": "on", "rx-gro": "off"}}}
