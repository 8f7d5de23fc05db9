"""Fan-out: run a plugin function on every other live host through
`host.call_plugin`, a bounded number at a time; an unreachable or slow host
is reported and does not fail the others.

Concurrency: at most FANOUT_WORKERS calls are in flight, made by as many
worker threads, each with one XAPI session for all the hosts it calls (a
login per worker, not per host). A call that has run for FANOUT_SLOW seconds
stops counting toward that bound and a new worker takes its place, so hosts
that hang (live in the database, not answering) cannot hold up the others
until FANOUT_TIMEOUT; the threads never outnumber the hosts.
"""
import collections
import json
import threading
import time
import traceback

from netoffload.errors import XapiError
from netoffload.log import get_logger
from netoffload.pool import xapi

PLUGIN_NAME = "netoffload"

# The plugin's scope= argument: the whole call, or (what the fan-out sends
# to the other hosts) their live part only.
SCOPE_POOL = "pool"
SCOPE_LOCAL = "local"


# How long the fan-out waits for the other hosts, all together. The caller
# holds this host's lock meanwhile (others get BUSY), so keep it short; a
# host that has not answered by then (or was not reached in time) is
# reported as TIMEOUT.
FANOUT_TIMEOUT = 120.0

# Calls in flight at once. Each is a connection to the local xapi, which
# forwards it to the member; a 64-host pool (XenServer's limit) takes four
# rounds, and the caller's dom0 does not hold 64 threads and sessions.
FANOUT_WORKERS = 16

# A call running this long no longer counts toward FANOUT_WORKERS (see the
# module docstring). Well above a healthy host's answer time.
FANOUT_SLOW = 30.0

# What call_hosts did: {host_ref: outcome}, the most calls that were in
# flight at once, and its wall time in seconds.
FanOut = collections.namedtuple("FanOut", "outcomes peak seconds")


def fan_out(ctx, fn, args, local_result, host_refs=None):
    """Per host (of `host_refs`; None: every host): the local result here,
    host.call_plugin elsewhere.

    Every entry has `ok`: a host that fails in any way, or does not answer
    within FANOUT_TIMEOUT, is reported and does not fail the others.
    """
    if ctx.records.local_to is not None:
        # a scope=local call never fans out, and its snapshot does not
        # hold the other hosts
        raise ValueError("fan_out needs a whole-pool snapshot")
    call_args = dict((k, v) for k, v in args.items() if k != "pool")
    call_args["scope"] = SCOPE_LOCAL
    entries = []
    remote = []
    for host_ref in sorted(ctx.records.hosts,
                           key=lambda r: ctx.records.hosts[r].get(
                               "name_label", "")):
        if host_refs is not None and host_ref not in host_refs:
            continue
        entry = ctx.host_json(host_ref)
        entries.append(entry)
        if host_ref == ctx.host_ref:
            entry.update(ok=True, result=local_result)
        elif not ctx.records.host_is_live(host_ref):
            entry.update(ok=False, error=["HOST_OFFLINE",
                                          "the host is not live"])
        else:
            remote.append((host_ref, entry))
    done = call_hosts([ref for ref, _ in remote], fn, call_args)
    for host_ref, entry in remote:
        entry.update(done.outcomes[host_ref])
    return entries


def call_hosts(host_refs, fn, call_args):
    """host.call_plugin(host, PLUGIN_NAME, fn, call_args) on each host, at
    most FANOUT_WORKERS at a time (see the module docstring); a FanOut.

    Every host has an outcome, {"ok": True, "result": parsed JSON} or
    {"ok": False, "error": [code, ...]}, within FANOUT_TIMEOUT. The outcomes
    are copies taken when it returns: a late worker cannot change them.
    """
    return _Fan(list(collections.OrderedDict.fromkeys(host_refs)), fn,
                call_args).run()


class _Fan(object):
    """One call_hosts: a queue of hosts and the workers that drain it.

    Everything below `lock` is read and written under it; the workers
    notify it when a call ends or a worker leaves.
    """

    def __init__(self, host_refs, fn, call_args):
        self.host_refs = host_refs
        self.fn = fn
        self.call_args = call_args
        self.workers = max(1, int(FANOUT_WORKERS))
        self.slow_after = float(FANOUT_SLOW)
        self.started = time.time()
        self.deadline = self.started + FANOUT_TIMEOUT
        self.lock = threading.Condition()
        self.todo = collections.deque(host_refs)
        self.running = {}   # host_ref -> when its call started
        self.done = {}      # host_ref -> outcome
        self.threads = 0    # workers alive
        self.peak = 0
        self.closed = False

    def _active(self, now):
        """Workers that count toward the bound: all but those in a slow call."""
        slow = sum(1 for began in self.running.values()
                   if now - began >= self.slow_after)
        return self.threads - slow

    def run(self):
        with self.lock:
            while len(self.done) < len(self.host_refs):
                now = time.time()
                if now >= self.deadline:
                    break
                while self.todo and self._active(now) < self.workers:
                    if not self._spawn():
                        break
                wake = self.deadline
                if self.todo:  # when the next call turns slow (a call not
                    # yet started turns slow after now + slow_after)
                    turning = [began + self.slow_after
                               for began in self.running.values()
                               if began + self.slow_after > now]
                    wake = min([wake, now + self.slow_after] + turning)
                self.lock.wait(wake - now)
            self.closed = True  # a late worker takes no further host
            outcomes = {}
            for host_ref in self.host_refs:
                outcome = self.done.get(host_ref)
                if outcome is None:
                    outcome = {"ok": False, "error": [
                        "TIMEOUT", "no answer in %ds" % FANOUT_TIMEOUT]}
                outcomes[host_ref] = dict(outcome)
            peak = self.peak
        seconds = time.time() - self.started
        if self.host_refs:
            get_logger().info("%s on %d hosts: %.2f s, at most %d at once",
                              self.fn, len(self.host_refs), seconds, peak)
        return FanOut(outcomes, peak, seconds)

    def _spawn(self):
        """Start a worker; False if none can be started (then, with no
        worker left, the hosts still queued are reported as failed)."""
        thread = threading.Thread(target=self._work, name="netoffload-fanout")
        thread.daemon = True  # a host that never answers must not block exit
        try:
            thread.start()
        except RuntimeError as err:  # "can't start new thread"
            if self.threads == 0:
                while self.todo:
                    self.done[self.todo.popleft()] = {
                        "ok": False, "error": [type(err).__name__, str(err)]}
            return False
        self.threads += 1
        return True

    def _next(self):
        """The next host for this worker, or None: it leaves."""
        with self.lock:
            now = time.time()
            if self.closed or not self.todo or now >= self.deadline or \
                    self._active(now) > self.workers:
                return None
            host_ref = self.todo.popleft()
            self.running[host_ref] = now
            self.peak = max(self.peak, len(self.running))
            return host_ref

    def _work(self):
        session = None
        try:
            host_ref = self._next()
            while host_ref is not None:
                outcome, session = _call_host(session, host_ref, self.fn,
                                              self.call_args)
                with self.lock:
                    del self.running[host_ref]
                    self.done[host_ref] = outcome
                    self.lock.notify_all()
                host_ref = self._next()
        finally:
            with self.lock:
                self.threads -= 1
                self.lock.notify_all()
            if session is not None:
                xapi.close_session(session)


def _call_host(session, host_ref, fn, call_args):
    """(outcome, the session to reuse or None); never raises.

    The outcome is {"ok": True, "result": ...} or {"ok": False, "error":
    [...]}. A session is opened when none is given; it is dropped after a
    failure that may have broken it (anything but an API error).
    """
    try:
        if session is None:
            session = xapi.open_session()
        text = session.xenapi.host.call_plugin(host_ref, PLUGIN_NAME, fn,
                                               call_args)
        outcome = {"ok": True, "result": json.loads(text)}
    except XapiError as err:  # open_session: cannot log in or reach xapi
        outcome = {"ok": False, "error": [err.code, err.message]}
    except Exception as err:  # any failure of this host: report, go on
        details = getattr(err, "details", None)
        if details and isinstance(details, (list, tuple)):
            error = [str(d) for d in details]
            if error[0] == "SESSION_INVALID":
                session = _drop(session)
        else:
            error = [type(err).__name__, str(err)]
            get_logger().error("host %s: %s: %s", host_ref, fn,
                               traceback.format_exc())
            session = _drop(session)
        outcome = {"ok": False, "error": error}
    if not outcome["ok"]:
        get_logger().warning("host %s: %s failed: %s", host_ref, fn,
                             outcome["error"])
    return outcome, session


def _drop(session):
    if session is not None:
        xapi.close_session(session)
    return None
