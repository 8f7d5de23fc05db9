"""Planning the database: the ordered other_config writes that bring each
VIF or PIF in line with its resolution, under the bookkeeping protocol of
docs/policy.md ("Bookkeeping").

Data flows one way: records -> resolution (precedence.py) -> a plan per
object -> writes (writer.py) -> the book that revert uses.

The book (keys.Book, one key `netoffload-book` per object) records for
each `ethtool-<f>` key the pack owns its prior and the value the pack
wrote. Every write of a key is preceded by a book that states the intent
under the writing operation's id (`op`): a crash leaves the key at its
prior, at the pack's earlier value (`was`), absent (between the remove and
the add of a replace) or at the new value, and the next writer, seeing the
op unfinished, tells each of those from someone else's change
(keys.entry_state). Someone else's change wins: the key is theirs, kept by
apply and revert (recorded in the book's `t` while the book lives).

Write order, per object:
1. undo what a crashed op left half done (a key left absent mid-replace
   gets back what it held before), so nothing depends on a dead op;
2. the intent: a book naming this op with every claim (prior, value) and
   change (prior, value, was), when any key write needs it;
3. the ethtool-* keys;
4. the final book (or its removal when nothing is owned any more), and the
   removal of stale book keys (an old generation, the old two-key form).
A book is replaced by adding the other generation key before removing the
old one, so a crash never leaves an object with no book.

Interfaces:
- `plan_db(records, targets, force=False, op=None)` -> [ObjectPlan];
- `plan_revert(records, targets, op=None)` -> [ObjectPlan] restoring every
  key the pack owns;
- `plan_normalise(records, refs, op)`: books that still reference a
  crashed op, rewritten (writer.Operation uses it);
- `replan(plan, fresh_config)` -> ObjectPlan from a fresh map (after a
  lost race or a re-read that found a change);
- `saved_summary(plans)`: the plan carried by CONFIRM_REQUIRED.
"""
import json

from netoffload.engine.features import FEATURES, VIF_XAPI_FEATURES
from netoffload.errors import NotFound
from netoffload.pool import keys
from netoffload.pool.keys import Book, Entry
from netoffload.pool.precedence import (
    EXPLICIT_SOURCES,
    Resolution,
    rederive,
    resolve_pif,
    resolve_vif,
)

# -- planning the database ------------------------------------------------------

class ObjectPlan(object):
    """What to write on one VIF or PIF, in order, and what it leads to.

    `problems`: why the object's bookkeeping cannot be trusted (a book
    that is not JSON, a prior xapi could not have held): such an object
    is not written at all, and the problem is reported."""

    def __init__(self, cls, ref, record, label, resolution, writes, final,
                 force=False, op=None, unfinished=(), problems=(),
                 reverting=False):
        self.cls = cls
        self.force = force
        self.current = dict(record.get("other_config") or {})
        self.ref = ref
        self.uuid = record.get("uuid", "")
        self.label = label
        self.resolution = resolution
        self.writes = writes      # [(key, value or None, expected)]
        self.final = final        # other_config after the writes
        self.op = op
        self.unfinished = frozenset(unfinished)
        self.problems = list(problems)
        self.reverting = reverting

    @property
    def changes(self):
        return bool(self.writes)

    @property
    def refused(self):
        return bool(self.problems)

    @property
    def rereads(self):
        """Does a write remove or replace a key (so the object is read
        again right before, and someone else's value wins)?"""
        return any(expected is not None for _, _, expected in self.writes)

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
        entry = {"class": self.cls, "uuid": self.uuid, "label": self.label,
                 "writes": [[k, v] for k, v, _ in self.writes],
                 "policy": self.resolution.policy,
                 "level": self.resolution.level,
                 "desired": dict(self.resolution.features),
                 "sources": dict(self.resolution.sources),
                 "live_only": self.live_only,
                 "reapplied_at_plug": self.reapplied_at_plug,
                 "policy_error": self.resolution.error}
        if self.problems:
            entry["refused"] = list(self.problems)
        return entry


def _put(view, writes, key, value):
    """Append the write that makes view[key] == value (None: absent)."""
    expected = view.get(key)
    if expected == value:
        return
    writes.append((key, value, expected))
    if value is None:
        view.pop(key, None)
    else:
        view[key] = value


def _book_writes(view, entries, taken, op):
    """[(key, value, expected)] that make the object's book hold
    (entries, taken, op), or go when both are empty, updating `view`.

    A new book goes under the free generation key before the old one is
    removed, so a crash between the two leaves two books (the reader takes
    the newer), never none; stale keys (an older generation, the old
    two-key form) go after it."""
    writes = []
    held = keys.read_book(view)
    keep = None
    if entries or taken:
        keep = keys.KEY_BOOK if held.slot is None else \
            [k for k in keys.BOOK_KEYS if k != held.slot][0]
        _put(view, writes, keep, None)  # an older generation's leftover
        _put(view, writes, keep, Book(entries, taken, op,
                                      held.gen + 1).to_text())
    for key in keys.BOOK_KEYS + keys.LEGACY_KEYS:
        if key != keep:
            _put(view, writes, key, None)
    return writes


def _same_book(book, entries, taken, op):
    """Does `book` (read from a map) hold exactly this, with no stale key?"""
    return book.slot is not None and not book.stale and \
        book.entries == entries and book.taken == set(taken) and \
        book.op == op


def plan_object(cls, ref, record, label, resolution, force=False, op=None,
                unfinished=(), reverting=False, actual=None):
    """The ordered writes that bring one object's keys to `resolution`.

    `op`: the id of the writing operation (its `netoffload-op:<id>` key is
    on the pool while it runs); `unfinished`: every op id with such a key
    (crashed ones and `op` itself). `reverting`: everything the pack owns
    goes back, and the book goes with its record of others' changes.
    `actual`: the map as xapi holds it now, when it differs from the
    record's (a re-plan); writes and `expected` follow it.
    """
    config = dict(record.get("other_config") if actual is None else actual)
    config = dict(config or {})
    unfinished = set(unfinished) | ({op} if op else set())
    book = keys.read_book(config)
    if book.problems or resolution.error:
        # A broken policy says nothing about what is wanted, and a book
        # that cannot be trusted says nothing about the priors: keep what
        # is there rather than strip keys or write back what xapi could
        # never have held.
        return ObjectPlan(cls, ref, record, label, resolution, [],
                          dict(config), force, op, unfinished, book.problems,
                          reverting)
    written_features = VIF_XAPI_FEATURES if cls == "VIF" else FEATURES
    book_unfinished = book.op is not None and book.op in unfinished
    view = dict(config)
    fixes = []        # (key, value): undo a crashed op's half-done write
    owned = {}        # feature -> Entry, as the keys stand after the fixes
    taken = set(f for f in book.taken
                if config.get(keys.ethtool_key(f)) is not None)
    normalised = False
    for feature, entry in sorted(book.entries.items()):
        key = keys.ethtool_key(feature)
        current = config.get(key)
        state = keys.entry_state(entry, current, book_unfinished)
        if state == keys.ENTRY_DONE:
            owned[feature] = Entry(entry.prior, entry.value or current, None)
            normalised = normalised or entry.was is not None or \
                entry.value is None
            continue
        normalised = True
        if state == keys.ENTRY_THEIRS:
            if current is not None:
                taken.add(feature)
            continue
        # pending: the pack's unfinished write; back to where it was
        if current == entry.prior:
            continue
        if current is None:
            back = entry.was if entry.was is not None else entry.prior
            fixes.append((key, back))
            view[key] = back
        if entry.was is not None:
            owned[feature] = Entry(entry.prior, entry.was, None)
    intent = dict(owned)   # the book before the keys are written
    final = dict(owned)    # the book after
    key_writes = []
    needs_intent = False
    for feature in written_features:
        key = keys.ethtool_key(feature)
        current = view.get(key)
        source = resolution.sources.get(feature)
        wanted = None if reverting else resolution.features.get(feature) \
            if source not in (None,) + EXPLICIT_SOURCES else None
        entry = owned.get(feature)
        if entry is not None:
            if wanted is None:
                final.pop(feature)
                if current != entry.prior:
                    key_writes.append((key, entry.prior))
                    # through "absent" when both ends are values
                    needs_intent = needs_intent or entry.prior is not None
            elif current != wanted:
                intent[feature] = Entry(entry.prior, wanted, current)
                final[feature] = Entry(entry.prior, wanted, None)
                key_writes.append((key, wanted))
                needs_intent = True
            continue
        if wanted is None or keys.xapi_value(current) == wanted:
            continue
        if not keys.valid_prior(current):
            # (force over) a value no book may hold as a prior: revert
            # could not put it back, so it is not taken over
            continue
        intent[feature] = final[feature] = Entry(current, wanted, None)
        taken.discard(feature)
        key_writes.append((key, wanted))
        needs_intent = True
    if reverting:
        taken = set()
    writes = []
    view = dict(config)
    for key, value in fixes:
        _put(view, writes, key, value)
    if needs_intent:
        writes += _book_writes(view, intent, taken, op)
    for key, value in key_writes:
        _put(view, writes, key, value)
    final_op = op if (needs_intent or key_writes or normalised) else book.op
    if not (final or taken):
        if keys.book_keys_present(view):
            writes += _book_writes(view, {}, set(), final_op)
        return ObjectPlan(cls, ref, record, label, resolution, writes, view,
                          force, op, unfinished, (), reverting)
    if needs_intent and final == intent:
        # the intent written above (under op, stale keys gone) is already
        # the final book: a fresh claim's one book write
        return ObjectPlan(cls, ref, record, label, resolution, writes, view,
                          force, op, unfinished, (), reverting)
    held = keys.read_book(view)
    if not _same_book(held, final, taken, final_op):
        if held.slot is not None and held.entries == final and \
                held.taken == set(taken) and held.op == final_op:
            for key in held.stale:  # only leftovers to clear
                _put(view, writes, key, None)
        else:
            writes += _book_writes(view, final, taken, final_op)
    return ObjectPlan(cls, ref, record, label, resolution, writes, view,
                      force, op, unfinished, (), reverting)


def _target_object(records, ref):
    """(class, record, label) of a VIF or PIF ref; NotFound otherwise."""
    if ref in records.vifs:
        return "VIF", records.vifs[ref], records.vif_label(ref)
    if ref in records.pifs:
        return "PIF", records.pifs[ref], records.pif_label(ref)
    raise NotFound("no VIF or PIF %s" % ref, ref)


_RESOLVE = {"VIF": resolve_vif, "PIF": resolve_pif}


def plan_db(records, targets, force=False, op=None):
    """[ObjectPlan] for the given VIF/PIF refs (unchanged objects included),
    written under operation `op` (None: planning only)."""
    unfinished = keys.unfinished_ops(records.pool_other_config)
    plans = []
    for ref in targets:
        cls, record, label = _target_object(records, ref)
        resolution = _RESOLVE[cls](records, ref, force)
        plans.append(plan_object(cls, ref, record, label, resolution, force,
                                 op, unfinished))
    return plans


def _nothing_wanted(record, unfinished):
    """The resolution of an object no policy covers: only its own keys."""
    resolution = Resolution()
    resolution.explicit = keys.explicit_keys(record.get("other_config") or {},
                                             unfinished)
    return resolution


def plan_revert(records, targets, op=None):
    """[ObjectPlan] restoring every key the pack owns on the given refs."""
    unfinished = keys.unfinished_ops(records.pool_other_config)
    plans = []
    for ref in targets:
        cls, record, label = _target_object(records, ref)
        plans.append(plan_object(cls, ref, record, label,
                                 _nothing_wanted(record, unfinished),
                                 op=op, unfinished=unfinished,
                                 reverting=True))
    return plans


def references(records, ops):
    """VIF/PIF refs whose book names one of `ops` (a book to normalise
    before those ops' keys may go)."""
    result = []
    for cls in ("VIF", "PIF"):
        table = records.table(cls)
        for ref in sorted(table):
            config = table[ref].get("other_config") or {}
            if any(k in config for k in keys.BOOK_KEYS) and \
                    keys.read_book(config).op in ops:
                result.append(ref)
    return result


def plan_normalise(records, refs, op):
    """[ObjectPlan] that settle books naming a crashed op and change
    nothing else: each feature keeps the state its key is in (the pack's
    value stays the pack's, a half-done write goes back to where it was),
    whatever the policy says now."""
    unfinished = keys.unfinished_ops(records.pool_other_config)
    plans = []
    for ref in refs:
        cls, record, label = _target_object(records, ref)
        config = record.get("other_config") or {}
        resolution = Resolution()
        book = keys.read_book(config)
        for feature, entry in book.entries.items():
            current = config.get(keys.ethtool_key(feature))
            if entry.value is not None and current in (entry.value,
                                                       entry.was):
                resolution.features[feature] = keys.xapi_value(current)
                resolution.sources[feature] = "normalise"
        plans.append(plan_object(cls, ref, record, label, resolution,
                                 op=op, unfinished=unfinished))
    return plans


# -- re-planning after a lost race or a re-read ------------------------------

def replan(plan, fresh_config):
    """Re-decide one object from its fresh map (after a lost race, or a
    re-read before a remove that found a change): the same policy
    decision; someone else's key wins (keys.entry_state)."""
    record = {"uuid": plan.uuid, "other_config": dict(fresh_config)}
    resolution = rederive(plan.resolution, fresh_config, plan.force,
                          plan.unfinished, plan.cls)
    again = plan_object(plan.cls, plan.ref, record, plan.label, resolution,
                        plan.force, plan.op, plan.unfinished, plan.reverting)
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
