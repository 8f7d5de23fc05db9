"""pool.enforce on real devices: status judges a device as apply reported
it (issue 12 item 5: "status agrees with what apply reported")."""
import pytest

from netoffload.engine.livestate import LiveStateStore
from netoffload.engine.policy import parse_policy
from netoffload.pool import enforce
from tests.support.poolrecords import build

pytestmark = pytest.mark.root


def _status_of(records, dev, store):
    return [s for s in enforce.device_status(records, "OpaqueRef:host",
                                             store=store)
            if s.device == dev][0]


def test_a_feature_the_policy_itself_forces_is_forced_in_status_too(
        netns, state_dir):
    """sg=off,gso=on: the kernel cannot have gso without sg. apply calls
    gso forced and the run ok; status must not call the device
    non-compliant for it."""
    netns.add_veth("dut", "dutpeer")
    policy = "sg=off,gso=on"
    records = build(pool={"netoffload-pif": policy})
    records.pifs["OpaqueRef:pif"]["device"] = "dut"
    store = LiveStateStore(state_dir)
    with netns.entered():
        result = store.apply("dut", parse_policy(policy).features)
        status = _status_of(records, "dut", store)
    assert result.ok and result.features["gso"] == "forced"
    assert status.forced == ["gso"] and status.differs == []
    assert status.compliant
    assert status.to_json()["forced"] == ["gso"]


def test_a_feature_set_against_the_policy_still_differs(netns, state_dir):
    """The control: gso off by hand under a policy that wants gso on (and
    sg on) is drift, not forced."""
    netns.add_veth("dut", "dutpeer")
    policy = "sg=on,gso=on"
    records = build(pool={"netoffload-pif": policy})
    records.pifs["OpaqueRef:pif"]["device"] = "dut"
    store = LiveStateStore(state_dir)
    with netns.entered():
        assert store.apply("dut", parse_policy(policy).features).ok
        netns.run(["ethtool", "-K", "dut", "gso", "off"])
        status = _status_of(records, "dut", store)
    assert status.differs == ["gso"] and status.forced == []
    assert not status.compliant
