"""Policy resolution, pure: records in, `Resolution` out (docs/policy.md).

Input is a `PoolRecords` (records.py): the dicts ref -> record exactly as
XenAPI's `get_all_records` returns them. Nothing here reads a file, the
environment or XAPI. Output is a `Resolution` per VIF or PIF:

- `.features` {short: "on"|"off"}: the full desired state (all eight for
  VIFs too: gro/lro are enforced live only), explicit settings included;
- `.live_features`: `.features` without the explicit ones, which is what
  live enforcement applies (explicit keys are xapi's business at plug);
- `.sources` {short: "explicit" | "property" | "force" | "vm" | "tag:<t>"
  | "network" | "pool" | "host"}: where each feature came from;
- `.policy_features`: what the deciding policy level asks for;
- `.explicit` {short: value}: `ethtool-<f>` keys the pack does not own
  (value "on"/"off", or the raw string xapi would ignore), and a PIF's
  `properties:gro` when it differs from xapi's default;
- `.policy` (canonical text or None), `.level` ("vm", "tag:<t>",
  "network", "pool", "host" or None), `.error` (a broken policy string);
- `.contributing` [level]: the levels that decided at least one feature;
  `.shadowed` [(level, policy)]: levels holding a policy that decided
  nothing here; `.overrides` [Override]: explicit settings that beat the
  policy, with why they count.

The rule (one, order-independent; docs/policy.md "Precedence"):
  1. A decided explicit setting wins for its feature. On a VIF: an
     `ethtool-<f>` key of `off`/`false` (or a value xapi ignores) found
     before netoffload managed the feature, or any value someone set after
     netoffload wrote it. A VIF's `on`/`true` found before is a default
     (Xen Orchestra 6 stamps `ethtool-tx=true` on every VIF it creates):
     a policy applies over it, and revert restores it. On a PIF every
     `ethtool-<f>` key netoffload does not own is decided, and so is a
     `properties:gro` other than xapi's default "on".
  2. Otherwise the most specific level holding a policy decides every
     feature it names, lower levels are not merged in: VIF: VM, then the
     VM's tags, then network, then pool; PIF: host, then pool.
  3. The tags of a VM are one level, combined per feature: `off` wins,
     a tag's `none` contributes nothing unless every tag policy of the VM
     is `none`. Names and order of the tags play no part.
`none` at a level is an opt-out: nothing below applies. A policy string
that does not parse freezes the object (`.error`): a typo never turns into
"all off". With `force=True` the policy also beats explicit keys (source
"force").
"""
import collections

from netoffload.engine.features import FEATURES, OFF, ON
from netoffload.engine.policy import NONE, PROFILES, Policy, parse_policy
from netoffload.errors import BadArgument
from netoffload.pool.keys import (
    KEY_PIF,
    KEY_VIF,
    POLICY_KIND_VIF,
    TAG_PREFIX,
    WHY_PROPERTY,
    Explicit,
    explicit_settings,
    kind_of_policy_key,
    tag_key,
    tag_of_key,
    unfinished_ops,
    xapi_value,
)

# Where a feature's desired value came from (Resolution.sources) besides a
# policy level.
SOURCE_EXPLICIT = "explicit"
SOURCE_PROPERTY = "property"
SOURCE_FORCE = "force"
EXPLICIT_SOURCES = (SOURCE_EXPLICIT, SOURCE_PROPERTY)

# Policy levels (Resolution.level); a tag's level is "tag:<tag>".
LEVEL_VM = "vm"
LEVEL_TAG = "tag"
LEVEL_NETWORK = "network"
LEVEL_POOL = "pool"
LEVEL_HOST = "host"
TAG_LEVEL_PREFIX = LEVEL_TAG + ":"

# The VIF levels, most specific first.
VIF_LEVEL_ORDER = (LEVEL_VM, LEVEL_TAG, LEVEL_NETWORK, LEVEL_POOL)
PIF_LEVEL_ORDER = (LEVEL_HOST, LEVEL_POOL)

# xapi's default for PIF.properties:gro (networkd uses it when the PIF
# has no ethtool-gro key).
PIF_GRO_DEFAULT = ON


def tag_level(tag):
    """The level name of a tag's policy: "tag:<tag>"."""
    return TAG_LEVEL_PREFIX + tag


def vif_level_rank(level):
    """Position of a VIF level ("vm", "tag:<t>", ...) in VIF_LEVEL_ORDER:
    a lower rank wins over a higher one."""
    return VIF_LEVEL_ORDER.index(level.split(":", 1)[0])


def _level_sort_key(level):
    base, _, tag = level.partition(":")
    order = VIF_LEVEL_ORDER + tuple(lvl for lvl in PIF_LEVEL_ORDER
                                    if lvl not in VIF_LEVEL_ORDER)
    return (order.index(base) if base in order else len(order), tag)


class Override(collections.namedtuple("Override",
                                      "feature value source why")):
    """An explicit setting that beats a policy, and why it counts."""
    __slots__ = ()

    def to_json(self):
        return {"feature": self.feature, "value": self.value,
                "source": self.source, "why": self.why}


class Resolution(object):
    __slots__ = ("features", "sources", "policy_features", "explicit",
                 "policy", "level", "error", "contributing", "shadowed",
                 "overrides", "settings", "candidates", "feature_levels")

    def __init__(self):
        self.features = {}
        self.sources = {}
        self.policy_features = {}
        self.explicit = {}
        self.policy = None
        self.level = None
        self.error = None
        self.contributing = []
        self.shadowed = []
        self.overrides = []
        # {feature: Explicit}: the settings .explicit is made of
        self.settings = {}
        # [(level, policy text)]: every level holding a policy
        self.candidates = []
        # {feature: level}: which level of the deciding group names it
        self.feature_levels = {}

    @property
    def live_features(self):
        """What to enforce on live devices: the policy's features only.

        Explicit settings are someone else's; xapi applies them to vif
        devices at plug, and the pack leaves those features alone live.
        """
        return dict((f, v) for f, v in self.features.items()
                    if self.sources.get(f) not in EXPLICIT_SOURCES)

    def provenance_json(self):
        """The docs/policy.md fields: sources, contributing, shadowed,
        overrides."""
        return {"sources": dict(self.sources),
                "contributing": list(self.contributing),
                "shadowed": [{"level": lvl, "policy": p}
                             for lvl, p in self.shadowed],
                "overrides": [o.to_json() for o in self.overrides]}

    def to_json(self):
        entry = {"features": dict(self.features), "policy": self.policy,
                 "level": self.level, "explicit": dict(self.explicit),
                 "error": self.error}
        entry.update(self.provenance_json())
        return entry

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


def _policy_text(features):
    for name, profile in sorted(PROFILES.items()):
        if profile and profile == features:
            return name
    return Policy(features).text


def combine_tags(policies):
    """{feature: value}, {feature: tag level} of several tags' policies
    [(level, Policy)]: per feature `off` wins; `none` contributes nothing.
    The result does not depend on the order of `policies`."""
    combined = {}
    for _, policy in policies:
        for feature, value in policy.features.items():
            if combined.get(feature) != OFF:
                combined[feature] = value
    by = {}
    for feature, value in combined.items():
        by[feature] = min(level for level, policy in policies
                          if policy.features.get(feature) == value)
    return combined, by


def _decide(resolution, groups):
    """Walk `groups` [[(level, other_config, key)]] (most specific first):
    the first group holding a policy decides; a group of several (the
    tags) is combined. Every level holding a policy is a candidate."""
    decided = False
    for group in groups:
        found = [(level, config, key) for level, config, key in group
                 if key in (config or {})]
        for level, config, key in found:
            resolution.candidates.append((level, config[key]))
        if decided or not found:
            continue
        decided = True
        parsed = []
        for level, config, key in found:
            policy, error = _level_policy(config, key)
            if policy is None:
                resolution.level = level
                resolution.error = error
                break
            parsed.append((level, policy))
        if resolution.error:
            continue
        active = [(lvl, p) for lvl, p in parsed if not p.is_none]
        if not active:
            resolution.level = min(lvl for lvl, _ in parsed)
            resolution.policy = NONE
            continue
        combined, by = combine_tags(active)
        resolution.policy_features = combined
        resolution.feature_levels = by
        resolution.level = min(by.values()) if by else active[0][0]
        resolution.policy = active[0][1].text if len(active) == 1 else \
            _policy_text(combined)


def merge_explicit(resolution, settings, force=False):
    """Fill .explicit/.features/.sources/.overrides/.contributing/
    .shadowed from the object's explicit settings {feature: Explicit}."""
    resolution.settings = dict(settings)
    resolution.explicit = dict((f, e.value) for f, e in settings.items())
    resolution.features = {}
    resolution.sources = {}
    resolution.overrides = []
    for feature in FEATURES:
        wanted = resolution.policy_features.get(feature)
        setting = settings.get(feature)
        source = SOURCE_PROPERTY if setting is not None and \
            setting.why.startswith("PIF property") else SOURCE_EXPLICIT
        if setting is not None and (
                (setting.decided and not (force and wanted is not None))
                or wanted is None):
            if setting.value in (ON, OFF):
                resolution.features[feature] = setting.value
                resolution.sources[feature] = source
            if wanted is not None:
                resolution.overrides.append(Override(
                    feature, setting.value, source, setting.why))
            continue
        if wanted is not None:
            resolution.features[feature] = wanted
            resolution.sources[feature] = (
                SOURCE_FORCE if setting is not None and setting.decided
                else resolution.feature_levels.get(feature, resolution.level))
    contributing = set(resolution.feature_levels.get(f, resolution.level)
                       for f in resolution.policy_features
                       if resolution.sources.get(f) not in EXPLICIT_SOURCES)
    resolution.contributing = sorted(contributing, key=_level_sort_key)
    resolution.shadowed = [(lvl, p) for lvl, p in resolution.candidates
                           if lvl not in contributing
                           and not (lvl == resolution.level
                                    and resolution.policy == NONE)]
    return resolution


def _vif_settings(other_config, unfinished):
    return explicit_settings(other_config, unfinished, defaults_apply=True)


def _pif_settings(pif, unfinished):
    settings = explicit_settings(pif.get("other_config") or {}, unfinished,
                                 defaults_apply=False)
    gro = (pif.get("properties") or {}).get("gro")
    if gro is not None and gro != PIF_GRO_DEFAULT and "gro" not in settings:
        # networkd uses properties:gro when there is no ethtool-gro key:
        # an admin's `xe pif-param-set properties:gro=off` is a decision.
        settings["gro"] = Explicit(xapi_value(gro) or gro, gro,
                                   WHY_PROPERTY % gro, True)
    return settings


def rederive(resolution, other_config, force=False, unfinished=(),
             cls="VIF", properties=None):
    """The same policy decision over a fresh other_config (after a race)."""
    redo = Resolution()
    for name in ("policy", "level", "error", "policy_features",
                 "candidates", "feature_levels"):
        setattr(redo, name, getattr(resolution, name))
    if cls == "PIF":
        settings = _pif_settings({"other_config": other_config,
                                  "properties": properties or {}},
                                 unfinished)
        for feature, setting in resolution.settings.items():
            if setting.why.startswith("PIF property"):
                settings.setdefault(feature, setting)
    else:
        settings = _vif_settings(other_config, unfinished)
    return merge_explicit(redo, settings, force)


def vif_levels(records, vif_ref):
    """[[(level, other_config, policy key)]] of a VIF, most specific first:
    the VM, the VM's tags (one group), the network, the pool."""
    vif = records.vifs[vif_ref]
    vm = records.vms.get(vif.get("VM")) or {}
    network = records.networks.get(vif.get("network")) or {}
    pool_config = records.pool_other_config
    tags = [(tag_level(tag), pool_config, tag_key(tag))
            for tag in sorted(set(vm.get("tags") or []))]
    return [[(LEVEL_VM, vm.get("other_config"), KEY_VIF)],
            tags,
            [(LEVEL_NETWORK, network.get("other_config"), KEY_VIF)],
            [(LEVEL_POOL, pool_config, KEY_VIF)]]


def vif_policy_inputs(records, vif_ref):
    """What resolve_vif reads of one VIF besides the pool's map, each map
    by its identity: two VIFs of one unchanged snapshot with the same key
    resolve alike. (The watcher's snapshot shares equal maps, so VIFs with
    the same keys share them; elsewhere every map is its own and nothing
    is shared.)"""
    vif = records.vifs[vif_ref]
    vm = records.vms.get(vif.get("VM")) or {}
    network = records.networks.get(vif.get("network")) or {}
    return (id(vif.get("other_config")), id(vm.get("other_config")),
            tuple(sorted(set(vm.get("tags") or ()))),
            id(network.get("other_config")))


def resolve_vif(records, vif_ref, force=False):
    vif = records.vifs[vif_ref]
    resolution = Resolution()
    _decide(resolution, vif_levels(records, vif_ref))
    unfinished = unfinished_ops(records.pool_other_config)
    return merge_explicit(resolution, _vif_settings(
        vif.get("other_config"), unfinished), force)


def resolve_pif(records, pif_ref, force=False):
    pif = records.pifs[pif_ref]
    host = records.hosts.get(pif.get("host")) or {}
    resolution = Resolution()
    _decide(resolution, [[(LEVEL_HOST, host.get("other_config"), KEY_PIF)],
                         [(LEVEL_POOL, records.pool_other_config, KEY_PIF)]])
    unfinished = unfinished_ops(records.pool_other_config)
    return merge_explicit(resolution, _pif_settings(pif, unfinished), force)


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
