"""The udev rules, resolved by the real `udevadm test` on real devices.

Each `udevadm test --action=add /sys/class/net/<dev>` runs in a private
mount namespace whose /run/udev/rules.d holds only our rules file (see
sim/udevtest.py), inside a network namespace, where `ip netns exec` shows
that namespace's /sys. The machine's udev directories are never written.

What this can and cannot exercise here: vif*/tap* net devices and PIF
devices listed by the cache (the marker-file rule; a veth named eth0 plays
the PIF) are tested for real. The xen-backend "online" rule needs a Xen
backend, the physical-NIC rule (DEVPATH outside /devices/virtual) a real NIC
we must not touch, and the bond/vlan rule kernel modules this machine cannot
load: those are checked for syntax only (udevadm reports no complaint about
any line of the file), and bond/vlan are tried and skipped with the reason.
"""
import itertools
import os
import random
import re

import pytest

from sim import udevtest
from sim.poolbox import kernel_can_create
from tests.support import layout

pytestmark = pytest.mark.root

REPO = layout.REPO
RULES = os.path.join(REPO, "udev", "xen-netoffload.rules")
HELPER = "/usr/libexec/netoffload/netoffload-udev"
MARKER_DIR = "/var/lib/netoffload/pif/"
_names = itertools.count()


class Rules(object):
    """Our rules file with its PIF markers redirected to a private dir."""

    def __init__(self, marker_dir):
        self.marker_dir = marker_dir
        with open(RULES) as handle:
            text = handle.read()
        assert text.count(MARKER_DIR) == 1
        self.text = text.replace(MARKER_DIR, str(marker_dir) + "/")
        # the installed name, where udevadm reads it inside the private mount
        self.name = os.path.basename(RULES)
        self.path = udevtest.rules_path(self.name)


@pytest.fixture
def rules(tmp_path):
    marker_dir = tmp_path / "pif"
    marker_dir.mkdir()
    return Rules(marker_dir)


def udev_runs(ns, rules, device, action="add"):
    """The RUN programs udevadm test resolves with our rules, and its log."""
    proc = udevtest.udevadm_test(ns.name, device, {rules.name: rules.text},
                                 action=action)
    assert proc.returncode == 0, proc.stderr
    output = proc.stdout + proc.stderr
    runs = [m.group(1) for m in re.finditer(r"^run: '(.*)'$", output, re.M)]
    return runs, output


def _make(ns, kind, name):
    if kind == "veth":
        ns.add_veth(name, "p%d" % next(_names))
    elif kind == "tap":
        ns.add_tap(name)
    elif kind == "bridge":
        ns.add_link(name, "bridge")
    elif kind == "macvlan":
        ns.add_veth("lower0", "lower1")
        ns.add_macvlan(name, "lower0")
    elif kind == "ifb":
        ns.add_link(name, "ifb")
    else:
        raise AssertionError(kind)


CASES = [
    # (id, kind, device name, listed in the cache as a PIF, helper runs)
    ("vif", "veth", "vif5.0", False, True),
    ("vif-high-ids", "veth", "vif32000.12", False, True),
    ("tap", "tap", "tap5.1", False, True),
    ("pif-listed-by-cache", "veth", "eth0", True, True),
    ("pif-listed-macvlan", "macvlan", "eth1", True, True),
    ("eth-not-a-pif", "veth", "eth2", False, False),
    ("docker0", "bridge", "docker0", False, False),
    ("veth123", "veth", "veth123", False, False),
    ("xenbr0-not-listed", "bridge", "xenbr0", False, False),
    ("ifb", "ifb", "ifb9", False, False),
    ("vif-without-devid", "veth", "vifx", False, False),
    ("tap-not-guest", "tap", "tapfoo", False, False),
]


@pytest.mark.parametrize("kind, device, listed, expect_run",
                         [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_add_event_runs_helper_only_for_our_devices(netns, rules, kind, device,
                                                    listed, expect_run):
    _make(netns, kind, device)
    if listed:
        (rules.marker_dir / device).write_text("")
    runs, output = udev_runs(netns, rules, device)
    ours = [r for r in runs if r.startswith(HELPER)]
    assert "Reading rules file: %s" % rules.path in output
    if expect_run:
        assert ours == ["%s %s" % (HELPER, device)]
    else:
        assert ours == []


REMOVE_CASES = [
    # (id, kind, device, helper runs: to forget the live-state record)
    ("vif", "veth", "vif7.0", True),
    ("tap", "tap", "tap7.1", True),
    ("pif-listed", "veth", "eth0", False),
    ("unrelated", "veth", "veth7", False),
]


@pytest.mark.parametrize("kind, device, expect_run",
                         [c[1:] for c in REMOVE_CASES],
                         ids=[c[0] for c in REMOVE_CASES])
def test_remove_event_runs_helper_only_for_guest_devices(netns, rules, kind,
                                                         device, expect_run):
    _make(netns, kind, device)
    (rules.marker_dir / "eth0").write_text("")
    runs, _ = udev_runs(netns, rules, device, action="remove")
    ours = [r for r in runs if r.startswith(HELPER)]
    assert ours == (["%s %s" % (HELPER, device)] if expect_run else [])


def test_every_line_of_the_rules_file_is_accepted(netns, rules):
    """udevadm names the file and line of any rule it rejects or drops."""
    netns.add_tap("tap3.0")
    _, output = udev_runs(netns, rules, "tap3.0")
    complaints = [line for line in output.splitlines()
                  if line.startswith(rules.path + ":") and " RUN " not in line]
    assert complaints == []


@pytest.mark.parametrize("kind", ["bond", "vlan"])
def test_bond_and_vlan_pifs(netns, rules, kind):
    if not kernel_can_create(kind):
        pytest.skip("this kernel cannot create %s devices (ip link add type %s "
                    "fails)" % (kind, kind))
    if kind == "bond":
        netns.add_link("bond0", "bond")
        device = "bond0"
    else:
        netns.add_veth("eth0", "peer0")
        netns.ip("link", "add", "link", "eth0", "name", "eth0.100", "type",
                 "vlan", "id", "100")
        device = "eth0.100"
    runs, _ = udev_runs(netns, rules, device)
    assert "%s %s" % (HELPER, device) in runs


def test_installed_rules_file_name_sorts_after_xapis_rules():
    # udev runs RUN programs in rule-file name order across directories:
    # ours must come after xapi's xen-backend.rules (vif-real).
    names = sorted(["xen-backend.rules", os.path.basename(RULES),
                    "80-net-setup-link.rules", "99-systemd.rules"])
    assert names[-1] == os.path.basename(RULES)


def test_udevadm_test_leaves_the_machines_udev_directories_alone(netns,
                                                                  rules):
    """The rules file and the database entry udevadm test writes for the
    device exist only in the run's private /run/udev. The device gets an
    ifindex no other device here has, so its entry names only it; what
    other programs keep in the machine's directories does not matter."""
    ifindex = random.randint(100000, 900000)
    netns.ip("link", "add", "vif4.0", "index", str(ifindex), "type", "veth",
             "peer", "name", "p4")
    netns.ip("link", "set", "vif4.0", "up")
    entry = "/run/udev/data/n%d" % ifindex
    assert not os.path.exists(entry)
    runs, output = udev_runs(netns, rules, "vif4.0")
    assert "%s vif4.0" % HELPER in runs
    assert "Reading rules file: %s" % rules.path in output
    assert not os.path.exists(entry)
    # this run's rules text is unique: it names this test's marker dir
    assert [name for name in os.listdir(udevtest.RULES_DIR)
            if str(rules.marker_dir) in _read(udevtest.RULES_DIR, name)] == []


def _read(directory, name):
    try:
        with open(os.path.join(directory, name)) as handle:
            return handle.read()
    except OSError:  # removed meanwhile by whoever put it there
        return ""
