"""The watcher daemon: follow XAPI events, keep keys, cache and devices in policy.

Installed as /usr/libexec/netoffload/netoffload-watch and run by
netoffload-watch.service on every host (`python -m netoffload.agents.watch` in
tests, with $NETOFFLOAD_XAPI_SOCKET / _URL pointing at the simulator).

One local session and an `event.from` loop over pool, host, network, VM, VIF
and PIF:

- Start and every reconnect begin with a full sync: an event token is taken
  first, then one get_all_records per class (parsed as it streams in,
  only the fields the pack reads kept), then a full reconcile runs (one
  plan per group of VIFs holding the very same maps), so nothing created
  while we were away is missed; anything that changed after
  the token arrives again as an event (planning is idempotent).
- event.from and get_all_records go over a connection of their own
  (EventChannel), their XML parsed in C and only the fields in
  watch_events.KEEP turned into values; big sets of refs nobody reads (a
  network's VIFs) are cut out first. Every call, the login included, goes
  over the watcher's own wire (LeanSession, LeanXapi): neither XenAPI nor
  xmlrpc.client, http.client or ssl is loaded (7 MiB of RSS).
- The snapshot is made of small read-only records (watch_events.Record),
  strings interned and equal other_config maps shared, built as the sync's
  replies stream in; the old snapshot goes before a resync reads the new
  one, and big blocks go back to the OS when freed, so memory stays flat
  across resyncs.
- For each batch the pure core (netoffload.agents.watch_events) updates the
  snapshot and works out which VIFs and PIFs it affects, which need live
  enforcement and which cache entries change; this module acts on that.
- On the pool master only (pool.master is this host), `planning.plan_db` +
  the writer threads (KeyWriters: writer.begin, then an object's
  `ethtool-*` keys at once over several sessions once its intent book is
  written, then its final book) write the keys of the affected objects
  that need them, under the pool-wide writer lease (each call tried again
  after a transient failure, pool.retry) while the
  loop goes on reading events. The events of our own writes are known as
  such (watch_events.is_echo) and plan nothing; an object that changed
  otherwise while its writes were in flight is planned again afterwards.
  An object whose writes fail goes to the to-do (agents/todo.py, durable)
  and is written again with a backoff until its keys land or it is gone.
- On every host: the local cache is kept as pre-encoded entries; a change
  re-resolves only the entries it touches, and the files are rewritten
  (debounced, by a thread of their own) only when an entry or the header
  changed. Live state is enforced on the affected devices of VMs running
  here and on this host's PIFs, except devices an admin holds.
- A drift thread re-enforces governed devices whose features someone
  changed (agents/drift.py): on ethtool netlink notifications, or a
  periodic read where the kernel sends none.
- Lost connections, SESSION_INVALID (our token dies with the session: we
  resync), xapi restarts and master changes are survived with bounded
  exponential backoff.
"""
import argparse
import collections
import contextlib
import gc
import signal
import socket
import sys
import threading
import time
import urllib.parse

from netoffload import exitcodes, paths
from netoffload.agents import cache_writer, drift, todo, watch_events
from netoffload.agents.cache_writer import CacheEntries
from netoffload.engine import ethtool, livestate
from netoffload.errors import DeviceError, NetoffloadError
from netoffload.log import get_logger
from netoffload.pool import enforce, keys, planning, precedence, retry, writer, xapi
from netoffload.pool.lease import Holder, LeaseInfo
from netoffload.pool.records import CLASSES, PoolRecords

# Networks are read on a channel of their own: every VIF created or
# destroyed changes its network's record (its VIFs set), so on a network
# of 10,000 VIFs each batch of the main channel would carry a 1 MB record
# that xapi builds and we read, only to learn nothing about policy.
NETWORK_EVENT_CLASSES = ["network"]
EVENT_CLASSES = [c.event for c in CLASSES
                 if c.event not in NETWORK_EVENT_CLASSES]
# While networks keep changing, read them at most this often: a policy set
# on a network then reaches its VIFs this much later at worst.
NETWORK_COALESCE = 0.5
# After this many failed network calls in a row (0.5 s apart), a warning.
NETWORK_FAILURES_LOUD = 10
EVENT_TIMEOUT = 30.0
# After a batch, wait this long before asking for the next one: the several
# writes of one object (ours: 7 per new VIF) then arrive as one event, not
# seven, each carrying the whole record to parse.
EVENT_COALESCE = 0.02
CACHE_DEBOUNCE = 0.5
# While events keep coming the cache is still written at least this often.
CACHE_MAX_LAG = 5.0
PLAN_SLICE = 200
CACHE_SLICE = 500
# The cache writer thread sleeps this long after each piece of the files
# it writes (about 500 entries): the writes of new VIFs' keys and the
# reading of events go on between pieces instead of waiting behind a
# write of 16,000 entries.
CACHE_WRITE_PAUSE = 0.002
SWITCH_INTERVAL = 0.0005
BACKOFF_INITIAL = 0.5
BACKOFF_MAX = 30.0
# Consecutive failures with xapi reachable (connected, then failed before
# the loop ran): a bug, not an outage. Logged as errors from FAILURES_LOUD
# on; at MAX_FAILURES the watcher exits 1 (systemd Restart=on-failure
# restarts it, and the journal shows the failed unit).
FAILURES_LOUD = 3
MAX_FAILURES = 10
# Extra sessions the master writes through in parallel (one object on
# each at a time, its keys at once over a connection per key: KeyWriters).
# xapi caps sessions per originator; a handful is well inside that. Four
# keep up with 100 new VIFs a second at 1 ms a call, with less CPU spent
# switching threads than eight (and 28 connections, not 56).
WRITERS = 4
# One XAPI call that fails for a passing reason (retry.is_transient) is
# tried again this often, within this many seconds, before the object goes
# to the to-do (agents/todo.py), from where it is planned and written again
# with a per-object backoff until it lands or is gone.
CALL_ATTEMPTS = 5
CALL_BUDGET = 8.0
# The pool-wide writer lease (docs/policy.md, "Bookkeeping") is taken for
# this long (renewed while writing; short, so a watcher killed while
# holding it blocks the pool's writers briefly) and given back LEASE_IDLE
# after the last write. It is never waited for: while another writer
# holds it, what the watcher sees is that writer's half-done state, so
# the objects are planned again once its lease is gone.
LEASE_TTL = 20.0
LEASE_IDLE = 2.0
# Drift (agents/drift.py): where the kernel sends no ethtool netlink
# notifications, governed devices are read this often (seconds; 0: no drift
# correction). After a notification, changes are let settle this long so
# that one `ethtool -K` with several features is one check.
DRIFT_INTERVAL = 60.0
DRIFT_SETTLE = 0.05
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
    except (ImportError, OSError, AttributeError):  # no ctypes, not glibc
        pass


# glibc's mallopt parameters: how many malloc arenas threads may spread
# over; from which size a block is mapped on its own (and unmapped when
# freed); how much free memory at the top of the heap is kept
M_ARENA_MAX = -8
M_MMAP_THRESHOLD = -3
M_TRIM_THRESHOLD = -1
MALLOC_ARENAS = 2
# Fixed, so that glibc does not raise them by itself: after the first
# MB-sized event reply is freed it would serve the next ones from the heap
# and keep up to twice that at its top, and the RSS would creep up with
# every big reply and cache text.
MMAP_THRESHOLD = 256 * 1024
TRIM_THRESHOLD = 256 * 1024


# gc.set_threshold's third value: full collections are considered after
# this many of the middle generation (Python's default: 10). The snapshot
# of a big pool is hundreds of thousands of objects that live until the
# next resync; scanning them every few seconds under load stopped every
# thread for 20-70 ms each time (a p99 of its own).
GC_FULL_AFTER = 1000


def tune_gc():
    """Collect the young generations as usual, the whole heap seldom."""
    young, middle, _full = gc.get_threshold()
    gc.set_threshold(young, middle, GC_FULL_AFTER)


def freeze_heap():
    """After a full sync: the snapshot, which lives until the next one,
    is left out of every collection (gc.freeze, Python 3.7+; on 3.6
    tune_gc alone)."""
    freeze = getattr(gc, "freeze", None)
    if freeze is not None:
        gc.collect()
        freeze()


def thaw_heap():
    """Before a resync drops the old snapshot: its objects are collected
    again (gc.unfreeze), so any cycle among them goes."""
    unfreeze = getattr(gc, "unfreeze", None)
    if unfreeze is not None:
        unfreeze()


def limit_malloc_arenas():
    """Keep the writer, cache and drift threads on few malloc arenas:
    glibc gives busy threads arenas of their own (up to 8 per core), each
    keeping the memory freed in it, and the RSS creeps up with them. Big
    blocks (event replies, cache texts) are mapped and given back when
    freed."""
    try:
        import ctypes  # noqa: PLC0415 (once, at start)
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(M_ARENA_MAX, MALLOC_ARENAS)
        libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)
        libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD)
    except (ImportError, OSError, AttributeError):  # no ctypes, not glibc
        pass


def share_entry_texts(entries, refs):
    """Intern the JSON text of the cache entries of refs (None: all): the
    VIFs of one VM under one policy have the same entry (it names the VM,
    not the VIF), so a pool's 16,000 entries hold about as many texts as
    it has VMs (7.6 MiB -> about 3 MiB for 16,000 VIFs on 1,600 VMs)."""
    for table in (entries.vifs, entries.pifs):
        for ref in (list(table) if refs is None else refs):
            entry = table.get(ref)
            if entry is not None:
                table[ref] = (entry[0], sys.intern(entry[1]))


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

    def prepare(self, records):
        """Re-resolve the dirty entries: the PendingWrite of the files if
        any entry or the header changed, else None (before the first sync
        too). The PendingWrite holds its own copy of the content, so it can
        be written (write) while the snapshot moves on."""
        if self.entries is None:
            return None
        self.due = self.deadline = None
        dirty, self.dirty = self.dirty, set()
        if dirty is None:
            # everything, in slices, each entry's text shared at once (a
            # whole pool's texts made first would leave the heap that big);
            # refs no longer in the pool are among them and go
            entries = self.entries
            refs = sorted(set(entries.vifs) | set(entries.pifs) |
                          set(records.vifs) | set(records.pifs))
            for start in range(0, len(refs), CACHE_SLICE):
                chunk = refs[start:start + CACHE_SLICE]
                entries.refresh(records, chunk)
                share_entry_texts(entries, chunk)
        else:
            self.entries.refresh(records, dirty)
            share_entry_texts(self.entries, dirty)
        encoded = self.entries.encoded(records)
        if not self.entries.changed:
            return None
        self.entries.changed = False  # back to True if the write fails
        return PendingWrite(encoded, self.entries.written_once)

    def write(self, pending):
        """Write a prepared cache: a Flushed. OSError/IOError/DeviceError
        if the write fails; failed() then has the next flush write it."""
        written = cache_writer.write(
            pending.encoded, self.state_dir,
            changed=True if pending.known else None, pause=CACHE_WRITE_PAUSE)
        return Flushed(written, pending.encoded.counts())

    def done(self):
        """A write succeeded: later ones need not read the files back."""
        if self.entries is not None:
            self.entries.written_once = True

    def failed(self):
        """A write failed: the next flush writes again."""
        if self.entries is not None:
            self.entries.changed = True

    def flush(self, records):
        """prepare and write at once: a Flushed, or None if nothing
        changed. OSError/IOError if the write fails; the changes are then
        written at the next flush."""
        pending = self.prepare(records)
        if pending is None:
            return None
        try:
            flushed = self.write(pending)
        except BaseException:
            self.failed()
            raise
        self.done()
        return flushed


# DebouncedCache.prepare: the content to write; `known`: a previous write
# succeeded, so the files need no reading back to compare.
PendingWrite = collections.namedtuple("PendingWrite", "encoded known")


class BackgroundWriter(object):
    """One thread that writes the cache files (MBs for a big pool) while
    the loop goes on reading events; a newer content replaces one not
    written yet (each is a whole cache)."""

    def __init__(self, write):
        self._write = write
        self._cond = threading.Condition()
        self._pending = None
        self._busy = False
        self._thread = None

    def submit(self, pending):
        with self._cond:
            self._pending = pending
            if self._thread is None:
                self._thread = threading.Thread(target=self._run,
                                                name="cache-writer")
                self._thread.daemon = True
                self._thread.start()
            self._cond.notify_all()

    def wait(self, timeout=60.0):
        """Until nothing is waiting or being written (at most timeout)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while (self._pending is not None or self._busy) and \
                    time.monotonic() < deadline:
                self._cond.wait(0.1)

    def _run(self):
        while True:
            with self._cond:
                while self._pending is None:
                    self._cond.wait()
                pending, self._pending = self._pending, None
                self._busy = True
            try:
                self._write(pending)
            finally:
                with self._cond:
                    self._busy = False
                    self._cond.notify_all()


class WireError(ConnectionResetError):
    """A reply that is not HTTP: xapi went away mid-reply (a passing
    failure, as http.client's BadStatusLine is to retry.is_transient)."""


class HttpStatusError(Exception):
    """xapi (or something in front of it) answered with an HTTP error
    status (never a passing one: see Unavailable)."""

    def __init__(self, status, reason):
        Exception.__init__(self, "HTTP %d %s" % (status, reason))
        self.errcode = status


class Unavailable(WireError):
    """HTTP 502/503/504: a xapi (or a proxy) not ready yet, tried again."""


HTTP_UNAVAILABLE = (502, 503, 504)


class LeanSession(object):
    """A xapi session logged in over the watcher's own wire (EventChannel),
    not the XenAPI client: importing XenAPI brings xmlrpc.client,
    http.client, the email package and ssl, 7 MiB of RSS. `_session` holds
    its ref, where XenAPI's Session keeps it; `login()` again after
    SESSION_INVALID is what the XenAPI client does on its own."""

    def __init__(self, endpoint=None):
        self.channel = EventChannel(endpoint)
        self._session = None

    def login(self):
        """Log in (as xapi.open_session does); XapiError if that fails."""
        try:
            self._session = str(self.channel.value(
                "session.login_with_password",
                ("root", "", "1.0", xapi.ORIGINATOR)))
        except watch_events.EventReplyError as err:
            self.channel.close()
            raise xapi.XapiError("cannot log in to xapi: %s" % (err.details,),
                                 *[str(d) for d in err.details]) from err
        except (OSError, IOError, HttpStatusError, ValueError) as err:
            self.channel.close()
            raise xapi.XapiError("cannot reach xapi: %s" % err) from err
        return self

    def logout(self):
        """Log out, ignoring errors (the session may be gone)."""
        try:
            if self._session is not None:
                self.channel.value("session.logout", (self._session,))
        except Exception:  # best effort, as xapi.close_session
            pass
        self.channel.close()


def open_lean_session():
    """A new LeanSession, logged in (xapi.open_session's endpoint and
    credentials)."""
    return LeanSession().login()


def close_session(session):
    """Log out of a LeanSession or a XenAPI session (best effort)."""
    if isinstance(session, LeanSession):
        session.logout()
    else:
        xapi.close_session(session)


class LeanXapi(xapi.Xapi):
    """xapi.Xapi whose calls go through an EventChannel of their own
    (the session's ref, xapi.Xapi's error mapping) instead of the XenAPI
    client: a key write's request and reply cost a third of the CPU.
    One thread at a time per object.

    relogin: on SESSION_INVALID, log the LeanSession in again and make the
    call once more, as the XenAPI client does (the watcher's own session:
    its lease is given back through it after a xapi restart)."""

    def __init__(self, session, channel=None, relogin=False):
        xapi.Xapi.__init__(self, session)
        self.channel = channel or EventChannel()
        self.relogin = relogin and isinstance(session, LeanSession)

    def call(self, method, *params):
        with self._count_lock:
            self.calls += 1
        try:
            try:
                return self.channel.value(
                    method, (getattr(self.session, "_session", None),) + params)
            except watch_events.EventReplyError as err:
                if not (self.relogin and err.details and
                        err.details[0] == "SESSION_INVALID"):
                    raise
            self.session.login()
            return self.channel.value(
                method, (getattr(self.session, "_session", None),) + params)
        except watch_events.EventReplyError as err:
            details = [str(d) for d in err.details]
            if details[0] == "HANDLE_INVALID":
                raise xapi.ObjectGone("%s: the object no longer exists"
                                      % method, *details) from err
            raise xapi.XapiError("%s failed: %s" % (method, " ".join(details)),
                                 *details) from err
        except (OSError, IOError, HttpStatusError) as err:
            raise xapi.XapiError("%s failed: cannot reach xapi: %s"
                                 % (method, err)) from err
        except ValueError as err:
            raise xapi.XapiError("%s failed: a reply that is not XML-RPC: %s"
                                 % (method, err)) from err

    def snapshot(self):
        """PoolRecords as the watcher keeps them (the fields in
        watch_events.KEEP, read as they stream in), for the settling of a
        crashed operation (writer.settle_crashed): a whole pool through
        a full parse would cost seconds and tens of MiB. host_metrics:
        unknown (None), which the books' settling does not read."""
        tables = []
        for xapi_class in CLASSES:
            with self._count_lock:
                self.calls += 1
            try:
                tables.append(self.channel.all_records(
                    getattr(self.session, "_session", None), xapi_class))
            except (OSError, IOError, HttpStatusError, ValueError) as err:
                raise xapi.XapiError("%s.get_all_records failed: %s"
                                     % (xapi_class.name, err)) from err
        return PoolRecords(*tables)


class RetryingXapi(LeanXapi):
    """A writer session whose calls are tried again after a transient
    failure (bounded: CALL_ATTEMPTS within CALL_BUDGET seconds). Safe for
    other-config edits: an add whose reply was lost comes back as
    MAP_DUPLICATE_KEY with our value (set_other_config_key accepts it), a
    repeated remove of a missing key does nothing."""

    def call(self, method, *params):
        return retry.call_with_retry(LeanXapi.call, self, method, *params,
                                     attempts=CALL_ATTEMPTS,
                                     budget_s=CALL_BUDGET)


class _Wire(xapi.HttpWire):
    """The shared lean connection (xapi.HttpWire: one keep-alive HTTP/1.1
    connection, its reply read by hand, a request sent again only when a
    reused connection had answered nothing of it), whose reply that is not
    HTTP is a WireError: without http.client in the watcher's process."""

    aborted = False  # EventChannel.abort: the call is not sent again

    def _bad_status(self, first):
        return WireError("not an HTTP reply: %r" % first[:80])

    def _connect(self):
        # an aborted call's connection cut is not an idle connection the
        # server closed (HttpWire sends the call again on a new one then)
        if self.aborted:
            raise ConnectionAbortedError("the call was aborted")
        return xapi.HttpWire._connect(self)


class EventChannel(object):
    """event.from on its own keep-alive HTTP connection, its reply read
    lean (watch_events.parse_event_reply: the snapshot fields the pack
    reads, nothing else turned into Python objects). The XenAPI client
    would build every field of every snapshot through Python callbacks,
    which was most of the watcher's CPU under load."""

    def __init__(self, endpoint=None):
        self.endpoint = endpoint if endpoint is not None else \
            paths.xapi_endpoint()
        self._conn = None

    def _connection(self):
        if self._conn is None:
            if not self.endpoint or self.endpoint[0] == "socket":
                self._conn = _Wire(socket.AF_UNIX, self.endpoint[1]
                                   if self.endpoint else paths.XAPI_SOCKET)
            else:  # tests: a simulator on TCP (dom0 uses the unix socket)
                url = urllib.parse.urlsplit(self.endpoint[1])
                if url.scheme != "http":
                    raise xapi.XapiError("the watcher reads xapi over its "
                                         "unix socket or plain http, not %s"
                                         % self.endpoint[1])
                self._conn = _Wire(socket.AF_INET, (url.hostname or
                                                    "localhost", url.port or 80))
        return self._conn

    def call(self, session_ref, classes, token, timeout):
        """event.from's Value ({"events", "token"}). SESSION_INVALID is
        XapiError at once (our token died with the session: resync);
        connection failures are raised as they are (retry.is_transient
        tells them)."""
        return self._call("event.from", (session_ref, list(classes), token,
                                         float(timeout)),
                          watch_events.parse_event_reply)

    def all_records(self, session_ref, xapi_class):
        """{ref: trimmed record} of a class (a records.CLASSES entry), read
        as lean as events are."""
        return self._call(
            "%s.get_all_records" % xapi_class.name, (session_ref,),
            lambda chunks: watch_events.parse_records_stream(
                chunks, xapi_class.event), stream=True)

    def value(self, method, params):
        """Any call's Value; xapi's failure as EventReplyError (the
        caller maps it)."""
        return self._call(method, params, watch_events.parse_value_reply,
                          map_errors=False)

    def _call(self, method, params, parse, stream=False, map_errors=True):
        """parse(the reply's bytes), or with stream parse(an iterator of
        its chunks)."""
        body = watch_events.dumps_call(method, params)
        conn = self._connection()
        try:
            status, reason, chunks = conn.post(body)
            if status in HTTP_UNAVAILABLE:
                raise Unavailable("xapi: HTTP %d %s" % (status, reason))
            if status != 200:
                raise HttpStatusError(status, reason)
            if stream:
                result = parse(chunks)
                for _rest in chunks:  # keep the connection usable
                    pass
            else:
                result = parse(b"".join(chunks))
        except watch_events.EventReplyError as err:
            if stream:
                self.close()  # the rest of the reply may be unread
            if not map_errors:
                raise
            failure = self._failure(method, err)
            if not failure.params:
                # SESSION_INVALID: not a transient failure here: the token
                # died with the session, so no retry on it (is_transient
                # would see SESSION_INVALID in the cause), a resync instead
                raise failure from None
            raise failure from err
        except BaseException:
            self.close()
            raise
        return result

    @staticmethod
    def _failure(method, err):
        """XapiError for xapi's failure `err` (an EventReplyError)."""
        if err.details and err.details[0] == "SESSION_INVALID":
            return xapi.XapiError("xapi session was renewed (xapi restarted?)")
        return xapi.XapiError("%s failed: %s" % (method, " ".join(err.details)),
                              *err.details)

    def close(self):
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def abort(self):
        """From another thread: end a call in progress (a long wait) on
        this channel; the call then fails as a connection failure does,
        and the calling thread closes the channel."""
        conn = self._conn
        if conn is None:
            return
        conn.aborted = True
        sock = conn.sock
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class Finished(object):
    """A write its thread finished: result() gives what writer.apply_db
    returned, or raises what it raised (as a future's result() does)."""

    __slots__ = ("_value", "_error")

    def __init__(self, value=None, error=None):
        self._value = value
        self._error = error

    def result(self):
        if self._error is not None:
            raise self._error
        return self._value


class KeyWriters(object):
    """The master's writer pool: extra XAPI sessions, one thread each,
    writing objects' keys while the event loop goes on. Sessions start
    with the first submit, threads as the writes need them (up to one per
    session; each thread writes through its own session).

    An object is written by one thread: its head (the re-read, the
    writes up to the intent book: writer.begin), then the keys of its run
    (writer.split_writes: the ethtool-* keys the intent names) at once,
    each call sent on a connection of its own on the thread's session
    before any reply is read (_write_run_at_once: no other thread woken,
    which cost more CPU than the calls), then its tail (the final book:
    KeyRun.finish). A plan with no such run is written in order by its
    head; a client with no lean channel to send on writes the run's keys
    one after the other.

    Its own threads and queue rather than concurrent.futures: that module
    loads logging (about 0.5 MiB of the watcher's RSS together), and every
    write would carry a Future with its own Condition.

    `recheck` holds the in-flight refs that changed while their writes
    ran: the watcher plans them again once the snapshot shows our writes.
    """

    def __init__(self, open_session, size):
        self._open_session = open_session
        self.size = max(1, int(size))
        self._sessions = []
        self._channels = []
        self._clients = []      # one Xapi client per thread
        self._lock = threading.Lock()
        self._drained = threading.Condition(self._lock)  # no object open
        self._tasks = None      # deque of tasks no thread has; None: stopped
        # Parked threads, each [lock it blocks on, the task handed to it]:
        # a task goes straight to one (one lock release wakes it, no
        # shared condition to take again), else waits in _tasks.
        self._parked = []
        self._open = 0          # objects submitted and not finished
        self._threads = []
        self._spawn_lock = threading.Lock()
        self._local = threading.local()   # .client: this thread's
        self._inflight = {}     # ref -> plan
        self._finished = collections.deque()  # (ref, Finished or None)
        self.recheck = set()

    def in_flight(self):
        """The refs whose writes are submitted and not yet collected."""
        return set(self._inflight)

    def submit(self, plans):
        """Start the writes of plans in the writer threads."""
        if self._tasks is None:
            if not self._sessions:
                self._sessions = [
                    retry.call_with_retry(self._open_session,
                                          attempts=CALL_ATTEMPTS,
                                          budget_s=CALL_BUDGET)
                    for _ in range(self.size)]
                # each over the login's own connection (a XenAPI
                # session's calls: a connection of their own)
                self._clients = [
                    RetryingXapi(session, getattr(session, "channel", None))
                    for session in self._sessions]
                self._channels = [c.channel for c in self._clients]
            self._tasks = collections.deque()
        for plan in plans:
            self._inflight[plan.ref] = plan
        with self._lock:
            self._open += len(plans)
            short = self._hand(plans)
        self._spawn(short)

    def _hand(self, plans):
        """Give plans to parked threads, queue the rest; how many are
        queued. Under _lock."""
        queued = self._tasks
        assert queued is not None  # submit() made it
        parked = self._parked
        count = 0
        for plan in plans:
            if parked:
                slot = parked.pop()
                slot[1] = plan
                slot[0].release()
            else:
                queued.append(plan)
                count += 1
        return count

    def _spawn(self, count):
        """Up to `count` more threads, never above size."""
        if count <= 0 or len(self._threads) >= self.size:
            return
        with self._spawn_lock:
            while count > 0 and len(self._threads) < self.size:
                thread = threading.Thread(
                    target=self._work,
                    args=(self._clients[len(self._threads)],),
                    name="netoffload-writer")
                thread.daemon = True
                self._threads.append(thread)
                try:
                    thread.start()
                except RuntimeError:  # no more threads to be had
                    self._threads.pop()
                    if self._threads:
                        return  # the others take the tasks
                    raise
                count -= 1

    def _work(self, client):
        self._local.client = client
        slot = [threading.Lock(), None]
        slot[0].acquire()
        while True:
            plan = None
            with self._lock:
                if self._tasks is None:
                    return  # stopped
                if self._tasks:
                    plan = self._tasks.popleft()
                else:
                    self._parked.append(slot)
            if plan is None:
                slot[0].acquire()  # until a plan is handed over
                plan, slot[1] = slot[1], None
                if plan is None:  # stopped
                    return
            self._write_object(plan)
            plan = None

    def _write_object(self, plan):
        """One object, whole, on this thread: its head, its key run at
        once, its tail."""
        try:
            outcome = self._write_one(plan)
        except BaseException as err:  # handed over, as a future does
            self._done(plan.ref, Finished(error=err))
            return
        if not isinstance(outcome, writer.KeyRun):
            self._done(plan.ref, Finished(outcome))
            return
        client = self._local.client
        try:
            if getattr(client, "channel", None) is not None:
                self._write_run_at_once(client, outcome)
            else:  # no lean channel to send on: one key after the other
                for index in range(len(outcome.run)):
                    outcome.write_key(client, index)
            done = Finished(outcome.finish(client))
        except BaseException as err:  # handed over, as a future does
            done = Finished(error=err)
        self._done(plan.ref, done)

    def _write_run_at_once(self, client, run):
        """The keys of a run at once from this thread: each key's call
        sent on a connection of its own (on this thread's session), then
        the replies read; then the adds of the keys replaced (their
        removes done). A key whose call did not plainly succeed (an
        error, a lost reply, a race) is written again the checked way
        (KeyRun.write_key: retries, MAP_DUPLICATE_KEY, HANDLE_INVALID),
        from what it holds after our calls; nothing is lost by that: a
        failed call changed nothing, a lost reply's add shows as our
        value, and a lost reply's remove is settled from the map read
        again (_settle_unsure_removes), never made again blind. Once a
        key's retries ran out (xapi or the session gone), the keys left
        fail with it: the object fails as it would, without waiting out
        the retries of each key in turn."""
        cls, ref = run.plan.cls, run.plan.ref
        wires = getattr(self._local, "wires", None)
        if wires is None:
            wires = self._local.wires = []  # this thread's, one per key
        while len(wires) < len(run.run):
            wires.append(EventChannel(client.channel.endpoint))
            self._channels.append(wires[-1])
        session = getattr(client.session, "_session", None)
        holds = [expected for _, _, expected in run.run]  # after our calls
        unsure = []  # removes whose reply was lost
        stage = [(i, "remove" if expected is not None else "add")
                 for i, (_, value, expected) in enumerate(run.run)
                 if expected is not None or value is not None]
        while stage:
            sent = []
            for i, call in stage:
                key, value, _ = run.run[i]
                params = (session, ref, key) if call == "remove" else \
                    (session, ref, key, value)
                wire = wires[i]._connection()
                try:
                    wire.send(watch_events.dumps_call(
                        "%s.%s_other_config" % (
                            cls, "remove_from" if call == "remove"
                            else "add_to"), params))
                except Exception:  # written the checked way below
                    wires[i].close()
                    continue
                sent.append((i, call, wire))
            stage = []
            for i, call, wire in sent:
                try:
                    status, _, chunks = wire.reply()
                    data = b"".join(chunks)
                    done = status == 200 and \
                        watch_events.parse_value_reply(data) == ""
                except watch_events.EventReplyError:
                    done = False  # xapi's failure: nothing changed
                except Exception:  # written the checked way below
                    wires[i].close()
                    if call == "remove":
                        unsure.append(i)  # it may have run
                    continue
                if not done:
                    continue
                key, value, _ = run.run[i]
                if call == "remove":
                    holds[i] = None
                    if value is not None:
                        stage.append((i, "add"))  # the add of a replace
                        continue
                run.outcomes[i] = writer.WRITTEN
        if unsure:
            self._settle_unsure_removes(client, run, unsure, holds)
        gave_up = None  # a key's retries ran out: xapi or the session gone
        for i in range(len(run.run)):
            if run.outcomes[i] is None and gave_up is not None:
                run.outcomes[i] = gave_up  # would wait as long, serially
            elif run.outcomes[i] is None:
                run.write_key(client, i, expected=holds[i])
                outcome = run.outcomes[i]
                if isinstance(outcome, xapi.XapiError) and not isinstance(
                        outcome, (xapi.LostRace, xapi.ObjectGone)) and \
                        retry.is_transient(outcome):
                    gave_up = outcome

    @staticmethod
    def _settle_unsure_removes(client, run, unsure, holds):
        """Removes whose reply was lost may have run: a blind remove
        again would delete what someone wrote since. The map read once:
        the key absent (ours ran), as planned (it did not), or someone
        else's value (a lost race: theirs stays)."""
        cls, ref = run.plan.cls, run.plan.ref
        try:
            fresh = client.get_other_config(cls, ref)
        except xapi.XapiError as err:  # ObjectGone too: finish() tells
            for i in unsure:
                run.outcomes[i] = err
            return
        for i in unsure:
            key, _, planned = run.run[i]
            now = fresh.get(key)
            if now is None:
                holds[i] = None
            elif now != planned:
                run.outcomes[i] = xapi.LostRace(
                    "%s %s: %s was changed by someone else" % (cls, ref, key),
                    fresh, cls, ref, key)

    def _write_one(self, plan):
        """writer.begin on this thread's session: an ObjectWrite, or a
        KeyRun whose keys are to be written."""
        return writer.begin(self._local.client, plan)

    def _done(self, ref, finished):
        self._finished.append((ref, finished))
        with self._lock:
            self._open -= 1
            if self._open <= 0:
                self._drained.notify_all()

    def finished(self):
        """[(ref, plan, Finished)] of the writes done since the last call,
        in the order they finished; a cancelled one (never started) comes
        with None."""
        done = []
        while self._finished:
            ref, outcome = self._finished.popleft()
            plan = self._inflight.pop(ref, None)
            if plan is None:
                continue
            done.append((ref, plan, outcome))
        return done

    def stop(self):
        """Cancel the writes not started, wait for the running ones (an
        object whose head is written gets its keys and final book)."""
        with self._lock:
            tasks = self._tasks
            if tasks is None:
                return
            cancelled = list(tasks)
            tasks.clear()
            self._open -= len(cancelled)
            while self._open > 0:
                self._drained.wait()
            self._tasks = None
            for slot in self._parked:
                slot[1] = None
                slot[0].release()
            self._parked = []
        for plan in cancelled:
            self._finished.append((plan.ref, None))
        for thread in self._threads:
            thread.join()
        self._threads = []

    def close(self):
        """Forget every write and close the sessions (after stop)."""
        self._inflight.clear()
        self._finished.clear()
        self.recheck.clear()
        for channel in self._channels:
            channel.close()
        for session in self._sessions:
            close_session(session)
        self._sessions, self._channels, self._clients = [], [], []


class Watcher(object):
    """The event loop; `run()` until `stop()` or a signal."""

    def __init__(self, state_dir=None, event_timeout=EVENT_TIMEOUT,
                 cache_debounce=CACHE_DEBOUNCE, backoff_max=BACKOFF_MAX,
                 writers=WRITERS, open_session=None, sleep=time.sleep,
                 coalesce=EVENT_COALESCE, max_failures=MAX_FAILURES,
                 drift_interval=DRIFT_INTERVAL, drift_netlink=True,
                 lease_ttl=LEASE_TTL):
        self.state_dir = paths.state_dir(state_dir)
        self.max_failures = max(1, int(max_failures))
        self.exit_code = exitcodes.OK
        self.event_timeout = float(event_timeout)
        self.coalesce = max(0.0, float(coalesce))
        self._next_call = 0.0     # monotonic time the next event.from may start
        self.backoff_max = float(backoff_max)
        self._open_session = open_session or open_lean_session
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
        self._cache_writer = BackgroundWriter(self._write_cache)
        self._policy_warned = set()  # (level, error) already logged
        self.stopping = False
        self.stats = {"syncs": 0, "batches": 0, "writes": 0, "objects_written": 0,
                      "cache_writes": 0, "live_applied": 0, "errors": 0}
        self._store = None
        self._holder_self = None  # this process as a lease holder, once known
        self._writers = KeyWriters(self._open_session, writers)
        self._channel = EventChannel()
        # {ref: (other_config before, after)} of writes submitted: their
        # own mod events plan nothing again (watch_events.is_echo)
        self._echoes = {}
        self._todo = todo.TodoList(self.state_dir)
        self._lease = None        # ExitStack holding the pool writer lease
        self._operation = None    # what it yielded (pool-core's Operation)
        self._lease_idle = None   # monotonic time the writes drained
        # Objects (and live VIFs) whose planning waits while another writer
        # holds the pool lease: what we see then is its half-done state
        self._deferred = set()
        self._deferred_live = set()
        self.lease_ttl = max(1.0, float(lease_ttl))
        # The snapshot, the cache and the live-state record are shared with
        # the drift thread: each side works on them under this lock (the
        # loop not while it waits in event.from).
        self._lock = threading.RLock()
        self.drift_interval = max(0.0, float(drift_interval))
        self.drift_netlink = drift_netlink
        self._drift_record = drift.read_drift(self.state_dir)
        self._drift_thread = None
        # the network channel's thread: its token (None: no synced
        # snapshot to apply events to) and the sync its token belongs to
        self._network_channel = EventChannel()
        self._network_token = None
        self._sync_epoch = 0
        self._network_thread = None
        self._network_pause = threading.Event()  # set: stop pausing
        self._network_error = None  # raised by the loop: reconnect, resync

    # -- lifecycle -------------------------------------------------------------
    def stop(self):
        self.stopping = True
        self._network_pause.set()

    def run(self):
        """The loop; 0 when stopped, 1 after MAX_FAILURES failures in a row
        with xapi reachable."""
        backoff = BACKOFF_INITIAL
        failures = 0  # in a row, each after a successful connect
        left = self._todo.load(time.monotonic())
        if left:
            self.log.warning("watch: %d objects left in the to-do by the last "
                             "run; the full sync plans them again", left)
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
                    import random  # noqa: PLC0415 (on a failure only)
                    self._sleep(backoff * (0.8 + 0.4 * random.random()))
                except _Stop:
                    break
                backoff = min(backoff * 2, self.backoff_max)
        self.stopping = True  # the drift and network threads too
        self._network_pause.set()
        with self._lock:
            self._flush_cache()
        self._cache_writer.wait()
        self._disconnect()
        if self._network_thread is not None:
            self._network_thread.join(5.0)
        self._network_channel.close()
        return self.exit_code

    def _connect(self):
        self._disconnect()
        self.session = self._open_session()
        self.client = LeanXapi(self.session, self.session.channel,
                               relogin=True) \
            if isinstance(self.session, LeanSession) else xapi.Xapi(self.session)
        self.session_ref = getattr(self.session, "_session", None)
        self.host_ref = self.client.local_host_ref()

    def _disconnect(self):
        with self._lock:
            # first: a network batch applied after the writers stopped
            # would start them again, on sessions about to be closed
            self._network_token = None  # the network thread waits for a sync
            self._sync_epoch += 1
            self._network_error = None  # the resync to come is what it asks
        self._writers.stop()
        with self._lock:
            self._harvest()  # log and count what did get written; no replans
        self._network_channel.abort()  # its call's session is going
        self._release_lease()
        self._writers.close()
        self._channel.close()
        if self.session is not None:
            close_session(self.session)
        self.session = self.client = None

    # -- writing (master) --------------------------------------------------------
    def _harvest(self):
        """Collect finished writes and log them; the refs to plan again:
        objects that changed while their writes were in flight, once our
        writes show."""
        written, failed, again = [], [], []
        now, wall = time.monotonic(), time.time()
        for ref, plan, outcome in self._writers.finished():
            if outcome is None:
                result = writer.ObjectWrite.failed(
                    plan, ["not written: the watcher reconnected"])
            else:
                try:
                    result = outcome.result()
                except Exception as err:  # a writer thread's surprise
                    result = writer.ObjectWrite.failed(
                        plan, ["%s: %s" % (type(err).__name__, err)])
            final = self._echoes.get(ref, (None, None))[1]
            if result.status != writer.STATUS_CHANGED or \
                    result.done_plan is None or \
                    result.done_plan.final != final:
                # nothing (more) to come of ours, or a re-planned write
                self._echoes.pop(ref, None)
            if result.status == writer.STATUS_FAILED:
                # never dropped: planned and written again from the to-do
                failed.append(result)
                if self._operation is not None:
                    # its intent may stand with a key not yet written:
                    # settled before the op ends (writer.operation), or
                    # it would read as someone else's change
                    self._operation.unsettled = True
                self._todo.failed(ref, result.cls, result.uuid, result.label,
                                  "; ".join(result.error or ["failed"]),
                                  now, wall)
            else:  # written, already in policy, or gone
                self._todo.done([ref])
                if result.status == writer.STATUS_CHANGED:
                    written.append(result)
            if ref in self._writers.recheck:
                self._writers.recheck.discard(ref)
                if watch_events.shows(self.records, ref, result.written):
                    again.append(ref)
                else:
                    # the event of our last write is still to come: it
                    # plans the object again, so it must not pass for
                    # an echo of ours (which plans nothing)
                    self._echoes.pop(ref, None)
        self.stats["writes"] += sum(len(r.written) for r in written)
        self.stats["objects_written"] += len(written)
        if written or failed:
            self.log.info("watch: wrote offload keys on %d objects%s",
                          len(written), ", %d failed" % len(failed) if failed else "")
        for result in failed:
            self.log.warning("watch: %s %s: %s; kept in the to-do, tried "
                             "again", result.cls, result.label,
                             "; ".join(result.error or []))
        self._save_todo()
        if self._lease is not None and not self._writers.in_flight():
            now = time.monotonic()
            if self._lease_idle is None:
                self._lease_idle = now
            elif now - self._lease_idle >= LEASE_IDLE:
                self._release_lease()
        return again

    def _save_todo(self):
        """Write the to-do if it changed, and log its count."""
        if not self._todo.changed:
            return
        try:
            self._todo.save()
        except DeviceError as err:
            self.log.warning("watch: cannot write the to-do: %s", err.message)
            return
        except (OSError, IOError) as err:
            self.log.warning("watch: cannot write the to-do: %s", err)
            return
        if len(self._todo):
            self.log.warning("watch: to-do: %d objects still to bring into "
                             "policy", len(self._todo))
        else:
            self.log.info("watch: to-do empty: every object's keys written")

    # -- the pool-wide writer lease (docs/policy.md, "Operations and the lease") -----
    def _take_lease(self):
        """Hold the pool writer lease, as one operation, while writing:
        {"op": id} to plan with (writer.operation: the lease, the op key,
        the settling of a crashed op). Raises Busy when another writer
        holds the lease: the objects then wait in the to-do.
        """
        self._lease_idle = None
        if self._lease is not None and self._operation is not None:
            self._operation.renew(self._connected())  # Busy if taken over
            return self._op_args()
        holder = "watch@%s" % (self.host_ref,)
        stack = contextlib.ExitStack()
        self._operation = stack.enter_context(writer.operation(
            self._connected(), holder, ttl_s=self.lease_ttl,
            wait_s=0.0))
        self._lease = stack
        return self._op_args()

    def _other_writer(self):
        """The lease of another writer that is live in our view of the
        pool (LeaseInfo), or None."""
        if self.records is None:
            return None
        raw = self.records.pool_other_config.get(keys.KEY_LEASE)
        if raw is None:
            return None
        info = LeaseInfo(raw)
        if info.expired(time.time()):
            return None  # a dead writer's: taken over at our next write
        if self._operation is not None and info.op == self._operation.op:
            return None  # ours
        if info.gone(self._this_process()):
            return None  # a dead writer of this host's: taken over as well
        return info

    def _this_process(self):
        """This process as a lease holder (host uuid, pid, start, boot)."""
        if self._holder_self is None:
            self._holder_self = Holder.this_process()
        return self._holder_self

    def _resume_deferred(self):
        """Plan what waited for another writer, once its lease is gone."""
        if not (self._deferred or self._deferred_live) or \
                self.records is None or self._other_writer() is not None:
            return
        refs, live = self._deferred, self._deferred_live
        self._deferred, self._deferred_live = set(), set()
        everything = EVERY_DEVICE in live
        live.discard(EVERY_DEVICE)
        refs = set(r for r in refs if r in self.records.vifs
                   or r in self.records.pifs)
        self.log.info("watch: the writer lease is free; planning %d "
                      "objects that waited", len(refs))
        self._reconcile(refs, live=EVERY_DEVICE if everything else live)

    def _renew_lease(self):
        """While writes are in flight, keep the lease from expiring."""
        if self._operation is None or not self._writers.in_flight():
            return
        try:
            self._operation.renew(self._connected())
        except NetoffloadError as err:  # taken over: the next writer
            self.log.warning("watch: %s", err.message)  # settles ours
            self._release_lease()

    def _op_args(self):
        return {"op": self._operation.op} if self._operation else {}

    def _release_lease(self):
        stack, self._lease = self._lease, None
        self._operation = self._lease_idle = None
        if stack is None:
            return
        try:
            stack.close()
        except Exception as err:  # it expires by itself (ttl)
            self.log.warning("watch: cannot give the writer lease back: %s",
                             err)

    # -- the loop ------------------------------------------------------------------
    def _connected(self):
        """The client of the current session; XapiError (reconnect) if none."""
        if self.client is None:
            raise xapi.XapiError("not connected to xapi")
        return self.client

    def _events(self, token, timeout):
        return self._events_of(EVENT_CLASSES, token, timeout)

    def _events_of(self, classes, token, timeout):
        # a blip (refused, reset, a reply cut short) is tried again on the
        # same token rather than cost a full resync
        self._connected()
        try:
            result = retry.call_with_retry(
                self._channel.call, self.session_ref, classes, token,
                float(timeout), attempts=CALL_ATTEMPTS, budget_s=CALL_BUDGET,
                sleep=self._sleep,
                # not once the network thread failed: it aborted this call
                # for the loop to resync
                transient=lambda err: self._network_error is None and
                retry.is_transient(err))
        except Exception:
            with self._lock:
                failed, self._network_error = self._network_error, None
            if failed is not None:
                raise failed from None  # the reason, not the cut it made
            raise
        if getattr(self.session, "_session", None) != self.session_ref:
            # the XenAPI client logged in again after SESSION_INVALID: xapi
            # restarted and our token means nothing any more
            raise xapi.XapiError("xapi session was renewed (xapi restarted?)")
        return result

    def _full_sync(self):
        # The token first: whatever changes after it comes again as an event.
        # (Tokens are pool-wide, so the smallest class is enough to get one.)
        self.token = self._events_of(["pool"], "", 0.0)["token"]
        with self._lock:
            self._network_token = None
            self._sync_epoch += 1
        # The old snapshot goes before the new one is read: its records'
        # memory is where the new ones land, so a resync does not grow the
        # heap. (Nothing plans from it meanwhile: the drift thread sees no
        # records and waits.)
        with self._lock:
            self.records = None
            self._echoes.clear()
        thaw_heap()  # the old snapshot's objects are collectable again
        release_memory()
        tables = {}
        self._connected()
        started = time.monotonic()
        for xapi_class in CLASSES:
            # read lean, as it streams in: only the fields the pack reads
            # become objects, each record a small Record at once
            tables[xapi_class.table] = retry.call_with_retry(
                self._channel.all_records, self.session_ref, xapi_class,
                attempts=CALL_ATTEMPTS, budget_s=CALL_BUDGET, sleep=self._sleep)
        records = PoolRecords(*[tables[c.table] for c in CLASSES])
        tables = None
        release_memory()
        self.stats["syncs"] += 1
        read = time.monotonic()
        with self._lock:
            self.records = records
            # the network channel starts from the same (pool-wide) token
            self._network_token = self.token
            self.was_master = self.is_master
            self.log.info("watch: synced %d VMs, %d VIFs, %d PIFs (%s)",
                          len(records.vms), len(records.vifs),
                          len(records.pifs),
                          "master" if self.was_master else "member")
            self._cache.restart(self.host_ref)
            self._policy_warned = set()
            self._echoes.clear()
            self._reconcile(set(records.vifs) | set(records.pifs),
                            live=EVERY_DEVICE)
            planned = time.monotonic()
            self._flush_cache()
        self.log.info("watch: full sync: read in %.2fs, planned in %.2fs, "
                      "cache entries in %.2fs", read - started,
                      planned - read, time.monotonic() - planned)
        freeze_heap()
        self._start_drift()
        self._start_network()

    def _step(self):
        timeout = self._cache.wait_limit(time.monotonic(), self.event_timeout)
        pause = self._next_call - time.monotonic()
        if pause > 0:
            self._sleep(pause)
        with self._lock:
            if self._network_error is not None:
                err, self._network_error = self._network_error, None
                raise err
            again = set(self._harvest())
            self._renew_lease()
            again.update(self._todo.due(time.monotonic()))
            self._resume_deferred()
            if again:
                self._reconcile(again)
            # (under the lock: the network thread submits writes too)
            if self._writers.in_flight():
                timeout = min(timeout, 1.0)  # to log finished writes promptly
            if self._lease is not None:
                timeout = min(timeout, LEASE_IDLE)  # to give it back in time
            if self._deferred or self._deferred_live:
                timeout = min(timeout, 1.0)  # a dead writer's lease expires
            retry_at = self._todo.next_due()
            if retry_at is not None:
                timeout = max(0.0, min(timeout, retry_at - time.monotonic()))
            # Snapshots in this batch may predate the last writes of objects
            # in flight now, even if those writes finish before we see them.
            busy = self._writers.in_flight()
        result = self._events(self.token, timeout)
        self.token = result["token"]
        events = result.get("events") or []
        with self._lock:
            if events:
                self._next_call = time.monotonic() + self.coalesce
                self.stats["batches"] += 1
                affected, live = self._apply_events(events)
                if affected or live:
                    self._reconcile(affected, live=live, busy=busy)
                self._resume_deferred()
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
                                          self.was_master, self._echoes)
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
        other = self._other_writer()
        if other is not None:
            # another writer is part way through: plan nothing (keys or
            # live) from its half-done state; once its lease goes (an
            # event), everything it touched comes again as events
            if not self._deferred and not self._deferred_live:
                self.log.info("watch: %s holds the pool writer lease; "
                              "waiting for it to finish", other.holder)
            self._deferred.update(affected)
            if live is EVERY_DEVICE:
                self._deferred_live.add(EVERY_DEVICE)
            else:
                self._deferred_live.update(live)
            return
        targets = sorted(ref for ref in affected
                         if watch_events.eligible(self.records, ref))
        if len(self._todo):
            # gone or no longer a guest's: nothing left to write
            self._todo.done(set(affected).difference(targets))
        if not self.is_master:
            self._todo.clear()  # the master's to-do, and it plans everything
        elif targets:
            busy = set(busy) | self._writers.in_flight()
            waiting = [ref for ref in targets if ref in busy]
            self._writers.recheck.update(waiting)
            idle = [ref for ref in targets if ref not in busy]
            if len(idle) >= PLAN_SLICE:
                idle, quiet = self._needing_plans(idle)
                if len(self._todo):  # in policy already (a lost reply)
                    self._todo.done(quiet)
            # in slices: a full sync plans every object, and holding 10,000
            # plans at once would leave the heap that much bigger for good
            for start in range(0, len(idle), PLAN_SLICE):
                # under a lease already held: planned with its op at once
                plans = planning.plan_db(self.records,
                                          idle[start:start + PLAN_SLICE],
                                          **self._op_args())
                self._warn_policy_errors(
                    (p.resolution.level, p.resolution.error, p.label)
                    for p in plans if p.resolution.error)
                if len(self._todo):  # in policy already (a lost reply)
                    self._todo.done(p.ref for p in plans if not p.writes)
                plans = [p for p in plans if p.writes]
                if plans:
                    self._submit(plans)
        self._save_todo()
        self._enforce(None if live is EVERY_DEVICE else set(targets) | set(live))

    def _needing_plans(self, refs):
        """(refs to plan, VIF refs whose plan writes nothing). A VIF's plan
        depends on its own other_config, its VM's other_config and tags,
        its network's other_config and the pool's (the same for all): VIFs
        holding the very same maps (the snapshot shares equal maps, see
        watch_events.share_config) get the same writes. One of each such
        group is planned; if it writes nothing, neither do the others,
        which are not planned (a full sync of a pool in policy: one plan
        per group instead of one per VIF)."""
        records = self.records
        if records is None:
            return list(refs), []
        groups = collections.OrderedDict()
        for ref in refs:
            vif = records.vifs.get(ref)
            if vif is None:
                groups[ref] = [ref]  # a PIF: planned on its own
                continue
            groups.setdefault(precedence.vif_policy_inputs(records, ref),
                              []).append(ref)
        planned, quiet = [], []
        for members in groups.values():
            if len(members) > 1:
                plan = planning.plan_db(records, members[:1],
                                        **self._op_args())[0]
                if not plan.writes:
                    # a broken policy plans no writes: still one warning
                    # per broken key, as planning each VIF would give
                    if plan.resolution.error:
                        self._warn_policy_errors([(
                            plan.resolution.level, plan.resolution.error,
                            plan.label)])
                    quiet.extend(members)
                    continue
            planned.extend(members)
        return planned, quiet

    def _submit(self, plans):
        """Start the writes of plans under the pool writer lease (planned
        again with its op id when it has one); when it cannot be had, the
        objects go to the to-do."""
        try:
            op_args = self._take_lease()
            if any(p.op != op_args.get("op") for p in plans):
                # planned before this lease was taken: its op goes in the
                # books' intent
                plans = [p for p in planning.plan_db(
                    self.records, [p.ref for p in plans], **op_args)
                    if p.writes]
        except NetoffloadError as err:  # Busy: someone else is writing
            # planned again from the records as they stand once its lease
            # is gone (its events come first), not from this view
            self.log.info("watch: %d objects wait for the writer lease: %s",
                          len(plans), err.message)
            self._deferred.update(p.ref for p in plans)
            return
        for plan in plans:
            self._echoes[plan.ref] = (plan.current, plan.final)
        self._writers.submit(plans)

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
        # an admin's `netoffload set` stands until `restore`: enforce_live
        # leaves a held device alone (and touches none when the live-state
        # record cannot be read)
        try:
            results = enforce.enforce_live(self.records, self.host_ref,
                                             self._live_store(), targets=refs)
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

    # -- drift (agents/drift.py) -------------------------------------------------
    def _start_drift(self):
        """The drift thread, once, after the first full sync."""
        if self._drift_thread is not None or not self.drift_interval:
            return
        self._drift_thread = threading.Thread(target=self._drift_loop,
                                              name="drift")
        self._drift_thread.daemon = True
        self._drift_thread.start()

    def _start_network(self):
        """The network channel's thread, once, after the first full sync."""
        if self._network_thread is not None:
            return
        self._network_thread = threading.Thread(target=self._network_loop,
                                                name="networks")
        self._network_thread.daemon = True
        self._network_thread.start()

    def _network_loop(self):
        """event.from on networks, applied to the snapshot under the lock
        as the loop applies its own batches. A failure is the loop's to
        handle (it reconnects and resyncs: a new token here); a batch read
        across a resync is dropped, the new snapshot being newer."""
        failures = 0  # calls in a row that failed
        while not self.stopping:
            with self._lock:
                epoch, token = self._sync_epoch, self._network_token
                session_ref = self.session_ref
                if self._cache.is_due(time.monotonic()):
                    try:
                        self._flush_cache()  # the loop may be in a long wait
                    except Exception as err:  # as in the loop: resync
                        self._network_error = err
                        self._network_token = token = None
                        self._channel.abort()
            if token is None or session_ref is None:
                self._network_pause.wait(0.2)
                continue
            try:
                result = self._network_channel.call(
                    session_ref, NETWORK_EVENT_CLASSES, token,
                    min(self.event_timeout, max(
                        0.1, self._cache.wait_limit(time.monotonic(),
                                                    self.event_timeout))))
            except Exception as err:  # the loop reconnects and resyncs
                failures += 1
                if failures == NETWORK_FAILURES_LOUD:
                    # a failure of this channel alone would otherwise
                    # leave networks' policy unread without a word
                    self.log.warning(
                        "watch: reading network events failed %d times in "
                        "a row (%s: %s); networks' policy is not followed "
                        "until it works again", failures,
                        type(err).__name__, err)
                self._network_pause.wait(0.5)
                continue
            if failures >= NETWORK_FAILURES_LOUD:
                self.log.info("watch: reading network events again")
            failures = 0
            events = result.get("events") or []
            with self._lock:
                if epoch != self._sync_epoch or self.stopping:
                    continue
                self._network_token = result["token"]
                try:
                    if events:
                        self.stats["batches"] += 1
                        affected, live = self._apply_events(events)
                        if affected or live:
                            # no `busy` taken before the call: the loop
                            # may have collected those writes since, and
                            # a ref put in recheck with no write left to
                            # collect is never planned again (_reconcile
                            # adds the writes in flight now)
                            self._reconcile(affected, live=live)
                        self._resume_deferred()
                except Exception as err:  # as in the loop: resync
                    self._network_error = err
                    self._network_token = None
                    self._channel.abort()  # the loop may be in a long wait
            if events:
                self._network_pause.wait(NETWORK_COALESCE)

    def _drift_loop(self):
        monitor = drift.FeatureMonitor.open() if self.drift_netlink else None
        if monitor is not None:
            self.log.info("watch: drift: following ethtool netlink "
                          "notifications")
        else:
            self.log.info("watch: drift: reading governed devices every "
                          "%gs", self.drift_interval)
        next_read = time.monotonic() + self.drift_interval
        try:
            while not self.stopping:
                if monitor is not None:
                    names = monitor.wait(1.0)  # 1 s: to see stopping
                    if names == set():
                        continue
                    time.sleep(DRIFT_SETTLE)
                    more = monitor.wait(0.0)
                    names = None if names is None or more is None \
                        else names | more
                else:
                    wait = next_read - time.monotonic()
                    if wait > 0:
                        time.sleep(min(wait, 1.0))
                        continue
                    next_read = time.monotonic() + self.drift_interval
                    names = None
                try:
                    with self._lock:
                        self.check_drift(names)
                except Exception as err:  # never the end of the watcher
                    self.log.warning("watch: drift check failed: %s: %s",
                                     type(err).__name__, err)
        finally:
            if monitor is not None:
                monitor.close()

    def _held_devices(self):
        """Devices an admin holds with `netoffload set`; None when the
        live-state record cannot be read."""
        try:
            return set(self._live_store().held_devices())
        except NetoffloadError as err:
            self.log.warning("watch: cannot read the holds: %s", err.message)
            return None

    def _live_store(self):
        if self._store is None:
            self._store = livestate.LiveStateStore(self.state_dir)
        return self._store

    def check_drift(self, names=None):
        """Re-enforce the governed local devices (those named; None: all)
        whose live features drifted from the policy, except held ones;
        record what stays drifted in drift.json. Call under self._lock."""
        records, host_ref = self.records, self.host_ref
        if records is None or host_ref is None:
            return
        held = self._held_devices()
        if held is None:
            return  # holds unknown: touch nothing
        present = set(ethtool.list_devices())
        governed = dict(
            (d.device, d) for d in enforce.local_devices(records, host_ref)
            if d.device in present and (names is None or d.device in names)
            and d.resolution.live_features and not d.resolution.error)
        desired = dict((name, d.resolution.live_features)
                       for name, d in governed.items())
        found = drift.find_drift(desired, ethtool.read_many(sorted(governed)),
                                 held)
        store = self._live_store()
        for name in found.reenforce:
            local = governed[name]
            wanted = desired[name]
            what = " ".join("%s=%s" % (f, v)
                            for f, v in sorted(found.drifted[name].items()))
            try:
                result = store.apply(name, wanted, owner=local.owner)
            except NetoffloadError as err:
                self.log.warning("watch: drift on %s: %s; re-enforcing "
                                 "failed: %s", name, what, err.message)
                continue
            self.stats["drift_corrected"] = \
                self.stats.get("drift_corrected", 0) + 1
            self.log.warning(
                "watch: drift on %s: %s, policy %s (%s) wants %s; "
                "re-enforced: %s", name, what, local.resolution.policy,
                local.resolution.level, " ".join(
                    "%s=%s" % (f, wanted[f])
                    for f in sorted(found.drifted[name])),
                ", ".join("%s %s" % (f, v)
                          for f, v in sorted(result.changed.items()))
                or "nothing changed")
        still = dict((name, found.drifted[name]) for name in found.held)
        if found.reenforce:
            again = drift.find_drift(
                dict((n, desired[n]) for n in found.reenforce),
                ethtool.read_many(found.reenforce), held)
            still.update(again.drifted)
        for name in found.held:
            if name not in self._drift_record:
                self.log.warning("watch: drift on %s: %s; held by `netoffload "
                                 "set`, left alone", name, " ".join(
                                     "%s=%s" % (f, v) for f, v in
                                     sorted(found.drifted[name].items())))
        checked = set(governed)
        if names is None:  # a full check: devices no longer governed too
            checked |= set(self._drift_record)
        record = drift.next_record(self._drift_record, still, checked, held,
                                   time.time())
        if record != self._drift_record:
            try:
                drift.write_drift(record, self.state_dir)
            except (NetoffloadError, OSError, IOError) as err:
                self.log.warning("watch: cannot write the drift record: %s",
                                 err)
                return
            self._drift_record = record

    def _flush_cache(self, wait=False):
        """Re-resolve what changed (here, under the lock) and write the
        files in the cache-writer thread; wait: until they are written."""
        if self.records is None or self.host_ref is None:
            return
        pending = self._cache.prepare(self.records)
        if pending is not None:
            self._cache_writer.submit(pending)
        if wait:
            self._cache_writer.wait()

    def _write_cache(self, pending):
        """The cache-writer thread's work."""
        try:
            flushed = self._cache.write(pending)
        except (DeviceError, OSError, IOError) as err:  # DeviceError: the
            with self._lock:                            # state directory
                self._cache.failed()
            self.log.warning("watch: cannot write the cache: %s",
                             err.message if isinstance(err, DeviceError)
                             else err)
            return
        with self._lock:
            self._cache.done()
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
    parser.add_argument("--drift-interval", type=float, default=DRIFT_INTERVAL,
                        help="seconds between two reads of the governed "
                             "devices where the kernel sends no ethtool "
                             "netlink notifications (0: no drift correction)")
    parser.add_argument("--lease-ttl", type=float, default=LEASE_TTL,
                        help="seconds the pool writer lease is taken for "
                             "(renewed while writing)")
    parser.add_argument("--drift-poll", action="store_true",
                        help="read periodically even where the kernel "
                             "sends notifications")
    args = parser.parse_args(argv)
    # a hung xapi must not hang us forever: bound every socket operation
    socket.setdefaulttimeout(args.event_timeout + 60.0)
    # Writer threads spend a few microseconds of Python between two calls;
    # with the default 5 ms GIL slice each would wait behind the main
    # thread parsing a big event batch, and an object's 8 writes add up.
    sys.setswitchinterval(SWITCH_INTERVAL)
    tune_gc()
    limit_malloc_arenas()
    watcher = Watcher(event_timeout=args.event_timeout,
                      cache_debounce=args.cache_debounce,
                      backoff_max=args.backoff_max, writers=args.writers,
                      coalesce=args.coalesce,
                      drift_interval=args.drift_interval,
                      drift_netlink=not args.drift_poll,
                      lease_ttl=args.lease_ttl)
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
