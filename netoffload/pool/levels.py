"""Where policies live (`PolicyLocation`), and which level a revert sets to
`none` (`revert_scope`).
"""
from collections import namedtuple

from netoffload.engine.policy import NONE
from netoffload.pool import keys, targeting
from netoffload.pool.keys import POLICY_KIND_PIF, POLICY_KIND_VIF
from netoffload.pool.precedence import (
    LEVEL_HOST,
    LEVEL_NETWORK,
    LEVEL_POOL,
    LEVEL_TAG,
    LEVEL_VM,
    resolve_pif,
    resolve_vif,
)
from netoffload.pool.records import is_eligible_vm
from netoffload.pool.targeting import TARGET_ALL, TARGET_PIF

# What set_policy accepts at a level: the policy kinds, the argument that
# names the object (None: the pool) and the kind when none is given.
LevelRule = namedtuple("LevelRule", "kinds selector default_kind")

LEVELS = {
    LEVEL_POOL: LevelRule((POLICY_KIND_VIF, POLICY_KIND_PIF), None, None),
    LEVEL_HOST: LevelRule((POLICY_KIND_PIF,), "host", POLICY_KIND_PIF),
    LEVEL_NETWORK: LevelRule((POLICY_KIND_VIF,), "network",
                             POLICY_KIND_VIF),
    LEVEL_TAG: LevelRule((POLICY_KIND_VIF,), "tag", POLICY_KIND_VIF),
    LEVEL_VM: LevelRule((POLICY_KIND_VIF,), "vm", POLICY_KIND_VIF),
}


class PolicyLocation(namedtuple("PolicyLocation", "cls ref key uuid name")):
    """One policy key: the object (XAPI class, ref, uuid, name: the tag's
    name for a tag policy, "" for the pool) and the other_config key."""
    __slots__ = ()

    def held(self, records):
        """The policy text the key holds in `records`, or None."""
        return (records.table(self.cls)[self.ref].get("other_config")
                or {}).get(self.key)

    def to_json(self, policy, previous):
        return {"class": self.cls, "uuid": self.uuid, "name": self.name,
                "key": self.key, "policy": policy, "previous": previous}

    @property
    def wide(self):
        """Does a policy here reach more than one VM? (pool, host, network
        or tag: storing it needs confirm=yes)"""
        return self.cls != "VM"

    @property
    def tag(self):
        """The tag of a tag policy, else None."""
        if self.cls == "pool" and self.key.startswith(keys.TAG_PREFIX):
            return keys.tag_of_key(self.key)
        return None

    def reach(self, records):
        """(VIF or PIF refs a policy here governs, [SkippedObject] in
        reach but left out: VIFs on SR-IOV networks)."""
        if self.cls == "host":
            return targeting.split_sriov_pifs(records,
                                              records.pifs_of_host(self.ref))
        if self.cls == "pool" and self.key == keys.KEY_PIF:
            return targeting.split_sriov_pifs(records, sorted(records.pifs))
        if self.cls == "VM":
            vifs = records.vifs_of_vm(self.ref)
        elif self.cls == "network":
            vifs = targeting.network_vifs(records, self.ref)
        elif self.tag is not None:
            vifs = targeting.tagged_vifs(records, self.tag)
        else:
            vifs = targeting.eligible_vifs(records)
        return targeting.split_sriov(records, vifs)

    def stored_in(self, records, text):
        """A copy of `records` with `text` (None: no key) stored here."""
        after = records.copy()
        config = after.table(self.cls)[self.ref]["other_config"]
        if text is None:
            config.pop(self.key, None)
        else:
            config[self.key] = text
        return after


# A policy text to store at a location (None removes the key).
PolicyWrite = namedtuple("PolicyWrite", "location policy")


class KeptObject(namedtuple("KeptObject", "cls uuid label level")):
    """An object a revert leaves alone: its policy comes from `level`,
    above the target's."""
    __slots__ = ()

    def to_json(self):
        return {"class": self.cls, "uuid": self.uuid, "label": self.label,
                "level": self.level}


# What a revert changes: policy writes, the VIF/PIF refs to restore, and
# the KeptObjects it leaves alone.
RevertScope = namedtuple("RevertScope", "policy_writes refs kept")


def _pool_location(records, key, name=""):
    return PolicyLocation("pool", records.pool_ref, key,
                          records.pool_record.get("uuid", ""), name)


def _object_location(cls, ref, record, key):
    return PolicyLocation(cls, ref, key, record.get("uuid", ""),
                          record.get("name_label", ""))


def policy_location(ctx, level, kind, selector):
    """The PolicyLocation of a level's policy of `kind` (vif/pif)."""
    records = ctx.records
    if level == LEVEL_POOL:
        return _pool_location(records, keys.policy_key(kind))
    if level == LEVEL_TAG:
        return _pool_location(records, keys.tag_key(selector), selector)
    if level == LEVEL_HOST:
        ref = ctx.host_ref if not selector else targeting.find_by_name_or_uuid(
            records.hosts, selector, "host")
        table, cls = records.hosts, "host"
    elif level == LEVEL_NETWORK:
        ref = targeting.find_by_name_or_uuid(records.networks, selector,
                                             "network")
        table, cls = records.networks, "network"
    else:
        ref = targeting.find_by_name_or_uuid(records.vms, selector, "VM",
                                             is_eligible_vm)
        table, cls = records.vms, "VM"
    return _object_location(cls, ref, table[ref], keys.policy_key(kind))


def write_policy(ctx, location, text):
    """Store `text` (None: remove) at `location`, in XAPI and the snapshot."""
    record = ctx.records.table(location.cls)[location.ref]
    ctx.xapi.set_other_config_key(location.cls, location.ref, location.key,
                                  text, location.held(ctx.records))
    config = record.setdefault("other_config", {})
    if text is None:
        config.pop(location.key, None)
    else:
        config[location.key] = text


def apply_policy_locations(ctx, spec, pool_wide):
    """Where `apply <target> policy=` stores the policy."""
    kind, value = spec
    if kind == TARGET_ALL:
        return [policy_location(ctx, LEVEL_POOL, POLICY_KIND_VIF, None),
                policy_location(ctx, LEVEL_POOL, POLICY_KIND_PIF, None)]
    if kind == TARGET_PIF:
        if pool_wide:
            return [policy_location(ctx, LEVEL_POOL, POLICY_KIND_PIF, None)]
        return [policy_location(ctx, LEVEL_HOST, POLICY_KIND_PIF, None)]
    return [policy_location(ctx, kind, POLICY_KIND_VIF, value)]


def all_policy_locations(ctx):
    """Every policy key in the pool (for revert ALL)."""
    records = ctx.records
    result = []
    for key in sorted(records.pool_other_config):
        if key in (keys.KEY_VIF, keys.KEY_PIF) or key.startswith(keys.TAG_PREFIX):
            result.append(_pool_location(records, key))
    for cls, key in (("host", keys.KEY_PIF), ("network", keys.KEY_VIF),
                     ("VM", keys.KEY_VIF)):
        table = records.table(cls)
        for ref in sorted(table):
            if key in (table[ref].get("other_config") or {}):
                result.append(_object_location(cls, ref, table[ref], key))
    return result


def still_governed(resolution):
    """Does a policy still decide a feature of this object?"""
    return bool(resolution.policy_features) and not resolution.error


def revert_scope(ctx, spec, selection):
    """The RevertScope of a target.

    Revert sets to `none` the level each selected object resolves from, so
    the watcher and later applies leave it reverted:
    - ALL: every policy key goes;
    - vm/tag/network: that level is set to none; an object whose policy
      comes from a level above the target (its VM's own policy, or an
      earlier tag) is not the target's doing: it is left as it is and
      reported in `kept` (revert vm= or that tag to undo it);
    - pif: a PIF's policy is its host's or the pool's; the host's
      `netoffload-pif` is set to none (only that host opts out), which
      takes every PIF of that host out, so all of them are reverted.
    """
    records = ctx.records
    kind, value = spec
    if kind == TARGET_ALL:
        writes = [PolicyWrite(loc, None) for loc in all_policy_locations(ctx)]
        return RevertScope(writes, selection.refs, [])
    if kind == TARGET_PIF:
        hosts = sorted(set(records.pifs[ref].get("host")
                           for ref in selection.pifs
                           if resolve_pif(records, ref).level is not None))
        writes = []
        refs = list(selection.pifs)
        for host_ref in hosts:
            host = records.hosts.get(host_ref) or {}
            if (host.get("other_config") or {}).get(keys.KEY_PIF) != NONE:
                writes.append(PolicyWrite(_object_location(
                    "host", host_ref, host, keys.KEY_PIF), NONE))
            refs += [r for r in records.pifs_of_host(host_ref)
                     if r not in refs]
        return RevertScope(writes, refs, [])
    location = policy_location(ctx, kind, POLICY_KIND_VIF, value)
    held = location.held(records)
    # The objects as they resolve once the target's level says none: one
    # still governed by another level (its VM's own policy, another tag
    # that still contributes) is not the target's doing and is kept.
    after = records.copy()
    after.table(location.cls)[location.ref].setdefault(
        "other_config", {})[location.key] = NONE
    refs, kept = [], []
    for ref in selection.vifs:
        if still_governed(resolve_vif(after, ref)):
            kept.append(KeptObject("VIF", records.vifs[ref].get("uuid", ""),
                                   records.vif_label(ref),
                                   resolve_vif(records, ref).level))
        else:
            refs.append(ref)
    owned = [ref for ref in refs
             if keys.book_keys_present(records.vifs[ref].get("other_config"))]
    # Only a level that holds a policy, or whose objects netoffload
    # changed, is set to none: a revert of a target netoffload never
    # changed writes nothing (no `netoffload-tag:<t>=none` from nowhere).
    writes = []
    if (held is not None and held != NONE) or (held is None and owned):
        writes.append(PolicyWrite(location, NONE))
    return RevertScope(writes, refs + selection.pifs, kept)
