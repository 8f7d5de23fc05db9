"""XAPI writes: carry out object plans under the bookkeeping protocol
(docs/policy.md, "Bookkeeping"), with lost races re-planned.

- `operation(client, holder)`: the context of every database writer: the
  pool lease (lease.py), this op's `netoffload-op:<id>` key, and the books
  a crashed op left half done settled first; yields an `Operation` whose
  `.op` goes into the plans (planning.plan_db(..., op=op.op)).
- `apply_db(client, plans, clients, renew)` -> [ObjectWrite] per object: changed /
  unchanged / gone / failed / refused, the keys written. An object whose
  plan removes or replaces a key is read again right before its writes,
  and re-planned when it changed: someone else's value wins. An object's
  writes stay in order on one session; objects are spread over several
  sessions in parallel threads.
- `write_plans(ctx, plans)`: apply_db over up to DB_SESSIONS sessions;
  the extra ones log in each in its own writer thread, while the first
  objects are already being written (ExtraSessions).
- `begin(client, plan)` -> ObjectWrite, or a KeyRun whose keys are then
  written at once over several sessions (KeyRun.write_key) and finished
  with KeyRun.finish: the watcher's writers (agents/watch.py KeyWriters).
  `split_writes` says which writes of a plan may go out together: the
  ethtool-* keys its intent book names, after the intent and before the
  final book (docs/policy.md, "Writing one object").
"""
import contextlib
import threading

from netoffload.errors import XapiError
from netoffload.log import get_logger
from netoffload.pool import keys, lease, planning, xapi
from netoffload.pool.planning import ObjectPlan, replan  # noqa: F401
from netoffload.pool.xapi import LostRace, ObjectGone

# Only for the type checker (basedpyright takes a name TYPE_CHECKING as
# true): typing costs the watcher about 0.2 MiB of RSS at run time.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import List, Optional  # noqa: F401 (type comments)

MAX_RACE_RETRIES = 3

# ObjectWrite.status
STATUS_UNCHANGED = "unchanged"
STATUS_CHANGED = "changed"
STATUS_GONE = "gone"
STATUS_FAILED = "failed"
STATUS_REFUSED = "refused"   # bookkeeping that cannot be trusted: untouched


class ObjectWrite(object):
    """What writing one object's plan did: its status, the (key, value)
    pairs written in order, the error of a failed write, and the plan as
    finally carried out (None when the writes did not finish)."""
    __slots__ = ("cls", "uuid", "label", "status", "written", "error",
                 "done_plan")

    def __init__(self, plan):
        self.cls = plan.cls
        self.uuid = plan.uuid
        self.label = plan.label
        self.status = STATUS_UNCHANGED
        self.written = []
        self.error = None
        self.done_plan = None  # type: Optional[ObjectPlan]

    @classmethod
    def failed(cls, plan, error):
        """A write of `plan` that failed with `error` [message, params...]."""
        result = cls(plan)
        result.fail(error)
        return result

    def fail(self, error):
        self.status = STATUS_FAILED
        self.error = list(error)

    def to_json(self):
        entry = {"class": self.cls, "uuid": self.uuid, "label": self.label,
                 "written": [[k, v] for k, v in self.written],
                 "status": self.status}
        if self.error is not None:
            entry["error"] = list(self.error)
        if self.done_plan is not None:
            entry["live_only"] = self.done_plan.live_only
            entry["reapplied_at_plug"] = self.done_plan.reapplied_at_plug
            entry["desired"] = dict(self.done_plan.resolution.features)
        return entry

    def __repr__(self):
        return "ObjectWrite(%s %s: %s)" % (self.cls, self.uuid, self.status)


def _apply_one(client, plan):
    result = ObjectWrite(plan)
    if plan.refused:
        return _refused(result, plan)
    return _write_in_order(client, plan, result)


def _refused(result, plan):
    result.status = STATUS_REFUSED
    result.error = list(plan.problems)
    get_logger().warning("%s %s: bookkeeping refused, left as it is: %s",
                         plan.cls, plan.uuid, "; ".join(plan.problems))
    return result


def _ended(result, err):
    """The object's write ended by xapi's `err`: gone, or failed."""
    if isinstance(err, ObjectGone):
        result.status = STATUS_GONE
    else:
        result.fail([err.message] + err.params)
    return result


def _write(client, plan, writes, result):
    """Write `writes` of `plan` in order, noting each in `result`."""
    for key, value, expected in writes:
        client.set_other_config_key(plan.cls, plan.ref, key, value, expected)
        result.written.append((key, value))
        result.status = STATUS_CHANGED


def _write_in_order(client, plan, result, attempt=0, split=False):
    """The writes of `plan`, re-planned after a lost race (attempt: the
    races lost so far). split: stop after the head of a plan that has a
    run of keys to write in parallel (split_writes) and return a KeyRun
    instead of the ObjectWrite."""
    while attempt < MAX_RACE_RETRIES:
        try:
            if plan.rereads:
                # Right before a remove: the map as it is now. Someone
                # else's value written since the snapshot wins.
                fresh = client.get_other_config(plan.cls, plan.ref)
                if _differs(plan, fresh):
                    plan = replan(plan, fresh)
                    if plan.refused:
                        result.status = STATUS_REFUSED
                        result.error = list(plan.problems)
                        return result
            if split:
                head, run, tail = split_writes(plan.writes)
                if run:
                    _write(client, plan, head, result)
                    return KeyRun(plan, result, run, tail, attempt)
            _write(client, plan, plan.writes, result)
            break
        except LostRace as race:
            get_logger().info("%s %s: lost a race on other_config; re-planning",
                              plan.cls, plan.uuid)
            plan = replan(plan, race.other_config)
            attempt += 1
        except XapiError as err:
            return _ended(result, err)
    else:
        result.fail(["lost %d races in a row" % MAX_RACE_RETRIES])
        return result
    result.done_plan = plan
    return result


# -- one object's keys in parallel (the watcher) -------------------------------
#
# Once an object's intent book is written, every key it names is classified
# on its own after a crash (keys.entry_state: prior, `was`, absent or the new
# value), so any subset of those key writes is a state the next writer
# settles: they may go out at once, over several sessions. The final book
# (and stale book removals) must wait until every one of them is done.

def split_writes(writes):
    """(head, run, tail) of a plan's writes: `run` is the consecutive
    ethtool-* writes right after the intent book (a book key added under
    an op, whose entries name each of those keys' features; removals of
    other book keys may sit between), each key once; they may be written
    in any order, at once. `head` (up to and including the intent) and
    `tail` (the final book, stale keys) stay in order: head before the
    run, tail after all of it. No such run of 2 or more: ([...], [], [])."""
    writes = list(writes)
    intent = None
    for index, (key, value, _) in enumerate(writes):
        if key in keys.BOOK_KEYS and value is not None:
            intent = index
            break
    if intent is None:
        return writes, [], []
    book = keys.read_book({writes[intent][0]: writes[intent][1]})
    if book.op is None or book.problems:
        return writes, [], []
    start = intent + 1
    while start < len(writes) and writes[start][1] is None and \
            writes[start][0] in keys.BOOK_KEYS + keys.LEGACY_KEYS:
        start += 1
    end, seen = start, set()
    while end < len(writes):
        key, value, _ = writes[end]
        feature = keys.feature_of_key(key)
        entry = book.entries.get(feature)
        if entry is None or key in seen or \
                value not in (entry.value, entry.prior):
            break
        seen.add(key)
        end += 1
    if end - start < 2:
        return writes, [], []
    return writes[:start], writes[start:end], writes[end:]


# KeyRun.outcomes: a key written
WRITTEN = "written"
UNCHANGED = object()  # KeyRun.write_key: the key holds what the plan read


class KeyRun(object):
    """One object's write after its head: the run's keys to write, each
    with write_key (any session, any order, at once), then finish() on
    one session once all of them are done."""
    __slots__ = ("plan", "result", "run", "tail", "attempt", "outcomes")

    def __init__(self, plan, result, run, tail, attempt):
        self.plan = plan
        self.result = result
        self.run = run
        self.tail = tail
        self.attempt = attempt
        # per key: None (not yet), WRITTEN or the exception it raised
        self.outcomes = [None] * len(run)  # type: List[object]

    def write_key(self, client, index, expected=UNCHANGED):
        """Write the run's index-th key; its outcome is kept, not raised.
        `expected`: what the key holds now when a caller's own call
        already changed it (a remove of a replace done)."""
        key, value, planned = self.run[index]
        if expected is UNCHANGED:
            expected = planned
        try:
            client.set_other_config_key(self.plan.cls, self.plan.ref, key,
                                        value, expected)
            self.outcomes[index] = WRITTEN
        except BaseException as err:  # handed to finish()
            self.outcomes[index] = err

    def finish(self, client):
        """After every write_key: the ObjectWrite, with the tail written
        (or, after a lost race in the run, the object read again,
        re-planned and written in order, as apply_db does)."""
        plan, result = self.plan, self.result
        for (key, value, _), outcome in zip(self.run, self.outcomes):
            if outcome is WRITTEN:
                result.written.append((key, value))
                result.status = STATUS_CHANGED
        if None in self.outcomes:
            raise RuntimeError("KeyRun.finish before every key was written")
        errors = [o for o in self.outcomes if isinstance(o, BaseException)]
        for error in errors:
            if not isinstance(error, XapiError):
                raise error  # a bug (or a stop) in a key write
        # gone first, then the first failure that is not a lost race
        ending = [e for e in errors if isinstance(e, ObjectGone)] + \
            [e for e in errors if not isinstance(e, LostRace)]
        if ending:
            return _ended(result, ending[0])
        if errors:
            # someone else wrote one of the keys: once all of ours are
            # done, the map as it is now decides the rest
            get_logger().info("%s %s: lost a race on other_config; "
                              "re-planning", plan.cls, plan.uuid)
            try:
                fresh = client.get_other_config(plan.cls, plan.ref)
            except XapiError as err:
                return _ended(result, err)
            return _write_in_order(client, replan(plan, fresh), result,
                                   self.attempt + 1)
        try:
            _write(client, plan, self.tail, result)
        except LostRace as race:
            get_logger().info("%s %s: lost a race on other_config; "
                              "re-planning", plan.cls, plan.uuid)
            return _write_in_order(client, replan(plan, race.other_config),
                                   result, self.attempt + 1)
        except XapiError as err:
            return _ended(result, err)
        result.done_plan = plan
        return result


def begin(client, plan):
    """The first step of writing one object with its keys in parallel:
    the re-read (plan.rereads) and the writes up to its intent book.
    Returns the ObjectWrite when that is all (no run of keys to write in
    parallel: written in order, as apply_db does), else a KeyRun."""
    result = ObjectWrite(plan)
    if plan.refused:
        return _refused(result, plan)
    return _write_in_order(client, plan, result, split=True)


def _differs(plan, fresh):
    """Does the fresh map differ from what the plan was made from, in a
    key the plan reads (ethtool-*, the book)?"""
    read = set(k for k in set(plan.current) | set(fresh)
               if keys.feature_of_key(k) or k in keys.BOOK_KEYS
               or k in keys.LEGACY_KEYS)
    return any(plan.current.get(k) != fresh.get(k) for k in read)


class ExtraSessions(object):
    """`count` more writers for apply_db, each with a session of its own
    that it opens in its own thread (so the first objects are written
    while the others log in) and closes when the work is done. One that
    cannot log in does not write; the others share its objects."""

    def __init__(self, count, open_client=None):
        self.count = max(0, int(count))
        self._open = open_client or (lambda: xapi.Xapi(xapi.open_session()))
        self._lock = threading.Lock()
        self.opened = []  # the clients that logged in

    def open(self):
        """A new client, or None (logged)."""
        try:
            client = self._open()
        except XapiError as err:
            get_logger().info("writing with fewer sessions: %s", err.message)
            return None
        with self._lock:
            self.opened.append(client)
        return client

    @staticmethod
    def close(client):
        client.close()
        xapi.close_session(client.session)


def apply_db(client, plans, clients=None, renew=None, extra=None):
    """Carry out plans; [ObjectWrite] per object with status changed /
    unchanged / gone / failed, the keys written and the plan carried out.

    `clients`: Xapi objects (one session each) to spread the objects over
    in parallel threads; `extra` (ExtraSessions): more such threads, each
    logging in on its own; an object's own writes stay in order on one
    client.
    """
    clients = list(clients or [client])
    more = extra.count if extra is not None and len(plans) >= 2 else 0

    def one(worker, plan):
        if renew is not None:
            renew(worker)  # the lease outlives a long operation
        return _apply_one(worker, plan)
    if len(clients) + more == 1 or len(plans) < 2:
        return [one(clients[0], plan) for plan in plans]
    results = [None] * len(plans)  # type: List[Optional[ObjectWrite]]
    indexes = iter(range(len(plans)))
    take = threading.Lock()

    def work(client):
        while True:
            with take:
                index = next(indexes, None)
            if index is None:
                return
            results[index] = one(client, plans[index])

    def work_extra():
        assert extra is not None  # more > 0 only with extra
        client = extra.open()
        if client is None:
            return
        try:
            work(client)
        finally:
            extra.close(client)
    threads = [threading.Thread(target=work, args=(c,)) for c in clients]
    threads += [threading.Thread(target=work_extra) for _ in range(more)]
    for thread in threads:
        thread.daemon = True
        thread.start()
    for thread in threads:
        thread.join()
    return results


# Database writes for many objects are spread over at most this many
# sessions (xapi serves connections in parallel).
DB_SESSIONS = 8


PARALLEL_MIN_OBJECTS = 32


def write_plans(ctx, plans, op=None):
    """apply_db, in parallel sessions when there is much to do. `op` (an
    Operation): its lease is renewed while writing, and it learns whether
    an object failed part way (its books are then settled before the op
    ends, see operation())."""
    renew = op.renew if op is not None else None
    wanted = 1
    changing = sum(1 for p in plans if p.changes)
    if changing >= PARALLEL_MIN_OBJECTS:
        wanted = min(DB_SESSIONS, changing // (PARALLEL_MIN_OBJECTS // 2))
    extra = ExtraSessions(wanted - 1)
    try:
        results = apply_db(ctx.xapi, plans, [ctx.xapi], renew, extra)
        if op is not None and any(r is None or r.status == STATUS_FAILED
                                  for r in results):
            op.unsettled = True
        return results
    finally:
        for client in extra.opened:
            ctx.xapi.calls += client.calls + 2  # + login and logout


# -- the operation ---------------------------------------------------------------

class Operation(object):
    """One database-writing operation: its lease (and so its op id), and
    whether a write of it failed part way (`unsettled`)."""

    def __init__(self, held_lease):
        self.lease = held_lease
        self.unsettled = False

    @property
    def op(self):
        return self.lease.op

    def renew(self, client=None):
        """For apply_db(renew=...): keep the lease while writing."""
        self.lease.renew_if_due(client)


def settle_crashed(client, op):
    """Books naming an op that crashed (its key on the pool, its lease
    gone) are settled under `op`: each feature stays as its key stands (a
    write left half done goes back to where it was); then the crashed
    op's key goes. Returns the op ids settled. Costs nothing when no op
    crashed (the pool's map is read once)."""
    pool_config = client.call("pool.get_other_config", op.lease.pool_ref)
    crashed = keys.unfinished_ops(pool_config) - {op.op}
    if not crashed:
        return set()
    records = client.snapshot()
    refs = planning.references(records, crashed)
    plans = planning.plan_normalise(records, refs, op.op)
    results = apply_db(client, plans)
    failed = [r for r in results if r is None or r.status == STATUS_FAILED]
    if failed:
        get_logger().warning("%d books of crashed operations not settled "
                             "yet; their op keys stay", len(failed))
        return set()
    for old in sorted(crashed):
        lease.end_op(client, op.lease, old)
    get_logger().warning("settled %d books of crashed operation(s) %s",
                         len(refs), ", ".join(sorted(crashed)))
    return crashed


@contextlib.contextmanager
def operation(client, holder, ttl_s=None, wait_s=None):
    """`with operation(client, holder) as op:` write plans made with
    `op=op.op`. The lease is held throughout; the op key is added before
    the first write and removed after the last one; a crash in between
    leaves the op key, which tells the next writer the books naming it
    are unfinished."""
    with lease.held(client, holder, ttl_s, wait_s) as held_lease:
        current = Operation(held_lease)
        lease.begin_op(client, held_lease)
        try:
            settle_crashed(client, current)
            yield current
        except Exception:
            # Stopped part way (an error, not a crash): settle what this
            # op left now, as the next writer would; if that fails too the
            # op key stays and the next writer does it.
            _settle_own(client, current)
            raise
        if current.unsettled:
            # An object failed between its intent and its last write (xapi
            # refused a call): its entries are pending under this op, and
            # once the op key goes they would read as someone else's
            # change. Settle them first, as the next writer would.
            _settle_own(client, current)
        else:
            lease.end_op(client, held_lease)


def _settle_own(client, op):
    try:
        records = client.snapshot()
        refs = planning.references(records, {op.op})
        results = apply_db(client, planning.plan_normalise(records, refs,
                                                           op.op))
        if all(r is not None and r.status != STATUS_FAILED
               for r in results):
            lease.end_op(client, op.lease)
    except Exception as err:  # the op key stays: the next writer settles
        get_logger().warning("op %s left unfinished: %s", op.op, err)
