"""The udev rules, resolved by the real `udevadm test` on real devices.

The rules file is copied into /run/udev/rules.d under a unique name (removed
afterwards) and `udevadm test --action=add /sys/class/net/<dev>` runs inside
a network namespace, where `ip netns exec` shows that namespace's /sys.

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
import re

import pytest

from sim import udevdb
from tests.support import paths
from tests.support.netns import kernel_supports

pytestmark = pytest.mark.root

REPO = paths.REPO
RULES = os.path.join(REPO, "udev", "xen-netoffload.rules")
RULES_DIR = "/run/udev/rules.d"
HELPER = "/usr/libexec/netoffload/netoffload-udev"
MARKER_DIR = "/var/lib/netoffload/pif/"
_names = itertools.count()


@pytest.fixture
def rules(tmp_path):
    """Our rules in /run/udev/rules.d, PIF markers redirected to tmp_path."""
    marker_dir = tmp_path / "pif"
    marker_dir.mkdir()
    with open(RULES) as handle:
        text = handle.read()
    assert text.count(MARKER_DIR) == 1
    text = text.replace(MARKER_DIR, str(marker_dir) + "/")
    if not os.path.isdir(RULES_DIR):
        os.makedirs(RULES_DIR)
    # the name keeps the installed file's sort position (after xen-backend)
    path = os.path.join(RULES_DIR, "xen-netoffload-test-%d-%d.rules" % (
        os.getpid(), next(_names)))
    with open(path, "w") as handle:
        handle.write(text)
    try:
        yield path, marker_dir
    finally:
        os.unlink(path)


def udev_runs(ns, device, action="add"):
    """The RUN programs udevadm test resolves, and its full log.

    udevadm test writes /run/udev/data/n<ifindex> in the host's /run (the
    entry of the host device with that ifindex, if any): put it back."""
    with udevdb.restored([udevdb.ifindex_in(ns.run, device)]):
        proc = ns.run(["udevadm", "test", "--action=" + action,
                       "/sys/class/net/" + device], check=False)
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
    path, marker_dir = rules
    _make(netns, kind, device)
    if listed:
        (marker_dir / device).write_text("")
    runs, output = udev_runs(netns, device)
    ours = [r for r in runs if r.startswith(HELPER)]
    assert "Reading rules file: %s" % path in output
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
    _, marker_dir = rules
    _make(netns, kind, device)
    (marker_dir / "eth0").write_text("")
    runs, _ = udev_runs(netns, device, action="remove")
    ours = [r for r in runs if r.startswith(HELPER)]
    assert ours == (["%s %s" % (HELPER, device)] if expect_run else [])


def test_every_line_of_the_rules_file_is_accepted(netns, rules):
    """udevadm names the file and line of any rule it rejects or drops."""
    path, _ = rules
    netns.add_tap("tap3.0")
    _, output = udev_runs(netns, "tap3.0")
    complaints = [line for line in output.splitlines()
                  if line.startswith(path + ":") and " RUN " not in line]
    assert complaints == []


@pytest.mark.parametrize("kind", ["bond", "vlan"])
def test_bond_and_vlan_pifs(netns, rules, kind):
    if not kernel_supports(kind):
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
    runs, _ = udev_runs(netns, device)
    assert "%s %s" % (HELPER, device) in runs


def test_installed_rules_file_name_sorts_after_xapis_rules():
    # udev runs RUN programs in rule-file name order across directories:
    # ours must come after xapi's xen-backend.rules (vif-real).
    names = sorted(["xen-backend.rules", os.path.basename(RULES),
                    "80-net-setup-link.rules", "99-systemd.rules"])
    assert names[-1] == os.path.basename(RULES)


@pytest.fixture
def udev_data_dir():
    created = not os.path.isdir(udevdb.UDEV_DATA)
    if created:
        os.makedirs(udevdb.UDEV_DATA)
    yield udevdb.UDEV_DATA
    if created:
        try:
            os.rmdir(udevdb.UDEV_DATA)
        except OSError:
            pass


def test_udevadm_test_leaves_the_host_udev_database_as_it_was(
        netns, rules, udev_data_dir):
    """The entry udevadm test writes for a namespace device is put back:
    a host device's entry with the same ifindex byte for byte, an entry
    that did not exist removed; other entries are not touched."""
    netns.add_tap("tap4.0")
    netns.add_veth("vif4.0", "p4")
    host_like = udevdb.entry_path(udevdb.ifindex_in(netns.run, "tap4.0"))
    absent = udevdb.entry_path(udevdb.ifindex_in(netns.run, "vif4.0"))
    saved = [udevdb._save(p) for p in (host_like, absent)]
    bystander = os.path.join(udev_data_dir, "n%d-bystander-%d" % (
        os.getpid(), next(_names)))
    try:
        for path in (host_like, absent):
            if os.path.exists(path):
                os.unlink(path)
        content = b"I:123456\nE:ID_NET_NAME=host-device\nG:systemd\n"
        with open(host_like, "wb") as handle:
            handle.write(content)
        os.chmod(host_like, 0o640)

        runs, _ = udev_runs(netns, "tap4.0")  # does write the entry ...
        assert "%s tap4.0" % HELPER in runs
        with open(host_like, "rb") as handle:  # ... and puts it back
            assert handle.read() == content
        assert os.stat(host_like).st_mode & 0o777 == 0o640

        with udevdb.restored([udevdb.ifindex_in(netns.run, "vif4.0")]):
            netns.run(["udevadm", "test", "--action=add",
                       "/sys/class/net/vif4.0"])
            assert os.path.exists(absent)  # what the guard is for
            with open(bystander, "w") as handle:
                handle.write("E:someone else's\n")
        assert not os.path.exists(absent)
        assert os.path.exists(bystander)
    finally:
        for path, was in zip((host_like, absent), saved):
            udevdb._put_back(path, was)
        if os.path.exists(bystander):
            os.unlink(bystander)
