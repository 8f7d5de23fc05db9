"""pool/retry.py against the exceptions the real XenAPI client raises.

Each failure is produced for real: the XenAPI client talking to the
simulator, to a unix socket nobody listens on, to one whose listen queue
is full, to a server that hangs up or never answers, to an XML-RPC server
that answers every call with SESSION_INVALID. Only the backoff arithmetic
uses an injected clock and sleep.
"""
import contextlib
import errno
import os
import socket
import threading
import xmlrpc.client
from xml.parsers.expat import ExpatError
from xmlrpc.server import SimpleXMLRPCServer

import pytest
import XenAPI

from netoffload.errors import XapiError
from netoffload.pool import retry, xapi
from sim.xapi_sim import socket_dir
from tests.support.simpool import SimPool


def uds_session(path):
    return XenAPI.Session("http://" + path.replace("/", "_") + "/",
                          transport=XenAPI.UDSTransport())


def raised(fn, *args, **kwargs):
    """The exception fn(*args, **kwargs) raises (the test fails if none)."""
    with pytest.raises(Exception) as info:
        fn(*args, **kwargs)
    return info.value


@pytest.fixture
def sockdir():
    path = socket_dir("retry")
    try:
        yield path
    finally:
        for name in os.listdir(path):
            os.unlink(os.path.join(path, name))
        os.rmdir(path)


@contextlib.contextmanager
def default_timeout(seconds):
    old = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(old)


# -- transient: connection-level failures of the real client ----------------------
def test_socket_missing_while_xapi_restarts(sockdir):
    err = raised(uds_session(os.path.join(sockdir, "gone")).login_with_password,
                 "root", "", "1.0", "t")
    assert isinstance(err, FileNotFoundError)
    assert retry.is_transient(err)


def test_connection_refused(sockdir):
    path = os.path.join(sockdir, "refuse")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)  # bound, never listening: connect is refused
    try:
        err = raised(uds_session(path).login_with_password, "root", "", "1.0", "t")
    finally:
        listener.close()
    assert isinstance(err, ConnectionRefusedError)
    assert retry.is_transient(err)


def test_listen_queue_full_is_eagain(sockdir):
    # What the issue saw: a small backlog under a burst, a client socket
    # with a timeout (the watcher sets a default one) gets EAGAIN.
    path = os.path.join(sockdir, "backlog")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(0)
    waiting = []
    try:
        with default_timeout(0.5):
            err = None
            for _ in range(8):  # fill the queue, never accepted
                try:
                    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                    waiting.append(sock)
                    sock.connect(path)
                except OSError:
                    break
            err = raised(uds_session(path).login_with_password,
                         "root", "", "1.0", "t")
    finally:
        for sock in waiting:
            sock.close()
        listener.close()
    assert isinstance(err, OSError) and err.errno == errno.EAGAIN, err
    assert retry.is_transient(err)


def _serve(listener, behaviour):
    # twice: xmlrpc.client tries once more on a fresh connection after a
    # hang-up
    for _ in range(2):
        _serve_one(listener, behaviour)


def _serve_one(listener, behaviour):
    try:
        conn, _ = listener.accept()
    except OSError:  # the test is over
        return
    try:
        request = b""
        while b"</methodCall>" not in request:  # the whole call, then fail
            chunk = conn.recv(65536)
            if not chunk:
                return
            request += chunk
        if behaviour == "hang":
            threading.Event().wait(2.0)
        elif behaviour == "half-reply":
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 500\r\n\r\n<?xml")
    finally:
        conn.close()


@pytest.mark.parametrize("behaviour,kind", [
    # RemoteDisconnected (a ConnectionResetError) or EPIPE, by timing
    ("hang-up", ConnectionError),
    ("hang", socket.timeout),
    # a reply cut short: xmlrpc.client's parser meets the end of the data
    ("half-reply", ExpatError),
])
def test_server_goes_away_mid_call(sockdir, behaviour, kind):
    path = os.path.join(sockdir, behaviour)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(4)
    server = threading.Thread(target=_serve, args=(listener, behaviour))
    server.start()
    try:
        with default_timeout(0.5):
            err = raised(uds_session(path).login_with_password,
                         "root", "", "1.0", "t")
    finally:
        listener.shutdown(socket.SHUT_RDWR)
        listener.close()
        server.join(5)
    assert isinstance(err, kind), repr(err)
    assert retry.is_transient(err)


def test_wrapped_by_xapi_call_still_transient(sockdir):
    # Xapi.call turns OSError into XapiError ... from err: the cause decides.
    path = os.path.join(sockdir, "wrapped")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    session = uds_session(path)
    try:
        err = raised(xapi.Xapi(session).call, "pool.get_all")
    finally:
        listener.close()
    assert isinstance(err, XapiError) and "cannot reach xapi" in err.message
    assert retry.is_transient(err)


# -- SESSION_INVALID -------------------------------------------------------------------
class AlwaysSessionInvalid(SimpleXMLRPCServer):
    """An XML-RPC server answering as xapi does after a restart, forever:
    logins succeed, every call says SESSION_INVALID."""

    def __init__(self):
        SimpleXMLRPCServer.__init__(self, ("127.0.0.1", 0), logRequests=False,
                                    allow_none=True)
        self.register_instance(self)

    def _dispatch(self, method, params):
        if method.startswith("session.login"):
            return {"Status": "Success", "Value": "OpaqueRef:s"}
        return {"Status": "Failure",
                "ErrorDescription": ["SESSION_INVALID", "OpaqueRef:s"]}


def test_session_invalid_forever_is_transient():
    server = AlwaysSessionInvalid()
    thread = threading.Thread(target=server.serve_forever)
    thread.start()
    try:
        session = XenAPI.Session("http://127.0.0.1:%d/" % server.server_address[1])
        session.login_with_password("root", "", "1.0", "t")
        err = raised(session.xenapi.pool.get_all)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
    # the client logged in again three times, then gave up
    assert isinstance(err, xmlrpc.client.Fault) and err.faultCode == 500
    assert retry.is_transient(err)


def test_session_invalid_failure_and_its_wrapping():
    failure = XenAPI.Failure(["SESSION_INVALID", "OpaqueRef:x"])
    assert retry.is_transient(failure)
    try:
        raise XapiError("VIF.add_to_other_config failed: SESSION_INVALID",
                        *failure.details) from failure
    except XapiError as err:
        assert retry.is_transient(err)


def test_xapi_restart_survived_by_a_retry():
    # The simulator goes down (socket gone, sessions gone) and comes back
    # while call_with_retry waits: the XenAPI client logs in again itself.
    with SimPool() as box:
        sim = box.sim
        assert sim is not None  # in-process
        client = xapi.Xapi(box.session)
        tries = []

        def sleep(delay):
            tries.append(delay)
            if len(tries) == 2:
                sim.start()
        sim.stop()
        pools = retry.call_with_retry(client.call, "pool.get_all", sleep=sleep,
                                      jitter=0)
        assert len(pools) == 1 and len(tries) == 2


# -- not transient -----------------------------------------------------------------
def test_handle_invalid_is_never_transient():
    with SimPool() as box:
        host = box.add_host("h1")
        vm = box.admin.add_vm(name_label="v")
        net = box.admin.add_network(name_label="n")
        vif = box.create_vif(vm, net, 0)
        box.api.VIF.destroy(vif)
        client = xapi.Xapi(box.session)
        calls = []

        def get(ref):
            calls.append(ref)
            return client.call("VIF.add_to_other_config", ref, "k", "v")
        err = raised(retry.call_with_retry, get, vif, sleep=lambda _d: None)
        assert host
    assert isinstance(err, xapi.ObjectGone) and err.params[0] == "HANDLE_INVALID"
    assert not retry.is_transient(err)
    assert not retry.is_transient(err.__cause__)
    assert calls == [vif]  # raised at once


def test_gone_wins_over_a_transient_cause():
    try:
        try:
            raise ConnectionResetError(errno.ECONNRESET, "reset")
        except ConnectionResetError as inner:
            raise xapi.ObjectGone("gone", "HANDLE_INVALID", "VIF", "x") from inner
    except xapi.ObjectGone as err:
        assert not retry.is_transient(err)


def test_other_failures_are_not_transient():
    with SimPool() as box:
        box.add_host("h1")
        pool = box.pool_ref
        client = xapi.Xapi(box.session)
        client.call("pool.add_to_other_config", pool, "k", "v")
        err = raised(client.call, "pool.add_to_other_config", pool, "k", "v")
    assert isinstance(err, XapiError) and err.params[0] == "MAP_DUPLICATE_KEY"
    assert not retry.is_transient(err)
    assert not retry.is_transient(XenAPI.Failure(["VM_BAD_POWER_STATE", "x"]))
    assert not retry.is_transient(ValueError("bug"))
    assert not retry.is_transient(PermissionError(errno.EACCES, "denied"))
    assert not retry.is_transient(xmlrpc.client.Fault(1, "Unknown method"))
    assert not retry.is_transient(
        xmlrpc.client.ProtocolError("x", 404, "not found", {}))
    assert retry.is_transient(
        xmlrpc.client.ProtocolError("x", 503, "unavailable", {}))


# -- call_with_retry -------------------------------------------------------------------
class Clock(object):
    """A clock that moves only when slept on."""

    def __init__(self):
        self.now = 100.0
        self.slept = []

    def __call__(self):
        return self.now

    def sleep(self, seconds):
        self.slept.append(round(seconds, 6))
        self.now += seconds


def flaky(failures, exc_factory):
    calls = []

    def fn(value):
        calls.append(value)
        if len(calls) <= failures:
            raise exc_factory()
        return value * 2
    return fn, calls


def refused():
    return ConnectionRefusedError(errno.ECONNREFUSED, "refused")


def test_retries_until_it_lands_with_doubling_backoff():
    clock = Clock()
    fn, calls = flaky(3, refused)
    retried = []
    assert retry.call_with_retry(
        fn, 21, attempts=5, budget_s=60, sleep=clock.sleep, clock=clock,
        jitter=0, on_retry=lambda n, d, e: retried.append((n, d))) == 42
    assert calls == [21] * 4
    assert clock.slept == [0.1, 0.2, 0.4]
    assert retried == [(1, 0.1), (2, 0.2), (3, 0.4)]


def test_backoff_is_capped():
    assert retry.backoff_delays(7, initial_s=1, max_delay_s=5) == \
        [1, 2, 4, 5, 5, 5]


def test_attempts_run_out_raises_the_last_transient_error():
    clock = Clock()
    fn, calls = flaky(10, refused)
    err = raised(retry.call_with_retry, fn, 1, attempts=3, budget_s=60,
                 sleep=clock.sleep, clock=clock, jitter=0)
    assert isinstance(err, ConnectionRefusedError)
    assert len(calls) == 3 and clock.slept == [0.1, 0.2]


def test_budget_bounds_the_time():
    clock = Clock()
    fn, calls = flaky(100, refused)
    raised(retry.call_with_retry, fn, 1, attempts=100, budget_s=2.0,
           sleep=clock.sleep, clock=clock, jitter=0, max_delay_s=10)
    # 0.1 + 0.2 + 0.4 + 0.8 = 1.5; the next wait (1.6) would pass 2.0
    assert clock.slept == [0.1, 0.2, 0.4, 0.8] and len(calls) == 5


def test_non_transient_raised_at_once():
    clock = Clock()
    fn, calls = flaky(1, lambda: XenAPI.Failure(["MAP_DUPLICATE_KEY", "VIF"]))
    raised(retry.call_with_retry, fn, 1, sleep=clock.sleep, clock=clock)
    assert calls == [1] and clock.slept == []


def test_jitter_stays_within_its_fraction():
    clock = Clock()
    fn, _calls = flaky(5, refused)
    retry.call_with_retry(fn, 1, attempts=6, budget_s=60, sleep=clock.sleep,
                          clock=clock, jitter=0.2)
    for got, base in zip(clock.slept, retry.backoff_delays(6)):
        assert base * 0.8 - 1e-9 <= got <= base * 1.2 + 1e-9
