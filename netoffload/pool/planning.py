"""Planning the database: the ordered other_config writes that bring each
VIF or PIF in line with its resolution (docs/policy.md).

Data flows one way: records -> resolution (precedence.py) -> a plan per
object -> writes (writer.py) -> bookkeeping that revert uses.

Bookkeeping on each VIF/PIF the pack wrote to (the watcher relies on it):
- `netoffload-managed`: comma-separated sorted short names whose
  `ethtool-<f>` key the pack wrote, e.g. `gso,rx,sg,tso,tx,ufo`;
- `netoffload-saved`: compact JSON, short name -> `[prior, written]`: the
  key's prior value string (null when it was absent) and the value the pack
  wrote, e.g. `{"sg":[null,"off"],"tx":["true","off"]}` (the earlier form
  with a bare prior is still read). A managed key that no longer holds what
  the pack wrote was changed by someone else: it is un-managed, its prior
  dropped, and left alone (keys.taken_over).
An `ethtool-<f>` key not listed in managed is explicit (someone else's) and
is never touched unless `force=True`, which saves it first. When the policy
stops covering a managed feature the saved value is restored and the feature
un-managed; when nothing is managed both bookkeeping keys go.

Write order keeps a crash harmless: bookkeeping that grows is written before
the ethtool keys, bookkeeping that shrinks after them.

Interfaces:
- `plan_db(records, targets, force=False)` -> [ObjectPlan] (targets: VIF
  and/or PIF refs);
- `plan_revert(records, targets)` -> [ObjectPlan] restoring everything managed;
- `replan(plan, fresh_config, lost_key)` -> ObjectPlan after a lost race;
- `saved_summary(plans)`: the plan carried by CONFIRM_REQUIRED.
"""
import json

from netoffload.engine.features import FEATURES, VIF_XAPI_FEATURES
from netoffload.errors import NotFound
from netoffload.pool import keys
from netoffload.pool.precedence import (
    SOURCE_EXPLICIT,
    Resolution,
    rederive,
    resolve_pif,
    resolve_vif,
)

# -- planning the database ------------------------------------------------------

class ObjectPlan(object):
    """What to write on one VIF or PIF, in order, and what it leads to."""

    def __init__(self, cls, ref, record, label, resolution, writes, final,
                 force=False):
        self.cls = cls
        self.force = force
        self.current = dict(record.get("other_config") or {})
        self.ref = ref
        self.uuid = record.get("uuid", "")
        self.label = label
        self.resolution = resolution
        self.writes = writes      # [(key, value or None, expected)]
        self.final = final        # other_config after the writes

    @property
    def changes(self):
        return bool(self.writes)

    @property
    def live_only(self):
        """gro/lro wishes on a VIF: xapi drops these keys; enforced live."""
        if self.cls != "VIF":
            return {}
        return dict((f, v) for f, v in self.resolution.features.items()
                    if f not in VIF_XAPI_FEATURES)

    def _reapplied(self, config):
        written_features = VIF_XAPI_FEATURES if self.cls == "VIF" else FEATURES
        return all(keys.xapi_value(config.get(keys.ethtool_key(f))) == v
                   for f, v in self.resolution.features.items() if f in written_features)

    @property
    def reapplied_at_plug(self):
        """After the writes, would xapi apply every desired key at plug?"""
        return self._reapplied(self.final)

    @property
    def reapplied_now(self):
        """With the keys as they are now, would xapi apply them at plug?"""
        return self._reapplied(self.current)

    def to_json(self):
        return {"class": self.cls, "uuid": self.uuid, "label": self.label,
                "writes": [[k, v] for k, v, _ in self.writes],
                "policy": self.resolution.policy,
                "level": self.resolution.level,
                "desired": dict(self.resolution.features),
                "sources": dict(self.resolution.sources),
                "live_only": self.live_only,
                "reapplied_at_plug": self.reapplied_at_plug,
                "policy_error": self.resolution.error}


def _bookkeeping(managed, saved, written):
    if not managed:
        return None, None
    return (keys.format_managed(managed),
            keys.format_saved(dict((f, saved.get(f)) for f in managed),
                           dict((f, written.get(f)) for f in managed)))


def plan_object(cls, ref, record, label, resolution, force=False,
                actual=None):
    """The ordered writes that bring one object's keys to `resolution`.

    A managed key someone changed or removed since the pack wrote it
    (keys.taken_over) is theirs: it is un-managed and left as it is,
    and its saved prior is dropped, so revert keeps their value. With
    force the policy overwrites it and saves *their* value as the prior.

    `actual`: the map as xapi holds it, when the decision is made on an
    adjusted view of it (after a lost race); `expected` values follow it.
    """
    config = dict(record.get("other_config") or {})
    if resolution.error:
        # A broken policy string (a typo set with xe, past set_policy's
        # check) says nothing about what is wanted: keep what is there
        # rather than take it for "nothing wanted" and strip every key.
        return ObjectPlan(cls, ref, record, label, resolution, [],
                          dict(config if actual is None else actual), force)
    written_features = VIF_XAPI_FEATURES if cls == "VIF" else FEATURES
    managed = keys.parse_managed(config.get(keys.KEY_MANAGED)) - \
        keys.taken_over(config)
    saved = keys.parse_saved(config.get(keys.KEY_SAVED))
    written = keys.parse_written(config.get(keys.KEY_SAVED))
    new_managed = set(managed)
    new_saved = dict((f, saved.get(f)) for f in managed)
    new_written = dict((f, written.get(f)) for f in managed)
    key_writes = []
    for feature in written_features:
        key = keys.ethtool_key(feature)
        current = config.get(key)
        source = resolution.sources.get(feature)
        wanted = resolution.features.get(feature) \
            if source not in (None, SOURCE_EXPLICIT) else None
        if feature in managed:
            if wanted is None:
                prior = saved.get(feature)
                if current != prior:
                    key_writes.append((key, prior))
                new_managed.discard(feature)
                new_saved.pop(feature, None)
                new_written.pop(feature, None)
            elif current != wanted:
                key_writes.append((key, wanted))
                new_written[feature] = wanted
        elif wanted is not None and keys.xapi_value(current) != wanted:
            if current is not None and not force:
                continue  # explicit: resolution already let it win
            new_managed.add(feature)
            new_saved[feature] = current
            new_written[feature] = wanted
            key_writes.append((key, wanted))
    held = config if actual is None else actual
    old_book = (held.get(keys.KEY_MANAGED), held.get(keys.KEY_SAVED))
    # Before the keys: every feature about to be written is claimed with
    # the value it will hold; after them: what is no longer ours goes.
    grown_saved = dict((f, saved.get(f)) for f in managed)
    grown_saved.update(new_saved)
    grown_written = dict((f, written.get(f)) for f in managed)
    grown_written.update(new_written)
    grown_book = _bookkeeping(managed | new_managed, grown_saved,
                              grown_written)
    final_book = _bookkeeping(new_managed, new_saved, new_written)
    ordered = []
    if key_writes and grown_book != old_book:
        ordered += list(zip((keys.KEY_MANAGED, keys.KEY_SAVED), grown_book))
        old_book = grown_book
    ordered += key_writes
    if final_book != old_book:
        ordered += list(zip((keys.KEY_MANAGED, keys.KEY_SAVED), final_book))
    writes = []
    config = dict(config if actual is None else actual)
    for key, value in ordered:
        expected = config.get(key)
        if expected == value:
            continue
        writes.append((key, value, expected))
        if value is None:
            config.pop(key, None)
        else:
            config[key] = value
    return ObjectPlan(cls, ref, record, label, resolution, writes, config,
                      force)


def _target_object(records, ref):
    """(class, record, label) of a VIF or PIF ref; NotFound otherwise."""
    if ref in records.vifs:
        return "VIF", records.vifs[ref], records.vif_label(ref)
    if ref in records.pifs:
        return "PIF", records.pifs[ref], records.pif_label(ref)
    raise NotFound("no VIF or PIF %s" % ref, ref)


_RESOLVE = {"VIF": resolve_vif, "PIF": resolve_pif}


def plan_db(records, targets, force=False):
    """[ObjectPlan] for the given VIF/PIF refs (unchanged objects included)."""
    plans = []
    for ref in targets:
        cls, record, label = _target_object(records, ref)
        resolution = _RESOLVE[cls](records, ref, force)
        plans.append(plan_object(cls, ref, record, label, resolution, force))
    return plans


def _nothing_wanted(record):
    """The resolution of an object no policy covers: only its own keys."""
    resolution = Resolution()
    resolution.explicit = keys.explicit_keys(record.get("other_config") or {})
    return resolution


def plan_revert(records, targets):
    """[ObjectPlan] restoring every managed key of the given refs."""
    plans = []
    for ref in targets:
        cls, record, label = _target_object(records, ref)
        plans.append(plan_object(cls, ref, record, label,
                                 _nothing_wanted(record)))
    return plans


# -- re-planning after a lost race ---------------------------------------------

def replan(plan, fresh_config, lost_key=None):
    """Re-decide one object from its fresh map after a lost race.

    The other writer's key wins: if we had just claimed that feature in our
    bookkeeping (written before the key), the claim is withdrawn.
    """
    view = dict(fresh_config)
    feature = (lost_key or "")[len(keys.ETHTOOL_PREFIX):]
    claimed = keys.parse_managed(view.get(keys.KEY_MANAGED))
    if lost_key and lost_key.startswith(keys.ETHTOOL_PREFIX) and \
            feature in claimed and feature not in \
            keys.parse_managed(plan.current.get(keys.KEY_MANAGED)):
        claimed.discard(feature)
        saved = keys.parse_saved(view.get(keys.KEY_SAVED))
        saved.pop(feature, None)
        book = _bookkeeping(claimed, saved,
                            keys.parse_written(view.get(keys.KEY_SAVED)))
        for key, value in zip((keys.KEY_MANAGED, keys.KEY_SAVED), book):
            if value is None:
                view.pop(key, None)
            else:
                view[key] = value
    record = {"uuid": plan.uuid, "other_config": view}
    resolution = rederive(plan.resolution, view, plan.force)
    again = plan_object(plan.cls, plan.ref, record, plan.label, resolution,
                        plan.force, actual=fresh_config)
    again.current = dict(plan.current)
    return again


def saved_summary(plans):
    """A compact JSON summary of plans (carried by CONFIRM_REQUIRED)."""
    changing = [p for p in plans if p.changes]
    return json.dumps({
        "objects": len(plans), "changing": len(changing),
        "keys": sum(len(p.writes) for p in changing),
        "plan": [{"class": p.cls, "uuid": p.uuid, "label": p.label,
                  "writes": dict((k, v) for k, v, _ in p.writes)}
                 for p in changing]}, sort_keys=True, separators=(",", ":"))
