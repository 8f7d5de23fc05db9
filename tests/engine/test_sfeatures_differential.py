"""ETHTOOL_SFEATURES against `ethtool -K` (issue 15 item 1): on every
device kind this kernel offers, from several starting states, the engine's
ioctl apply and the plain `ethtool -K DEV <each wanted feature> <value>`
an admin would run leave two twin devices with the same `ethtool -k`
(every kernel bit, active and requested), so all eight features included.

Twins: two devices of one kind made the same way in one namespace (for
macvlan, both on one lower device), brought to the starting state by the
same `ethtool -K`.
"""
import errno

import pytest

from netoffload import runner
from netoffload.engine import ethtool, ethtool_ioctl
from netoffload.engine.features import FEATURES
from netoffload.engine.policy import parse_policy
from tests.support.netns import NetNSError

pytestmark = pytest.mark.root

KINDS = ["veth", "tap", "bridge", "macvlan", "ifb"]
PROFILES = ["all-off", "tx-off", "sg=off", "gso=off,gro=off,rx=off",
            "tx=on,sg=on,tso=on,gso=on,gro=on", "tx=off,tso=on",
            "rx=off,lro=on,gro=on"]
# starting states, as `ethtool -K` arguments ("" = as created)
STARTS = ["", "tx off", "sg off", "rx off tx off sg off tso off gso off gro off"]


def _twins(ns, kind):
    """Two devices of kind made alike; skip where the kernel lacks it."""
    try:
        if kind == "veth":
            ns.add_veth("twa", "twapeer")
            ns.add_veth("twb", "twbpeer")
        elif kind == "tap":
            ns.add_tap("twa")
            ns.add_tap("twb")
        elif kind == "macvlan":
            ns.add_veth("lower0", "lower1")
            ns.add_macvlan("twa", "lower0")
            ns.add_macvlan("twb", "lower0")
        else:
            ns.add_link("twa", kind)
            ns.add_link("twb", kind)
    except NetNSError as err:
        if "Unknown device type" in str(err) or "not supported" in str(err):
            pytest.skip("this kernel cannot create %s links (ip link add: "
                        "%s)" % (kind, err))
        raise
    return "twa", "twb"


def _text(ns, dev):
    return ns.ethtool_k(dev).replace("Features for %s:" % dev, "")


@pytest.mark.parametrize("start", STARTS, ids=["created", "tx-off-first",
                                               "sg-off-first", "all-off-first"])
@pytest.mark.parametrize("profile", PROFILES)
@pytest.mark.parametrize("kind", KINDS)
# both ioctl buffers: array (Python < 3.10, dom0's 3.6) and _ctypes (the
# udev helper's on newer Pythons); pytest has loaded collections.abc, so
# the module itself would pick array here
@pytest.mark.parametrize("buffer", [ethtool_ioctl._array_buffer,
                                    ethtool_ioctl._ctypes_buffer],
                         ids=["array", "ctypes"])
def test_sfeatures_equals_ethtool_set(netns, kind, profile, start, buffer,
                                      mocker):
    mocker.patch.object(ethtool_ioctl, "_buffer", buffer)
    mine, theirs = _twins(netns, kind)
    if start:
        for dev in (mine, theirs):
            netns.run(["ethtool", "-K", dev] + start.split(), check=False)
    assert _text(netns, mine) == _text(netns, theirs), "twins differ"
    wanted = parse_policy(profile).features
    run = mocker.spy(runner, "run")
    with netns.entered():
        result = ethtool.apply_features(mine, wanted)
    assert not [c for c in run.call_args_list if "-K" in c[0][0]], \
        "the ioctl path ran ethtool -K"
    assert result.method in (None, "ioctl")
    # the admin's command: every wanted feature this kernel has (ufo on
    # its own makes ethtool fail: it has no bits here)
    argv = ["ethtool", "-K", theirs]
    for short in FEATURES:
        if short in wanted and result.features.get(short) != "unsupported":
            argv += [short, wanted[short]]
    netns.run(argv, check=False)
    assert _text(netns, mine) == _text(netns, theirs), (
        kind, profile, start, result.to_json())


def _no_sfeatures(self, device, requests):
    raise OSError(errno.EOPNOTSUPP, "Operation not supported")


@pytest.mark.parametrize("kind", KINDS)
def test_the_ethtool_fallback_gives_the_same_result(netns, kind, mocker):
    """Where the ioctl is unavailable, `ethtool -K` runs: same result."""
    mine, theirs = _twins(netns, kind)
    wanted = parse_policy("all-off").features
    with netns.entered():
        by_ioctl = ethtool.apply_features(mine, wanted)
        mocker.patch.object(ethtool_ioctl.IoctlReader, "write", _no_sfeatures)
        by_binary = ethtool.apply_features(theirs, wanted)
    assert (by_ioctl.method, by_binary.method) == ("ioctl", "ethtool")
    assert by_ioctl.features == by_binary.features
    assert _text(netns, mine) == _text(netns, theirs)


def test_sfeatures_reports_a_bit_the_device_cannot_change(netns):
    netns.add_veth("twa", "twapeer")
    with netns.entered():
        writer = ethtool_ioctl.IoctlReader()
        try:
            flags = writer.write("twa", {"rx-lro": True})  # fixed on veth
            assert flags & ethtool_ioctl.ETHTOOL_F_UNSUPPORTED
            with pytest.raises(ValueError):
                writer.write("twa", {"no-such-feature": True})
            with pytest.raises(OSError) as err:
                writer.write("nosuchdev0", {"rx-gro": True})
            assert err.value.errno == errno.ENODEV
        finally:
            writer.close()
