"""The pool in a box to play with (sim/box.py, `make box`) and its `xe`
stand-in (sim/xe.py): xe's syntax and output against the simulator, the
classic how-to loop unchanged, syslog lines per host, devices that follow
vm-start/vm-shutdown, and `make box` driven through a real pseudo-terminal
(pexpect), including its cleanup after exit and after kill -9."""
import datetime
import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest

from sim import box as simbox
from sim import poolbox
from tests.support import layout
from tests.support.simpool import SimPool

ROOT = layout.REPO
LOOP = os.path.join(ROOT, "sim", "howto", "turnOffloadingOff.sh")
XAPI_FEATURES = ("rx", "tx", "sg", "tso", "ufo", "gso")


# -- pure parts ------------------------------------------------------------------

def test_syslog_datagram_as_a_journal_line():
    when = datetime.datetime(2026, 12, 1, 23, 5, 9)
    assert simbox.format_syslog(b"<14>netoffload: watch: starting\x00", 42,
                                "host2", when) == \
        "Dec 01 23:05:09 host2 netoffload[42]: watch: starting"
    assert simbox.format_syslog(b"<12>netoffload: udev: bad", None, "host1",
                                when) == \
        "Dec 01 23:05:09 host1 netoffload[?]: WARNING udev: bad"


def test_running_guests_from_the_database():
    snapshot = {"VM": {
        "vm1": {"name_label": "web", "power_state": "Running",
                "resident_on": "h1", "domid": 7, "VIFs": ["v1"],
                "HVM_boot_policy": "BIOS order"},
        "vm2": {"name_label": "off", "power_state": "Halted",
                "resident_on": "OpaqueRef:NULL", "domid": -1, "VIFs": []},
        "tpl": {"name_label": "t", "power_state": "Running", "domid": 9,
                "resident_on": "h1", "is_a_template": True, "VIFs": []}},
        "VIF": {"v1": {"device": "1", "network": "n1"}}}
    assert simbox.running_guests(snapshot, "h1", ["n0", "n1"]) == {
        7: simbox.GuestSpec("web", 7, [(1, 1)], True)}
    assert simbox.running_guests(snapshot, "h2", ["n0"]) == {}


# -- the xe stand-in ---------------------------------------------------------------

@pytest.fixture
def xe_pool(tmp_path):
    """A simulator (no namespaces) with the names the how-tos use."""
    with SimPool() as pool:
        sim = pool.sim
        host = pool.add_host("xcp1")
        net = sim.add_network("Pool-wide network associated with eth0",
                              bridge="xenbr0")
        sim.add_pif(host, net, "eth0", management=True)
        web = sim.add_vm("web 01", power_state="Running", resident_on=host,
                         domid=3)
        sim.add_vif(web, net, 0, other_config={"keep": "me"})
        sim.add_vm("archive")
        sim.add_vm("a template", is_a_template=True)
        pool.env = dict(os.environ, XE_SIM_SOCKET=sim.socket_path,
                        PYTHONPATH=ROOT)
        yield pool


def xe(pool, *args):
    done = subprocess.run([sys.executable, "-m", "sim.xe"] + list(args),
                          cwd=ROOT, env=pool.env, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, universal_newlines=True,
                          timeout=60)
    return done.returncode, done.stdout, done.stderr


def test_xe_lists_like_xe(xe_pool):
    code, out, _ = xe(xe_pool, "vm-list")
    assert code == 0
    blocks = out.strip("\n").split("\n\n\n")
    assert len(blocks) == 2  # no template
    web = blocks[0].splitlines()
    assert re.match(r"^ +uuid \( RO\): [0-9a-f-]{36}$", web[0])
    assert web[1] == " name-label ( RW): web 01"
    assert web[2] == "power-state ( RO): running"
    assert len(set(line.index(":") for line in web)) == 1  # aligned
    uuid = xe(xe_pool, "vm-list", "name-label=web 01", "params=uuid",
              "--minimal")[1].strip()
    assert re.match(r"^[0-9a-f-]{36}$", uuid)
    assert xe(xe_pool, "vm-list", "power-state=halted", "params=name-label",
              "--minimal")[1].strip() == "archive"
    pools = xe(xe_pool, "pool-list", "params=master", "--minimal")[1].strip()
    hosts = xe(xe_pool, "host-list", "--minimal")[1].strip()
    assert pools == hosts
    for cls in ("network", "pif", "vif"):
        assert xe(xe_pool, cls + "-list")[0] == 0


def test_xe_param_list_get_set_remove(xe_pool):
    vm = xe(xe_pool, "vm-list", "name-label=web 01", "--minimal")[1].strip()
    vif = xe(xe_pool, "vif-list", "vm-uuid=" + vm, "--minimal")[1].strip()
    listing = xe(xe_pool, "vif-param-list", "uuid=" + vif)[1]
    assert re.search(r"other-config \( MRW\): keep: me$", listing, re.M)
    assert re.search(r"vm-uuid \( RO\): %s$" % vm, listing, re.M)
    assert xe(xe_pool, "vif-param-set", "uuid=" + vif,
              "other-config:ethtool-tx=off")[0] == 0
    assert xe(xe_pool, "vif-param-get", "uuid=" + vif, "param-name=other-config",
              "param-key=ethtool-tx")[1] == "off\n"
    assert xe(xe_pool, "vif-param-get", "uuid=" + vif,
              "param-name=other-config")[1] == "ethtool-tx: off; keep: me\n"
    assert xe(xe_pool, "vif-param-remove", "uuid=" + vif,
              "param-name=other-config", "param-key=ethtool-tx")[0] == 0
    assert xe(xe_pool, "vm-param-set", "uuid=" + vm, "name-label=web 02")[0] == 0
    assert xe(xe_pool, "vm-param-get", "uuid=" + vm,
              "param-name=name-label")[1] == "web 02\n"
    code, _, err = xe(xe_pool, "vif-param-set", "uuid=nope", "other-config:a=b")
    assert code == 1 and "UUID_INVALID" in err


def test_xe_vm_start_shutdown_and_vif_create_as_xo6(xe_pool):
    assert xe(xe_pool, "vm-start", "vm=archive")[0] == 0
    assert xe(xe_pool, "vm-list", "name-label=archive", "params=power-state",
              "--minimal")[1].strip() == "running"
    code, _, err = xe(xe_pool, "vm-start", "vm=archive")
    assert code == 1 and "VM_BAD_POWER_STATE" in err
    assert xe(xe_pool, "vm-shutdown", "vm=archive", "--force")[0] == 0
    vm = xe(xe_pool, "vm-list", "name-label=archive", "--minimal")[1].strip()
    net = xe(xe_pool, "network-list", "bridge=xenbr0", "--minimal")[1].strip()
    # Xen Orchestra 6 stamps ethtool-tx=true on every VIF it creates
    code, out, _ = xe(xe_pool, "vif-create", "vm-uuid=" + vm,
                      "network-uuid=" + net, "device=0",
                      "other-config:ethtool-tx=true")
    assert code == 0 and re.match(r"^[0-9a-f-]{36}$", out.strip())
    assert xe(xe_pool, "vif-param-get", "uuid=" + out.strip(),
              "param-name=other-config", "param-key=ethtool-tx")[1] == "true\n"


def test_xe_host_call_plugin(xe_pool):
    host = xe(xe_pool, "host-list", "--minimal")[1].strip()
    code, out, _ = xe(xe_pool, "host-call-plugin", "host-uuid=" + host,
                      "plugin=netoffload", "fn=version")
    assert code == 0 and json.loads(out)["api"] == 1
    code, _, err = xe(xe_pool, "host-call-plugin", "host-uuid=" + host,
                      "plugin=netoffload", "fn=version", "args:x=1")
    assert code == 1 and "NETOFFLOAD_BAD_ARGUMENT" in err
    assert "takes no arguments" in err and "valid: " not in err


def _loop(pool, *args, answer=""):
    return subprocess.run(["bash", LOOP] + list(args), cwd=ROOT,
                          env=dict(pool.env, PATH=_xe_path(pool)),
                          input=answer, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, universal_newlines=True,
                          timeout=300)


def _xe_path(pool):
    bindir = os.path.join(pool.sim.state_root, "xe-bin")
    if not os.path.isdir(bindir):
        os.makedirs(bindir)
        with open(os.path.join(bindir, "xe"), "w") as handle:
            handle.write("#!/bin/sh\nexec %s -m sim.xe \"$@\"\n" % sys.executable)
        os.chmod(os.path.join(bindir, "xe"), 0o755)
    return bindir + ":" + os.environ["PATH"]


def test_the_classic_loop_runs_unchanged_against_the_stand_in(xe_pool):
    done = _loop(xe_pool, "web 01")
    assert done.returncode == 0, done.stderr
    snap = xe_pool.sim.snapshot_db()
    [vif] = [v for v in snap["VIF"].values()]
    assert vif["other_config"] == dict(
        [("keep", "me")] + [("ethtool-" + f, "off") for f in XAPI_FEATURES])
    assert _loop(xe_pool, "nobody").returncode == 1
    done = _loop(xe_pool, "ALL", answer="y\n")
    assert done.returncode == 0, done.stderr
    for pif in xe_pool.sim.snapshot_db()["PIF"].values():
        assert all(pif["other_config"]["ethtool-" + f] == "off"
                   for f in XAPI_FEATURES)


# -- make box through a pseudo-terminal -----------------------------------------------

PROMPT = r"\[root@(host\d) dom0\]# "


def _box_namespaces(workdir):
    prefix = "nobox" + os.path.basename(workdir)[len("netoffload-box-"):]
    out = subprocess.run(["ip", "netns", "list"], stdout=subprocess.PIPE,
                         universal_newlines=True, timeout=20).stdout
    return [line.split()[0] for line in out.splitlines()
            if line.startswith(prefix)]


def _spawn_box():
    pexpect = pytest.importorskip("pexpect")
    child = pexpect.spawn("make", ["-s", "box", "BOX_ARGS=--hosts 2"], cwd=ROOT,
                          encoding="utf-8", timeout=120, dimensions=(50, 200),
                          env=dict(os.environ, TERM="dumb"))
    child.expect(PROMPT)
    assert child.match.group(1) == "host1"
    return pexpect, child


def _run(child, line, timeout=60):
    child.sendline(line)
    child.expect(PROMPT, timeout=timeout)
    return child.before.replace("\r\n", "\n").split("\n", 1)[-1]


@pytest.mark.root
def test_make_box_session_runs_the_readme_commands_and_cleans_up():
    pexpect, child = _spawn_box()
    try:
        workdir = _run(child, "echo $BOX_DIR").strip().splitlines()[-1]
        assert workdir.startswith("/tmp/netoffload-box-")
        assert _box_namespaces(workdir)
        out = _run(child, "netoffload status --pool")
        assert "host host1" in out and "host host2" in out
        assert _run(child, "netoffload policy get").strip().endswith(
            "no policy is set: netoffload changes nothing")
        out = _run(child, "netoffload policy set pool vif tx-off --yes")
        assert "(none set) -> tx-off" in out
        # host switching: the prompt and the CLI follow
        child.sendline("host2")
        child.expect(PROMPT)
        assert child.match.group(1) == "host2"
        out = _run(child, "netoffload status vm='db 01 (prod)'")
        assert "vif3.0" in out and "explicit" in out
        out = _run(child, "xe vm-list name-label=archive params=power-state "
                   "--minimal")
        assert out.strip().endswith("halted")
        # a VM started with xe gets devices; udev's add brings them in policy
        _run(child, "xe vm-start vm=archive on=host2")
        deadline = time.time() + 30
        while time.time() < deadline:
            out = _run(child, "netoffload status vm=archive")
            if "tx-off" in out and " ok" in out:
                break
            time.sleep(1)
        assert re.search(r"vif\d+\.0 +vif +archive +tx-off +pool +ok", out), out
        log = _run(child, "journalctl -t netoffload -n 50")
        assert "udev add vif" in log and "(archive)" in log
        assert "watch:" in log
        master = _run(child, "xe pool-list params=master --minimal").strip()
        out = _run(child, "xe host-call-plugin host-uuid=%s plugin=netoffload "
                   "fn=version" % master.splitlines()[-1])
        assert '"api": 1' in out
        out = _run(child, "netoffload report", timeout=90)
        assert "archive" in out and "tx-off" in out
        out = _run(child, "netoffload revert ALL --pool --yes", timeout=90)
        assert "done: " in out
        child.sendline("exit")
        child.expect(pexpect.EOF, timeout=120)
    finally:
        child.close(force=True)
    assert child.exitstatus == 0
    assert _box_namespaces(workdir) == []
    assert not os.path.exists(workdir)
    assert poolbox.processes_with_env(workdir.encode()) == []


@pytest.mark.root
def test_a_killed_box_is_cleaned_up_by_make_box():
    pexpect, child = _spawn_box()
    try:
        workdir = _run(child, "echo $BOX_DIR").strip().splitlines()[-1]
        pid = int(re.search(r"netoffload-box-(\d+)-", workdir).group(1))
        os.kill(pid, signal.SIGKILL)  # the box's python, not the shell
        child.expect(pexpect.EOF, timeout=120)
    finally:
        child.close(force=True)
    assert _box_namespaces(workdir) == []
    assert not os.path.exists(workdir)
    assert poolbox.processes_with_env(workdir.encode()) == []


@pytest.mark.root
def test_make_s_demo_json_is_only_json_and_its_story_fits_100_columns():
    done = subprocess.run(["make", "-s", "demo", "DEMO_ARGS=--json --hosts 2"],
                          cwd=ROOT, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, universal_newlines=True,
                          timeout=300)
    record = json.loads(done.stdout)  # nothing else on stdout
    assert record["ok"] is True, record["verdict"]
    assert done.returncode == 0
    wide = [line for line in done.stderr.splitlines() if len(line) > 100]
    assert wide == []
    # the CLI's own output inside the record too
    for step in record["steps"]:
        for command in step["commands"]:
            if "--json" in command["argv"]:
                continue
            assert max([len(line) for line in command["stdout"].splitlines()]
                       or [0]) <= 100, command["argv"]
            assert "None" not in command["stdout"], command["argv"]
            assert "summary: {" not in command["stdout"], command["argv"]
