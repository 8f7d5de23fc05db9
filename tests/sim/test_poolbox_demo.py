"""End to end: the pool in a box runs the demo's own steps, with assertions.

The steps are sim.demo.Scenario's (the same code `make demo` runs), over a
real PoolBox: network namespaces per host, the XAPI simulator, the real
plugin, CLI, watcher, udev helper and boot entry point. Each test is one
step, in story order, sharing one box; after a failed step the later ones
are skipped (they would only repeat the failure). The last tests check that
the box leaves nothing behind, also when the demo is interrupted.
"""
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from sim import demo, poolbox
from tests.support import layout

ROOT = layout.REPO
FIXTURES = os.path.join(ROOT, "tests", "fixtures")


# -- pure parts: the demo's independent readers ------------------------------

@pytest.mark.parametrize("fixture, expected", [
    ("ethtool/ethtool-6.1-veth.txt",
     {"rx": ("on", False), "tx": ("on", False), "sg": ("on", False),
      "tso": ("on", False), "gso": ("on", False), "gro": ("off", False),
      "lro": ("off", True)}),
    ("ethtool/ethtool-6.1-veth-after-tx-off.txt",
     {"tx": ("off", False), "rx": ("on", False), "sg": ("on", False)}),
    ("ethtool/ethtool-6.1-tap.txt", {"rx": ("off", True)}),
], ids=["veth", "veth-tx-off", "tap"])
def test_parse_ethtool_k_reads_group_headings(fixture, expected):
    with open(os.path.join(FIXTURES, fixture)) as f:
        parsed = demo.parse_ethtool_k(f.read())
    assert "ufo" not in parsed          # removed from the kernel in 4.14
    for feature, (value, fixed) in expected.items():
        assert parsed[feature] == demo.LiveFeature(value, fixed), feature


@pytest.mark.parametrize("text, wanted, mismatches", [
    ("tx-checksumming: on\n", {"tx": "off"}, {"tx": "on"}),
    ("tx-checksumming: off\n", {"tx": "off"}, {}),
    ("large-receive-offload: off [fixed]\n", {"lro": "on"}, {}),
    ("generic-receive-offload: on\n", {"ufo": "off"}, {}),
    ("\ttx-checksum-ipv4: on\ntx-checksumming: off\n", {"tx": "off"}, {}),
], ids=["differs", "equal", "fixed-cannot-differ", "absent-feature",
        "sub-bits-ignored"])
def test_live_mismatches(text, wanted, mismatches):
    assert demo.live_mismatches(text, wanted) == mismatches


def test_parse_udevadm_test_output():
    with open(os.path.join(FIXTURES, "poolbox",
                           "udevadm-252-test-add-vif7.0.txt")) as f:
        props, runs = poolbox.parse_udevadm_test(f.read())
    assert runs == [
        "/lib/systemd/systemd-sysctl --prefix=/net/ipv4/conf/vif7.0 "
        "--prefix=/net/ipv4/neigh/vif7.0 --prefix=/net/ipv6/conf/vif7.0 "
        "--prefix=/net/ipv6/neigh/vif7.0",
        "/usr/libexec/netoffload/netoffload-udev vif7.0"]
    assert props["ACTION"] == "add"
    assert props["INTERFACE"] == "vif7.0"
    assert props["SUBSYSTEM"] == "net"
    assert props["DEVPATH"] == "/devices/virtual/net/vif7.0"


# -- the story ------------------------------------------------------------------

class _Story(object):
    def __init__(self):
        self.box = poolbox.PoolBox(hosts=3, vm_specs=demo.VM_SPECS,
                                   pif_other_config=demo.PIF_OTHER_CONFIG)
        self.scenario = demo.Scenario(self.box)
        self.failed = None

    def step(self, key):
        if self.failed:
            pytest.skip("step %r failed before this one" % self.failed)
        step = self.scenario.run_step(key)
        if not step.ok:
            self.failed = key
        assert step.ok, "\n".join(step.failures())
        return step


@pytest.fixture(scope="module")
def story():
    story = _Story()
    try:
        yield story
    finally:
        story.box.close()
        story.scenario.close()


@pytest.mark.root
def test_01_build(story):
    step = story.step("build")
    box = story.box
    assert [h.name for h in box.hosts] == ["host1", "host2", "host3"]
    for host in box.hosts:
        links = host.ns.links()
        assert {"eth0", "eth1", "bond0", "xenbr0", "xenbr1"} <= set(links)
        # hosts sit behind one switch: eth0's peer is a port of sw0
        peers = json.loads(box.switch.ip("-j", "link", "show", "master",
                                         "sw0").stdout)
        assert "h%deth0" % host.index in [p["ifname"] for p in peers]
    assert box.guest("pfsense-fw").devices() == [
        "vif2.0", "tap2.0", "vif2.1", "tap2.1"]
    assert box.guest("archive") is None          # halted: DB only
    assert step.data["devices"]["host1"] == sorted(
        ["eth0", "eth1", "bond0", "vif1.0", "vif2.0", "tap2.0", "vif2.1",
         "tap2.1"])


@pytest.mark.root
def test_02_status_before_changes_nothing(story):
    step = story.step("status_before")
    assert step.commands[0]["argv"] == ["netoffload", "status", "--pool"]
    assert step.commands[0]["stdout"].strip()
    assert step.data["status"] is not None


@pytest.mark.root
def test_03_policy_and_apply_all(story):
    step = story.step("policy_apply")
    argvs = [c["argv"][1:] for c in step.commands]
    assert ["apply", "ALL", "--pool", "--dry-run"] in argvs
    refused = [c for c in step.commands
               if c["argv"][1:] == ["apply", "ALL", "--pool"]]
    assert refused and refused[0]["rc"] == 2
    db = story.box.db_other_config()
    web_vif = db[("VIF", story.box.vif_uuid("web01", 0))]
    assert web_vif["ethtool-tx"] == "off"
    # gro/lro are never written on VIFs: xapi drops them
    fw_vif = db[("VIF", story.box.vif_uuid("pfsense-fw", 1))]
    assert "ethtool-gro" not in fw_vif and "ethtool-lro" not in fw_vif
    # an ethtool-tx=false set by hand is a decision: kept
    assert db[("VIF", story.box.vif_uuid("db 01 (prod)", 0))][
        "ethtool-tx"] == "false"


@pytest.mark.root
def test_04_new_vm_watcher_and_udev(story):
    step = story.step("new_vm")
    runs = step.data["udev"]
    domid = story.box.guest(demo.NEW_VM.name).domid
    assert [r["device"] for r in runs] == ["vif%d.0" % domid,
                                           "tap%d.0" % domid]
    for run in runs:
        assert run["run"] == "/usr/libexec/netoffload/netoffload-udev %s" % \
            run["device"]
        assert run["env"]["ACTION"] == "add"
        assert run["env"]["INTERFACE"] == run["device"]
        assert run["rc"] == 0
    assert step.data["watcher_seconds"] < 15


@pytest.mark.root
def test_04b_xo_created_vm_under_the_tag_policy(story):
    step = story.step("xo_vm")
    db = story.box.db_other_config()
    vif = db[("VIF", story.box.vif_uuid(demo.XO_VM.name, 0))]
    # the tag policy applied over XO's ethtool-tx=true; the stamp is saved
    assert vif["ethtool-tx"] == "off"
    assert demo.read_book(vif).entries["tx"].prior == "true"
    assert step.data["watcher_seconds"] < 15
    status = [c for c in step.commands if c["argv"][1:2] == ["status"]]
    assert "tag:%s" % demo.TAG in status[0]["stdout"]


@pytest.mark.root
def test_04c_drift_is_corrected_and_logged(story):
    step = story.step("drift")
    assert step.commands[0]["argv"][:2] == ["ethtool", "-K"]
    assert step.data["drift_seconds"] < demo.DRIFT_BOUND
    assert any("re-enforced" in line for line in step.data["log"])


@pytest.mark.root
def test_05_reboot_and_boot_unit(story):
    step = story.step("reboot")
    boot = [c for c in step.commands if "netoffload.agents.boot" in c["argv"]]
    assert boot and boot[0]["rc"] == 0
    host = story.box.hosts[demo.PIF_POLICY_HOST - 1]
    assert host.watcher is not None and host.watcher.poll() is None


@pytest.mark.root
def test_06_check_checksums_and_doctor(story):
    step = story.step("diagnostics")
    result = step.data["check_checksums"]
    deltas = result["kernel_counters_delta"]
    assert deltas["TcpInCsumErrors"] == 0 and deltas["UdpInCsumErrors"] == 0
    assert step.data["doctor"] is not None


@pytest.mark.root
def test_07_revert_all_restores_everything(story):
    step = story.step("revert")
    assert step.data["objects_compared"] >= 20
    xo_vif = story.box.db_other_config()[
        ("VIF", story.box.vif_uuid(demo.XO_VM.name, 0))]
    assert xo_vif == {"ethtool-tx": "true"}
    assert step.data["devices_compared"] >= 20


@pytest.mark.root
@pytest.mark.parametrize("line, rc, wanted", [
    ("xe host-call-plugin host-uuid=$MASTER plugin=netoffload fn=version",
     0, "version"),
    ("xe host-call-plugin host-uuid=<uuid> plugin=netoffload fn=apply \\\n"
     "   args:vm=\"db 01 (prod)\" args:dry_run=true", 0, "objects"),
    ("xe host-call-plugin host-uuid=$MASTER plugin=netoffload fn=nosuchfn",
     1, "UNKNOWN_XENAPI_PLUGIN_FUNCTION"),
    ("netoffload policy get --json", 0, "{"),
    ("netoffload apply vm='no such vm' --dry-run", 2, "NETOFFLOAD_NOT_FOUND"),
], ids=["xe-version", "xe-quoted-continued", "xe-unknown-fn", "cli-json",
        "cli-not-found"])
def test_07b_documented_commands_run_against_the_box(story, line, rc, wanted):
    """PoolBox.admin runs doc command lines (for the README doc test)."""
    if story.failed:
        pytest.skip("step %r failed before this one" % story.failed)
    got_rc, out, err = story.box.admin(line)
    assert got_rc == rc, (out, err)
    assert wanted in (out + err)
    if rc == 0 and out.lstrip().startswith("{"):
        json.loads(out)


@pytest.mark.root
def test_08_close_leaves_nothing(story):
    box = story.box
    procs = [h.watcher for h in box.hosts if h.watcher] + list(box.processes)
    box.close()
    assert box.namespaces() == []
    assert not os.path.exists(box.workdir)
    assert not os.path.exists(box.socket_path)
    assert all(p.poll() is not None for p in procs)


# -- interrupted demos clean up too -------------------------------------------

def _demo_namespaces(pid):
    out = subprocess.run(["ip", "netns", "list"], stdout=subprocess.PIPE,
                         universal_newlines=True, timeout=20).stdout
    prefix = "%s%d-" % (poolbox.NS_PREFIX, pid)
    return [line.split()[0] for line in out.splitlines()
            if line.split() and line.split()[0].startswith(prefix)]


@pytest.mark.root
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM],
                         ids=["ctrl-c", "sigterm"])
def test_interrupted_demo_cleans_up(signum):
    proc = subprocess.Popen(
        [sys.executable, "-m", "sim.demo", "--hosts", "2"], cwd=ROOT,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        universal_newlines=True)
    seen = []
    try:
        deadline = time.time() + 60
        for line in proc.stdout:
            seen.append(line)
            if line.startswith("== 2."):   # box built, story under way
                break
            assert time.time() < deadline, "".join(seen)
        assert _demo_namespaces(proc.pid), "".join(seen)
        proc.send_signal(signum)
        rest, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode != 0
    assert "VERDICT: PASS" not in rest
    assert _demo_namespaces(proc.pid) == []
    assert _processes_of_demo(proc.pid) == []


def _processes_of_demo(pid):
    """Pids whose environment points at that demo's work directory (the
    watchers, plugin runs, traffic generators all carry it)."""
    return poolbox.processes_with_env(
        ("/tmp/netoffload-box-%d-" % pid).encode())


@pytest.mark.root
def test_killed_demo_is_cleaned_by_the_next_box():
    """kill -9 runs no handler: the next box start removes the leftovers."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "sim.demo", "--hosts", "2"], cwd=ROOT,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        universal_newlines=True)
    try:
        for line in proc.stdout:
            if line.startswith("== 2."):
                break
        proc.kill()
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert _demo_namespaces(proc.pid), "kill -9 should leave namespaces"
    removed = poolbox.cleanup_stale()
    assert _demo_namespaces(proc.pid) == []
    assert _processes_of_demo(proc.pid) == []
    assert not [n for n in os.listdir("/tmp")
                if n.startswith("netoffload-box-%d-" % proc.pid)]
    assert any(n.startswith("nobox%d-" % proc.pid) for n in removed)


# -- the machine-readable run -------------------------------------------------

@pytest.mark.root
@pytest.mark.slow
def test_demo_json_prints_only_the_record_and_passes():
    """`python -m sim.demo --json` (a 2-host box, about 9 s): stdout is one
    JSON record, the narrative goes to stderr."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "sim.demo", "--json", "--hosts", "2"], cwd=ROOT,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True)
    try:
        # about 9 s alone; minutes on a machine loaded by parallel tests
        stdout, stderr = proc.communicate(timeout=240)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    record = json.loads(stdout)
    assert (proc.returncode, record["ok"]) == (0, True), record.get("verdict")
    assert record["verdict"].startswith("VERDICT: PASS: %d steps" % len(demo.STEP_ORDER))
    assert record["verdict"] in stderr.splitlines()
    assert record["hosts"] == 2
    assert [s["key"] for s in record["steps"]] == list(demo.STEP_ORDER)
    failed = [(s["key"], c["what"]) for s in record["steps"]
              for c in s["checks"] if not c["ok"]]
    assert failed == [] and all(s["checks"] for s in record["steps"])
    assert _demo_namespaces(proc.pid) == []
