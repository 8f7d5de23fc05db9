"""The pool in a box, narrated: ``python -m sim.demo [--json] [--hosts N] [--keep]``.

Builds a simulated pool (see sim/poolbox.py) and runs the product's real code
paths against it, one step at a time:

1. ``netoffload status --pool`` before anything is set;
2. ``policy set`` at pool level (tx-off for VIFs), tag level (all-off for VMs
   tagged pfsense) and host level (gro=off on host2's PIFs), then
   ``apply ALL --pool``: the plan first, then the confirmed run;
3. the automatic part: the watcher (``python -m netoffload.agents.watch``) on every
   host; a new VM is created and started, the watcher writes its VIF keys,
   its vif/tap devices appear and the udev helper, run as udev would run it,
   brings them into policy;
4. a VM created as Xen Orchestra 6 creates VMs (its VIF stamped
   ``ethtool-tx=true``) and tagged pfsense: the tag policy applies over the
   stamp, which is saved;
5. drift: ``ethtool -K vif1.0 tx on`` by hand; the watcher puts it back
   and logs it to the host's journal;
6. a host reboot (devices recreated with kernel defaults) and the boot unit
   (``python -m netoffload.agents.boot``) restoring policy;
7. ``check_checksums`` on a vif carrying traffic, and ``doctor``;
8. ``revert ALL --pool``: every other-config map and every device's
   ``ethtool -k`` back to exactly where they started (XO's stamp too).

Each step checks what it did against an independent oracle: the expectations
written by hand in VM_SPECS, the simulator's database read through the XenAPI
client, and ``ethtool -k`` read in the host's namespace. The narrative ends
with ``VERDICT: PASS`` or ``VERDICT: FAIL``; the exit status is 0 only on
PASS. ``--json`` prints a machine-readable record of every step instead (the
narrative then goes to stderr).

The end-to-end test (tests/sim/test_poolbox_demo.py) runs these same step
functions with assertions, so the demo and the test cannot drift apart.
"""
import argparse
import collections
import json
import os
import re
import sys
import textwrap
import time

from netoffload.pool.keys import KEY_LEASE, OP_PREFIX, read_book
from sim import poolbox
from sim.xapi_sim import XO6_VIF_OTHER_CONFIG

# -- the scenario's pool, and what the policy must make of it ---------------

POOL_POLICY_VIF = "tx-off"
TAG = "pfsense"
TAG_POLICY = "all-off"
PIF_POLICY_HOST = 2            # host index whose PIFs get HOST_PIF_POLICY
HOST_PIF_POLICY = "gro=off"

ALL_FEATURES = ("rx", "tx", "sg", "tso", "ufo", "gso", "gro", "lro")
VIF_DB_FEATURES = ("rx", "tx", "sg", "tso", "ufo", "gso")

VMSpec = collections.namedtuple(
    "VMSpec", "name host domid nics hvm tags other_config vif_other_config "
              "expect")
# expect: what the policies above must make of this VM's VIFs
#   "tx-off"   pool level: ethtool-tx=off in the DB, tx off live
#   "all-off"  tag level: the six xapi keys off in the DB, all eight off live
#   "explicit" an ethtool-tx=false someone set by hand (XO 5's "TX
#              checksumming" off) is a decision: it wins, the key is kept,
#              and the live device is left to xapi (tx on until replugged)
#   "none"     the VM opts out (VM policy none, VM_POLICIES): untouched
VM_SPECS = (
    VMSpec("web01", 1, 1, (0,), False, (), {}, {}, "tx-off"),
    VMSpec("pfsense-fw", 1, 2, (0, 1), True, (TAG,), {}, {}, "all-off"),
    VMSpec("db 01 (prod)", 2, 3, (0,), False, (), {},
           {0: {"ethtool-tx": "false"}}, "explicit"),
    VMSpec("opnsense-lab", 3, 4, (1,), True, ("lab", TAG), {}, {},
           "all-off"),
    VMSpec("legacy appliance", 3, 5, (0,), False, (), {}, {}, "none"),
    VMSpec("archive", None, None, (0,), False, (), {}, {}, "tx-off"),
)
NEW_VM = VMSpec("new-app", 2, 6, (0,), True, (), {}, {}, "tx-off")
# A VM created as Xen Orchestra 6 creates VMs: every VIF stamped
# ethtool-tx=true (its form's default). Tagged pfsense: the tag policy
# applies over the stamp, which is saved so that revert puts it back.
XO_VM = VMSpec("fw-xo", 3, 7, (0,), False, (TAG,), {},
               {0: dict(XO6_VIF_OTHER_CONFIG)}, "all-off")
# The drift step: an admin turns tx back on by hand on web01's vif; the
# watcher (ethtool netlink notifications) must put it back within this.
DRIFT_VM = "web01"
DRIFT_FEATURES = {"tx": "on"}
DRIFT_BOUND = 10.0

# VM-level policies set in step 2 (a name with a space, through the CLI).
VM_POLICIES = (("legacy appliance", "none"),)

# Extra keys someone else keeps on PIFs: revert must leave them alone.
PIF_OTHER_CONFIG = {(1, "eth1"): {"management_purpose": "storage"}}

# A VIF's wished features, live, per expectation.
LIVE_EXPECT = {
    "tx-off": {"tx": "off"},
    "all-off": dict((f, "off") for f in ALL_FEATURES),
    "explicit": {"tx": "on"},
    "none": {},
}
DB_EXPECT = {
    "tx-off": {"ethtool-tx": "off"},
    "all-off": dict(("ethtool-%s" % f, "off") for f in VIF_DB_FEATURES),
    "explicit": {"ethtool-tx": "false"},
    "none": {},
}

# -- reading `ethtool -k` independently of the engine -----------------------

_HEADINGS = {
    "rx-checksumming": "rx", "tx-checksumming": "tx", "scatter-gather": "sg",
    "tcp-segmentation-offload": "tso", "udp-fragmentation-offload": "ufo",
    "generic-segmentation-offload": "gso", "generic-receive-offload": "gro",
    "large-receive-offload": "lro",
}
_FEATURE_LINE = re.compile(
    r"^(?P<name>[a-z0-9-]+): (?P<value>on|off)(?P<note> \[[a-z ]+\])?$")

LiveFeature = collections.namedtuple("LiveFeature", "value fixed")


def parse_ethtool_k(text):
    """{short: LiveFeature} for the eight group headings `ethtool -k` prints."""
    found = {}
    for line in text.splitlines():
        match = _FEATURE_LINE.match(line)
        if match and match.group("name") in _HEADINGS:
            found[_HEADINGS[match.group("name")]] = LiveFeature(
                match.group("value"), match.group("note") == " [fixed]")
    return found


def live_mismatches(text, wanted):
    """Features in `wanted` that are changeable here and differ live."""
    live = parse_ethtool_k(text)
    bad = {}
    for feature, value in sorted(wanted.items()):
        state = live.get(feature)
        if state is None or state.fixed:
            continue       # absent (ufo) or fixed by the driver: cannot differ
        if state.value != value:
            bad[feature] = state.value
    return bad


# -- recording what happened --------------------------------------------------

class Step(object):
    """One step's record: the commands it ran, its checks, its data."""

    def __init__(self, key, title):
        self.key = key
        self.title = title
        self.commands = []
        self.checks = []
        self.data = {}
        self.seconds = 0.0
        self.error = None

    def check(self, what, ok, detail=""):
        self.checks.append({"what": what, "ok": bool(ok), "detail": detail})
        return bool(ok)

    @property
    def ok(self):
        return self.error is None and all(c["ok"] for c in self.checks)

    def failures(self):
        out = ["%s: %s" % (c["what"], c["detail"]) for c in self.checks
               if not c["ok"]]
        if self.error:
            out.append("error: %s" % self.error)
        return out

    def to_json(self):
        return {"key": self.key, "title": self.title, "ok": self.ok,
                "seconds": round(self.seconds, 3), "commands": self.commands,
                "checks": self.checks, "data": self.data,
                "error": self.error}


WIDTH = 100


def fit(line, width=WIDTH):
    """A narrative line wrapped at `width` columns, continuation lines
    indented under it (the CLI's own lines are 100 columns at most; the
    story indents them, so its long lines are wrapped here)."""
    if len(line) <= width:
        return line
    lead = " " * (len(line) - len(line.lstrip(" ")))
    return "\n".join(textwrap.wrap(
        line.strip(" "), width, initial_indent=lead,
        subsequent_indent=lead + "    ", break_long_words=True,
        break_on_hyphens=False))


class Narrator(object):
    """Prints the story; quiet (or on stderr) when a JSON record is wanted."""

    def __init__(self, stream=None):
        self.stream = stream

    def say(self, text=""):
        if self.stream is not None:
            self.stream.write(fit(text) + "\n")
            self.stream.flush()

    def block(self, text, indent="    "):
        for line in (text or "").rstrip("\n").splitlines():
            self.say(indent + line)


class Scenario(object):
    """The demo's steps over one PoolBox; each step returns a Step."""

    def __init__(self, box, narrator=None):
        self.box = box
        self.out = narrator or Narrator(None)
        self.baseline_db = None          # {(class, uuid): other_config}
        self.baseline_live = None        # {host: {dev: ethtool -k text}}
        self.steps = []
        self.receivers = []              # the hosts' syslog stand-ins

    def close(self):
        """Stop the syslog receivers (the box closes itself)."""
        for receiver in self.receivers:
            receiver.stop()
        self.receivers = []

    def _start_journals(self):
        """Each host's syslog (/dev/log in dom0) is a socket of its own
        that the box writes to <host>/journal.log, as `make box` does: the
        watcher, the udev helper and the plugin log there."""
        from sim.box import SyslogReceiver  # sim.box imports this module
        for host in self.box.hosts:
            sock = os.path.join(host.dir, "log.sock")
            self.receivers.append(SyslogReceiver(
                sock, os.path.join(host.dir, "journal.log"), host.name))
            env = self.box._host_env_extra(host)
            env["NETOFFLOAD_SYSLOG_SOCKET"] = sock
            self.box.sim.configure_host(host.ref, env=env)

    def journal(self, host):
        """The lines of host's journal so far."""
        try:
            with open(os.path.join(host.dir, "journal.log")) as handle:
                return handle.read().splitlines()
        except (OSError, IOError):
            return []

    # -- helpers ------------------------------------------------------------
    def _cli(self, step, host, args, input_text=None, timeout=90,
             show=True):
        started = time.time()
        proc = host.cli(*args, input_text=input_text, timeout=timeout)
        record = {"host": host.name, "argv": ["netoffload"] + list(args),
                  "rc": proc.returncode, "stdout": proc.stdout,
                  "stderr": proc.stderr,
                  "seconds": round(time.time() - started, 3)}
        step.commands.append(record)
        if show:
            self.out.say("  [%s dom0]# netoffload %s" % (
                host.name, " ".join(_shell_quote(a) for a in args)))
            self.out.block(proc.stdout)
            if proc.returncode != 0:
                self.out.block(proc.stderr, indent="    ! ")
        return proc

    def _cli_json(self, step, host, args, **kw):
        proc = self._cli(step, host, list(args) + ["--json"], show=False, **kw)
        try:
            return proc, json.loads(proc.stdout)
        except ValueError:
            return proc, None

    def _report_checks(self, step, start_index=0):
        for check in step.checks[start_index:]:
            self.out.say("  %s %s%s" % (
                "ok  " if check["ok"] else "FAIL", check["what"],
                (": " + check["detail"]) if check["detail"] and
                not check["ok"] else ""))

    def _vif_devices(self, spec):
        if spec.host is None:
            return []
        guest = self.box.guest(spec.name)
        return guest.devices() if guest else []

    def _check_policy_state(self, step, specs, host_filter=None):
        """Check DB keys and live features of the given VMs and the PIFs."""
        db = self.box.db_other_config()
        for spec in specs:
            for devid in spec.nics:
                vif_uuid = self.box.vif_uuid(spec.name, devid)
                got = db.get(("VIF", vif_uuid), {})
                want = DB_EXPECT[spec.expect]
                ethtool_keys = dict((k, v) for k, v in got.items()
                                    if k.startswith("ethtool-"))
                if spec.expect == "none":
                    ok = got == self.baseline_db_for(("VIF", vif_uuid))
                    detail = "" if ok else "changed to %r" % got
                else:
                    ok = ethtool_keys == want
                    detail = "" if ok else "ethtool keys %r, want %r" % (
                        ethtool_keys, want)
                step.check("%s VIF %d: DB keys (%s)" % (
                    spec.name, devid, spec.expect), ok, detail)
            host = self.box.host_of(spec.name)
            if host is None or (host_filter and host is not host_filter):
                continue
            for dev in self._vif_devices(spec):
                text = host.ns.ethtool_k(dev)
                if spec.expect == "none":
                    base = self.baseline_live_for(host, dev)
                    step.check("%s %s on %s: untouched live" % (
                        spec.name, dev, host.name), text == base,
                        "" if text == base else "features changed")
                    continue
                bad = live_mismatches(text, LIVE_EXPECT[spec.expect])
                step.check("%s %s on %s: live %s" % (
                    spec.name, dev, host.name, _wanted_text(
                        LIVE_EXPECT[spec.expect])), not bad,
                    "" if not bad else "differs live: %r" % bad)
        for host in self.box.hosts:
            if host_filter and host is not host_filter:
                continue
            for dev in host.pif_devices():
                pif_uuid = self.box.pif_uuid(host, dev)
                got = db.get(("PIF", pif_uuid), {})
                text = host.ns.ethtool_k(dev)
                if host.index == PIF_POLICY_HOST:
                    keys = dict((k, v) for k, v in got.items()
                                if k.startswith("ethtool-"))
                    step.check("%s PIF %s: DB ethtool-gro=off" % (
                        host.name, dev), keys == {"ethtool-gro": "off"},
                        "got %r" % keys)
                    bad = live_mismatches(text, {"gro": "off"})
                    step.check("%s PIF %s: live gro off" % (host.name, dev),
                               not bad, "differs live: %r" % bad if bad else "")
                else:
                    base = self.baseline_db_for(("PIF", pif_uuid))
                    same_live = text == self.baseline_live_for(host, dev)
                    step.check("%s PIF %s: untouched (no PIF policy)" % (
                        host.name, dev), got == base and same_live,
                        "; ".join(filter(None, [
                            "" if got == base else "DB changed to %r" % got,
                            "" if same_live else "live features changed"])))

    def baseline_db_for(self, key):
        return self.baseline_db.get(key, {})

    def baseline_live_for(self, host, dev):
        return self.baseline_live.get(host.name, {}).get(dev)

    # -- the steps ------------------------------------------------------------
    def run_step(self, key):
        method, title = STEPS[key]
        step = Step(key, title)
        self.out.say("")
        self.out.say("== %d. %s ==" % (STEP_ORDER.index(key) + 1, title))
        started = time.time()
        try:
            getattr(self, method)(step)
        except Exception as err:  # a step that crashes is a failed step
            step.error = "%s: %s" % (type(err).__name__, err)
            self.out.say("  FAIL %s" % step.error)
        step.seconds = time.time() - started
        self.steps.append(step)
        return step

    def step_build(self, step):
        box = self.box
        box.start()
        self._start_journals()
        self.out.say("  %d hosts, each a network namespace with eth0, eth1 "
                     "(veth to a shared switch namespace) and bond0."
                     % len(box.hosts))
        if not box.bond_supported:
            self.out.say("  This kernel cannot create bond links, so bond0 is "
                         "an empty bridge standing in for the bond PIF.")
        self.out.say("  XAPI simulator on %s; plugin run by host.call_plugin "
                     "inside each host's namespace." % box.socket_path)
        rows = []
        for host in box.hosts:
            for domid in sorted(host.guests):
                guest = host.guests[domid]
                rows.append((host.name, guest.vm_name, str(domid),
                             "HVM" if guest.hvm else "PV",
                             " ".join(guest.devices())))
        self.out.block(_table(("host", "VM", "domid", "type", "devices"),
                              rows))
        self.baseline_db = box.db_other_config()
        self.baseline_live = box.live_features()
        step.data["hosts"] = [h.name for h in box.hosts]
        step.data["devices"] = dict((h, sorted(d)) for h, d in
                                    self.baseline_live.items())
        step.check("every host has its PIF devices",
                   all(set(h.pif_devices()) <= set(h.ns.links())
                       for h in box.hosts))
        step.check("every running VM has its vif/tap devices",
                   all(set(g.devices()) <= set(h.ns.links())
                       for h in box.hosts for g in h.guests.values()))
        step.check("the DB holds every VM",
                   all(spec.name in box.vm_uuids for spec in box.vm_specs))
        self._report_checks(step)

    def step_status_before(self, step):
        master = self.box.master
        proc = self._cli(step, master, ["status", "--pool"])
        step.check("status --pool exits 0", proc.returncode == 0,
                   proc.stderr.strip()[-300:])
        proc, data = self._cli_json(step, master, ["status", "--pool"])
        step.data["status"] = data
        step.check("status --pool --json parses", data is not None,
                   proc.stderr.strip()[-300:])
        step.check("nothing changed: no policy set anywhere",
                   self.box.db_other_config() == self.baseline_db and
                   self.box.live_features() == self.baseline_live)
        self._report_checks(step)

    def step_policy_apply(self, step):
        master = self.box.master
        commands = [
            ["policy", "set", "pool", "vif", POOL_POLICY_VIF, "--yes"],
            ["policy", "set", "tag", "vif", TAG_POLICY, "--tag", TAG,
             "--yes"],
            ["policy", "set", "host", "pif", HOST_PIF_POLICY,
             "--host", self.box.hosts[PIF_POLICY_HOST - 1].name, "--yes"]]
        commands.extend(["policy", "set", "vm", "vif", policy, "--vm", name]
                        for name, policy in VM_POLICIES)
        for args in commands:
            proc = self._cli(step, master, args)
            step.check("%s exits 0" % " ".join(args), proc.returncode == 0,
                       proc.stderr.strip()[-300:])
        proc = self._cli(step, master, ["policy", "get"])
        step.check("policy get exits 0", proc.returncode == 0)
        pool_oc = self.box.pool_other_config()
        step.check("pool other-config holds the pool and tag policy",
                   pool_oc.get("netoffload-vif") == POOL_POLICY_VIF and
                   pool_oc.get("netoffload-tag:%s" % TAG) == TAG_POLICY,
                   "pool other-config: %r" % pool_oc)
        self.out.say("  The plan (dry run): nothing is written yet.")
        proc = self._cli(step, master, ["apply", "ALL", "--pool", "--dry-run"])
        step.check("apply ALL --dry-run exits 0", proc.returncode == 0,
                   proc.stderr.strip()[-300:])
        step.check("the dry run wrote nothing to the VIFs",
                   all(v == self.baseline_db.get(k, {}) for k, v in
                       self.box.db_other_config().items() if k[0] == "VIF"))
        self.out.say("  Without --yes and without a terminal, apply ALL "
                     "refuses (the original script's sanity check):")
        proc = self._cli(step, master, ["apply", "ALL", "--pool"],
                         input_text="")
        step.check("apply ALL without confirmation refuses (exit 2)",
                   proc.returncode == 2, "exit %d" % proc.returncode)
        self.out.say("  Confirmed:")
        proc = self._cli(step, master, ["apply", "ALL", "--pool", "--yes"])
        step.check("apply ALL --pool --yes exits 0", proc.returncode == 0,
                   proc.stderr.strip()[-300:])
        self._check_policy_state(step, self.box.vm_specs)
        self._report_checks(step)

    def step_new_vm(self, step):
        box = self.box
        self.out.say("  Starting the watcher service on every host "
                     "(python -m netoffload.agents.watch).")
        before = box.db_other_config()
        box.start_watchers()
        ready = box.wait_watchers_ready(timeout=20)
        step.check("every watcher wrote its cache", ready,
                   "not ready: %s" % box.watchers_not_ready())
        step.check("the watchers' full sync wrote nothing (pool already in "
                   "policy)", box.db_other_config() == before)
        spec = NEW_VM
        host = box.hosts[min(spec.host, len(box.hosts)) - 1]
        self.out.say("  Creating VM %r (HVM, one VIF) with the XenAPI client "
                     "and starting it on %s." % (spec.name, host.name))
        started = time.time()
        box.create_vm(spec)
        vif_uuid = box.vif_uuid(spec.name, 0)
        self.baseline_db[("VIF", vif_uuid)] = {}
        self.baseline_db[("VM", box.vm_uuids[spec.name])] = \
            box.db_other_config().get(("VM", box.vm_uuids[spec.name]), {})
        box.start_vm(spec, host, plug=False)
        keys = box.wait_vif_keys(vif_uuid, DB_EXPECT[spec.expect],
                                 timeout=15)
        step.data["watcher_seconds"] = round(time.time() - started, 3)
        step.check("the watcher on the master wrote the new VIF's keys",
                   keys is not None, "VIF other-config: %r" % (
                       box.db_other_config().get(("VIF", vif_uuid)),))
        self.out.say("  Watcher wrote %r in %.2f s." % (
            keys, step.data["watcher_seconds"]))
        cached = box.wait_cached(host, box.vm_uuids[spec.name], timeout=15)
        step.check("%s's cache knows the new VIF" % host.name, cached)
        guest = box.plug_vm(spec, host)
        for dev in guest.devices():
            self.baseline_live.setdefault(host.name, {})[dev] = \
                host.ns.ethtool_k(dev)
        fresh = dict((dev, live_mismatches(
            self.baseline_live[host.name][dev], LIVE_EXPECT[spec.expect]))
            for dev in guest.devices())
        # A tap with no queue attached starts with tx off already; the vif
        # (veth) starts with everything on.
        step.check("the new vif came up out of policy (kernel defaults)",
                   all(fresh[d] for d in fresh if d.startswith("vif")),
                   "%r" % fresh)
        self.out.say("  udev add events for %s, run as udev runs them:" %
                     ", ".join(guest.devices()))
        runs = []
        for dev in guest.devices():
            run = box.udev_add(host, dev)
            runs.append(run)
            self.out.say("    %s: RUN %s -> exit %s%s" % (
                dev, run["run"], run["rc"],
                ("; " + run["log"]) if run.get("log") else ""))
            step.check("udev rules run the helper for %s" % dev,
                       run["matched"], run.get("detail", ""))
            step.check("the helper exits 0 for %s" % dev, run["rc"] == 0,
                       run.get("stderr", "")[-300:])
        step.data["udev"] = runs
        self._check_policy_state(step, [spec], host_filter=host)
        self._report_checks(step)

    def step_xo_vm(self, step):
        box = self.box
        spec = XO_VM
        host = box.hosts[min(spec.host, len(box.hosts)) - 1]
        stamp = spec.vif_other_config[0]
        self.out.say("  Creating VM %r as Xen Orchestra 6 does: tag %s, its VIF "
                     "stamped %s (XO's form default), started on %s." % (
                         spec.name, TAG, _pairs(stamp), host.name))
        started = time.time()
        box.create_vm(spec)
        vif_uuid = box.vif_uuid(spec.name, 0)
        vm_key = ("VM", box.vm_uuids[spec.name])
        self.baseline_db[("VIF", vif_uuid)] = dict(stamp)
        self.baseline_db[vm_key] = box.db_other_config().get(vm_key, {})
        box.start_vm(spec, host, plug=False)
        want = DB_EXPECT[spec.expect]
        keys = box.wait_vif_keys(vif_uuid, want, timeout=15)
        step.data["watcher_seconds"] = round(time.time() - started, 3)
        got = box.db_other_config().get(("VIF", vif_uuid), {})
        step.check("the watcher applied the tag policy over XO's stamp "
                   "(ethtool-tx=off)", keys is not None,
                   "VIF other-config: %r" % (got,))
        self.out.say("  Watcher wrote the six keys off (ethtool-tx: %s -> %s) "
                     "in %.2f s." % (stamp["ethtool-tx"], got.get("ethtool-tx"),
                                     step.data["watcher_seconds"]))
        entry = read_book(got).entries.get("tx")
        prior = entry.prior if entry is not None else None
        step.check("XO's stamp is saved in the VIF's bookkeeping (tx prior "
                   "%s)" % prior, prior == stamp["ethtool-tx"],
                   "netoffload book: %r" % (read_book(got),))
        step.check("%s's cache knows the VIF" % host.name,
                   box.wait_cached(host, box.vm_uuids[spec.name], timeout=15))
        guest = box.plug_vm(spec, host)
        for dev in guest.devices():
            self.baseline_live.setdefault(host.name, {})[dev] = \
                host.ns.ethtool_k(dev)
            run = box.udev_add(host, dev)
            self.out.say("  udev add %s: RUN %s -> exit %s" % (
                dev, run["run"], run["rc"]))
            step.check("udev brings %s into policy (exit 0)" % dev,
                       run["matched"] and run["rc"] == 0,
                       run.get("detail", "") or run.get("stderr", "")[-300:])
        self._check_policy_state(step, [spec], host_filter=host)
        proc = self._cli(step, host, ["status", "vm=%s" % spec.name])
        step.check("status exits 0", proc.returncode == 0,
                   proc.stderr.strip()[-300:])
        rows = [line.split() for line in proc.stdout.splitlines()
                if line.split()[:1] == ["vif%d.0" % guest.domid]]
        step.check("status: DESIRED all-off, WHY tag:%s, STATE ok" % TAG,
                   len(rows) == 1 and rows[0][3:] == [
                       TAG_POLICY, "tag:%s" % TAG, "ok"],
                   "rows: %r" % rows)
        self._report_checks(step)

    def step_drift(self, step):
        box = self.box
        spec = [s for s in box.vm_specs if s.name == DRIFT_VM][0]
        host = box.host_of(spec.name)
        dev = "vif%d.0" % spec.domid
        wanted = LIVE_EXPECT[spec.expect]
        lines_before = len(self.journal(host))
        argv = ["ethtool", "-K", dev]
        for feature, value in sorted(DRIFT_FEATURES.items()):
            argv += [feature, value]
        self.out.say("  Someone turns offload back on by hand, outside "
                     "netoffload:")
        self.out.say("  [%s dom0]# %s" % (host.name, " ".join(argv)))
        started = time.time()
        proc = host.ns.run(argv, check=False, timeout=10)
        step.commands.append({"host": host.name, "argv": argv,
                              "rc": proc.returncode, "stdout": proc.stdout,
                              "stderr": proc.stderr, "seconds": 0.0})
        step.check("ethtool -K exits 0", proc.returncode == 0,
                   proc.stderr.strip()[-300:])
        corrected = box._poll(lambda: not live_mismatches(
            host.ns.ethtool_k(dev), wanted), DRIFT_BOUND, interval=0.1)
        seconds = round(time.time() - started, 3)
        step.data["drift_seconds"] = seconds
        step.check("the watcher corrected it within %g s" % DRIFT_BOUND,
                   corrected, "still differs after %.1f s: %r" % (
                       seconds, live_mismatches(host.ns.ethtool_k(dev),
                                                wanted)))
        logged = box._poll(lambda: [
            line for line in self.journal(host)[lines_before:]
            if "drift on %s" % dev in line], 5)
        step.data["log"] = logged or []
        self.out.say("  Back to %s in %.2f s. [%s dom0]# journalctl -t "
                     "netoffload -n 1" % (_pairs(wanted), seconds, host.name))
        self.out.block("\n".join(logged or []))
        seen = "drift on %s: %s" % (dev, _pairs(DRIFT_FEATURES))
        step.check("the watcher logged the drift it saw (%s) and its "
                   "re-enforcement" % seen, bool(logged) and
                   seen in logged[-1] and "re-enforced" in logged[-1],
                   "journal: %r" % self.journal(host)[lines_before:][-3:])
        self._report_checks(step)

    def step_reboot(self, step):
        box = self.box
        host = box.hosts[min(PIF_POLICY_HOST, len(box.hosts)) - 1]
        self.out.say("  Rebooting %s: the watcher stops, every device is "
                     "recreated with kernel defaults." % host.name)
        box.reboot_devices(host)
        reset = dict((dev, host.ns.ethtool_k(dev)) for dev in host.devices())
        step.check("after the reboot every device is back at kernel defaults",
                   reset == dict((d, self.baseline_live_for(host, d))
                                 for d in host.devices()),
                   "differs: %s" % sorted(
                       d for d in reset
                       if reset[d] != self.baseline_live_for(host, d)))
        self.out.say("  [%s] systemd runs netoffload-boot.service "
                     "(python -m netoffload.agents.boot):" % host.name)
        started = time.time()
        proc = host.python(["netoffload.agents.boot"], timeout=60)
        step.commands.append({"host": host.name,
                              "argv": ["python", "-m", "netoffload.agents.boot"],
                              "rc": proc.returncode, "stdout": proc.stdout,
                              "stderr": proc.stderr,
                              "seconds": round(time.time() - started, 3)})
        self.out.block(proc.stdout)
        step.check("the boot unit exits 0", proc.returncode == 0,
                   proc.stderr.strip()[-300:])
        specs = [s for s in box.vm_specs if box.host_of(s.name) is host]
        self._check_policy_state(step, specs, host_filter=host)
        box.finish_reboot(host)
        self._report_checks(step)

    def step_diagnostics(self, step):
        box = self.box
        spec = VM_SPECS[0]
        host = box.host_of(spec.name)
        dev = "vif%d.0" % spec.domid
        self.out.say("  Traffic from %s's guest to %s (%s) over %s, while "
                     "check_checksums watches it through the plugin:" % (
                         spec.name, host.name, host.address, dev))
        self.out.say("  $ xe host-call-plugin host-uuid=%s plugin=netoffload "
                     "fn=check_checksums args:device=%s args:seconds=3" % (
                         host.uuid, dev))
        with box.traffic(host, spec.name, seconds=6):
            time.sleep(0.5)
            result, failure = box.call_plugin(
                host, "check_checksums", {"device": dev, "seconds": "3"})
        step.data["check_checksums"] = result
        step.check("check_checksums succeeds", failure is None,
                   "%r" % (failure,))
        if result is not None:
            self.out.block(_checksum_summary(result))
            verdict = str(result.get("verdict", ""))
            step.check("it saw the traffic", _count_packets(result) > 0,
                       "no packets counted")
            step.check("verdict: no evidence of corruption",
                       "no evidence" in verdict.lower(), verdict)
        proc, data = self._cli_json(step, host, ["doctor"])
        step.data["doctor"] = data
        step.check("doctor --json exits 0 and parses",
                   proc.returncode == 0 and data is not None,
                   proc.stderr.strip()[-300:])
        proc = self._cli(step, host, ["doctor"])
        step.check("doctor prints a report", proc.returncode == 0 and
                   proc.stdout.strip() != "", proc.stderr.strip()[-300:])
        self._report_checks(step)

    def step_revert(self, step):
        box = self.box
        master = box.master
        proc = self._cli(step, master, ["revert", "ALL", "--pool", "--yes"])
        step.check("revert ALL --pool --yes exits 0", proc.returncode == 0,
                   proc.stderr.strip()[-300:])
        for attempt in ("at once", "2 s later (the watchers stay quiet)"):
            if attempt != "at once":
                time.sleep(2)
            # a watcher that reacts to the revert holds the writer lease and
            # an operation key while it works: compare once no writer is at
            # work (bounded), and then exactly, those keys included
            busy = _wait_writers_done(box, timeout=10)
            if busy:
                step.check("no writer still at work (%s)" % attempt, False,
                           "after 10 s: %s" % ", ".join(busy))
            db = box.db_other_config()
            diffs = sorted("%s %s (%s)" % (key + (_map_diff(
                self.baseline_db.get(key, {}), db.get(key, {})),))
                for key in set(db) | set(self.baseline_db)
                if db.get(key, {}) != self.baseline_db.get(key, {}))
            step.check("every other-config map as it started (%s)" % attempt,
                       not diffs, "differs: %s" % ", ".join(diffs[:10]))
            live = box.live_features()
            ldiffs = sorted("%s/%s" % (h, d) for h in live for d in live[h]
                            if live[h][d] != self.baseline_live_for(
                                box.host(h), d))
            step.check("every device's ethtool -k as it started (%s)" %
                       attempt, not ldiffs, "differs: %s" % ", ".join(
                           ldiffs[:10]))
        if (XO_VM.name, 0) in box.vif_uuids:
            got = box.db_other_config().get(
                ("VIF", box.vif_uuid(XO_VM.name, 0)))
            step.check("%s's VIF holds XO's stamp again, exactly (%s)" % (
                XO_VM.name, _pairs(XO_VM.vif_other_config[0])),
                got == XO_VM.vif_other_config[0], "got %r" % (got,))
        step.data["objects_compared"] = len(self.baseline_db)
        step.data["devices_compared"] = sum(len(v) for v in
                                            box.live_features().values())
        self.out.say("  Compared %d other-config maps and %d devices with "
                     "the start." % (step.data["objects_compared"],
                                     step.data["devices_compared"]))
        proc = self._cli(step, master, ["status", "--pool"])
        step.check("status --pool after revert exits 0", proc.returncode == 0)
        self._report_checks(step)


# key -> (method, title); STEP_ORDER is the story.
STEPS = {
    "build": ("step_build", "Build the pool in a box"),
    "status_before": ("step_status_before",
                      "status --pool before any policy"),
    "policy_apply": ("step_policy_apply",
                     "Policy at pool, tag and host level; apply ALL"),
    "new_vm": ("step_new_vm",
               "A new VM: the watcher writes its keys, udev brings its "
               "devices into policy"),
    "xo_vm": ("step_xo_vm", "A VM created by Xen Orchestra 6, under the "
              "tag policy"),
    "drift": ("step_drift", "Drift: a hand-made ethtool -K is corrected"),
    "reboot": ("step_reboot", "A host reboots: the boot unit restores policy"),
    "diagnostics": ("step_diagnostics",
                    "Is offload really the problem? check_checksums, doctor"),
    "revert": ("step_revert", "revert ALL: back to exactly where we started"),
}
STEP_ORDER = ("build", "status_before", "policy_apply", "new_vm", "xo_vm",
              "drift", "reboot", "diagnostics", "revert")


def _count_packets(result):
    """Total packets check_checksums reports having seen (any shape)."""
    packets = result.get("packets")
    if isinstance(packets, dict) and isinstance(packets.get("captured"), int):
        return packets["captured"]
    if isinstance(packets, int):
        return packets
    counts = result.get("counts")
    if isinstance(counts, dict):
        return sum(v for v in counts.values() if isinstance(v, int))
    return 0


def _checksum_summary(result):
    """The few lines of a check_checksums result an admin reads first."""
    lines = []
    for key in ("classes", "packets", "kernel_counters_delta"):
        value = result.get(key)
        if isinstance(value, dict):
            lines.append("%s: %s" % (key, ", ".join(
                "%s=%s" % kv for kv in sorted(value.items()))))
    lines.append("verdict: %s" % result.get("verdict", "(none)"))
    return "\n".join(lines)


def _wanted_text(wanted):
    if len(wanted) == len(ALL_FEATURES) and set(wanted.values()) == {"off"}:
        return "all off"
    return ",".join("%s=%s" % kv for kv in sorted(wanted.items()))


def _pairs(mapping):
    return " ".join("%s=%s" % kv for kv in sorted(mapping.items()))


def _shell_quote(arg):
    if re.match(r"^[A-Za-z0-9_./=:,@+-]+$", arg):
        return arg
    return "'" + arg.replace("'", "'\\''") + "'"


def _wait_writers_done(box, timeout):
    """Wait until the pool's other-config holds no writer lease and no
    operation key; [those keys] still there after `timeout` s."""
    end = time.time() + timeout
    while True:
        busy = sorted(k for k in box.pool_other_config()
                      if k == KEY_LEASE or k.startswith(OP_PREFIX))
        if not busy or time.time() >= end:
            return busy
        time.sleep(0.2)


def _map_diff(before, after):
    """What changed in a map, in words: +key=value, -key, key: a -> b."""
    parts = ["+%s=%s" % (k, after[k]) for k in sorted(set(after) - set(before))]
    parts += ["-%s" % k for k in sorted(set(before) - set(after))]
    parts += ["%s: %s -> %s" % (k, before[k], after[k]) for k in sorted(
        set(before) & set(after)) if before[k] != after[k]]
    return "; ".join(parts)[:300]


def _table(headers, rows):
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(c)) for w, c in zip(widths, row)]
    fmt = "  ".join("%%-%ds" % w for w in widths)
    lines = [fmt % tuple(headers)]
    lines.extend(fmt % tuple(row) for row in rows)
    return "\n".join(line.rstrip() for line in lines)


def run(hosts=3, narrator=None, keep=False):
    """Run the whole story; returns (ok, record). The box is closed on
    return, on any exception and on SIGTERM/SIGHUP (see sim.poolbox)."""
    started = time.time()
    box = poolbox.PoolBox(hosts=hosts, vm_specs=VM_SPECS,
                          pif_other_config=PIF_OTHER_CONFIG)
    scenario = Scenario(box, narrator)
    try:
        for key in STEP_ORDER:
            step = scenario.run_step(key)
            if not step.ok and key == "build":
                break
        record = _record(scenario, hosts, started)
        if keep:
            scenario.out.say("")
            scenario.out.say(record["verdict"])
            scenario.out.say("  --keep: a shell in the box as it is now (`make "
                             "box` starts a fresh one, with logs); exit or "
                             "Ctrl-D closes it.")
            from sim.box import run_shell  # only with --keep
            run_shell(box)
    finally:
        box.close()
        scenario.close()
    return record["ok"], record


def _record(scenario, hosts, started):
    steps = scenario.steps
    ok = len(steps) == len(STEP_ORDER) and all(s.ok for s in steps)
    checks = sum(len(s.checks) for s in steps)
    if ok:
        verdict = "VERDICT: PASS: %d steps, %d checks, %.1f s" % (
            len(steps), checks, time.time() - started)
    elif any(not s.ok for s in steps):
        verdict = "VERDICT: FAIL: %s" % "; ".join(
            "%s (%s)" % (s.key, "; ".join(s.failures())[:300])
            for s in steps if not s.ok)
    else:
        verdict = "VERDICT: FAIL: stopped after %d steps" % len(steps)
    return {"ok": ok, "verdict": verdict, "hosts": hosts,
            "seconds": round(time.time() - started, 3),
            "steps": [s.to_json() for s in steps]}


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m sim.demo",
        description="netoffload on a simulated XenServer pool, end to end.")
    parser.add_argument("--json", action="store_true",
                        help="print a JSON record of every step (the "
                             "narrative goes to stderr)")
    parser.add_argument("--hosts", type=int, default=3, choices=(2, 3),
                        help="simulated hosts in the pool (default 3)")
    parser.add_argument("--keep", action="store_true",
                        help="after the story, a shell in the box (as make box "
                        "gives); exit closes the box")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        sys.stderr.write("sim.demo: needs root (network namespaces)\n")
        return 2
    narrator = Narrator(sys.stderr if args.json else sys.stdout)
    try:
        ok, record = run(hosts=args.hosts, narrator=narrator, keep=args.keep)
    except KeyboardInterrupt:
        narrator.say("VERDICT: FAIL: interrupted (everything cleaned up)")
        return 130
    except SystemExit as stop:   # SIGTERM/SIGHUP, raised by sim.poolbox
        narrator.say("VERDICT: FAIL: terminated (everything cleaned up)")
        raise stop
    narrator.say("")
    narrator.say(record["verdict"])
    if args.json:
        sys.stdout.write(json.dumps(record, indent=1, sort_keys=True) + "\n")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
