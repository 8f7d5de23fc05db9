"""The boot entry point against the XAPI simulator and real devices.

The simulator serves a unix socket (reachable from inside a network
namespace); `python -m netoffload.agents.boot` runs inside a netns holding this
host's devices, with the environment the simulator gives a host's helpers.
"""
import json
import os
import subprocess
import sys

import pytest

from netoffload.agents import cache
from netoffload.engine.ethtool import parse_features_text
from tests.support import layout
from tests.support.simpool import SimPool

pytestmark = pytest.mark.root

REPO = layout.REPO
SIM_BIN = os.path.join(REPO, "sim", "bin")
ALL_OFF = dict((f, "off") for f in ("rx", "tx", "sg", "tso", "ufo", "gso",
                                    "gro", "lro"))


class Host(object):
    """Host xs1 of a simulated pool, its devices in netns: eth0, the running
    VM web's vif and tap; a halted VM; pool policy vif all-off, pif tx-off."""

    def __init__(self, netns):
        self.ns = netns
        self.pool = SimPool()
        self.sim = self.pool.sim
        self.host = self.pool.add_host("xs1")
        net = self.sim.add_network("net0")
        self.sim.add_pif(self.host, net, "eth0")
        pool = self.sim.info()["pool"]
        self.sim.db.tables["pool"][pool]["other_config"].update(
            {"netoffload-vif": "all-off", "netoffload-pif": "tx-off"})
        self.web = self.sim.add_vm("web", power_state="Running",
                                   resident_on=self.host)
        self.sim.add_vif(self.web, net, 0)
        self.halted = self.sim.add_vm("halted")
        self.sim.add_vif(self.halted, net, 0)
        self.domid = int(self.sim.db.tables["VM"][self.web]["domid"])
        self.env = self.sim.host_env(self.host)
        self.state = self.env["NETOFFLOAD_STATE_DIR"]
        xenstore = os.path.join(self.pool.dir, "xenstore.json")
        with open(xenstore, "w") as handle:
            json.dump({"/local/domain/%d/vm" % self.domid:
                       "/vm/" + self.uuid(self.web)}, handle)
        self.env["NETOFFLOAD_SIM_XENSTORE"] = xenstore
        self.env["PATH"] = SIM_BIN + ":" + self.env["PATH"]
        self.vif = "vif%d.0" % self.domid
        self.tap = "tap%d.0" % self.domid
        netns.add_veth("eth0", "peer0")
        netns.add_veth(self.vif, "guest0")
        netns.add_tap(self.tap)

    def uuid(self, vm):
        return self.sim.db.tables["VM"][vm]["uuid"]

    def boot(self, *args):
        return self.ns.run([sys.executable, "-m", "netoffload.agents.boot"] + list(args),
                           env=self.env, check=False, timeout=60)

    def features(self, device):
        return parse_features_text(self.ns.ethtool_k(device), device).as_onoff()

    def compliant(self, device, wanted):
        live = self.features(device)
        return all(live[f] == v for f, v in wanted.items() if f in live)

    def close(self):
        self.pool.close()


@pytest.fixture
def host(netns):
    h = Host(netns)
    try:
        yield h
    finally:
        h.close()


def test_boot_refreshes_the_cache_and_enforces_every_device(host):
    proc = host.boot()
    assert (proc.returncode, proc.stdout) == (0, ""), proc.stderr
    data = cache.load(host.state).data
    assert sorted(data["pifs"]) == ["eth0"]
    assert sorted(data["vifs"]) == sorted(
        [host.uuid(host.web) + "/0", host.uuid(host.halted) + "/0"])
    assert host.compliant("eth0", {"tx": "off"})
    assert host.compliant(host.vif, ALL_OFF)
    assert host.compliant(host.tap, ALL_OFF)
    assert not host.compliant("peer0", {"tx": "off"})  # not ours: untouched


def _seed_live_state(host, records):
    from netoffload.engine.livestate import STATE_FILE, atomic_write_json
    if not os.path.isdir(host.state):
        os.makedirs(host.state, 0o700)
    atomic_write_json(os.path.join(host.state, STATE_FILE),
                      {"version": 1, "devices": records})


@pytest.mark.parametrize("xapi_up", [True, False], ids=["xapi", "cache"])
def test_boot_forgets_records_of_departed_guest_devices(host, xapi_up):
    """No guest survives a dom0 boot and domids restart at 1: a record of a
    vif/tap that is not there would be taken for a new VM's past."""
    from netoffload.engine.livestate import LiveStateStore
    assert host.boot("--refresh-only").returncode == 0
    _seed_live_state(host, {
        "vif77.0": {"features": {"tx": "on"}, "owner": "x/0"},
        "tap77.0": {"features": {"sg": "on"}},
        "eth9": {"features": {"gro": "on"}}})  # a PIF may come back: kept
    if not xapi_up:
        host.sim.stop()
    proc = host.boot()
    assert proc.returncode == 0, proc.stderr
    recorded = LiveStateStore(host.state).recorded()
    assert "vif77.0" not in recorded and "tap77.0" not in recorded
    assert recorded["eth9"] == {"gro": "on"}
    assert host.vif in recorded  # enforced this boot: recorded afresh


@pytest.mark.parametrize("blocked", ["cache.json", "pif"])
def test_a_cache_path_taken_by_a_file_or_directory_still_lets_xapi_enforce(
        host, blocked):
    # cache.json a directory fails the write (OSError); a file named pif
    # fails making the PIF marker directory (statedir.ensure, DeviceError)
    path = os.path.join(host.state, blocked)
    if blocked == "pif":
        with open(path, "w"):
            pass
    else:
        os.makedirs(path)
    proc = host.boot()
    assert (proc.returncode, proc.stdout) == (1, ""), proc.stderr
    assert "Traceback" not in proc.stderr
    assert "cache not written" in proc.stderr
    assert host.compliant(host.vif, ALL_OFF)


def test_a_state_directory_that_is_not_one_fails_without_a_traceback(host):
    with open(os.path.join(os.path.dirname(host.state), "a-file"), "w"):
        pass
    host.env["NETOFFLOAD_STATE_DIR"] = os.path.join(
        os.path.dirname(host.state), "a-file", "state")
    proc = host.boot()
    assert (proc.returncode, proc.stdout) == (1, ""), proc.stderr
    assert "Traceback" not in proc.stderr


def test_refresh_only_writes_the_cache_and_touches_no_device(host):
    before = dict((d, host.ns.ethtool_k(d)) for d in ("eth0", host.vif, host.tap))
    proc = host.boot("--refresh-only")
    assert proc.returncode == 0, proc.stderr
    assert cache.load(host.state).pif("eth0")[0] == {"tx": "off"}
    assert before == dict((d, host.ns.ethtool_k(d)) for d in before)


def assert_enforced_from_the_cache(host, proc):
    assert "enforcing from the cache" in proc.stderr
    assert host.compliant("eth0", {"tx": "off"})
    assert host.compliant(host.vif, ALL_OFF)
    assert host.compliant(host.tap, ALL_OFF)


def test_without_xapi_boot_enforces_from_the_cache(host):
    assert host.boot("--refresh-only").returncode == 0
    host.sim.stop()
    proc = host.boot()
    assert proc.returncode == 0, proc.stderr
    assert_enforced_from_the_cache(host, proc)


def test_without_xapi_refresh_only_keeps_the_cache_and_succeeds(host):
    assert host.boot("--refresh-only").returncode == 0
    with open(cache.cache_path(host.state)) as handle:
        before = handle.read()
    host.sim.stop()
    proc = host.boot("--refresh-only")
    assert proc.returncode == 0
    assert "cache not refreshed" in proc.stderr
    with open(cache.cache_path(host.state)) as handle:
        assert handle.read() == before


def test_without_xapi_or_cache_boot_fails_and_changes_nothing(host):
    host.sim.stop()
    before = host.ns.ethtool_k(host.tap)
    proc = host.boot()
    assert proc.returncode == 1
    assert "nothing enforced" in proc.stderr
    assert host.ns.ethtool_k(host.tap) == before


def _fail_after_login(host, how):
    """xapi accepts the login, then fails the snapshot: still starting
    (HOST_STILL_BOOTING on every call), or going away (stopped mid-call)."""
    import threading

    from sim.xapi_sim import failure
    handle = host.sim.handle

    def flaky(method, params, via_host=None):
        if method.startswith("session.") or method.startswith("sim."):
            return handle(method, params, via_host)
        if how == "stopped" and method.endswith(".get_all_records"):
            stopper = threading.Thread(target=host.sim.stop)
            stopper.start()
            stopper.join(10)
        elif how == "still-booting":
            return failure(["HOST_STILL_BOOTING", "xapi is still starting"])
        return handle(method, params, via_host)
    host.sim.handle = flaky


@pytest.mark.parametrize("how", ["still-booting", "stopped"])
def test_xapi_failing_after_login_boot_enforces_from_the_cache(host, how):
    assert host.boot("--refresh-only").returncode == 0
    _fail_after_login(host, how)
    proc = host.boot()
    assert proc.returncode == 0, proc.stderr
    assert_enforced_from_the_cache(host, proc)


@pytest.mark.parametrize("how", ["still-booting", "stopped"])
def test_xapi_failing_after_login_refresh_only_keeps_the_cache(host, how):
    assert host.boot("--refresh-only").returncode == 0
    with open(cache.cache_path(host.state)) as handle:
        before = handle.read()
    _fail_after_login(host, how)
    proc = host.boot("--refresh-only")
    assert proc.returncode == 0, proc.stderr
    assert "cache not refreshed" in proc.stderr
    with open(cache.cache_path(host.state)) as handle:
        assert handle.read() == before


def test_boot_does_not_load_the_udev_helper():
    """Boot shares the cached enforcement (agents.cached) with the udev
    helper, not the helper's entry point (its signal and exit handling)."""
    code = ("import json, sys; import netoffload.agents.boot; "
            "sys.stdout.write(json.dumps(sorted(sys.modules)))")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO,
                          stdout=subprocess.PIPE, universal_newlines=True,
                          check=True, timeout=60)
    loaded = json.loads(proc.stdout)
    assert "netoffload.agents.cached" in loaded
    assert "netoffload.agents.udev" not in loaded


def test_one_xenstore_read_serves_every_domain(tmp_path, monkeypatch, mocker):
    """cached.vm_uuids_of_domains: one process for all domains; a domain
    the batch cannot read is looked up alone, and only it fails."""
    # (a missing domain costs one process more, not one per domain)
    from netoffload import runner
    from netoffload.agents import cached
    from netoffload.errors import NotFound
    from tests.support.dom0 import SIM_BIN
    store = tmp_path / "xenstore.json"
    uuids = dict((d, "%08x-0000-4000-8000-000000000000" % d) for d in (1, 2, 5))
    store.write_text(json.dumps(dict(
        ("/local/domain/%d/vm" % d, "/vm/" + u) for d, u in uuids.items())))
    monkeypatch.setenv("NETOFFLOAD_SIM_XENSTORE", str(store))
    monkeypatch.setenv("PATH", SIM_BIN + ":" + os.environ["PATH"])
    # processes: the batches through run, a domain alone through run_small
    run = mocker.spy(runner, "run")
    run_small = mocker.spy(runner, "run_small")
    assert cached.vm_uuids_of_domains([5, 1, 2, 1]) == uuids
    assert (run.call_count, run_small.call_count) == (1, 0)
    found = cached.vm_uuids_of_domains([1, 3, 5])
    assert (found[1], found[5]) == (uuids[1], uuids[5])
    assert isinstance(found[3], NotFound)
    # the batch stops at domain 3: it alone, then the batch goes on
    assert (run.call_count, run_small.call_count) == (1 + 2, 1)
