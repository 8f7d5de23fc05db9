"""Where policies live, and which level a revert sets to `none`.
"""
from netoffload.pool import keys, targeting
from netoffload.pool.precedence import resolve_pif, resolve_vif
from netoffload.pool.records import is_eligible_vm

LEVELS = {
    # level: (allowed kinds, selector argument, default kind)
    "pool": (("vif", "pif"), None, None),
    "host": (("pif",), "host", "pif"),
    "network": (("vif",), "network", "vif"),
    "tag": (("vif",), "tag", "vif"),
    "vm": (("vif",), "vm", "vif"),
}


def policy_location(ctx, level, kind, selector):
    """(cls, ref, key, uuid, name) where a level's policy lives."""
    records = ctx.records
    if level == "pool":
        return ("pool", records.pool_ref, keys.policy_key(kind),
                records.pool_record.get("uuid", ""), "")
    if level == "tag":
        return ("pool", records.pool_ref, keys.tag_key(selector),
                records.pool_record.get("uuid", ""), selector)
    if level == "host":
        ref = ctx.host_ref if not selector else targeting.find_by_name_or_uuid(
            records.hosts, selector, "host")
        table, cls = records.hosts, "host"
    elif level == "network":
        ref = targeting.find_by_name_or_uuid(records.networks, selector,
                                             "network")
        table, cls = records.networks, "network"
    else:
        ref = targeting.find_by_name_or_uuid(records.vms, selector, "VM",
                                             is_eligible_vm)
        table, cls = records.vms, "VM"
    return (cls, ref, keys.policy_key(kind), table[ref].get("uuid", ""),
            table[ref].get("name_label", ""))


def write_policy(ctx, location, text):
    cls, ref, key, _, _ = location
    current = ctx.records.table(cls)[ref].get("other_config") or {}
    ctx.xapi.set_other_config_key(cls, ref, key, text, current.get(key))
    ctx.records.table(cls)[ref].setdefault("other_config", {})
    if text is None:
        ctx.records.table(cls)[ref]["other_config"].pop(key, None)
    else:
        ctx.records.table(cls)[ref]["other_config"][key] = text


def location_json(location, text, previous):
    cls, _, key, uuid, name = location
    return {"class": cls, "uuid": uuid, "name": name, "key": key,
            "policy": text, "previous": previous}


def apply_policy_locations(ctx, spec, pool_wide):
    kind, value = spec
    if kind == "all":
        return [policy_location(ctx, "pool", "vif", None),
                policy_location(ctx, "pool", "pif", None)]
    if kind == "pif":
        if pool_wide:
            return [policy_location(ctx, "pool", "pif", None)]
        return [policy_location(ctx, "host", "pif", None)]
    return [policy_location(ctx, kind, "vif", value)]


def all_policy_locations(ctx):
    """Every policy key in the pool (for revert ALL)."""
    records = ctx.records
    result = []
    for key in sorted(records.pool_other_config):
        if key in (keys.KEY_VIF, keys.KEY_PIF) or key.startswith(keys.TAG_PREFIX):
            result.append(("pool", records.pool_ref, key,
                           records.pool_record.get("uuid", ""), ""))
    for cls, key in (("host", keys.KEY_PIF), ("network", keys.KEY_VIF),
                     ("VM", keys.KEY_VIF)):
        table = records.table(cls)
        for ref in sorted(table):
            if key in (table[ref].get("other_config") or {}):
                result.append((cls, ref, key, table[ref].get("uuid", ""),
                               table[ref].get("name_label", "")))
    return result


def covered_by(kind, value, level):
    """Does setting the target's level to none take the policy off an
    object that resolves from `level`? (Levels above it still apply.)"""
    if level is None or kind in ("all", "vm"):
        return True
    if level == "vm":
        return False
    if level.startswith("tag:"):
        return kind == "tag" and level == "tag:" + value
    return True  # network, pool: below tag and network


def revert_scope(ctx, spec, selection):
    """(policy changes [(location, text)], refs to revert, kept [json]).

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
    if kind == "all":
        changes = [(loc, None) for loc in all_policy_locations(ctx)]
        return changes, selection.refs, []
    if kind == "pif":
        hosts = sorted(set(records.pifs[ref].get("host")
                           for ref in selection.pifs
                           if resolve_pif(records, ref).level is not None))
        changes = []
        refs = list(selection.pifs)
        for host_ref in hosts:
            host = records.hosts.get(host_ref) or {}
            if (host.get("other_config") or {}).get(keys.KEY_PIF) != "none":
                changes.append((("host", host_ref, keys.KEY_PIF,
                                 host.get("uuid", ""),
                                 host.get("name_label", "")), "none"))
            refs += [r for r in records.pifs_of_host(host_ref)
                     if r not in refs]
        return changes, refs, []
    changes = [(policy_location(ctx, kind, "vif", value), "none")]
    refs, kept = [], []
    for ref in selection.vifs:
        level = resolve_vif(records, ref).level
        if covered_by(kind, value, level):
            refs.append(ref)
        else:
            kept.append({"class": "VIF", "uuid": records.vifs[ref].get(
                "uuid", ""), "label": records.vif_label(ref),
                "level": level})
    return changes, refs + selection.pifs, kept
