"""Policy resolution, pure: records in, `Resolution` out (docs/policy.md).

Input is a `PoolRecords` (records.py): the dicts ref -> record exactly as
XenAPI's `get_all_records` returns them. Nothing here reads a file, the
environment or XAPI (the network backend, for one, lives in records.py).
Output is a `Resolution` per VIF or PIF:

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

Precedence, first match wins (VIF_LEVEL_ORDER is the one definition of the
VIF levels' order):
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

Bookkeeping (see planning.py): `netoffload-managed` lists the features the
pack wrote; `netoffload-saved` holds per feature `[prior, written]` (the old
form, a bare prior, is still read). A managed key whose value is no longer
the one the pack wrote (someone set or removed it later) is `taken_over`:
explicit, no longer the pack's, and revert leaves it as they set it (their
later value wins over our saved prior; docs/policy.md, precedence rule 1).
"""
import collections

from netoffload.engine.features import FEATURES
from netoffload.engine.policy import parse_policy
from netoffload.errors import BadArgument
from netoffload.pool.keys import (
    KEY_PIF,
    KEY_VIF,
    POLICY_KIND_VIF,
    TAG_PREFIX,
    explicit_keys,
    kind_of_policy_key,
    tag_key,
    tag_of_key,
)

# Where a feature's desired value came from (Resolution.sources) besides a
# policy level.
SOURCE_EXPLICIT = "explicit"
SOURCE_FORCE = "force"

# Policy levels (Resolution.level); a tag's level is "tag:<tag>".
LEVEL_VM = "vm"
LEVEL_TAG = "tag"
LEVEL_NETWORK = "network"
LEVEL_POOL = "pool"
LEVEL_HOST = "host"
TAG_LEVEL_PREFIX = LEVEL_TAG + ":"

# The VIF levels, first match wins.
VIF_LEVEL_ORDER = (LEVEL_VM, LEVEL_TAG, LEVEL_NETWORK, LEVEL_POOL)


def tag_level(tag):
    """The level name of a tag's policy: "tag:<tag>"."""
    return TAG_LEVEL_PREFIX + tag


def vif_level_rank(level):
    """Position of a VIF level ("vm", "tag:<t>", ...) in VIF_LEVEL_ORDER:
    a lower rank wins over a higher one."""
    return VIF_LEVEL_ORDER.index(level.split(":", 1)[0])


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
                    if self.sources.get(f) != SOURCE_EXPLICIT)

    def to_json(self):
        return {"features": dict(self.features), "sources": dict(self.sources),
                "policy": self.policy, "level": self.level,
                "explicit": dict(self.explicit), "error": self.error}

    def __repr__(self):
        return "Resolution(%r from %r, features=%r)" % (
            self.policy, self.level, self.features)


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
        if policy is None:
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
                resolution.sources[feature] = SOURCE_EXPLICIT
            continue
        if wanted is not None:
            resolution.features[feature] = wanted
            resolution.sources[feature] = (
                SOURCE_FORCE if explicit is not None else resolution.level)
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
    """[(level, other_config, policy key)] of a VIF in VIF_LEVEL_ORDER."""
    vif = records.vifs[vif_ref]
    vm = records.vms.get(vif.get("VM")) or {}
    network = records.networks.get(vif.get("network")) or {}
    pool_config = records.pool_other_config
    tags = []
    for tag in sorted(vm.get("tags") or []):
        if tag_key(tag) in pool_config:
            tags.append((tag_level(tag), pool_config, tag_key(tag)))
            break  # the first tag with a policy is the tag level
    by_level = {
        LEVEL_VM: [(LEVEL_VM, vm.get("other_config"), KEY_VIF)],
        LEVEL_TAG: tags,
        LEVEL_NETWORK: [(LEVEL_NETWORK, network.get("other_config"), KEY_VIF)],
        LEVEL_POOL: [(LEVEL_POOL, pool_config, KEY_VIF)],
    }
    return [entry for level in VIF_LEVEL_ORDER for entry in by_level[level]]


def resolve_vif(records, vif_ref, force=False):
    vif = records.vifs[vif_ref]
    return _finish(Resolution(), vif.get("other_config"),
                   vif_levels(records, vif_ref), force)


def resolve_pif(records, pif_ref, force=False):
    pif = records.pifs[pif_ref]
    host = records.hosts.get(pif.get("host")) or {}
    levels = [(LEVEL_HOST, host.get("other_config"), KEY_PIF),
              (LEVEL_POOL, records.pool_other_config, KEY_PIF)]
    return _finish(Resolution(), pif.get("other_config"), levels, force)


class PolicyEntry(collections.namedtuple(
        "PolicyEntry", "level kind uuid name key policy error")):
    """One policy key in the pool: where it is, what it says, and the
    parse error that makes it INVALID (None when it parses)."""
    __slots__ = ()

    @property
    def valid(self):
        return self.error is None

    def to_json(self):
        entry = {"level": self.level, "kind": self.kind, "uuid": self.uuid,
                 "name": self.name, "key": self.key, "policy": self.policy,
                 "valid": self.valid}
        if self.error is not None:
            entry["error"] = self.error
        return entry


def _policy_entry(level, kind, uuid, name, key, text):
    try:
        parse_policy(text)
        error = None
    except BadArgument as err:
        error = err.message
    return PolicyEntry(level, kind, uuid, name, key, text, error)


def all_policies(records):
    """Every policy key in the pool: [PolicyEntry], pool keys first, then
    hosts, networks and VMs by name (get_policy, doctor)."""
    result = []
    pool_config = records.pool_other_config
    pool_uuid = records.pool_record.get("uuid", "")
    for key in sorted(pool_config, key=lambda k: (k.startswith(TAG_PREFIX), k)):
        if key in (KEY_VIF, KEY_PIF):
            result.append(_policy_entry(LEVEL_POOL, kind_of_policy_key(key),
                                        pool_uuid, "", key, pool_config[key]))
        elif key.startswith(TAG_PREFIX):
            result.append(_policy_entry(LEVEL_TAG, POLICY_KIND_VIF, pool_uuid,
                                        tag_of_key(key), key, pool_config[key]))
    for level, table, key in ((LEVEL_HOST, records.hosts, KEY_PIF),
                              (LEVEL_NETWORK, records.networks, KEY_VIF),
                              (LEVEL_VM, records.vms, KEY_VIF)):
        for ref in sorted(table, key=lambda r: (table[r].get("name_label", ""),
                                                table[r].get("uuid", ""))):
            rec = table[ref]
            if key in (rec.get("other_config") or {}):
                result.append(_policy_entry(
                    level, kind_of_policy_key(key), rec.get("uuid", ""),
                    rec.get("name_label", ""), key, rec["other_config"][key]))
    return result
