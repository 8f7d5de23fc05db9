"""A XenServer pool in a box: simulated hosts as network namespaces.

Each simulated host is a network namespace holding what dom0 would hold:

* ``eth0``, ``eth1``: the "physical NICs", veth pairs whose other ends sit in
  one shared "switch" namespace (bridges ``sw0``/``sw1``), so hosts reach each
  other the way they would through a top-of-rack switch;
* ``xenbr0``/``xenbr1``: the network bridges, as xapi names them, carrying the
  management address (``10.77.0.<host>``) and the guests' devices;
* ``bond0``: the bond PIF. This kernel cannot create bond links
  (``ip link add bond0 type bond`` fails, it is checked at start), so the bond
  is represented by an empty bridge named ``bond0``, which has ethtool features
  the same way; the narrative says so;
* for each running VM, ``vif<domid>.<devid>`` (a veth whose peer ``eth<devid>``
  sits in a per-VM "guest" namespace with an address, so traffic is real) and,
  for HVM guests, ``tap<domid>.<devid>`` (a tap device, as qemu's emulated NIC).

The XAPI side is the project's simulator (``sim.xapi_sim.XapiSim``) holding
the pool, hosts, networks, PIFs, VMs and VIFs; ``host.call_plugin`` runs the
real plugin inside the host's namespace with that host's environment.

Everything has unique names (``nobox<pid>-<token>...``, the token random per
box), so demos and tests can run at the same time, even in one process.
``PoolBox.close()`` removes every namespace,
stops every process it started and deletes its work directory; it runs from
``finally``, at exit and on SIGTERM/SIGHUP (turned into SystemExit), even
after a failure. A reboot of a host deletes and recreates its devices with
kernel defaults.
"""
import atexit
import binascii
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time

from sim.xapi_sim import XO6_VIF_OTHER_CONFIG

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SIM_BIN = os.path.join(REPO_ROOT, "sim", "bin")
SIM_PYLIB = os.path.join(REPO_ROOT, "sim", "pylib")
PLUGIN_DIR = os.path.join(REPO_ROOT, "plugins")
UDEV_DIR = os.path.join(REPO_ROOT, "udev")

NS_PREFIX = "nobox"
MAX_HOSTS = 64  # XenServer's pool size limit
WORKDIR_PREFIX = "netoffload-box-"
MGMT_NET = "10.77.%d.%d"   # (network index, host or guest number)


class BoxError(Exception):
    """The box could not be built or driven."""


def _run(argv, check=True, timeout=30, env=None, input_text=None):
    proc = subprocess.run(
        argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        universal_newlines=True, timeout=timeout, env=env, input=input_text)
    if check and proc.returncode != 0:
        raise BoxError("%s failed (%d): %s" % (
            " ".join(argv), proc.returncode, proc.stderr.strip()))
    return proc


def kernel_can_create(kind):
    """True if this kernel can create a link of this kind (checked in a ns)."""
    ns = Namespace("%s%d-probe%s%s" % (NS_PREFIX, os.getpid(), kind,
                                      binascii.hexlify(os.urandom(4)).decode()))
    try:
        ns.ip("link", "add", "probe0", "type", kind, check=False)
        return ns.ip("link", "show", "probe0", check=False).returncode == 0
    finally:
        ns.delete()


def _pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _box_pid(name, prefix):
    """The pid embedded after prefix in a box's name, or None."""
    digits = ""
    for ch in name[len(prefix):]:
        if not ch.isdigit():
            break
        digits += ch
    return int(digits) if name.startswith(prefix) and digits else None


def processes_with_env(marker):
    """Pids whose environment contains marker (bytes)."""
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == os.getpid():
            continue
        try:
            with open("/proc/%s/environ" % name, "rb") as f:
                if marker in f.read():
                    found.append(int(name))
        except OSError:
            continue
    return found


def cleanup_stale():
    """Remove what boxes whose process died (kill -9) left behind: their
    namespaces, their processes (watchers carry the box's work directory in
    their environment) and work directories."""
    removed = []
    proc = _run(["ip", "netns", "list"], check=False)
    for line in proc.stdout.splitlines():
        name = line.split()[0] if line.split() else ""
        pid = _box_pid(name, NS_PREFIX)
        if pid is not None and not _pid_alive(pid):
            _run(["ip", "netns", "del", name], check=False)
            removed.append(name)
    for name in os.listdir("/tmp"):
        pid = _box_pid(name, WORKDIR_PREFIX)
        if pid is None or _pid_alive(pid):
            continue
        marker = ("/tmp/%s" % name).encode()
        for stale in processes_with_env(marker):
            try:
                os.kill(stale, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            removed.append("pid %d" % stale)
        shutil.rmtree(os.path.join("/tmp", name), ignore_errors=True)
        removed.append("/tmp/%s" % name)
    return removed


class Namespace(object):
    """One network namespace; every command in it runs via `ip netns exec`."""

    def __init__(self, name):
        self.name = name
        _run(["ip", "netns", "add", name])
        self.ip("link", "set", "lo", "up")

    def run(self, argv, check=True, timeout=30, env=None, input_text=None):
        return _run(["ip", "netns", "exec", self.name] + list(argv),
                    check=check, timeout=timeout, env=env,
                    input_text=input_text)

    def popen(self, argv, env=None, **kw):
        return subprocess.Popen(["ip", "netns", "exec", self.name] + list(argv),
                                env=env, **kw)

    def ip(self, *args, **kw):
        return self.run(["ip"] + list(args), **kw)

    def links(self):
        out = self.ip("-j", "link", "show").stdout
        return sorted(link["ifname"] for link in json.loads(out or "[]")
                      if link["ifname"] != "lo")

    def ethtool_k(self, dev):
        return self.run(["ethtool", "-k", dev],
                        env=dict(os.environ, LC_ALL="C")).stdout

    def delete(self):
        _run(["ip", "netns", "del", self.name], check=False)


class Guest(object):
    """A running VM's devices: vif (and tap for HVM) in a host namespace."""

    def __init__(self, vm_name, domid, nics, hvm, number):
        self.vm_name = vm_name
        self.domid = domid
        self.nics = nics          # [(devid, network index)]
        self.hvm = hvm
        self.number = number      # unique in the box: the guest's address
        self.ns = None

    def devices(self):
        names = []
        for devid, _net in self.nics:
            names.append("vif%d.%d" % (self.domid, devid))
            if self.hvm:
                names.append("tap%d.%d" % (self.domid, devid))
        return names


class SimHost(object):
    """One simulated host: a namespace, its files and its environment."""

    def __init__(self, box, index):
        self.box = box
        self.index = index             # 1-based
        self.name = "host%d" % index
        self.ns_name = "%sh%d" % (box.prefix, index)
        self.ns = None
        self.dir = os.path.join(box.workdir, self.name)
        self.xenstore_file = os.path.join(self.dir, "xenstore.json")
        self.uuid = None               # filled by PoolBox._populate
        self.ref = None
        self.guests = {}               # domid -> Guest
        self.watcher = None            # subprocess.Popen
        self.watcher_log = os.path.join(self.dir, "watch.log")
        os.makedirs(self.dir, mode=0o700)

    @property
    def address(self):
        return MGMT_NET % (0, self.index)

    def env(self):
        """What dom0 tools of this host see: the same inventory, state
        directory and XAPI socket the simulator gives its plugin runs."""
        env = dict(os.environ)
        env.update(self.box.sim.host_env(self.ref))
        env["LC_ALL"] = "C"
        env.pop("NETOFFLOAD_XAPI_URL", None)
        return env

    @property
    def state_dir(self):
        return self.box.sim.host_env(self.ref)["NETOFFLOAD_STATE_DIR"]

    def write_xenstore(self):
        """The xenstore paths the udev helper reads, for the running guests."""
        data = {}
        for guest in self.guests.values():
            vm_uuid = self.box.vm_uuids.get(guest.vm_name)
            if vm_uuid:
                data["/local/domain/%d/vm" % guest.domid] = "/vm/%s" % vm_uuid
                data["/local/domain/%d/name" % guest.domid] = guest.vm_name
        tmp = self.xenstore_file + ".tmp"
        with open(tmp, "w") as f:
            json.dump(data, f, indent=1, sort_keys=True)
        os.rename(tmp, self.xenstore_file)

    # -- devices ---------------------------------------------------------
    def build_devices(self):
        """Create the namespace and the host's NICs with kernel defaults."""
        box = self.box
        self.ns = Namespace(self.ns_name)
        for nic, net in (("eth0", 0), ("eth1", 1)):
            peer = "h%d%s" % (self.index, nic)
            self.ns.ip("link", "add", nic, "type", "veth", "peer", "name",
                       peer, "netns", box.switch.name)
            box.switch.ip("link", "set", peer, "master", "sw%d" % net)
            box.switch.ip("link", "set", peer, "up")
            bridge = "xenbr%d" % net
            self.ns.ip("link", "add", bridge, "type", "bridge")
            self.ns.ip("link", "set", nic, "master", bridge)
            self.ns.ip("link", "set", nic, "up")
            self.ns.ip("link", "set", bridge, "up")
            self.ns.ip("addr", "add", "%s/24" % (MGMT_NET % (net, self.index)),
                       "dev", bridge)
        # The bond PIF: a bridge stand-in (no bond driver in this kernel).
        kind = "bond" if box.bond_supported else "bridge"
        self.ns.ip("link", "add", "bond0", "type", kind)
        self.ns.ip("link", "set", "bond0", "up")
        for guest in sorted(self.guests.values(), key=lambda g: g.domid):
            self.plug_guest(guest)

    def plug_guest(self, guest):
        """Create a running guest's vif/tap devices (kernel defaults)."""
        guest.ns = Namespace("%sh%dd%d" % (self.box.prefix, self.index,
                                           guest.domid))
        for devid, net in guest.nics:
            vif = "vif%d.%d" % (guest.domid, devid)
            self.ns.ip("link", "add", vif, "type", "veth", "peer", "name",
                       "eth%d" % devid, "netns", guest.ns.name)
            self.ns.ip("link", "set", vif, "master", "xenbr%d" % net)
            self.ns.ip("link", "set", vif, "up")
            guest.ns.ip("addr", "add", "%s/24" % self.box.guest_address(
                self, guest, devid, net), "dev", "eth%d" % devid)
            guest.ns.ip("link", "set", "eth%d" % devid, "up")
            if guest.hvm:
                tap = "tap%d.%d" % (guest.domid, devid)
                self.ns.ip("tuntap", "add", "dev", tap, "mode", "tap")
                self.ns.ip("link", "set", tap, "master", "xenbr%d" % net)
                self.ns.ip("link", "set", tap, "up")
        self.guests[guest.domid] = guest
        self.write_xenstore()

    def destroy_devices(self):
        # Delete the links first: that removes their peers (switch ports,
        # guest ends) at once, whereas a namespace is torn down
        # asynchronously by the kernel and its names would linger.
        if self.ns is not None:
            for dev in self.ns.links():
                self.ns.ip("link", "del", dev, check=False)
        for guest in self.guests.values():
            if guest.ns is not None:
                guest.ns.delete()
                guest.ns = None
        if self.ns is not None:
            self.ns.delete()
            self.ns = None

    def pif_devices(self):
        return ["eth0", "eth1", "bond0"]

    def devices(self):
        """Every device the pack may touch here: PIFs, vifs and taps."""
        names = self.pif_devices()
        for domid in sorted(self.guests):
            names.extend(self.guests[domid].devices())
        return names

    def features_text(self):
        """`ethtool -k` text of every device here (the revert baseline)."""
        return dict((dev, self.ns.ethtool_k(dev)) for dev in self.devices())

    # -- running the project's code as this host's dom0 ------------------
    def run(self, argv, check=False, timeout=60, input_text=None, env=None):
        full_env = self.env()
        if env:
            full_env.update(env)
        return self.ns.run(argv, check=check, timeout=timeout, env=full_env,
                           input_text=input_text)

    def python(self, module_args, **kw):
        return self.run([sys.executable, "-m"] + list(module_args), **kw)

    def cli(self, *args, **kw):
        """The `netoffload` command, as an admin would run it in this dom0."""
        return self.python(["netoffload"] + list(args), **kw)

    def start_watcher(self):
        if self.watcher is not None and self.watcher.poll() is None:
            return
        log = open(self.watcher_log, "a")
        try:
            self.watcher = self.ns.popen(
                [sys.executable, "-m", "netoffload.agents.watch"], env=self.env(),
                stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                start_new_session=True)
        finally:
            log.close()
        self.box.processes.append(self.watcher)

    def stop_watcher(self):
        if self.watcher is not None:
            _stop_process(self.watcher)
            self.watcher = None


def _stop_process(proc, grace=5.0):
    """SIGTERM, then SIGKILL; the process group too (ip netns exec child)."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except (ProcessLookupError, PermissionError):
        proc.terminate()
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            proc.kill()
        proc.wait(timeout=grace)


_LIVE_BOXES = []
_HANDLERS_INSTALLED = []


def _close_all_boxes():
    for box in list(_LIVE_BOXES):
        box.close()


def _exit_on_signal(signum, _frame):
    # SystemExit unwinds through every `finally`, which closes the boxes.
    raise SystemExit(128 + signum)


def _install_cleanup_handlers():
    if _HANDLERS_INSTALLED:
        return
    atexit.register(_close_all_boxes)
    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGTERM, signal.SIGHUP):
            if signal.getsignal(signum) in (signal.SIG_DFL, None):
                signal.signal(signum, _exit_on_signal)
    _HANDLERS_INSTALLED.append(True)


# A small TCP sender/receiver pair for real traffic through a vif.
_TRAFFIC_SERVER = r"""
import socket, sys, time
srv = socket.socket(); srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind((sys.argv[1], int(sys.argv[2]))); srv.listen(8)
srv.settimeout(float(sys.argv[3]))
end = time.time() + float(sys.argv[3])
try:
    while time.time() < end:
        conn, _ = srv.accept(); conn.settimeout(2)
        try:
            while True:
                data = conn.recv(65536)
                if not data:
                    break
                conn.sendall(data[:64])
        except OSError:
            pass
        conn.close()
except OSError:
    pass
"""
_TRAFFIC_CLIENT = r"""
import socket, sys, time
end = time.time() + float(sys.argv[3])
payload = b"x" * 16384
while time.time() < end:
    try:
        c = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=2)
        for _ in range(20):
            c.sendall(payload); c.recv(64)
        c.close()
    except OSError:
        time.sleep(0.1)
"""
TRAFFIC_PORT = 5201


class PoolBox(object):
    """The simulated pool: XAPI simulator + host and guest namespaces.

    vm_specs: objects with name, host (1-based index, None = halted), domid,
    nics (devids; devid n sits on network n), hvm, tags, other_config,
    vif_other_config ({devid: map}). pif_other_config: {(host index,
    device): map} of keys someone else keeps on PIFs. xo6: every VIF is
    created as Xen Orchestra 6 creates VIFs, with other_config
    {"ethtool-tx": "true"} (a spec's vif_other_config still wins).
    """

    def __init__(self, hosts=3, vm_specs=(), pif_other_config=None,
                 xo6=False):
        if hosts < 2 or hosts > MAX_HOSTS:
            raise BoxError("a box has 2 to %d hosts" % MAX_HOSTS)
        self.n_hosts = hosts
        self.xo6 = bool(xo6)
        self.vm_specs = list(vm_specs)
        self.pif_other_config = dict(pif_other_config or {})
        self.workdir = None
        self.prefix = None         # of every namespace name: nobox<pid>-<token>
        self.socket_path = None
        self.switch = None
        self.hosts = []
        self.processes = []
        self.sim = None
        self.vm_uuids = {}         # name -> uuid
        self.vm_refs = {}          # name -> ref
        self.vif_uuids = {}        # (vm name, devid) -> uuid
        self.pif_uuids = {}        # (host name, device) -> uuid
        self.network_refs = []     # by network index
        self.bond_supported = False
        self._session = None
        self._closed = False
        self._rules = None

    # -- life cycle ------------------------------------------------------
    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.close()

    def start(self):
        _install_cleanup_handlers()
        _LIVE_BOXES.append(self)
        cleanup_stale()
        token = binascii.hexlify(os.urandom(4)).decode()
        # No "_" anywhere: XenAPI's unix-socket transport maps "_" to "/".
        self.workdir = "/tmp/%s%d-%s" % (WORKDIR_PREFIX, os.getpid(), token)
        self.prefix = "%s%d-%s" % (NS_PREFIX, os.getpid(), token)
        os.mkdir(self.workdir, 0o700)
        self.socket_path = os.path.join(self.workdir, "xapi.sock")
        self.bond_supported = kernel_can_create("bond")
        self.switch = Namespace("%ssw" % self.prefix)
        for net in (0, 1):
            self.switch.ip("link", "add", "sw%d" % net, "type", "bridge")
            self.switch.ip("link", "set", "sw%d" % net, "up")
        self.hosts = [SimHost(self, i + 1) for i in range(self.n_hosts)]
        self._start_sim()
        self._populate()
        for host in self.hosts:
            for spec in self.vm_specs:
                if self.host_index(spec) == host.index:
                    host.guests[spec.domid] = self._new_guest(
                        spec, spec.domid)
            host.build_devices()

    def close(self):
        """Stop every process, delete every namespace and file. Idempotent."""
        if self._closed:
            return
        self._closed = True
        for host in self.hosts:
            try:
                host.stop_watcher()
            except Exception:  # keep cleaning whatever happens
                pass
        for proc in self.processes:
            try:
                _stop_process(proc, grace=2.0)
            except Exception:
                pass
        if self._session is not None:
            try:
                self._session.xenapi.session.logout()
            except Exception:
                pass
        if self.sim is not None:
            try:
                self.sim.stop()
            except Exception:
                pass
        for host in self.hosts:
            host.destroy_devices()
        if self.switch is not None:
            self.switch.delete()
        if self.workdir and os.path.isdir(self.workdir):
            shutil.rmtree(self.workdir, ignore_errors=True)
        if self in _LIVE_BOXES:
            _LIVE_BOXES.remove(self)

    def namespaces(self):
        """Names of every namespace this box holds right now."""
        out = _run(["ip", "netns", "list"], check=False).stdout
        return [line.split()[0] for line in out.splitlines()
                if line.split() and line.split()[0].startswith(self.prefix)]

    # -- lookups -----------------------------------------------------------
    @property
    def master(self):
        return self.hosts[0]

    def host(self, name):
        for host in self.hosts:
            if host.name == name:
                return host
        raise KeyError(name)

    def host_index(self, spec):
        if spec.host is None:
            return None
        return min(spec.host, self.n_hosts)

    def host_of(self, vm_name):
        for host in self.hosts:
            for guest in host.guests.values():
                if guest.vm_name == vm_name:
                    return host
        return None

    def guest(self, vm_name):
        host = self.host_of(vm_name)
        if host is None:
            return None
        for guest in host.guests.values():
            if guest.vm_name == vm_name:
                return guest
        return None

    def guest_address(self, host, guest, devid, net):
        return MGMT_NET % (net, 100 + guest.number)

    def vif_uuid(self, vm_name, devid):
        return self.vif_uuids[(vm_name, devid)]

    def pif_uuid(self, host, device):
        return self.pif_uuids[(host.name, device)]

    def _new_guest(self, spec, domid):
        self._guest_count = getattr(self, "_guest_count", 0) + 1
        return Guest(spec.name, domid, [(d, d) for d in spec.nics], spec.hvm,
                     self._guest_count)

    # -- the XAPI side -------------------------------------------------------
    def _start_sim(self):
        from sim.xapi_sim import XapiSim
        self.sim = XapiSim(socket_path=self.socket_path, port=None,
                           plugin_dir=PLUGIN_DIR,
                           state_root=os.path.join(self.workdir, "xapi"))
        self.sim.start()

    def _host_env_extra(self, host):
        bin_dir = os.path.dirname(os.path.abspath(sys.executable))
        return {
            "NETOFFLOAD_SIM_XENSTORE": host.xenstore_file,
            # the xenstore-read stand-in first, then what dom0 has
            "PATH": ":".join([SIM_BIN, bin_dir, "/usr/local/sbin",
                              "/usr/local/bin", "/usr/sbin", "/usr/bin",
                              "/sbin", "/bin"]),
        }

    def _populate(self):
        sim = self.sim
        self.network_refs = [
            sim.add_network("Pool-wide network associated with eth%d" % net,
                            bridge="xenbr%d" % net) for net in (0, 1)]
        bond_net = sim.add_network("Bond 0 (storage)", bridge="xapi1")
        for host in self.hosts:
            host.ref = sim.add_host(host.name, address=host.address,
                                    netns=host.ns_name)
            # the plugin finds the store at its dom0 path; helpers run by
            # hand (SimHost.env) get the environment
            sim.configure_host(host.ref, env=self._host_env_extra(host),
                               xenstore=host.xenstore_file)
            host.uuid = sim.snapshot_db()["host"][host.ref]["uuid"]
            for net, device in ((0, "eth0"), (1, "eth1"), (None, "bond0")):
                pif = sim.add_pif(
                    host.ref, self.network_refs[net] if net is not None
                    else bond_net, device, management=(device == "eth0"),
                    physical=(device != "bond0"),
                    other_config=self.pif_other_config.get(
                        (host.index, device)))
                self.pif_uuids[(host.name, device)] = \
                    sim.snapshot_db()["PIF"][pif]["uuid"]
            host.write_xenstore()
        for spec in self.vm_specs:
            index = self.host_index(spec)
            host = self.hosts[index - 1] if index else None
            vm = sim.add_vm(spec.name, tags=spec.tags,
                            other_config=spec.other_config)
            self._record_vm(spec, vm)
            for devid in spec.nics:
                vif = sim.add_vif(vm, self.network_refs[devid], devid,
                                  other_config=dict(
                                      spec.vif_other_config.get(devid, {})),
                                  xo6=self.xo6)
                self.vif_uuids[(spec.name, devid)] = \
                    sim.snapshot_db()["VIF"][vif]["uuid"]
            if host is not None:
                sim.start_vm(vm, host.ref, spec.domid)
        self.sim.set_master(self.hosts[0].ref)

    def _record_vm(self, spec, vm):
        self.vm_refs[spec.name] = vm
        self.vm_uuids[spec.name] = self.sim.snapshot_db()["VM"][vm]["uuid"]

    def session(self):
        """A XenAPI client session to the simulator (the demo's own)."""
        if self._session is None:
            import XenAPI
            session = XenAPI.Session(
                "http://" + self.socket_path.replace("/", "_") + "/",
                transport=XenAPI.UDSTransport())
            session.login_with_password("root", "", "1.0", "netoffload-demo")
            self._session = session
        return self._session

    def db_other_config(self):
        """{(class, uuid): other_config} of every object, from the sim DB."""
        snap = self.sim.snapshot_db()
        out = {}
        for cls in ("pool", "host", "network", "PIF", "VM", "VIF"):
            for rec in snap.get(cls, {}).values():
                out[(cls, rec["uuid"])] = dict(rec["other_config"])
        return out

    def pool_other_config(self):
        snap = self.sim.snapshot_db()
        return dict(list(snap["pool"].values())[0]["other_config"])

    def live_features(self):
        """{host: {device: `ethtool -k` text}} for every device we own."""
        return dict((host.name, host.features_text()) for host in self.hosts)

    def create_vm(self, spec):
        """A new VM and its VIFs, through the XenAPI client as a tool would."""
        x = self.session().xenapi
        vm = x.VM.create({"name_label": spec.name, "tags": list(spec.tags),
                          "other_config": dict(spec.other_config),
                          "HVM_boot_policy": "BIOS order" if spec.hvm else ""})
        self._record_vm(spec, vm)
        for devid in spec.nics:
            other_config = dict(XO6_VIF_OTHER_CONFIG) if self.xo6 else {}
            other_config.update(spec.vif_other_config.get(devid, {}))
            vif = x.VIF.create({
                "device": str(devid), "network": self.network_refs[devid],
                "VM": vm, "MAC": "", "MTU": "1500",
                "other_config": other_config,
                "qos_algorithm_type": "", "qos_algorithm_params": {}})
            self.vif_uuids[(spec.name, devid)] = x.VIF.get_uuid(vif)
        self.vm_specs.append(spec)
        return vm

    def start_vm(self, spec, host, plug=True):
        """VM.start_on through XenAPI; the devices appear with plug_vm()."""
        x = self.session().xenapi
        vm = self.vm_refs[spec.name]
        x.VM.start_on(vm, host.ref, False, False)
        domid = int(x.VM.get_domid(vm))
        self._pending = getattr(self, "_pending", {})
        self._pending[spec.name] = domid
        if plug:
            return self.plug_vm(spec, host)
        return domid

    def plug_vm(self, spec, host):
        """The running VM's backend devices appear in the host (defaults)."""
        domid = self._pending.pop(spec.name)
        guest = self._new_guest(spec, domid)
        host.plug_guest(guest)
        return guest

    def _poll(self, predicate, timeout, interval=0.05):
        end = time.time() + timeout
        while True:
            value = predicate()
            if value or time.time() >= end:
                return value
            time.sleep(interval)

    def wait_vif_keys(self, vif_uuid, wanted, timeout=15):
        """Wait until the VIF's other-config holds `wanted`; the keys or None."""
        def got():
            oc = self.db_other_config().get(("VIF", vif_uuid), {})
            sub = dict((k, oc.get(k)) for k in wanted)
            return sub if sub == wanted else None
        return self._poll(got, timeout)

    def _read_cache(self, host):
        try:
            with open(os.path.join(host.state_dir, "cache.json")) as f:
                return json.load(f)
        except (OSError, ValueError):
            return None

    def wait_cached(self, host, vm_uuid, timeout=15):
        def got():
            data = self._read_cache(host) or {}
            return any(key.split("/")[0] == vm_uuid
                       for key in data.get("vifs", {}))
        return self._poll(got, timeout)

    # -- the watchers -----------------------------------------------------
    def _event_from_calls(self):
        return self.sim.call_counts().get("event.from", 0)

    def start_watchers(self):
        self._event_from_before = self._event_from_calls()
        for host in self.hosts:
            host.start_watcher()

    def watchers_not_ready(self):
        """Hosts whose watcher is not running, or has not yet both written
        its cache and gone back to waiting on event.from after the full sync
        (nothing else here calls event.from: two calls per watcher)."""
        waiting = self._event_from_calls() - getattr(
            self, "_event_from_before", 0) >= 2 * len(self.hosts)
        return [h.name for h in self.hosts
                if h.watcher is None or h.watcher.poll() is not None or
                self._read_cache(h) is None or not waiting]

    def wait_watchers_ready(self, timeout=20):
        return self._poll(lambda: not self.watchers_not_ready(), timeout)

    # -- udev ------------------------------------------------------------
    def rules(self):
        """{file name: text} of the pack's udev rules, as installed."""
        if self._rules is None:
            names = [n for n in sorted(os.listdir(UDEV_DIR))
                     if n.endswith(".rules")]
            if not names:
                raise BoxError("no udev rules in %s" % UDEV_DIR)
            self._rules = {}
            for name in names:
                with open(os.path.join(UDEV_DIR, name)) as handle:
                    self._rules[name] = handle.read()
        return self._rules

    def udev_add(self, host, dev):
        """Resolve the rules for an `add` of dev with `udevadm test` in the
        host's namespace (a private mount namespace holds the rules; see
        sim/udevtest.py), then run our RUN program with udev's environment.
        Returns a record of what was matched and run."""
        from sim import udevtest
        proc = udevtest.udevadm_test(host.ns.name, dev, self.rules(),
                                     timeout=30)
        props, runs = parse_udevadm_test(proc.stdout + "\n" + proc.stderr)
        ours = []
        for command in runs:
            if command.startswith("/usr/libexec/netoffload/") and \
                    command not in ours:
                ours.append(command)
        record = {"device": dev, "matched": bool(ours), "run": None,
                  "rc": None, "env": dict((k, props.get(k)) for k in
                                          ("ACTION", "INTERFACE", "SUBSYSTEM",
                                           "DEVPATH"))}
        if not ours:
            record["detail"] = "udevadm test found no netoffload RUN " \
                               "(exit %d)" % proc.returncode
            return record
        import shlex
        argv = shlex.split(ours[0])
        record["run"] = ours[0]
        # The installed wrapper is netoffload.agents.udev:main over the same package.
        if os.path.basename(argv[0]) == "netoffload-udev":
            argv = [sys.executable, "-m", "netoffload.agents.udev"] + argv[1:]
        env = dict(props)
        result = host.run(argv, env=env, timeout=30)
        record["rc"] = result.returncode
        record["stderr"] = result.stderr
        record["log"] = result.stderr.strip().splitlines()[-1] \
            if result.stderr.strip() else ""
        return record

    # -- reboot ------------------------------------------------------------
    def reboot_devices(self, host):
        """The host goes down and comes back: processes gone, every device
        recreated with kernel defaults; the state directory (disk) stays."""
        host.stop_watcher()
        self.sim.set_host_live(host.ref, False)
        host.destroy_devices()
        host.build_devices()

    def finish_reboot(self, host):
        self.sim.set_host_live(host.ref, True)
        host.start_watcher()

    # -- plugin calls and traffic -----------------------------------------
    def call_plugin(self, host, fn, args):
        """host.call_plugin as `xe host-call-plugin` makes it:
        (parsed JSON result, None) or (None, error description)."""
        import XenAPI
        try:
            text = self.session().xenapi.host.call_plugin(
                host.ref, "netoffload", fn, args)
        except XenAPI.Failure as failure:
            return None, failure.details
        try:
            return json.loads(text), None
        except ValueError:
            return None, ["NOT_JSON", text[:300]]

    def traffic(self, host, vm_name, seconds=5):
        """TCP traffic between a guest and its host for `seconds`."""
        box = self
        guest = self.guest(vm_name)

        class _Traffic(object):
            def __enter__(self):
                server = host.ns.popen(
                    [sys.executable, "-c", _TRAFFIC_SERVER, host.address,
                     str(TRAFFIC_PORT), str(seconds + 2)],
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                    start_new_session=True)
                box.processes.append(server)
                time.sleep(0.3)
                client = guest.ns.popen(
                    [sys.executable, "-c", _TRAFFIC_CLIENT, host.address,
                     str(TRAFFIC_PORT), str(seconds)],
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                    start_new_session=True)
                box.processes.append(client)
                self.procs = [client, server]
                return self

            def __exit__(self, *exc):
                for proc in self.procs:
                    _stop_process(proc, grace=2.0)

        return _Traffic()

    def admin(self, line, host=None, input_text=None):
        """Run one documented admin command line against the box, as in
        that host's dom0 (default: the master): `netoffload ...` runs the
        real CLI; `xe host-call-plugin host-uuid=U plugin=P fn=F args:k=v
        ...` calls host.call_plugin like xe and prints the result string as
        xe does (a host-uuid that is not a host of the box, such as a
        `$MASTER` placeholder, means `host`). Line continuations ("\\\n")
        and shell quoting are honoured; nothing runs through a shell.
        Returns (exit status, stdout, stderr)."""
        import shlex
        host = host or self.master
        argv = shlex.split(line.replace("\\\n", " "))
        if argv and argv[0] == "netoffload":
            proc = host.cli(*argv[1:], input_text=input_text, timeout=120)
            return proc.returncode, proc.stdout, proc.stderr
        if argv[:2] != ["xe", "host-call-plugin"]:
            raise BoxError("not a netoffload or xe host-call-plugin command: "
                           "%s" % line)
        params, args = {}, {}
        for word in argv[2:]:
            key, sep, value = word.partition("=")
            if not sep:
                return 1, "", "Syntax error: %s\n" % word
            if key.startswith("args:"):
                args[key[len("args:"):]] = value
            else:
                params[key] = value
        target = host
        for candidate in self.hosts:
            if candidate.uuid == params.get("host-uuid"):
                target = candidate
        import XenAPI
        try:
            text = self.session().xenapi.host.call_plugin(
                target.ref, params.get("plugin", ""), params.get("fn", ""),
                args)
        except XenAPI.Failure as failure:
            details = [str(d) for d in failure.details]
            return 1, "", "The server failed to handle your request.\n" \
                "%s\n" % "\n".join(details)
        return 0, text + "\n", ""

    def print_access(self, narrator):
        narrator.say("")
        narrator.say("  The box is up. To act as a host's dom0:")
        for host in self.hosts:
            env = host.env()
            narrator.say("    ip netns exec %s env NETOFFLOAD_XAPI_SOCKET=%s "
                         "NETOFFLOAD_INVENTORY=%s NETOFFLOAD_STATE_DIR=%s "
                         "PYTHONPATH=%s %s -m netoffload status" % (
                             host.ns_name, env["NETOFFLOAD_XAPI_SOCKET"],
                             env["NETOFFLOAD_INVENTORY"],
                             env["NETOFFLOAD_STATE_DIR"], env["PYTHONPATH"],
                             sys.executable))


def parse_udevadm_test(text):
    """(properties, run commands) from `udevadm test` output.

    The properties are the KEY=value lines of the event environment; the
    commands are the `run: '<command>'` lines, in order."""
    props = {}
    runs = []
    prop_line = re.compile(r"^([A-Z][A-Z0-9_]*)=(.*)$")
    run_line = re.compile(r"^run: '(.*)'$")
    for line in text.splitlines():
        match = run_line.match(line)
        if match:
            runs.append(match.group(1))
            continue
        match = prop_line.match(line)
        if match:
            props[match.group(1)] = match.group(2)
    return props, runs
