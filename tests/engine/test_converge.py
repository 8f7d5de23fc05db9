"""Live apply converges in one call (issue 12 item 5) on real veth and tap
devices: a policy change applied the way pool.enforce does it (apply the
desired features, then restore the recorded ones the policy no longer
wants) leaves the device in policy, and a status computed as
pool.enforce.device_status computes it agrees with what apply reported."""
import pytest

from netoffload.engine import ethtool
from netoffload.engine.livestate import LiveStateStore
from netoffload.engine.policy import parse_policy
from netoffload.pool.enforce import pending_restores

pytestmark = pytest.mark.root


def _make(ns, kind):
    return ns.add_guest_like("dut", kind)


def enforce_once(store, dev, desired):
    """What pool.enforce._enforce_one does: (ok as apply reports it, the
    results)."""
    pending = pending_restores(store.recorded().get(dev), desired)
    results = []
    if desired:
        results.append(store.apply(dev, desired))
    if pending:
        results.append(store.restore(dev, set(pending)))
    return all(r.ok for r in results), results


def compliant(store, dev, desired):
    """As device_status decides: every desired feature live (or fixed or
    unsupported), and no recorded feature left out of place; (bool, why)."""
    live = ethtool.read_features(dev)
    onoff = live.as_onoff()
    differs = sorted(f for f, v in desired.items() if live.present(f)
                     and not live.features[f].fixed and onoff[f] != v)
    pending = dict((f, v) for f, v in pending_restores(
        store.recorded().get(dev), desired).items() if onoff.get(f, v) != v)
    return not differs and not pending, (differs, pending)


SEQUENCE = ["tx=off,sg=off", "gso=off,gro=off,rx=off", "all-off", "tx-off",
            "tx=off,sg=off", "sg=on,gso=on", "gso=off", "none"]


@pytest.mark.parametrize("kind", ["veth", "tap"])
def test_issue_12_case_gso_ends_off_in_one_apply(netns, state_dir, kind):
    dev = _make(netns, kind)
    store = LiveStateStore(state_dir)
    with netns.entered():
        first = ethtool.read_features(dev).as_onoff()
        enforce_once(store, dev, parse_policy("tx=off,sg=off").features)
        desired = parse_policy("gso=off,gro=off,rx=off").features
        ok, results = enforce_once(store, dev, desired)
        live = ethtool.read_features(dev).as_onoff()
        assert ok, [r.to_json() for r in results]
        assert live["gso"] == "off" and live["rx"] == "off"
        assert (live["sg"], live["tx"]) == (first["sg"], first["tx"])
        assert compliant(store, dev, desired) == (True, ([], {}))
        # a second apply has nothing left to do
        again = store.apply(dev, desired)
        assert not again.ran_command


@pytest.mark.parametrize("kind", ["veth", "tap"])
def test_every_policy_change_converges_and_status_agrees(netns, state_dir,
                                                         kind):
    dev = _make(netns, kind)
    original = netns.ethtool_k(dev)
    store = LiveStateStore(state_dir)
    with netns.entered():
        for text in SEQUENCE:
            desired = parse_policy(text).features
            ok, results = enforce_once(store, dev, desired)
            is_compliant, why = compliant(store, dev, desired)
            assert ok == is_compliant, (text, why,
                                        [r.to_json() for r in results])
            if text not in ("sg=on,gso=on",) or kind == "veth":
                assert is_compliant, (text, why)
            # converged: the same policy again runs nothing
            assert not store.apply(dev, desired).ran_command if desired \
                else True
        assert store.restore(dev).ok
    assert netns.ethtool_k(dev) == original
    assert store.recorded() == {}


def test_a_policy_that_forces_its_own_feature_reports_forced(netns,
                                                             state_dir):
    dev = _make(netns, "veth")
    with netns.entered():
        result = LiveStateStore(state_dir).apply(
            dev, parse_policy("sg=off,gso=on").features)
    assert result.features["sg"] == "changed"
    assert result.features["gso"] == "forced"   # sg off takes gso: not a failure
    assert result.ok and result.forced["gso"] == "off"
