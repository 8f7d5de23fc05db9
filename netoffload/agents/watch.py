"""The watcher daemon: follow XAPI events, keep keys, cache and devices in policy.

Installed as /usr/libexec/netoffload/netoffload-watch and run by
netoffload-watch.service on every host (`python -m netoffload.agents.watch` in
tests, with $NETOFFLOAD_XAPI_SOCKET / _URL pointing at the simulator).

One local session and an `event.from` loop over pool, host, network, VM, VIF
and PIF:

- Start and every reconnect begin with a full sync: an event token is taken
  first, then one get_all_records per class (each trimmed as it arrives, so
  the whole pool is never held twice), then a full reconcile runs, so
  nothing created while we were away is missed; anything that changed after
  the token arrives again as an event (planning is idempotent).
- The snapshot is kept up to date from event snapshots, trimmed to the fields
  the pack reads (strings interned: refs and keys repeat), so memory stays
  flat however long it runs; after a sync the freed heap goes back to the OS.
- For each batch the pure core (netoffload.agents.watch_events) updates the
  snapshot and works out which VIFs and PIFs it affects, which need live
  enforcement and which cache entries change; this module acts on that.
- On the pool master only (pool.master is this host), `planning.plan_db` +
  `apply_db` write the `ethtool-*` keys of the affected objects that need
  them. Writes run in writer threads (one object per session at a time, so
  an object's keys keep their order) while the loop goes on reading events;
  an object is never planned while its writes are in flight, and is planned
  again afterwards only if it changed meanwhile, once the snapshot shows our
  writes. Planning is idempotent, so the mod events of our own writes plan
  nothing and write nothing; explicit keys are never overwritten.
- On every host: the local cache is kept as pre-encoded entries; a change
  re-resolves only the entries it touches, and the files are rewritten
  (debounced) only when an entry or the header changed. Live state is
  enforced on the affected devices of VMs running here and on this host's
  PIFs.
- Lost connections, SESSION_INVALID (the XenAPI client logs in again; we
  notice the new session and resync), xapi restarts and master changes are
  survived with bounded exponential backoff.
"""
import argparse
import collections
import concurrent.futures
import gc
import json
import queue
import random
import signal
import socket
import sys
import time

from netoffload import exitcodes, paths
from netoffload.agents import cache_writer, watch_events
from netoffload.agents.cache_writer import CacheEntries
from netoffload.engine import livestate
from netoffload.errors import DeviceError, NetoffloadError
from netoffload.log import get_logger
from netoffload.pool import enforce, planning, writer, xapi
from netoffload.pool.records import CLASSES, PoolRecords

EVENT_CLASSES = [c.event for c in CLASSES]
EVENT_TIMEOUT = 30.0
# After a batch, wait this long before asking for the next one: the several
# writes of one object (ours: 8 per new VIF) then arrive as one event, not
# eight, each carrying the whole record to parse.
EVENT_COALESCE = 0.02
CACHE_DEBOUNCE = 0.5
# While events keep coming the cache is still written at least this often.
CACHE_MAX_LAG = 5.0
PLAN_SLICE = 200
SWITCH_INTERVAL = 0.0005
BACKOFF_INITIAL = 0.5
BACKOFF_MAX = 30.0
# Consecutive failures with xapi reachable (connected, then failed before
# the loop ran): a bug, not an outage. Logged as errors from FAILURES_LOUD
# on; at MAX_FAILURES the watcher exits 1 (systemd Restart=on-failure
# restarts it, and the journal shows the failed unit).
FAILURES_LOUD = 3
MAX_FAILURES = 10
# Extra sessions the master writes through in parallel (one object per
# session at a time, so each object's keys keep their order). xapi caps
# sessions per originator; a handful is well inside that.
WRITERS = 8
# Watcher._reconcile(live=EVERY_DEVICE): enforce every device of this host
# (after a full sync), not only those of the affected objects.
EVERY_DEVICE = None


class _Stop(BaseException):
    """SIGTERM/SIGINT: leave the loop at once (event.from may be blocking).

    A BaseException, so that no `except Exception` on the way swallows it.
    """


def release_memory(collect=True):
    """Give freed heap back to the OS after a big transient (the sync, a
    cache write)."""
    if collect:
        gc.collect()
    try:
        import ctypes  # noqa: PLC0415 (only after a big transient)
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: nothing to do
        pass


# DebouncedCache.flush when the entries had changed: whether the files were
# rewritten (not if they held the same content), and the entries per section
Flushed = collections.namedtuple("Flushed", "written counts")


class DebouncedCache(object):
    """This host's cache as the watcher keeps it: only the entries marked
    dirty are re-resolved, and the files are rewritten once events stop
    coming for `debounce` seconds, or CACHE_MAX_LAG after the first
    unwritten change however busy the pool is."""

    def __init__(self, state_dir, debounce):
        self.state_dir = state_dir
        self.debounce = float(debounce)
        self.entries = None     # CacheEntries, from the first full sync on
        self.dirty = set()      # refs to re-resolve; None: everything
        self.due = None         # monotonic time the cache must be rebuilt by
        self.deadline = None    # ... at the latest, however busy

    def restart(self, host_ref):
        """After a full sync: every entry is re-resolved at the next flush."""
        previous = self.entries
        self.entries = CacheEntries(host_ref)
        if previous is not None and previous.host_ref == host_ref:
            # entries of objects whose policy string is broken are kept
            self.entries.vifs, self.entries.pifs = previous.vifs, previous.pifs
        self.dirty = None

    def mark(self, refs):
        """Mark cache entries to re-resolve (None: all of them)."""
        if refs is None:
            self.dirty = None
        elif self.dirty is not None:
            self.dirty.update(refs)

    def postpone(self, now):
        """A batch came in: push the rebuild back, up to CACHE_MAX_LAG."""
        if self.deadline is None:
            self.deadline = now + max(CACHE_MAX_LAG, self.debounce)
        self.due = min(now + self.debounce, self.deadline)

    def wait_limit(self, now, timeout):
        """timeout, shortened so that a due rebuild is not missed."""
        if self.due is None:
            return timeout
        return max(0.0, min(timeout, self.due - now))

    def is_due(self, now):
        return self.due is not None and now >= self.due

    def flush(self, records):
        """Re-resolve the dirty entries and write the files if any entry or
        the header changed: a Flushed, or None if nothing changed (before
        the first sync too). OSError/IOError if the write fails; the
        changes are then written at the next flush."""
        if self.entries is None:
            return None
        self.due = self.deadline = None
        dirty, self.dirty = self.dirty, set()
        self.entries.refresh(records, dirty)
        encoded = self.entries.encoded(records)
        if not self.entries.changed:
            return None
        written = cache_writer.write(
            encoded, self.state_dir,
            changed=True if self.entries.written_once else None)
        self.entries.changed = False
        self.entries.written_once = True
        return Flushed(written, encoded.counts())


class KeyWriters(object):
    """The master's writer pool: extra XAPI sessions, one thread each, each
    writing one object's keys at a time (so an object's keys keep their
    order) while the event loop goes on. Sessions and threads start with
    the first submit.

    `recheck` holds the in-flight refs that changed while their writes
    ran: the watcher plans them again once the snapshot shows our writes.
    """

    def __init__(self, open_session, size):
        self._open_session = open_session
        self.size = max(1, int(size))
        self._sessions = []
        self._clients = None    # queue of idle Xapi clients
        self._executor = None
        self._inflight = {}     # ref -> (plan, future)
        self._finished = collections.deque()  # refs whose writes are done
        self.recheck = set()

    def in_flight(self):
        """The refs whose writes are submitted and not yet collected."""
        return set(self._inflight)

    def submit(self, plans):
        """Start the writes of plans in the writer threads."""
        if self._executor is None:
            self._sessions = [self._open_session() for _ in range(self.size)]
            self._clients = queue.Queue()
            for session in self._sessions:
                self._clients.put(xapi.Xapi(session))
            self._executor = concurrent.futures.ThreadPoolExecutor(self.size)
        for plan in plans:
            future = self._executor.submit(self._write_one, plan)
            self._inflight[plan.ref] = (plan, future)
            future.add_done_callback(
                lambda _f, ref=plan.ref: self._finished.append(ref))

    def _write_one(self, plan):
        assert self._clients is not None  # submit() made them first
        client = self._clients.get()
        try:
            return writer.apply_db(client, [plan])[0]
        finally:
            self._clients.put(client)

    def finished(self):
        """[(ref, plan, future)] of the writes done since the last call, in
        the order they finished; cancelled ones left out."""
        done = []
        while self._finished:
            ref = self._finished.popleft()
            plan, future = self._inflight.pop(ref, (None, None))
            if future is None or future.cancelled():
                continue
            done.append((ref, plan, future))
        return done

    def stop(self):
        """Cancel the writes not started, wait for the running ones."""
        for _plan, future in self._inflight.values():
            future.cancel()
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None

    def close(self):
        """Forget every write and close the sessions (after stop)."""
        self._inflight.clear()
        self._finished.clear()
        self.recheck.clear()
        for session in self._sessions:
            xapi.close_session(session)
        self._sessions = []
        self._clients = None


class Watcher(object):
    """The event loop; `run()` until `stop()` or a signal."""

    def __init__(self, state_dir=None, event_timeout=EVENT_TIMEOUT,
                 cache_debounce=CACHE_DEBOUNCE, backoff_max=BACKOFF_MAX,
                 writers=WRITERS, open_session=None, sleep=time.sleep,
                 coalesce=EVENT_COALESCE, max_failures=MAX_FAILURES):
        self.state_dir = paths.state_dir(state_dir)
        self.max_failures = max(1, int(max_failures))
        self.exit_code = exitcodes.OK
        self.event_timeout = float(event_timeout)
        self.coalesce = max(0.0, float(coalesce))
        self._next_call = 0.0     # monotonic time the next event.from may start
        self.backoff_max = float(backoff_max)
        self._open_session = open_session or xapi.open_session
        self._sleep = sleep
        self.log = get_logger()
        self.session = None
        self.client = None
        self.session_ref = None
        self.records = None
        self.host_ref = None
        self.token = ""
        self.was_master = False
        self._cache = DebouncedCache(self.state_dir, cache_debounce)
        self._policy_warned = set()  # (level, error) already logged
        self.stopping = False
        self.stats = {"syncs": 0, "batches": 0, "writes": 0, "objects_written": 0,
                      "cache_writes": 0, "live_applied": 0, "errors": 0}
        self._store = None
        self._writers = KeyWriters(self._open_session, writers)

    # -- lifecycle -------------------------------------------------------------
    def stop(self):
        self.stopping = True

    def run(self):
        """The loop; 0 when stopped, 1 after MAX_FAILURES failures in a row
        with xapi reachable."""
        backoff = BACKOFF_INITIAL
        failures = 0  # in a row, each after a successful connect
        while not self.stopping:
            connected = False
            try:
                self._connect()
                connected = True
                self._full_sync()
                backoff = BACKOFF_INITIAL
                self._step()
                failures = 0  # synced and ran: whatever failed before is over
                while not self.stopping:
                    self._step()
            except _Stop:
                break
            except Exception as err:  # every failure means reconnect
                if self.stopping:
                    break
                self.stats["errors"] += 1
                detail = err.message if isinstance(err, NetoffloadError) else (
                    "%s: %s" % (type(err).__name__, err))
                failures = failures + 1 if connected else 0
                if failures >= self.max_failures:
                    self.log.error("watch: %s; failed %d times in a row with "
                                   "xapi reachable; giving up", detail,
                                   failures)
                    self.exit_code = exitcodes.PARTIAL
                    break
                log = self.log.error if failures >= FAILURES_LOUD \
                    else self.log.warning
                log("watch: %s; reconnecting in %.1fs%s", detail, backoff,
                    " (failure %d in a row with xapi reachable)" % failures
                    if failures >= FAILURES_LOUD else "")
                self._disconnect()
                try:
                    self._sleep(backoff * (0.8 + 0.4 * random.random()))
                except _Stop:
                    break
                backoff = min(backoff * 2, self.backoff_max)
        self._flush_cache()
        self._disconnect()
        return self.exit_code

    def _connect(self):
        self._disconnect()
        self.session = self._open_session()
        self.client = xapi.Xapi(self.session)
        self.session_ref = getattr(self.session, "_session", None)
        self.host_ref = self.client.local_host_ref()

    def _disconnect(self):
        self._writers.stop()
        self._harvest()  # log and count what did get written; no replans
        self._writers.close()
        if self.session is not None:
            xapi.close_session(self.session)
        self.session = self.client = None

    # -- writing (master) --------------------------------------------------------
    def _harvest(self):
        """Collect finished writes and log them; the refs to plan again:
        objects that changed while their writes were in flight, once our
        writes show."""
        written, failed, again = [], [], []
        for ref, plan, future in self._writers.finished():
            try:
                result = future.result()
            except Exception as err:  # a writer thread's surprise
                result = writer.ObjectWrite.failed(
                    plan, ["%s: %s" % (type(err).__name__, err)])
            if result.status == writer.STATUS_CHANGED:
                written.append(result)
            elif result.status == writer.STATUS_FAILED:
                failed.append(result)
            if ref in self._writers.recheck:
                self._writers.recheck.discard(ref)
                if watch_events.shows(self.records, ref, result.written):
                    again.append(ref)
                # else: the event of our last write is still to come, and
                # that event plans the object again
        self.stats["writes"] += sum(len(r.written) for r in written)
        self.stats["objects_written"] += len(written)
        if written or failed:
            self.log.info("watch: wrote offload keys on %d objects%s",
                          len(written), ", %d failed" % len(failed) if failed else "")
        for result in failed:
            self.log.warning("watch: %s %s: %s", result.cls,
                             result.label, "; ".join(result.error or []))
        return again

    # -- the loop ------------------------------------------------------------------
    def _connected(self):
        """The client of the current session; XapiError (reconnect) if none."""
        if self.client is None:
            raise xapi.XapiError("not connected to xapi")
        return self.client

    def _events(self, token, timeout):
        return self._events_of(EVENT_CLASSES, token, timeout)

    def _events_of(self, classes, token, timeout):
        result = self._connected().call("event.from", classes, token,
                                        float(timeout))
        if getattr(self.session, "_session", None) != self.session_ref:
            # the XenAPI client logged in again after SESSION_INVALID: xapi
            # restarted and our token means nothing any more
            raise xapi.XapiError("xapi session was renewed (xapi restarted?)")
        return result

    def _full_sync(self):
        # The token first: whatever changes after it comes again as an event.
        # (Tokens are pool-wide, so the smallest class is enough to get one.)
        self.token = self._events_of(["pool"], "", 0.0)["token"]
        self.records = None
        tables = {}
        for xapi_class in CLASSES:
            cls = xapi_class.event
            raw = self._connected().get_all_records(xapi_class.name)
            # Through one JSON string: the trimmed records are then built
            # after the raw ones are freed, packed together instead of
            # scattered among the holes the raw ones leave, so the heap
            # can shrink back.
            packed = json.dumps(dict((ref, watch_events.trim(cls, record))
                                     for ref, record in raw.items()))
            del raw
            gc.collect()
            tables[xapi_class.table] = dict(
                (watch_events.intern(ref), watch_events.compact_record(record))
                for ref, record in json.loads(packed).items())
            del packed
        self.records = PoolRecords(*[tables[c.table] for c in CLASSES])
        release_memory()
        self.stats["syncs"] += 1
        self.was_master = self.is_master
        self.log.info("watch: synced %d VMs, %d VIFs, %d PIFs (%s)",
                      len(tables["vms"]), len(tables["vifs"]), len(tables["pifs"]),
                      "master" if self.was_master else "member")
        self._cache.restart(self.host_ref)
        self._policy_warned = set()
        self._reconcile(set(self.records.vifs) | set(self.records.pifs),
                        live=EVERY_DEVICE)
        self._flush_cache()

    def _step(self):
        timeout = self._cache.wait_limit(time.monotonic(), self.event_timeout)
        pause = self._next_call - time.monotonic()
        if pause > 0:
            self._sleep(pause)
        again = self._harvest()
        if again:
            self._reconcile(set(again))
        if self._writers.in_flight():
            timeout = min(timeout, 1.0)  # to log finished writes promptly
        # Snapshots in this batch may predate the last writes of objects in
        # flight now, even if those writes finish before we look at them.
        busy = self._writers.in_flight()
        result = self._events(self.token, timeout)
        self.token = result["token"]
        events = result.get("events") or []
        if events:
            self._next_call = time.monotonic() + self.coalesce
            self.stats["batches"] += 1
            affected, live = self._apply_events(events)
            if affected or live:
                self._reconcile(affected, live=live, busy=busy)
        if self._cache.is_due(time.monotonic()):
            self._flush_cache()

    @property
    def is_master(self):
        return watch_events.is_master(self.records, self.host_ref)

    def _apply_events(self, events):
        """Update the snapshot; (refs whose policy may have changed, VIF refs
        whose VM started or moved)."""
        self._cache.postpone(time.monotonic())
        batch = watch_events.apply_events(self.records, events, self.host_ref,
                                          self.was_master)
        if batch.took_over:
            self.log.info("watch: this host is now the pool master; taking over")
        self.was_master = self.is_master
        self._cache.mark(batch.dirty)
        return batch.affected, batch.live

    # -- acting ------------------------------------------------------------------
    def _reconcile(self, affected, live=(), busy=()):
        """Plan and write the keys of the affected objects (on the master),
        then enforce live state on their devices here and on the VIFs in
        `live` (EVERY_DEVICE: on every device of this host)."""
        targets = sorted(ref for ref in affected
                         if watch_events.eligible(self.records, ref))
        if self.is_master and targets:
            busy = set(busy) | self._writers.in_flight()
            waiting = [ref for ref in targets if ref in busy]
            self._writers.recheck.update(waiting)
            idle = [ref for ref in targets if ref not in busy]
            # in slices: a full sync plans every object, and holding 10,000
            # plans at once would leave the heap that much bigger for good
            for start in range(0, len(idle), PLAN_SLICE):
                plans = planning.plan_db(self.records,
                                          idle[start:start + PLAN_SLICE])
                self._warn_policy_errors(
                    (p.resolution.level, p.resolution.error, p.label)
                    for p in plans if p.resolution.error)
                plans = [p for p in plans if p.writes]
                if plans:
                    self._writers.submit(plans)
        self._enforce(None if live is EVERY_DEVICE else set(targets) | set(live))

    def _warn_policy_errors(self, found):
        """One warning per broken (level, key=value), not one per event:
        the objects it governs are left as they are until it is fixed."""
        for level, error, label in found:
            if (level, error) in self._policy_warned:
                continue
            self._policy_warned.add((level, error))
            self.log.warning("watch: invalid policy at %s level: %s; the "
                             "objects it governs (e.g. %s) are left as they "
                             "are until it is fixed (`netoffload doctor`)",
                             level, error, label)

    def _enforce(self, refs):
        if refs is not None:
            refs = watch_events.local_targets(self.records, self.host_ref, refs)
            if not refs:
                return
        if self._store is None:
            self._store = livestate.LiveStateStore(self.state_dir)
        try:
            results = enforce.enforce_live(self.records, self.host_ref,
                                             self._store, targets=refs)
        except NetoffloadError as err:
            self.log.warning("watch: live enforcement failed: %s", err.message)
            return
        self._warn_policy_errors(
            (r.local.resolution.level, r.local.resolution.error, r.device)
            for r in results if r.local.resolution.error)
        changed = [r for r in results if r.ran_command]
        self.stats["live_applied"] += len(changed)
        for entry in results:
            if entry.failed:
                self.log.warning("watch: %s: %s", entry.device,
                                 "; ".join(entry.errors or ["failed"]))
        if changed:
            self.log.info("watch: applied live state on %s",
                          ", ".join(r.device for r in changed))

    def _flush_cache(self):
        if self.records is None or self.host_ref is None:
            return
        try:
            flushed = self._cache.flush(self.records)
        except DeviceError as err:  # the state directory itself
            self.log.warning("watch: cannot write the cache: %s", err.message)
            return
        except (OSError, IOError) as err:
            self.log.warning("watch: cannot write the cache: %s", err)
            return
        if flushed is None:
            return
        if flushed.written:
            self.stats["cache_writes"] += 1
            self.log.info("watch: cache updated: %d PIFs, %d VIFs",
                          flushed.counts["pifs"], flushed.counts["vifs"])
        release_memory(collect=False)  # the MB-sized texts just freed


_WATCHERS = []


def _raise_stop(signum, frame):
    for watcher in _WATCHERS:
        watcher.stop()
    raise _Stop()


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="netoffload-watch",
        description="Follow XAPI events and keep VIF/PIF offload keys, the "
                    "local cache and this host's devices in policy.")
    parser.add_argument("--event-timeout", type=float, default=EVENT_TIMEOUT,
                        help="seconds one event.from call may block")
    parser.add_argument("--cache-debounce", type=float, default=CACHE_DEBOUNCE,
                        help="seconds to gather changes before rewriting the cache")
    parser.add_argument("--backoff-max", type=float, default=BACKOFF_MAX,
                        help="longest wait between reconnection attempts")
    parser.add_argument("--writers", type=int, default=WRITERS,
                        help="XAPI sessions the master writes keys through")
    parser.add_argument("--coalesce", type=float, default=EVENT_COALESCE,
                        help="seconds to let changes gather between two "
                             "event batches")
    args = parser.parse_args(argv)
    # a hung xapi must not hang us forever: bound every socket operation
    socket.setdefaulttimeout(args.event_timeout + 60.0)
    # Writer threads spend a few microseconds of Python between two calls;
    # with the default 5 ms GIL slice each would wait behind the main
    # thread parsing a big event batch, and an object's 8 writes add up.
    sys.setswitchinterval(SWITCH_INTERVAL)
    watcher = Watcher(event_timeout=args.event_timeout,
                      cache_debounce=args.cache_debounce,
                      backoff_max=args.backoff_max, writers=args.writers,
                      coalesce=args.coalesce)
    _WATCHERS.append(watcher)
    signal.signal(signal.SIGTERM, _raise_stop)
    signal.signal(signal.SIGINT, _raise_stop)
    watcher.log.info("watch: starting")
    code = exitcodes.OK
    try:
        code = watcher.run()
    except _Stop:
        pass
    watcher.log.info("watch: stopped")
    return code


if __name__ == "__main__":
    from netoffload import textio
    textio.utf8_process()  # UTF-8 argv and stdio on any dom0 locale
    sys.exit(main())
