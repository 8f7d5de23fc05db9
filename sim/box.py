"""The pool in a box to play with: ``make box`` (``python -m sim.box``).

It builds the demo's pool (sim.demo.VM_SPECS: 3 hosts as network
namespaces, the XAPI simulator, real vif/tap devices), starts the watcher
on every host and opens an interactive shell whose prompt names the host
it acts as. In that shell:

- ``netoffload ...`` runs the real CLI in the current host's dom0 (its
  namespace, inventory, state directory and XAPI socket);
- ``xe ...`` is the stand-in of sim/xe.py (list, param-list/get/set/remove,
  vm-start, vm-shutdown, vif-create, host-call-plugin);
- ``host1``, ``host2``, ``host3`` (or ``use HOST``) switch hosts;
- ``ethtool``, ``ip`` and ``dom0 CMD...`` run in the current host's dom0;
- ``journalctl -t netoffload [-f] [-n N]`` shows the host's syslog lines
  (watcher, udev helper, plugin), which go to a per-host syslog socket
  (NETOFFLOAD_SYSLOG_SOCKET) that this process writes to
  ``<host>/journal.log``.

A VM started with ``xe vm-start`` gets its vif (and tap, for HVM) devices
on its host, with kernel defaults, and udev's `add` is replayed for each,
as on a real host; ``xe vm-shutdown`` removes them.

``exit`` or Ctrl-D closes the box: every namespace, process and file goes.
Killed instead (even with SIGKILL), the next box, or
``python -m sim.box --cleanup`` (which `make box` runs after the shell),
removes what it left.
"""
import argparse
import collections
import datetime
import os
import shlex
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
import time

from sim import poolbox
from sim.demo import PIF_OTHER_CONFIG, VM_SPECS

REPO_ROOT = poolbox.REPO_ROOT
PRIORITIES = ("emerg", "alert", "crit", "err", "warning", "notice", "info",
              "debug")


# -- syslog: one socket per host -------------------------------------------------

def format_syslog(data, pid, host, now=None):
    """A syslog datagram ("<PRI>tag: text") as one journal line."""
    text = data.decode("utf-8", "replace").rstrip("\x00\n")
    priority = "info"
    if text.startswith("<") and ">" in text[:5]:
        code, _, text = text[1:].partition(">")
        if code.isdigit():
            priority = PRIORITIES[int(code) % 8]
    tag, sep, message = text.partition(": ")
    if not sep or " " in tag:
        tag, message = "netoffload", text
    stamp = (now or datetime.datetime.now()).strftime("%b %d %H:%M:%S")
    return "%s %s %s[%s]: %s%s" % (
        stamp, host, tag, pid if pid else "?",
        "" if priority in ("info", "notice") else priority.upper() + " ",
        message)


class SyslogReceiver(object):
    """A unix datagram socket that appends what arrives to a journal file,
    with the sender's pid (SO_PASSCRED)."""

    def __init__(self, path, journal, host):
        self.path = path
        self.journal = journal
        self.host = host
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        self.sock.bind(path)
        os.chmod(path, 0o666)
        self.sock.settimeout(0.5)
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()

    def _loop(self):
        size = struct.calcsize("3i")
        while not self.stopped.is_set():
            try:
                data, ancillary, _, _ = self.sock.recvmsg(
                    8192, socket.CMSG_SPACE(size))
            except socket.timeout:
                continue
            except OSError:
                return
            pid = None
            for level, kind, payload in ancillary:
                if level == socket.SOL_SOCKET and \
                        kind == socket.SCM_CREDENTIALS:
                    pid = struct.unpack("3i", payload[:size])[0]
            with open(self.journal, "a") as handle:
                handle.write(format_syslog(data, pid, self.host) + "\n")

    def stop(self):
        self.stopped.set()
        self.sock.close()


# -- the hypervisor: devices follow VM.start / VM.shutdown -----------------------

GuestSpec = collections.namedtuple("GuestSpec", "name domid nics hvm")


def running_guests(snapshot, host_ref, network_refs):
    """{domid: GuestSpec} of the VMs the database says run on host_ref."""
    result = {}
    for rec in snapshot.get("VM", {}).values():
        if rec.get("is_a_template") or rec.get("is_control_domain") or \
                rec.get("power_state") != "Running" or \
                rec.get("resident_on") != host_ref:
            continue
        domid = int(rec.get("domid", -1))
        if domid <= 0:
            continue
        nics = []
        for vif in rec.get("VIFs") or []:
            vif_rec = snapshot.get("VIF", {}).get(vif)
            if not vif_rec:
                continue
            net = vif_rec.get("network")
            nics.append((int(vif_rec.get("device", 0)),
                         network_refs.index(net) if net in network_refs else 0))
        result[domid] = GuestSpec(rec.get("name_label", ""), domid,
                                  sorted(nics), bool(rec.get("HVM_boot_policy")))
    return result


class Hypervisor(object):
    """Plugs and unplugs the backend devices of VMs as their power state
    changes in the database (xe vm-start / vm-shutdown), and replays udev's
    `add` for each new device."""

    def __init__(self, box, interval=0.3):
        self.box = box
        self.interval = interval
        self.stopped = threading.Event()
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self._loop, daemon=True)

    def start(self):
        self.thread.start()

    def stop(self):
        self.stopped.set()
        self.thread.join(10)

    def _loop(self):
        while not self.stopped.wait(self.interval):
            try:
                self.sync()
            except Exception as err:  # the box stays usable; say why
                self._note("box: device sync failed: %s" % err)

    def _note(self, line):
        with open(os.path.join(self.box.workdir, "box.log"), "a") as handle:
            handle.write(line + "\n")

    def sync(self):
        with self.lock:
            box = self.box
            snapshot = box.sim.snapshot_db()
            for rec in snapshot.get("VM", {}).values():
                box.vm_uuids.setdefault(rec.get("name_label"), rec.get("uuid"))
            for host in box.hosts:
                wanted = running_guests(snapshot, host.ref, box.network_refs)
                for domid, guest in list(host.guests.items()):
                    spec = wanted.get(domid)
                    if spec is None or spec.name != guest.vm_name:
                        self._unplug(host, guest)
                for domid, spec in sorted(wanted.items()):
                    if domid not in host.guests:
                        self._plug(host, spec)

    def _plug(self, host, spec):
        box = self.box
        box._guest_count = getattr(box, "_guest_count", 0) + 1
        guest = poolbox.Guest(spec.name, spec.domid,
                              [(d, min(n, 1)) for d, n in spec.nics],
                              spec.hvm, box._guest_count)
        host.plug_guest(guest)
        for dev in guest.devices():
            record = box.udev_add(host, dev)
            self._note("box: %s %s: udev add -> %s (exit %s)" % (
                host.name, dev, record.get("run"), record.get("rc")))

    def _unplug(self, host, guest):
        for dev in guest.devices():
            host.ns.ip("link", "del", dev, check=False)
        if guest.ns is not None:
            guest.ns.delete()
            guest.ns = None
        del host.guests[guest.domid]
        host.write_xenstore()
        self._note("box: %s: %s (domain %d) stopped, its devices removed" % (
            host.name, guest.vm_name, guest.domid))


# -- the shell ----------------------------------------------------------------------

def _script(path, text):
    with open(path, "w") as handle:
        handle.write(text)
    os.chmod(path, 0o755)


def dom0_env(box, host):
    """What netoffload needs to act as this host's dom0 (no user env)."""
    env = dict(box.sim.host_env(host.ref))
    for key in ("HOME", "LANG", "LC_ALL"):
        env.pop(key, None)
    return env


def write_shell_files(box, bindir, python):
    """The wrappers, per-host env files and the shell's rc file."""
    os.makedirs(bindir)
    real_ip = shutil.which("ip") or "/usr/sbin/ip"
    real_ethtool = shutil.which("ethtool") or "/usr/sbin/ethtool"
    for host in box.hosts:
        lines = ["BOX_NS=%s" % shlex.quote(host.ns_name)]
        for key, value in sorted(dom0_env(box, host).items()):
            lines.append("export %s=%s" % (key, shlex.quote(value)))
        with open(os.path.join(host.dir, "dom0.env"), "w") as handle:
            handle.write("\n".join(lines) + "\n")
    prelude = ("#!/bin/sh\n"
               "# generated by sim/box.py: run in the current host's dom0\n"
               ". \"$BOX_DIR/$BOX_HOST/dom0.env\" || exit 1\n")
    _script(os.path.join(bindir, "netoffload"), prelude +
            "exec %s netns exec \"$BOX_NS\" %s -m netoffload \"$@\"\n"
            % (real_ip, shlex.quote(python)))
    _script(os.path.join(bindir, "dom0"), prelude +
            "exec %s netns exec \"$BOX_NS\" \"$@\"\n" % real_ip)
    _script(os.path.join(bindir, "ethtool"), prelude +
            "exec %s netns exec \"$BOX_NS\" %s \"$@\"\n" % (real_ip,
                                                         real_ethtool))
    _script(os.path.join(bindir, "ip"), prelude +
            "exec %s netns exec \"$BOX_NS\" %s \"$@\"\n" % (real_ip, real_ip))
    _script(os.path.join(bindir, "xe"),
            "#!/bin/sh\n# generated by sim/box.py: the xe stand-in\n"
            "XE_SIM_SOCKET=\"$BOX_DIR/xapi.sock\" PYTHONPATH=%s exec %s -m "
            "sim.xe \"$@\"\n" % (shlex.quote(REPO_ROOT), shlex.quote(python)))
    _script(os.path.join(bindir, "journalctl"),
            "#!/bin/sh\n# generated by sim/box.py: journalctl -t netoffload\n"
            "PYTHONPATH=%s exec %s -m sim.box journal \"$@\"\n" % (
                shlex.quote(REPO_ROOT), shlex.quote(python)))
    rc = os.path.join(box.workdir, "boxrc")
    hosts = " ".join(h.name for h in box.hosts)
    with open(rc, "w") as handle:
        handle.write("""# the pool in a box's shell (sim/box.py)
export PATH=%(bindir)s:$PATH
export BOX_DIR=%(workdir)s BOX_HOST=%(master)s
use() {
    case " %(hosts)s " in
        *" $1 "*) BOX_HOST=$1; export BOX_HOST ;;
        *) echo "use: no host '$1' in this box (%(hosts)s)" >&2; return 1 ;;
    esac
}
%(functions)s
PS1='[root@$BOX_HOST dom0]# '
HISTFILE=%(workdir)s/history
echo "Type 'exit' or Ctrl-D to close the box (everything it made is removed)."
""" % {"bindir": bindir, "workdir": box.workdir, "master": box.master.name,
       "hosts": hosts, "functions": "\n".join(
           "%s() { use %s; }" % (h.name, h.name) for h in box.hosts)})
    return rc


def banner(box):
    lines = ["", "netoffload: the pool in a box (%d hosts)" % len(box.hosts),
             "  host   VM                domid  type"]
    for host in box.hosts:
        for domid in sorted(host.guests):
            guest = host.guests[domid]
            lines.append("  %-6s %-17s %-6d %s" % (
                host.name, guest.vm_name, domid, "HVM" if guest.hvm else "PV"))
    lines += ["  archive is halted. The watcher runs on every host.", "",
              "  netoffload status --pool     netoffload policy get",
              "  xe vm-list                   xe vif-param-list uuid=...",
              "  host2 (or: use host2)        switch to another host's dom0",
              "  journalctl -t netoffload     the host's log (watcher, udev, "
              "plugin)",
              "  ethtool -k eth0 | dom0 CMD   in this host's dom0", ""]
    return "\n".join(lines)


def run_shell(box, python=sys.executable, shell_argv=None):
    """Open the shell; returns its exit status when it ends."""
    bindir = os.path.join(box.workdir, "bin")
    rc = write_shell_files(box, bindir, python)
    env = dict(os.environ, BOX_DIR=box.workdir, BOX_HOST=box.master.name)
    env.pop("PROMPT_COMMAND", None)
    argv = shell_argv or ["bash", "--noprofile", "--rcfile", rc, "-i"]
    sys.stdout.write(banner(box) + "\n")
    sys.stdout.flush()
    shell = subprocess.Popen(argv, env=env, cwd=REPO_ROOT)
    box.processes.append(shell)  # close() stops it if we are stopped first
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        return shell.wait()
    finally:
        signal.signal(signal.SIGINT, previous)


# -- the box ---------------------------------------------------------------------------

class PlayBox(object):
    """A PoolBox with syslog receivers, watchers and device sync."""

    def __init__(self, hosts=3):
        self.box = poolbox.PoolBox(hosts=hosts, vm_specs=VM_SPECS,
                                   pif_other_config=PIF_OTHER_CONFIG)
        self.receivers = []
        self.hypervisor = None

    def start(self):
        box = self.box
        box.start()
        for host in box.hosts:
            sock = os.path.join(host.dir, "log.sock")
            self.receivers.append(SyslogReceiver(
                sock, os.path.join(host.dir, "journal.log"), host.name))
            env = box._host_env_extra(host)
            env["NETOFFLOAD_SYSLOG_SOCKET"] = sock
            box.sim.configure_host(host.ref, env=env)
        box.start_watchers()
        box.wait_watchers_ready()
        self.hypervisor = Hypervisor(box)
        self.hypervisor.start()
        return self

    def close(self):
        if self.hypervisor is not None:
            self.hypervisor.stop()
        self.box.close()
        for receiver in self.receivers:
            receiver.stop()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.close()


# -- journalctl stand-in ---------------------------------------------------------------

def journal(argv):
    """journalctl -t netoffload [-f] [-n N] [--no-pager] for $BOX_HOST."""
    parser = argparse.ArgumentParser(prog="journalctl")
    parser.add_argument("-t", "--identifier", default=None)
    parser.add_argument("-f", "--follow", action="store_true")
    parser.add_argument("-n", "--lines", type=int, default=None)
    parser.add_argument("--no-pager", action="store_true")
    parser.add_argument("-u", "--unit", default=None)
    opts = parser.parse_args(argv)
    path = os.path.join(os.environ.get("BOX_DIR", ""),
                        os.environ.get("BOX_HOST", ""), "journal.log")
    if not os.path.exists(path):
        open(path, "a").close()
    wanted = opts.identifier or ("netoffload" if opts.unit else None)

    def keep(line):
        return wanted is None or " %s[" % wanted in line

    with open(path) as handle:
        lines = [line for line in handle if keep(line)]
        if opts.lines is not None:
            lines = lines[-opts.lines:] if opts.lines else []
        sys.stdout.write("".join(lines) or "-- No entries --\n")
        sys.stdout.flush()
        while opts.follow:
            line = handle.readline()
            if not line:
                time.sleep(0.2)
                continue
            if keep(line):
                sys.stdout.write(line)
                sys.stdout.flush()
    return 0


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["journal"]:
        try:
            return journal(argv[1:])
        except KeyboardInterrupt:
            return 0
    parser = argparse.ArgumentParser(
        prog="python -m sim.box",
        description="The pool in a box with a shell to play in (make box).")
    parser.add_argument("--hosts", type=int, choices=(2, 3), default=3)
    parser.add_argument("--cleanup", action="store_true",
                        help="only remove what killed boxes left behind")
    opts = parser.parse_args(argv)
    if opts.cleanup:
        removed = poolbox.cleanup_stale()
        if removed:
            sys.stderr.write("box: removed what a killed box left: %s\n"
                             % ", ".join(removed))
        return 0
    if os.geteuid() != 0:
        sys.stderr.write("box: needs root (network namespaces)\n")
        return 2
    sys.stderr.write("box: building the pool (about 5 s) ...\n")
    play = PlayBox(hosts=opts.hosts)
    try:
        play.start()
        status = run_shell(play.box)
        # `exit` passes on the last command's status: not the box's
        code = 0 if status >= 0 else 128 - status
    finally:
        sys.stderr.write("box: closing: removing every namespace, process "
                         "and file of the box\n")
        play.close()
    sys.stderr.write("box: closed\n")
    return code


if __name__ == "__main__":
    sys.exit(main())
