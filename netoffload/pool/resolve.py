"""Policy resolution (DESIGN section 3): records -> desired features. Pure.

Input is a `PoolRecords`: the dicts ref -> record exactly as XenAPI's
`get_all_records` returns them. Output is a `Resolution` per VIF or PIF:

- `.features` {short: "on"|"off"}: the full desired state (all eight for
  VIFs too: gro/lro are enforced live only), explicit keys included;
- `.live_features`: `.features` without the explicit ones, which is what
  live enforcement applies (explicit keys are xapi's business at plug);
- `.sources` {short: "explicit" | "force" | "vm" | "tag:<t>" | "network" |
  "pool" | "host"}: where each feature came from;
- `.policy_features`: what the winning policy level asks for;
- `.explicit` {short: value}: `ethtool-<f>` keys the pack did not write
  (value "on"/"off", or the raw string when xapi would ignore it);
- `.policy` (canonical text or None), `.level` ("vm", "tag:<t>", "network",
  "pool", "host" or None), `.error` (a broken policy string, or None).

Precedence, first match wins:
  VIF: explicit key on the VIF (per feature) -> VM `netoffload-vif` -> the
       first of the VM's tags in sorted order with a pool
       `netoffload-tag:<tag>` -> network `netoffload-vif` -> pool
       `netoffload-vif`.
  PIF: explicit key -> host `netoffload-pif` -> pool `netoffload-pif`.

A policy level is taken whole: the first level holding a policy key decides
every feature it names; later levels are not merged in. `none` at a level
is an opt-out: it stops the search, so nothing below applies to that
object, and features the pack wrote earlier are restored at the next apply.
A policy string that does not parse is treated like `none` (change nothing)
and reported in `.error`: a typo must never turn into "all off".
With `force=True` the policy also beats explicit keys (source "force").

Bookkeeping (see reconcile.py): `netoffload-managed` lists the features the
pack wrote; `netoffload-saved` holds per feature `[prior, written]` (the old
form, a bare prior, is still read). A managed key whose value is no longer
the one the pack wrote (someone set or removed it later) is `taken_over`:
explicit, no longer the pack's, and revert leaves it as they set it (their
later value wins over our saved prior; DESIGN precedence rule 1).
"""

from netoffload import paths
from netoffload.errors import BadArgument
from netoffload.engine.features import FEATURES
from netoffload.engine.policy import parse_policy
from netoffload.pool.keys import (
    ETHTOOL_PREFIX, KEY_PIF, KEY_VIF, TAG_PREFIX, explicit_keys, tag_key, tag_of_key)

def as_int(value, default=-1):
    """xapi sends int fields as strings ("-1"); accept both."""
    try:
        return int(str(value), 10)
    except (TypeError, ValueError):
        return default


class Resolution(object):
    __slots__ = ("features", "sources", "policy_features", "explicit",
                 "policy", "level", "error")

    def __init__(self):
        self.features = {}
        self.sources = {}
        self.policy_features = {}
        self.explicit = {}
        self.policy = None
        self.level = None
        self.error = None

    @property
    def live_features(self):
        """What to enforce on live devices: the policy's features only.

        Explicit keys are someone else's; xapi applies them to vif devices
        at plug, and the pack leaves those features alone live.
        """
        return dict((f, v) for f, v in self.features.items()
                    if self.sources.get(f) != "explicit")

    def to_json(self):
        return {"features": dict(self.features), "sources": dict(self.sources),
                "policy": self.policy, "level": self.level,
                "explicit": dict(self.explicit), "error": self.error}

    def __repr__(self):
        return "Resolution(%r from %r, features=%r)" % (
            self.policy, self.level, self.features)


class PoolRecords(object):
    """All records of one pool snapshot, with lookups."""

    def __init__(self, pool, hosts, networks, pifs, vms, vifs,
                 host_metrics=None):
        self.pool = pool or {}
        self.hosts = hosts or {}
        self.networks = networks or {}
        self.pifs = pifs or {}
        self.vms = vms or {}
        self.vifs = vifs or {}
        # None: unknown (no host_metrics class); treat every host as live.
        self.host_metrics = host_metrics

    # -- the pool ----------------------------------------------------------------
    @property
    def pool_ref(self):
        return next(iter(sorted(self.pool)), None)

    @property
    def pool_record(self):
        ref = self.pool_ref
        return self.pool[ref] if ref else {}

    @property
    def pool_other_config(self):
        return self.pool_record.get("other_config") or {}

    def copy(self):
        """A copy deep enough to edit other_config maps in place."""
        def dup(table):
            return dict((ref, dict(rec, other_config=dict(
                rec.get("other_config") or {}))) for ref, rec in table.items())
        return PoolRecords(dup(self.pool), dup(self.hosts), dup(self.networks),
                           dup(self.pifs), dup(self.vms), dup(self.vifs),
                           self.host_metrics)

    def table(self, cls):
        return {"pool": self.pool, "host": self.hosts,
                "network": self.networks, "PIF": self.pifs, "VM": self.vms,
                "VIF": self.vifs}[cls]

    # -- lookups -----------------------------------------------------------------
    def host_is_live(self, host_ref):
        """host_metrics.live only: a disabled host (maintenance mode) still
        runs VMs and answers host.call_plugin (xapi's forwarding does not
        look at `enabled`)."""
        host = self.hosts.get(host_ref) or {}
        if self.host_metrics is None:
            return True
        metrics = self.host_metrics.get(host.get("metrics"))
        return bool(metrics and metrics.get("live"))

    def host_by_uuid(self, uuid):
        for ref, rec in self.hosts.items():
            if rec.get("uuid") == uuid:
                return ref
        return None

    def vifs_of_vm(self, vm_ref):
        return sorted((ref for ref, rec in self.vifs.items()
                       if rec.get("VM") == vm_ref),
                      key=lambda r: as_int(self.vifs[r].get("device"), 0))

    def pifs_of_host(self, host_ref):
        return sorted((ref for ref, rec in self.pifs.items()
                       if rec.get("host") == host_ref),
                      key=lambda r: (self.pifs[r].get("device", ""),
                                     as_int(self.pifs[r].get("VLAN"))))

    def vif_label(self, vif_ref):
        vif = self.vifs.get(vif_ref) or {}
        vm = self.vms.get(vif.get("VM")) or {}
        return "%s/vif%s" % (vm.get("name_label", "?"), vif.get("device", "?"))

    def pif_label(self, pif_ref):
        pif = self.pifs.get(pif_ref) or {}
        host = self.hosts.get(pif.get("host")) or {}
        return "%s/%s" % (host.get("name_label", "?"),
                          pif_device(pif, missing="?"))


BACKEND_OVS = "openvswitch"
BACKEND_BRIDGE = "bridge"


def network_backend(path=None):
    """This host's network backend from /etc/xensource/network.conf (env
    NETOFFLOAD_NETWORK_CONF overrides the path): BACKEND_OVS or
    BACKEND_BRIDGE. Every XenServer / XCP-ng install writes that file; when
    it is absent, unreadable or says something else we assume the bridge
    backend, which names today's devices (eth0.100, bond0): a wrong guess
    then only names a device that does not exist, never skips a real one."""
    path = paths.network_conf(path)
    try:
        with open(path) as handle:
            text = handle.read(256).strip().lower()
    except (IOError, OSError, UnicodeDecodeError):
        return BACKEND_BRIDGE
    return BACKEND_OVS if text in ("openvswitch", "vswitch") else BACKEND_BRIDGE


def pif_device(pif, missing="", backend=BACKEND_BRIDGE):
    """The kernel device of a PIF record: eth0, bond0, or eth0.100 for a VLAN.

    Under Open vSwitch a VLAN PIF is a fake bridge and a bond has no bond0
    netdev (xapi's networkd makes those devices with the bridge backend
    only): None for them; their offload lives on the member/parent NICs."""
    device = pif.get("device", missing) or missing
    vlan = as_int(pif.get("VLAN"))
    if backend == BACKEND_OVS and (vlan >= 0 or pif.get("bond_master_of")):
        return None
    return "%s.%d" % (device, vlan) if vlan >= 0 else device


def pif_carriers(records, pif_ref):
    """The devices that carry a PIF with no kernel device of its own
    (openvswitch): a VLAN's parent device, a bond's member NICs."""
    pif = records.pifs.get(pif_ref) or {}
    bonds = set(pif.get("bond_master_of") or ())
    if bonds:
        return sorted(p.get("device", "?") for p in records.pifs.values()
                      if p.get("host") == pif.get("host")
                      and p.get("bond_slave_of") in bonds)
    return [pif.get("device", "?")]


def is_eligible_vm(vm):
    return not (vm.get("is_a_template") or vm.get("is_a_snapshot")
                or vm.get("is_control_domain"))


def runs_on(vm, host_ref):
    """True if vm is running (or paused) on host_ref: its devices are there."""
    return vm.get("resident_on") == host_ref and \
        vm.get("power_state") in ("Running", "Paused")


def eligible_vms(records):
    """Refs of real guests: no templates, snapshots or control domains."""
    return sorted(ref for ref, vm in records.vms.items() if is_eligible_vm(vm))


def eligible_vifs(records):
    """Refs of VIFs that belong to eligible VMs (halted or running)."""
    vms = set(eligible_vms(records))
    return sorted(ref for ref, vif in records.vifs.items()
                  if vif.get("VM") in vms)


def _level_policy(other_config, key):
    """(Policy or None, error text or None) for one level's key."""
    text = (other_config or {}).get(key)
    if text is None:
        return None, None
    try:
        return parse_policy(text), None
    except BadArgument as err:
        return None, "%s=%r: %s" % (key, text[:80], err.message)


def _finish(resolution, other_config, levels, force):
    """Walk `levels` [(level name, other_config, key)], then merge explicit."""
    for level, level_config, key in levels:
        if key not in (level_config or {}):
            continue
        policy, error = _level_policy(level_config, key)
        resolution.level = level
        if error:
            resolution.error = error
            break
        resolution.policy = policy.text
        resolution.policy_features = dict(policy.features)
        break
    return merge_explicit(resolution, other_config, force)


def merge_explicit(resolution, other_config, force=False):
    """Fill .explicit/.features/.sources from the object's own keys."""
    resolution.explicit = explicit_keys(other_config or {})
    resolution.features = {}
    resolution.sources = {}
    for feature in FEATURES:
        wanted = resolution.policy_features.get(feature)
        explicit = resolution.explicit.get(feature)
        if explicit is not None and not (force and wanted is not None):
            if explicit in ("on", "off"):
                resolution.features[feature] = explicit
                resolution.sources[feature] = "explicit"
            continue
        if wanted is not None:
            resolution.features[feature] = wanted
            resolution.sources[feature] = (
                "force" if explicit is not None else resolution.level)
    return resolution


def rederive(resolution, other_config, force=False):
    """The same policy decision over a fresh other_config (after a race)."""
    redo = Resolution()
    redo.policy = resolution.policy
    redo.level = resolution.level
    redo.error = resolution.error
    redo.policy_features = dict(resolution.policy_features)
    return merge_explicit(redo, other_config, force)


def vif_levels(records, vif_ref):
    vif = records.vifs[vif_ref]
    vm = records.vms.get(vif.get("VM")) or {}
    network = records.networks.get(vif.get("network")) or {}
    pool_config = records.pool_other_config
    levels = [("vm", vm.get("other_config"), KEY_VIF)]
    for tag in sorted(vm.get("tags") or []):
        if tag_key(tag) in pool_config:
            levels.append(("tag:" + tag, pool_config, tag_key(tag)))
            break
    levels.append(("network", network.get("other_config"), KEY_VIF))
    levels.append(("pool", pool_config, KEY_VIF))
    return levels


def resolve_vif(records, vif_ref, force=False):
    vif = records.vifs[vif_ref]
    return _finish(Resolution(), vif.get("other_config"),
                   vif_levels(records, vif_ref), force)


def resolve_pif(records, pif_ref, force=False):
    pif = records.pifs[pif_ref]
    host = records.hosts.get(pif.get("host")) or {}
    levels = [("host", host.get("other_config"), KEY_PIF),
              ("pool", records.pool_other_config, KEY_PIF)]
    return _finish(Resolution(), pif.get("other_config"), levels, force)


def all_policies(records):
    """Every policy key in the pool, as a list of flat dicts (get_policy)."""
    result = []
    pool_config = records.pool_other_config
    pool_uuid = records.pool_record.get("uuid", "")
    for key in sorted(pool_config, key=lambda k: (k.startswith(TAG_PREFIX), k)):
        if key in (KEY_VIF, KEY_PIF):
            result.append({"level": "pool", "kind": key[len("netoffload-"):],
                           "uuid": pool_uuid, "name": "", "key": key,
                           "policy": pool_config[key]})
        elif key.startswith(TAG_PREFIX):
            result.append({"level": "tag", "kind": "vif", "uuid": pool_uuid,
                           "name": tag_of_key(key), "key": key,
                           "policy": pool_config[key]})
    for level, table, key in (("host", records.hosts, KEY_PIF),
                              ("network", records.networks, KEY_VIF),
                              ("vm", records.vms, KEY_VIF)):
        for ref in sorted(table, key=lambda r: (table[r].get("name_label", ""),
                                                table[r].get("uuid", ""))):
            rec = table[ref]
            if key in (rec.get("other_config") or {}):
                result.append({"level": level, "kind": key[len("netoffload-"):],
                               "uuid": rec.get("uuid", ""),
                               "name": rec.get("name_label", ""), "key": key,
                               "policy": rec["other_config"][key]})
    for entry in result:
        try:
            parse_policy(entry["policy"])
            entry["valid"] = True
        except BadArgument as err:
            entry["valid"] = False
            entry["error"] = err.message
    return result
