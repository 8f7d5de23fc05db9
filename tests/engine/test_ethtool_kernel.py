"""The engine against the real kernel and ethtool binary, in throw-away
network namespaces, on every device kind this kernel can create."""
import errno

import pytest

from netoffload import runner
from netoffload.engine import ethtool, ethtool_ioctl
from netoffload.engine.ethtool import parse_features_text
from netoffload.engine.features import FEATURES
from netoffload.engine.policy import parse_policy
from netoffload.errors import BadArgument, DeviceError
from tests.support.netns import NetNSError

pytestmark = pytest.mark.root


def _make_veth(ns):
    ns.add_veth("dut", "dutpeer")


def _make_tap(ns):
    ns.add_tap("dut")


def _make_bridge(ns):
    ns.add_link("dut", "bridge")


def _make_macvlan(ns):
    ns.add_veth("parent0", "parent1")
    ns.add_macvlan("dut", "parent0")


def _make_ifb(ns):
    ns.add_link("dut", "ifb")


def _make_dummy(ns):
    ns.add_link("dut", "dummy")


def _make_bond(ns):
    ns.add_link("dut", "bond")


def _make_vlan(ns):
    ns.add_veth("parent0", "parent1")
    ns.ip("link", "add", "link", "parent0", "name", "dut", "type", "vlan",
          "id", "42")
    ns.ip("link", "set", "dut", "up")


KINDS = [("veth", _make_veth), ("tap", _make_tap), ("bridge", _make_bridge),
         ("macvlan", _make_macvlan), ("ifb", _make_ifb),
         ("dummy", _make_dummy), ("bond", _make_bond), ("vlan", _make_vlan)]


def make_device(ns, kind, maker):
    """Create 'dut' of this kind, or skip where this kernel cannot."""
    try:
        maker(ns)
    except NetNSError as err:
        if "Unknown device type" in str(err):
            pytest.skip("this kernel cannot create %s links (ip link add: "
                        "Unknown device type)" % kind)
        raise
    return "dut"


def ethtool_k(ns, dev):
    return parse_features_text(ns.ethtool_k(dev))


def minus_requested_of_fixed(kernel):
    # ethtool's text does not show what was requested of a fixed bit.
    return dict((name, (s.active, s.fixed, None if s.fixed else s.requested))
                for name, s in kernel.items())


def _no_sfeatures(self, device, requests):
    raise OSError(errno.EOPNOTSUPP, "Operation not supported")


@pytest.fixture(params=["ioctl", "ethtool"])
def method(request, mocker):
    """Each test twice: through ETHTOOL_SFEATURES, and through the ethtool
    binary as on a kernel without the ioctl (EOPNOTSUPP)."""
    if request.param == "ethtool":
        mocker.patch.object(ethtool_ioctl.IoctlReader, "write", _no_sfeatures)
    return request.param


@pytest.fixture
def run_spy(mocker, method):
    """Every set request counted: runner.run as it is (ethtool -K), and
    the ETHTOOL_SFEATURES writes that succeeded."""
    spy = mocker.patch("netoffload.runner.run", autospec=True,
                       side_effect=runner.run)
    real_write = ethtool_ioctl.IoctlReader.write
    spy.writes = []

    def write(self, device, requests):
        flags = real_write(self, device, requests)
        spy.writes.append((device, dict(requests)))
        return flags
    mocker.patch.object(ethtool_ioctl.IoctlReader, "write", write)
    spy.method = method
    return spy


def k_calls(spy):
    """The set requests: `ethtool -K` runs, or SFEATURES writes."""
    return [c for c in spy.call_args_list if "-K" in c[0][0]] + spy.writes


@pytest.mark.parametrize("kind,maker", KINDS, ids=[k for k, _ in KINDS])
def test_ioctl_reader_agrees_with_ethtool_binary(netns, kind, maker):
    dev = make_device(netns, kind, maker)
    with netns.entered():
        with ethtool.Reader() as reader:
            by_ioctl = reader.read(dev)
            by_lo = reader.read("lo")
    by_binary = ethtool_k(netns, dev)
    assert by_ioctl.source == "ioctl"
    assert by_ioctl.features == by_binary.features
    assert minus_requested_of_fixed(by_ioctl.kernel) == \
        minus_requested_of_fixed(by_binary.kernel)
    assert by_lo.features == ethtool_k(netns, "lo").features


# Features the kernel will not change although they are not fixed:
# macvlan takes gso from its lower device (macvlan_fix_features).
KERNEL_REFUSES = {("macvlan", "all-off"): {"gso"}}


@pytest.mark.parametrize("kind,maker", KINDS[:5], ids=[k for k, _ in KINDS[:5]])
@pytest.mark.parametrize("policy_text", ["all-off", "tx-off"])
def test_apply_policy_verified_by_ethtool(netns, kind, maker, policy_text,
                                          run_spy):
    dev = make_device(netns, kind, maker)
    wanted = parse_policy(policy_text).features
    before = ethtool_k(netns, dev)
    with netns.entered():
        result = ethtool.apply_features(dev, wanted)
    after = ethtool_k(netns, dev)
    refused = KERNEL_REFUSES.get((kind, policy_text), set())
    assert set(s for s, o in result.features.items() if o == "failed") \
        == refused, result.to_json()
    for short, value in wanted.items():
        state = before.features[short]
        outcome = result.features[short]
        if short in refused:
            # asked for and recorded as requested, but the kernel kept it
            assert after.features[short].requested == (value == "on")
            assert after.as_onoff()[short] != value
        elif state.active is None:
            assert outcome == "unsupported"
        elif state.fixed and ethtool._onoff(state.active) != value:
            assert outcome == "fixed"
            assert after.features[short] == state
        else:
            assert outcome in ("changed", "unchanged", "forced")
            assert after.as_onoff()[short] == value
    assert result.after == after.as_onoff()
    assert result.before == before.as_onoff()
    assert len(k_calls(run_spy)) == (1 if result.ran_command else 0)
    # the second identical wish runs no ethtool -K at all
    with netns.entered():
        again = ethtool.apply_features(dev, wanted)
    assert not again.ran_command
    assert len(k_calls(run_spy)) == (1 if result.ran_command else 0)
    assert set(again.features.values()) <= {"unchanged", "fixed",
                                            "unsupported", "failed"}
    assert [s for s, o in again.features.items() if o == "failed"] == \
        sorted(refused)
    assert ethtool_k(netns, dev).features == after.features


def test_ufo_is_unsupported_not_an_error(netns):
    dev = make_device(netns, "veth", _make_veth)
    with netns.entered():
        result = ethtool.apply_features(dev, {"ufo": "off"})
    assert result.features == {"ufo": "unsupported"}
    assert not result.ran_command and result.ok


def test_fixed_feature_is_reported_not_failed(netns, run_spy):
    dev = "lo"  # loopback's rx checksumming is fixed on
    assert ethtool_k(netns, dev).features["rx"].fixed
    with netns.entered():
        result = ethtool.apply_features(dev, {"rx": "off", "tso": "off"})
    assert result.features == {"rx": "fixed", "tso": "changed"}
    assert result.ok and not result.errors
    assert result.command == ["ethtool", "-K", dev, "tso", "off"]
    assert result.method == run_spy.method
    if run_spy.method == "ethtool":
        assert k_calls(run_spy)[0][0][0] == ["ethtool", "-K", dev, "tso", "off"]


def test_feature_the_kernel_holds_fails_once_and_is_not_retried(netns, run_spy):
    dev = make_device(netns, "macvlan", _make_macvlan)
    with netns.entered():
        first = ethtool.apply_features(dev, {"gso": "off"})
        second = ethtool.apply_features(dev, {"gso": "off"})
    assert first.features == {"gso": "failed"} and first.ran_command
    assert second.features == {"gso": "failed"} and not second.ran_command
    assert second.errors and not second.ok
    assert len(k_calls(run_spy)) == 1
    assert ethtool_k(netns, dev).features["gso"].requested is False


def test_dependency_is_reported_as_forced(netns):
    dev = make_device(netns, "veth", _make_veth)
    with netns.entered():
        result = ethtool.apply_features(dev, {"sg": "off"})
    # the kernel drops gso (and the tcp segmentation bits) without sg
    assert result.features == {"sg": "changed", "gso": "forced"}
    assert result.forced == {"gso": "off"}
    assert result.forced_bits["tx-tcp-segmentation"] == "off"
    assert ethtool_k(netns, dev).as_onoff()["gso"] == "off"


def test_tx_off_reports_forced_tcp_bits(netns):
    dev = make_device(netns, "veth", _make_veth)
    with netns.entered():
        result = ethtool.apply_features(dev, {"tx": "off"})
    assert result.features["tx"] == "changed"
    assert result.forced_bits.get("tx-tcp-segmentation") == "off"
    assert result.forced_bits.get("tx-tcp6-segmentation") == "off"


def test_dry_run_changes_nothing(netns, run_spy):
    dev = make_device(netns, "veth", _make_veth)
    text = netns.ethtool_k(dev)
    with netns.entered():
        result = ethtool.plan_features(dev, {"tx": "off", "lro": "on"})
    assert result.features == {"tx": "would-change", "lro": "fixed"}
    assert result.dry_run and not result.ran_command
    assert not k_calls(run_spy)
    assert netns.ethtool_k(dev) == text


BAD_NAMES = ["", "x" * 16, "eth0;reboot", "a b", "../etc", "tap0\n", "é0"]


@pytest.mark.parametrize("name", BAD_NAMES, ids=["empty", "too-long", "semicolon",
                                               "space", "slash", "newline",
                                               "non-ascii"])
def test_invalid_device_name_refused_before_anything_runs(name, run_spy):
    with pytest.raises(BadArgument):
        ethtool.apply_features(name, {"tx": "off"})
    with pytest.raises(BadArgument):
        ethtool.read_features(name)
    assert not run_spy.called


@pytest.mark.parametrize("wanted", [
    {"tx": "maybe"}, {"txcsum": "off"}, {"tx": 1}, ["tx", "off"]],
    ids=["bad-value", "bad-feature", "int-value", "not-a-dict"])
def test_invalid_wish_refused_with_nothing_changed(netns, wanted, run_spy):
    dev = make_device(netns, "veth", _make_veth)
    text = netns.ethtool_k(dev)
    with netns.entered():
        with pytest.raises(BadArgument):
            ethtool.apply_features(dev, wanted)
    assert not run_spy.called
    assert netns.ethtool_k(dev) == text


def test_missing_device_is_a_device_error(netns):
    with netns.entered():
        with pytest.raises(DeviceError):
            ethtool.read_features("nosuch0")
        with pytest.raises(DeviceError):
            ethtool.apply_features("nosuch0", {"tx": "off"})


def test_a_closed_ioctl_reader_refuses_reads_with_ebadf(netns):
    with netns.entered():
        reader = ethtool_ioctl.IoctlReader()
        reader.close()
        reader.close()  # closing twice is harmless
        with pytest.raises(OSError) as caught:
            reader.read("lo")
    assert caught.value.errno == errno.EBADF


def test_list_and_read_many(netns):
    make_device(netns, "veth", _make_veth)
    with netns.entered():
        names = ethtool.list_devices()
        many = ethtool.read_many(names + ["gone0"])
    assert sorted(names) == sorted(["lo", "dut", "dutpeer"])
    assert list(many) == names
    assert all(set(d.features) == set(FEATURES) for d in many.values())


def test_fallback_to_binary_when_ioctl_unsupported(netns, mocker):
    dev = make_device(netns, "veth", _make_veth)
    mocker.patch.object(ethtool_ioctl.IoctlReader, "read_words",
                        autospec=True,
                        side_effect=OSError(errno.EOPNOTSUPP, "not supported"))
    with netns.entered():
        got = ethtool.read_features(dev)
    assert got.source == "ethtool"
    assert got.features == ethtool_k(netns, dev).features
