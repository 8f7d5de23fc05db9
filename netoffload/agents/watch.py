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
- For each batch the watcher works out which VIFs and PIFs it affects: the
  object itself for VIF/PIF events; all VIFs of a VM whose policy key, tags
  or residence changed; all VIFs of a network, all PIFs of a host, or
  everything for a pool policy change; everything when this host has just
  become the master.
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

from netoffload.agents import cache
from netoffload.errors import NetoffloadError
from netoffload.log import get_logger
from netoffload.pool import enforce, keys, planning, writer, xapi
from netoffload.pool.records import (
    BY_EVENT,
    CLASSES,
    PoolRecords,
    is_eligible_vm,
    network_backend,
    runs_on,
)

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

# the fields we keep, per event class
_KEEP = {
    "pool": ("uuid", "name_label", "master", "other_config"),
    "host": ("uuid", "name_label", "enabled", "other_config"),
    "network": ("uuid", "name_label", "other_config"),
    # bond_*: a bond master has no kernel device under openvswitch
    "pif": ("uuid", "device", "VLAN", "host", "network", "other_config",
            "bond_master_of", "bond_slave_of"),
    "vm": ("uuid", "name_label", "other_config", "tags", "is_a_template",
           "is_a_snapshot", "is_control_domain", "power_state",
           "resident_on", "domid"),
    # currently_attached: a VIF hot-plugged into a running VM has no device
    # yet when it is created (the udev helper may then find no cache entry
    # for it), so live state is enforced again when it turns true
    "vif": ("uuid", "device", "VM", "network", "other_config",
            "currently_attached"),
}


class _Stop(BaseException):
    """SIGTERM/SIGINT: leave the loop at once (event.from may be blocking).

    A BaseException, so that no `except Exception` on the way swallows it.
    """


_intern = sys.intern


def _compact(value):
    """Strings interned (refs, keys and values repeat across records)."""
    if isinstance(value, str):
        return _intern(value)
    if isinstance(value, dict):
        return dict((_compact(k), _compact(v)) for k, v in value.items())
    if isinstance(value, list):
        return [_compact(v) for v in value]
    return value


def _compact_record(record):
    record = _compact(record)
    if "other_config" in record:
        record["other_config"] = dict(record["other_config"] or {})
    return record


def trim(cls, snapshot):
    """The part of an event snapshot the pack reads (keeps memory small)."""
    return _compact_record(dict((k, snapshot[k]) for k in _KEEP[cls]
                                if k in snapshot))


def release_memory(collect=True):
    """Give freed heap back to the OS after a big transient (the sync, a
    cache write)."""
    if collect:
        gc.collect()
    try:
        import ctypes
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: nothing to do
        pass


def _policy_view(cls, record):
    """What, in a record, decides the policy of the objects below it."""
    config = (record or {}).get("other_config") or {}
    if cls == "vm":
        return (config.get(keys.KEY_VIF), tuple(sorted(record.get("tags") or ())),
                is_eligible_vm(record) if record else None)
    if cls == "network":
        return config.get(keys.KEY_VIF)
    if cls == "host":
        return config.get(keys.KEY_PIF)
    if cls == "pool":
        return tuple(sorted((k, v) for k, v in config.items()
                            if keys.is_pack_key(k)))
    # VIF / PIF: its own keys and where it hangs
    return tuple(sorted(config.items())) + tuple(
        (k, record.get(k)) for k in ("VM", "network", "host", "device", "VLAN"))


def _run_view(record):
    record = record or {}
    return (record.get("power_state"), record.get("resident_on"),
            record.get("domid"))


class CacheEntries(object):
    """This host's cache as pre-encoded entries, refreshed per object.

    `refresh(records, refs)` re-resolves only the given VIF/PIF refs (None:
    all); `encoded(records)` assembles a cache.Encoded; `changed` says
    whether anything differs from what was last written.
    """

    def __init__(self, host_ref):
        self.host_ref = host_ref
        self.vifs = {}   # vif ref -> (key, json text)
        self.pifs = {}   # pif ref -> (device, json text)
        self.changed = True
        self.written_once = False  # until then, compare with the file on disk
        self._header = None

    def refresh(self, records, refs=None):
        previous = {}
        backend = network_backend()
        if refs is None:
            previous = dict(self.vifs, **self.pifs)
            self.vifs, self.pifs = {}, {}
            refs = list(records.vifs) + list(records.pifs)
            self.changed = True
        for ref in refs:
            if ref in records.pifs:
                table, found = self.pifs, cache.pif_entry(
                    records, ref, self.host_ref, on_error=cache.KEEP,
                    backend=backend)
            elif ref in records.vifs:
                table, found = self.vifs, cache.vif_entry(
                    records, ref, on_error=cache.KEEP)
            else:  # deleted
                table, found = (self.vifs if ref in self.vifs else self.pifs), None
            if found is cache.KEEP:
                # a broken policy string: the last good entry stays
                if ref in previous:
                    table[ref] = previous[ref]
                continue
            new = None if found is None else (found[0], cache.encode_entry(found[1]))
            if table.get(ref) != new:
                self.changed = True
                if new is None:
                    table.pop(ref, None)
                else:
                    table[ref] = new

    def encoded(self, records):
        head = cache.header(records, self.host_ref)
        bare = dict(head, generated_at=None)
        if bare != self._header:
            self._header = bare
            self.changed = True
        sections = {}
        for name, table in (("pifs", self.pifs), ("vifs", self.vifs)):
            # as cache.build: for a key held twice, the later ref wins
            sections[name] = dict(table[ref] for ref in sorted(table))
        return cache.Encoded(head, sections)


class Watcher(object):
    """The event loop; `run()` until `stop()` or a signal."""

    def __init__(self, state_dir=None, event_timeout=EVENT_TIMEOUT,
                 cache_debounce=CACHE_DEBOUNCE, backoff_max=BACKOFF_MAX,
                 writers=WRITERS, open_session=None, sleep=time.sleep,
                 coalesce=EVENT_COALESCE, max_failures=MAX_FAILURES):
        self.state_dir = cache.state_dir(state_dir)
        self.max_failures = max(1, int(max_failures))
        self.exit_code = 0
        self.event_timeout = float(event_timeout)
        self.cache_debounce = float(cache_debounce)
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
        self.cache_due = None     # monotonic time the cache must be rebuilt by
        self.cache_deadline = None  # ... at the latest, however busy
        self._entries = None      # CacheEntries
        self._policy_warned = set()  # (level, error) already logged
        self._cache_dirty = set()  # refs to re-resolve; None: everything
        self.stopping = False
        self.stats = {"syncs": 0, "batches": 0, "writes": 0, "objects_written": 0,
                      "cache_writes": 0, "live_applied": 0, "errors": 0}
        self._store = None
        self.writers = max(1, int(writers))
        self._writer_sessions = []
        self._writer_clients = None   # queue of idle Xapi clients
        self._pool = None
        self._inflight = {}           # ref -> (plan, future)
        self._finished = collections.deque()  # refs whose writes are done
        self._recheck = set()         # in-flight refs that changed meanwhile

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
            except Exception as err:  # noqa: every failure means reconnect
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
                    self.exit_code = 1
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
        for _plan, future in self._inflight.values():
            future.cancel()
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        self._harvest(replan=False)
        self._inflight.clear()
        self._finished.clear()
        self._recheck.clear()
        for session in self._writer_sessions:
            xapi.close_session(session)
        self._writer_sessions = []
        self._writer_clients = None
        if self.session is not None:
            xapi.close_session(self.session)
        self.session = self.client = None

    # -- writing (master) --------------------------------------------------------
    def _submit(self, plans):
        """Start the writes of plans in the writer threads."""
        if self._pool is None:
            self._writer_sessions = [self._open_session()
                                     for _ in range(self.writers)]
            self._writer_clients = queue.Queue()
            for session in self._writer_sessions:
                self._writer_clients.put(xapi.Xapi(session))
            self._pool = concurrent.futures.ThreadPoolExecutor(self.writers)
        for plan in plans:
            future = self._pool.submit(self._write_one, plan)
            self._inflight[plan.ref] = (plan, future)
            future.add_done_callback(
                lambda _f, ref=plan.ref: self._finished.append(ref))

    def _write_one(self, plan):
        client = self._writer_clients.get()
        try:
            return writer.apply_db(client, [plan])[0]
        finally:
            self._writer_clients.put(client)

    def _harvest(self, replan=True):
        """Collect finished writes: log them; plan again the objects that
        changed while their writes were in flight, once our writes show."""
        written, failed, again = [], [], []
        while self._finished:
            ref = self._finished.popleft()
            plan, future = self._inflight.pop(ref, (None, None))
            if future is None or future.cancelled():
                continue
            try:
                result = future.result()
            except Exception as err:  # noqa: a writer thread's surprise
                result = writer.ObjectWrite.failed(
                    plan, ["%s: %s" % (type(err).__name__, err)])
            if result.status == writer.STATUS_CHANGED:
                written.append(result)
            elif result.status == writer.STATUS_FAILED:
                failed.append(result)
            if ref in self._recheck:
                self._recheck.discard(ref)
                if self._shows(ref, result.written):
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
        if replan and again:
            self._reconcile(set(again))

    def _shows(self, ref, written):
        """True if the snapshot of ref holds every key we wrote."""
        record = self.records.vifs.get(ref) or self.records.pifs.get(ref)
        if record is None:
            return False
        config = record.get("other_config") or {}
        return all(config.get(key) == value for key, value in written)

    # -- the loop ------------------------------------------------------------------
    def _events(self, token, timeout):
        return self._events_of(EVENT_CLASSES, token, timeout)

    def _events_of(self, classes, token, timeout):
        result = self.client.call("event.from", classes, token,
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
            raw = self.client.get_all_records(xapi_class.name)
            # Through one JSON string: the trimmed records are then built
            # after the raw ones are freed, packed together instead of
            # scattered among the holes the raw ones leave, so the heap
            # can shrink back.
            packed = json.dumps(dict((ref, trim(cls, record))
                                     for ref, record in raw.items()))
            del raw
            gc.collect()
            tables[xapi_class.table] = dict(
                (_intern(ref), _compact_record(record))
                for ref, record in json.loads(packed).items())
            del packed
        self.records = PoolRecords(*[tables[c.table] for c in CLASSES])
        release_memory()
        self.stats["syncs"] += 1
        self.was_master = self.is_master
        self.log.info("watch: synced %d VMs, %d VIFs, %d PIFs (%s)",
                      len(tables["vms"]), len(tables["vifs"]), len(tables["pifs"]),
                      "master" if self.was_master else "member")
        previous = self._entries
        self._entries = CacheEntries(self.host_ref)
        if previous is not None and previous.host_ref == self.host_ref:
            # entries of objects whose policy string is broken are kept
            self._entries.vifs, self._entries.pifs = previous.vifs, previous.pifs
        self._policy_warned = set()
        self._cache_dirty = None
        self._reconcile(set(self.records.vifs) | set(self.records.pifs),
                        live_all=True)
        self._flush_cache()

    def _step(self):
        timeout = self.event_timeout
        if self.cache_due is not None:
            timeout = max(0.0, min(timeout, self.cache_due - time.monotonic()))
        pause = self._next_call - time.monotonic()
        if pause > 0:
            self._sleep(pause)
        self._harvest()
        if self._inflight:
            timeout = min(timeout, 1.0)  # to log finished writes promptly
        # Snapshots in this batch may predate the last writes of objects in
        # flight now, even if those writes finish before we look at them.
        busy = set(self._inflight)
        result = self._events(self.token, timeout)
        self.token = result["token"]
        events = result.get("events") or []
        if events:
            self._next_call = time.monotonic() + self.coalesce
            self.stats["batches"] += 1
            affected, live = self._apply_events(events)
            if affected or live:
                self._reconcile(affected, live=live, busy=busy)
        if self.cache_due is not None and time.monotonic() >= self.cache_due:
            self._flush_cache()

    @property
    def is_master(self):
        if self.records is None:
            return False
        return self.records.pool_record.get("master") == self.host_ref

    def _apply_events(self, events):
        """Update the snapshot; (refs whose policy may have changed, VIF refs
        whose VM started or moved)."""
        affected, live = set(), set()
        vm_changed, net_changed, host_changed = set(), set(), set()
        everything = False
        now = time.monotonic()
        # debounce: every batch pushes the rebuild back, up to CACHE_MAX_LAG
        if self.cache_deadline is None:
            self.cache_deadline = now + max(CACHE_MAX_LAG, self.cache_debounce)
        self.cache_due = min(now + self.cache_debounce, self.cache_deadline)
        for event in events:
            cls = str(event.get("class", "")).lower()
            if cls not in BY_EVENT:
                continue
            table = self.records.table(cls)
            ref = _intern(str(event.get("ref")))
            old = table.get(ref)
            if cls in ("vif", "pif"):
                self._dirty([ref])
            if event.get("operation") == "del":
                table.pop(ref, None)
                continue
            snapshot = event.get("snapshot")
            if not isinstance(snapshot, dict):
                continue
            new = trim(cls, snapshot)
            table[ref] = new
            if cls == "vif" and new.get("currently_attached") and \
                    not (old or {}).get("currently_attached"):
                live.add(ref)  # plugged: its device exists now
            if cls == "vm" and old is not None and \
                    old.get("name_label") != new.get("name_label"):
                vm_changed.add(("name", ref))
            if old is not None and _policy_view(cls, old) == _policy_view(cls, new):
                if cls == "vm" and _run_view(old) != _run_view(new):
                    vm_changed.add(("run", ref))
                continue
            if cls in ("vif", "pif"):
                affected.add(ref)
            elif cls == "vm":
                vm_changed.add(("policy", ref))
            elif cls == "network":
                net_changed.add(ref)
            elif cls == "host":
                host_changed.add(ref)
            elif cls == "pool":
                everything = True
        if self.is_master and not self.was_master:
            self.log.info("watch: this host is now the pool master; taking over")
            everything = True
        self.was_master = self.is_master
        if everything:
            self._dirty(None)
            return set(self.records.vifs) | set(self.records.pifs), set()
        if vm_changed or net_changed:
            for vif_ref, vif in self.records.vifs.items():
                if ("policy", vif.get("VM")) in vm_changed or \
                        vif.get("network") in net_changed:
                    affected.add(vif_ref)
                elif ("name", vif.get("VM")) in vm_changed:
                    self._dirty([vif_ref])
                if ("run", vif.get("VM")) in vm_changed:
                    live.add(vif_ref)
        if host_changed:
            affected.update(ref for ref, pif in self.records.pifs.items()
                            if pif.get("host") in host_changed)
        self._dirty(affected)
        return affected, live

    def _dirty(self, refs):
        """Mark cache entries to re-resolve (None: all of them)."""
        if refs is None:
            self._cache_dirty = None
        elif self._cache_dirty is not None:
            self._cache_dirty.update(refs)

    # -- acting ------------------------------------------------------------------
    def _eligible(self, ref):
        if ref in self.records.pifs:
            return True
        vif = self.records.vifs.get(ref)
        vm = self.records.vms.get((vif or {}).get("VM"))
        return vm is not None and is_eligible_vm(vm)

    def _reconcile(self, affected, live=(), live_all=False, busy=()):
        targets = sorted(ref for ref in affected if self._eligible(ref))
        if self.is_master and targets:
            busy = set(busy) | set(self._inflight)
            waiting = [ref for ref in targets if ref in busy]
            self._recheck.update(waiting)
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
                    self._submit(plans)
        self._enforce(None if live_all else set(targets) | set(live))

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

    def _local_targets(self, refs):
        """The refs among `refs` that have a device on this host."""
        local = set()
        for ref in refs:
            if ref in self.records.pifs:
                if self.records.pifs[ref].get("host") == self.host_ref:
                    local.add(ref)
                continue
            vm = self.records.vms.get((self.records.vifs.get(ref) or {}).get("VM"))
            if vm and runs_on(vm, self.host_ref):
                local.add(ref)
        return local

    def _enforce(self, refs):
        from netoffload.engine import livestate
        if refs is not None:
            refs = self._local_targets(refs)
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
        if self.records is None or self.host_ref is None or self._entries is None:
            return
        self.cache_due = self.cache_deadline = None
        dirty, self._cache_dirty = self._cache_dirty, set()
        self._entries.refresh(self.records, dirty)
        encoded = self._entries.encoded(self.records)
        if not self._entries.changed:
            return
        try:
            written = cache.write(encoded, self.state_dir,
                                  changed=True if self._entries.written_once else None)
            self._entries.changed = False
            self._entries.written_once = True
            if written:
                self.stats["cache_writes"] += 1
                counts = encoded.counts()
                self.log.info("watch: cache updated: %d PIFs, %d VIFs",
                              counts["pifs"], counts["vifs"])
            del encoded
            release_memory(collect=False)  # the MB-sized texts just freed
        except (OSError, IOError) as err:
            self.log.warning("watch: cannot write the cache: %s", err)


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
    code = 0
    try:
        code = watcher.run()
    except _Stop:
        pass
    watcher.log.info("watch: stopped")
    return code


if __name__ == "__main__":
    sys.exit(main())
