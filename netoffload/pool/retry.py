"""Transient XAPI failures and bounded retries.

`is_transient(exc)`: True for a failure that passes by itself: xapi
refused or reset the connection, its listen queue was full (EAGAIN), a call
timed out, the session was lost (SESSION_INVALID: the XenAPI client logs in
again on its own), xapi is restarting or still starting. False for anything
else, and always False for an object that is gone (HANDLE_INVALID): no
retry brings it back.

`call_with_retry(fn, *args, attempts=, budget_s=, sleep=)` calls fn until
it returns, with bounded exponential backoff between attempts; a
non-transient error is raised at once, the last transient one when the
attempts or the time budget run out.

The exceptions looked at are those of the real XenAPI client: XenAPI.Failure
(a xapi error code in `.details`), the socket's OSError family, http.client's
and xmlrpc.client's protocol errors (a reply cut short while xapi goes
down), and our XapiError wrapping any of these (`raise ... from`).
"""
import errno
import socket
import sys
import time
from xml.parsers.expat import ExpatError

# xapi error codes that mean "try again": the session died with a restart
# (the XenAPI client re-logs in), xapi is still starting up.
TRANSIENT_CODES = frozenset(["SESSION_INVALID", "HOST_STILL_BOOTING"])
# The object is gone: never retried, whatever else is said.
GONE_CODES = frozenset(["HANDLE_INVALID"])

# errno values of a connection that may work on the next try. ENOENT: the
# unix socket /var/lib/xcp/xapi does not exist while xapi restarts.
TRANSIENT_ERRNOS = frozenset(
    getattr(errno, name) for name in (
        "ECONNREFUSED", "ECONNRESET", "ECONNABORTED", "EPIPE", "EAGAIN",
        "EWOULDBLOCK", "ETIMEDOUT", "EINTR", "EHOSTUNREACH", "ENETUNREACH",
        "ENETDOWN", "ENOENT", "ESHUTDOWN")
    if hasattr(errno, name))

# xmlrpc.client.Fault codes the XenAPI client raises itself: 504 "The
# connection timed out" (login), 500 "Tried 3 times to get a valid session".
_CLIENT_FAULTS = {504: None, 500: "valid session"}
# HTTP statuses of a xapi (or a proxy in front of it) not ready yet
_HTTP_TRANSIENT = frozenset([502, 503, 504])

DEFAULT_ATTEMPTS = 6
DEFAULT_BUDGET_S = 20.0
DEFAULT_INITIAL_S = 0.1
DEFAULT_MAX_DELAY_S = 5.0


def _codes(exc):
    """The xapi error code an exception carries, or None."""
    details = getattr(exc, "details", None)  # XenAPI.Failure
    if isinstance(details, (list, tuple)) and details:
        return str(details[0])
    params = getattr(exc, "params", None)   # our XapiError: the code first
    if isinstance(params, (list, tuple)) and params:
        return str(params[0])
    return None


def _chain(exc):
    """exc and the exceptions it was raised from, innermost last."""
    seen = []
    while exc is not None and exc not in seen and len(seen) < 10:
        seen.append(exc)
        if exc.__cause__ is not None or exc.__suppress_context__:
            exc = exc.__cause__  # `raise ... from None` ends the chain
        else:
            exc = exc.__context__
    return seen


def _transient_one(exc):
    """True/False when this exception alone decides, None when it does not."""
    code = _codes(exc)
    if code in GONE_CODES:
        return False
    if code in TRANSIENT_CODES:
        return True
    # ConnectionError: refused, reset, aborted, broken pipe, also without an
    # errno (http.client.RemoteDisconnected has none)
    if isinstance(exc, (socket.timeout, ConnectionError)):
        return True
    if isinstance(exc, (OSError, IOError)):
        return exc.errno in TRANSIENT_ERRNOS
    # http.client and xmlrpc.client only when loaded: no exception of
    # theirs exists otherwise, and the watcher does without them (7 MiB)
    http_client = sys.modules.get("http.client")
    if isinstance(exc, ExpatError) or (
            http_client is not None and
            isinstance(exc, http_client.HTTPException)):
        # RemoteDisconnected is a ConnectionResetError (handled above);
        # BadStatusLine, IncompleteRead, CannotSendRequest, a reply whose
        # XML stops short: xapi went away mid-reply; the next one may work
        return True
    xmlrpc_client = sys.modules.get("xmlrpc.client")
    if xmlrpc_client is None:
        return None
    if isinstance(exc, xmlrpc_client.ProtocolError):
        return exc.errcode in _HTTP_TRANSIENT
    if isinstance(exc, xmlrpc_client.Fault):
        if exc.faultCode not in _CLIENT_FAULTS:
            return False
        needle = _CLIENT_FAULTS[exc.faultCode]
        return needle is None or needle in str(exc.faultString)
    return None


def is_transient(exc):
    """True if exc is a failure that may pass by itself (see the module
    docstring); False for anything else, and for an object that is gone
    even when a transient error is further down the chain."""
    verdict = None
    for link in _chain(exc):
        one = _transient_one(link)
        if one is False and _codes(link) in GONE_CODES:
            return False
        if verdict is None and one is not None:
            verdict = one
    return bool(verdict)


def backoff_delays(attempts, initial_s=DEFAULT_INITIAL_S,
                   max_delay_s=DEFAULT_MAX_DELAY_S):
    """The waits between `attempts` tries: initial_s doubling up to
    max_delay_s (len attempts - 1)."""
    delays = []
    delay = float(initial_s)
    for _ in range(max(0, int(attempts) - 1)):
        delays.append(min(delay, float(max_delay_s)))
        delay *= 2
    return delays


def call_with_retry(fn, *args, attempts=DEFAULT_ATTEMPTS,
                    budget_s=DEFAULT_BUDGET_S, sleep=time.sleep,
                    initial_s=DEFAULT_INITIAL_S,
                    max_delay_s=DEFAULT_MAX_DELAY_S, jitter=0.2,
                    clock=time.monotonic, on_retry=None,
                    transient=is_transient):
    """fn(*args), tried again after a transient failure.

    attempts: tries in all; budget_s: no new try starts later than this
    after the first; initial_s / max_delay_s: the backoff, doubling from
    initial_s up to max_delay_s; jitter: each wait varies by up to this
    fraction, so that writers refused together do not come back together;
    sleep and clock: time.sleep and time.monotonic, injectable for tests;
    on_retry: called as on_retry(attempt, delay, exc) before each wait;
    transient: the predicate (is_transient).

    A non-transient error is raised at once; when attempts or budget run
    out, the last transient error is raised.
    """
    attempts = max(1, int(attempts))
    delays = backoff_delays(attempts, initial_s, max_delay_s)
    start = clock()
    attempt = 0
    while True:
        attempt += 1
        try:
            return fn(*args)
        except Exception as exc:
            if attempt >= attempts or not transient(exc):
                raise
            delay = delays[attempt - 1]
            if jitter:
                import random  # noqa: PLC0415 (on a retry only: 0.1 MiB of RSS)
                delay *= 1.0 + jitter * (2.0 * random.random() - 1.0)
            if clock() + delay - start > budget_s:
                raise
            if on_retry is not None:
                on_retry(attempt, delay, exc)
            sleep(delay)
