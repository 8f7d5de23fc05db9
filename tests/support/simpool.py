"""The one way tests and benchmarks stand up a simulated pool.

`SimPool` is the XAPI simulator (sim/xapi_sim.py) in a private work
directory with a unique name (and no '_': XenAPI's unix transport maps it
to '/'), plus what a test drives it with:

* in-process (`sim`: the XapiSim object, its database at hand), or
  `process=True`: `python -m sim.xapi_sim` on a JSON database, which a test
  can SIGKILL and start again like a crashed xapi (keep_db=False: in
  memory only, as a benchmark wants); `admin` (the simulator's `sim.*` API)
  works in both;
* hosts: `add_host(name, netns=True)` gives a host its own network
  namespace (`ns[name]`), where host.call_plugin runs the plugin and where
  the test makes its dom0-named devices; `hosts[name]` is its ref;
* a logged-in XenAPI `session` (`api` = session.xenapi), re-opened after a
  restart, and `call(fn, host, **args)` for the plugin's parsed result;
* watchers (`watch(host, netns)`, with the pool's `watch_options`),
  stopped by `close()`.

`close()` stops every process, deletes every namespace it made and the work
directory. Fixed layouts used by several test packages are functions here
(`dom0_pool`); a layout one test module needs stays in that module.

`PoolBox` (sim/poolbox.py) is the bigger sibling for end-to-end stories:
several hosts wired through a switch namespace, guests with traffic.
"""
import copy
import json
import os
import shutil
import signal
import subprocess
import sys

import XenAPI

from sim.xapi_sim import XO6_VIF_OTHER_CONFIG, SimClient, XapiSim, socket_dir
from tests.support import layout
from tests.support.netns import NetNS

# The watcher tests' watcher: short event.from waits, fast cache writes,
# quick reconnects.
WATCHER_EVENT_TIMEOUT = 5.0
WATCHER_TEST_OPTIONS = ("--event-timeout", str(WATCHER_EVENT_TIMEOUT),
                        "--cache-debounce", "0.2", "--backoff-max", "1")
SHORT_NAMES = {"rx-checksumming": "rx", "tx-checksumming": "tx",
               "scatter-gather": "sg", "tcp-segmentation-offload": "tso",
               "generic-segmentation-offload": "gso",
               "generic-receive-offload": "gro",
               "large-receive-offload": "lro"}


class SimPool(object):
    def __init__(self, process=False, keep_db=True, watch_options=(),
                 **sim_options):
        """sim_options: XapiSim's own (port, plugin_dir, latency_ms, ...),
        for the in-process simulator only."""
        if process and sim_options:
            raise ValueError("the simulator process takes no %s"
                             % ", ".join(sorted(sim_options)))
        self.dir = socket_dir("nosim")
        self.socket_path = os.path.join(self.dir, "xapi.sock")
        self.keep_db = keep_db
        self.proc = None
        self.sim = None
        self.hosts = {}         # name -> host ref
        self.ns = {}            # name -> NetNS this pool made
        self.watch_options = list(watch_options)
        self.watchers = []
        self._session = None
        try:
            if process:
                self.start()
            else:
                self.sim = XapiSim(socket_path=self.socket_path,
                                   state_root=os.path.join(self.dir, "hosts"),
                                   **sim_options)
                self.sim.start()
        except Exception:
            self.close()
            raise
        self.admin = SimClient(socket_path=self.socket_path)

    # -- the simulator process (process=True) -----------------------------------
    def start(self):
        """Start the simulator process (again, on the same database)."""
        db = ["--db", os.path.join(self.dir, "db.json")] if self.keep_db else []
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "sim.xapi_sim", "--socket", self.socket_path,
             "--state-root", os.path.join(self.dir, "hosts")] + db,
            cwd=layout.REPO, stdout=subprocess.PIPE, universal_newlines=True)
        json.loads(self.proc.stdout.readline())  # up and listening
        self._session = None

    def kill(self):
        """SIGKILL the simulator process, like a crashed xapi."""
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)
        self._session = None

    # -- building ------------------------------------------------------------------
    def add_host(self, name, netns=None, **options):
        """A host whose plugin calls run in a network namespace: netns=True
        makes a fresh one (ns[name], deleted by close()), a name uses that
        namespace, None runs them here."""
        if netns is True:
            self.ns[name] = NetNS("sp")
            netns = self.ns[name].name
        if netns:
            options["netns"] = netns
        if self.sim is not None:
            ref = self.sim.add_host(name, **options)
        else:
            ref = self.admin.add_host(name_label=name, **options)
        self.hosts[name] = ref
        return ref

    def set_pool_policy(self, key, value):
        """Set (or with None remove) a pool other-config key through XAPI,
        in one call. Replacing a value by remove-then-add would show a
        watcher a moment with no key, a real change it may act on. (Only
        the test writes the pool's map, so set_other_config races nobody.)"""
        pool = self.pool_ref
        config = self.api.pool.get_other_config(pool)
        if value is None:
            self.api.pool.remove_from_other_config(pool, key)
        elif key in config:
            config[key] = value
            self.api.pool.set_other_config(pool, config)
        else:
            self.api.pool.add_to_other_config(pool, key, value)

    def create_vif(self, vm, network, device, other_config=None, xo6=False):
        """VIF.create through XAPI. xo6=True: as Xen Orchestra 6 creates
        every VIF, with other_config {"ethtool-tx": "true"} (plus
        other_config's own keys)."""
        config = dict(XO6_VIF_OTHER_CONFIG) if xo6 else {}
        config.update(other_config or {})
        return self.api.VIF.create({
            "device": str(device), "network": network, "VM": vm, "MAC": "",
            "MTU": "1500", "other_config": config,
            "qos_algorithm_type": "", "qos_algorithm_params": {}})

    def add_vlan(self, tagged_pif, tag, network):
        """VLAN.create through XAPI; returns (VLAN ref, VLAN PIF ref). The
        VLAN PIF carries the tagged PIF's device name and VLAN = tag."""
        vlan = self.api.VLAN.create(tagged_pif, str(tag), network)
        return vlan, self.api.VLAN.get_untagged_PIF(vlan)

    def add_sriov(self, pif, network):
        """network_sriov.create through XAPI; returns (network_sriov ref,
        logical PIF ref). VIFs on `network` have no dom0 device."""
        sriov = self.api.network_sriov.create(pif, network)
        return sriov, self.api.network_sriov.get_logical_PIF(sriov)

    # -- calling -------------------------------------------------------------------
    @property
    def session(self):
        if self._session is None:
            session = XenAPI.Session(
                "http://%s/" % self.socket_path.replace("/", "_"),
                transport=XenAPI.UDSTransport())
            session.login_with_password("root", "", "1.0", "tests")
            self._session = session
        return self._session

    @property
    def api(self):
        return self.session.xenapi

    @property
    def pool_ref(self):
        return self.api.pool.get_all()[0]

    def call(self, fn, host="h1", **args):
        """host.call_plugin; returns the parsed JSON result."""
        text = self.api.host.call_plugin(self.hosts[host], "netoffload", fn,
                                         args)
        assert isinstance(text, str)
        return json.loads(text)

    def run_plugin(self, fn, host="h1", python3=None, dom0_files=None,
                   **args):
        """The netoffload plugin run on `host` exactly as host.call_plugin
        runs it (xapi's environment, the host's dom0 view), with this
        pool's session; the raw CompletedProcess (text). python3: the
        interpreter shown as dom0's /usr/bin/python3; dom0_files: more
        {dom0 path: path here, or None}."""
        from sim.xapi_sim import PLUGIN_ENV
        files = dict(dom0_files or {})
        if python3:
            files["/usr/bin/python3"] = python3
        argv = self.sim.plugin_command(self.hosts[host], "netoffload", fn,
                                       args, self.session._session, files)
        return subprocess.run(argv, stdin=subprocess.DEVNULL,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              env=dict(PLUGIN_ENV), cwd="/", timeout=120,
                              universal_newlines=True)

    def fail(self, fn, host="h1", **args):
        """host.call_plugin that must fail; returns the error description."""
        import pytest  # only here: benchmarks use this module without it
        with pytest.raises(XenAPI.Failure) as err:
            self.call(fn, host=host, **args)
        return err.value.details

    def watch(self, host, netns):
        """The watcher of host, running in netns; (process, state dir)."""
        env = dict(self.admin.host_env(host=host))
        env["PYTHONPATH"] = layout.REPO + ":" + env["PYTHONPATH"]
        proc = netns.popen([sys.executable, "-m", "netoffload.agents.watch"]
                           + self.watch_options, env=env,
                           stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, universal_newlines=True)
        self.watchers.append(proc)
        return proc, env["NETOFFLOAD_STATE_DIR"]

    # -- observing -----------------------------------------------------------------
    def vif_config(self, vif):
        return self.api.VIF.get_other_config(vif)

    def call_counts(self):
        source = self.sim if self.sim is not None else self.admin
        return source.call_counts()

    def write_calls(self):
        """{method: calls} of the other-config edits on VIFs and PIFs
        (failed ones included: a lost race's add counts too)."""
        counts = self.call_counts()
        return dict((m, n) for m, n in counts.items()
                    if m.endswith(("add_to_other_config",
                                   "remove_from_other_config"))
                    and m.startswith(("VIF.", "PIF.")))

    def writes(self):
        return sum(self.write_calls().values())

    def logins(self):
        return self.call_counts().get("session.login_with_password", 0)

    def snapshot_db(self):
        source = self.sim if self.sim is not None else self.admin
        return source.snapshot_db()

    def save_tables(self):
        """A copy of the in-process simulator's database (restore_tables
        puts it back: a crash test's fresh start for each kill point)."""
        with self.sim.db.lock:
            return copy.deepcopy(self.sim.db.tables)

    def restore_tables(self, tables):
        """The database as save_tables copied it; sessions stay live."""
        db = self.sim.db
        with db.lock:
            for cls, table in copy.deepcopy(tables).items():
                if cls != "session":
                    db.tables[cls] = table

    def other_configs(self):
        snap = self.snapshot_db()
        return dict(("%s/%s" % (cls, rec.get("uuid")),
                     dict(rec.get("other_config") or {}))
                    for cls, table in sorted(snap.items())
                    for rec in table.values() if "other_config" in rec)

    def db(self):
        return json.dumps(self.snapshot_db(), sort_keys=True)

    def features(self):
        """`ethtool -k` text of every device of every host namespace."""
        return dict(("%s/%s" % (name, dev), ns.ethtool_k(dev))
                    for name, ns in sorted(self.ns.items())
                    for dev in ns.links() if dev != "lo")

    def state(self):
        return self.db(), self.features()

    # -- ending --------------------------------------------------------------------
    def close(self):
        try:
            for proc in self.watchers:
                _stop(proc)
            if self.proc is not None:
                _stop(self.proc)
            if self.sim is not None:
                self.sim.close()
        finally:
            for ns in self.ns.values():
                ns.close()
            shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _stop(proc):
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def live(pool, host, dev):
    """The short offload features of dev in the pool's host namespace."""
    return live_features(pool.ns[host], dev)


def live_features(ns, dev):
    """{short feature: on|off} of dev in namespace ns, from `ethtool -k`."""
    out = ns.run(["ethtool", "-k", dev]).stdout
    result = {}
    for line in out.splitlines():
        key, sep, value = line.partition(":")
        if sep and key in SHORT_NAMES:
            result[SHORT_NAMES[key]] = value.split()[0]
    return result


def dom0_pool(hosts=2):
    """The plugin tests' pool, hosts as network namespaces with dom0-named
    devices:

    h1 (master): eth0 (veth, PIF with unrelated keys), VMs "web 01" (domid 5:
    vif5.0 veth + tap5.0 tap; its VIF has ethtool-tx=true set by someone
    else), "bsd" (tag bsd, domid 6: vif6.0), "halted" (no devices).
    h2: eth0 and VM "db" (domid 7: vif7.0). Also a template.
    """
    pool = SimPool()
    try:
        sim = pool.sim
        pool.lan = sim.add_network("LAN 1", other_config={"unrelated": "n"})
        for index in range(1, hosts + 1):
            name = "h%d" % index
            host = pool.add_host(name, netns=True)
            pool.ns[name].add_veth("eth0", "peer0")
            sim.add_pif(host, pool.lan, "eth0", other_config={
                "ethtool-autoneg": "off", "management-note": "keep me"})
        h1 = pool.hosts["h1"]
        pool.web = sim.add_vm("web 01", power_state="Running", resident_on=h1,
                              domid=5)
        pool.web_vif = sim.add_vif(pool.web, pool.lan, 0,
                                   other_config={"ethtool-tx": "true"})
        pool.ns["h1"].add_veth("vif5.0", "guest5")
        pool.ns["h1"].add_tap("tap5.0")
        pool.bsd = sim.add_vm("bsd", tags=["bsd"], power_state="Running",
                              resident_on=h1, domid=6)
        pool.bsd_vif = sim.add_vif(pool.bsd, pool.lan, 0)
        pool.ns["h1"].add_veth("vif6.0", "guest6")
        pool.halted = sim.add_vm("halted")
        pool.halted_vif = sim.add_vif(pool.halted, pool.lan, 0)
        if "h2" in pool.hosts:
            pool.db_vm = sim.add_vm("db", power_state="Running",
                                    resident_on=pool.hosts["h2"], domid=7)
            sim.add_vif(pool.db_vm, pool.lan, 0)
            pool.ns["h2"].add_veth("vif7.0", "guest7")
        sim.add_vm("a template", is_a_template=True)
    except Exception:
        pool.close()
        raise
    return pool
