"""The fan-out's bound, sessions and reporting (netoffload/pool/fanout.py).

The first tests stand an instrumented XenAPI session in for xapi: it counts,
on its own side, how many host.call_plugin calls are in flight, and makes
hosts answer, fail or hang on demand. The last one runs the real client
against the simulator, whose host.call_plugin runs the real plugin in each
host's namespace, and counts there.
"""
import json
import threading
import time

import pytest

from netoffload.errors import XapiError
from netoffload.pool import fanout


class Failure(Exception):
    """Like XenAPI.Failure: an API error with `details`."""

    def __init__(self, details):
        Exception.__init__(self, details)
        self.details = details


class Xapi(object):
    """The xapi side: what each host does, and what it saw."""

    def __init__(self, delay=0.03):
        self.delay = delay
        self.behaviour = {}       # host -> "hang" | Exception to raise
        self.release = threading.Event()
        self.lock = threading.Lock()
        self.in_flight = 0
        self.max_in_flight = 0
        self.calls = []
        self.logins = 0
        self.logouts = 0
        self.sessions = set()

    def open_session(self):
        with self.lock:
            self.logins += 1
        return Session(self)

    def call_plugin(self, session, host, plugin, fn, args):
        with self.lock:
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            self.calls.append((host, plugin, fn, dict(args)))
            self.sessions.add(id(session))
        try:
            what = self.behaviour.get(host)
            if what == "hang":
                self.release.wait(30)
            elif isinstance(what, Exception):
                raise what
            time.sleep(self.delay)
            return json.dumps({"host": host, "fn": fn})
        finally:
            with self.lock:
                self.in_flight -= 1


class Session(object):
    def __init__(self, server):
        self.server = server
        session = self

        class Host(object):
            @staticmethod
            def call_plugin(host, plugin, fn, args):
                return server.call_plugin(session, host, plugin, fn, args)

        class SessionClass(object):
            @staticmethod
            def logout():
                with server.lock:
                    server.logouts += 1

        class XenAPI(object):
            host = Host
            session = SessionClass

        self.xenapi = XenAPI


@pytest.fixture
def server(monkeypatch):
    xapi = Xapi()
    monkeypatch.setattr(fanout.xapi, "open_session", xapi.open_session)
    yield xapi
    xapi.release.set()  # let hung calls end


def hosts(n):
    return ["OpaqueRef:host-%02d" % i for i in range(n)]


@pytest.mark.parametrize("workers,n", [(1, 5), (4, 20), (16, 63), (16, 3)])
def test_no_more_than_the_bound_at_once(server, monkeypatch, workers, n):
    monkeypatch.setattr(fanout, "FANOUT_WORKERS", workers)
    done = fanout.call_hosts(hosts(n), "status", {"scope": "local"})
    assert server.max_in_flight == min(workers, n)  # bounded, and used
    assert done.peak == server.max_in_flight
    assert sorted(done.outcomes) == hosts(n)
    for host, outcome in done.outcomes.items():
        assert outcome == {"ok": True,
                           "result": {"host": host, "fn": "status"}}
    assert sorted(c[0] for c in server.calls) == hosts(n)  # each once
    assert set((c[1], c[2]) for c in server.calls) == set(
        [("netoffload", "status")])
    assert all(c[3] == {"scope": "local"} for c in server.calls)


def test_one_session_per_worker_not_per_host(server, monkeypatch):
    monkeypatch.setattr(fanout, "FANOUT_WORKERS", 4)
    fanout.call_hosts(hosts(40), "version", {})
    assert server.logins <= 4
    assert len(server.sessions) == server.logins
    assert server.logouts == server.logins  # every session closed


def test_the_default_bound_on_a_64_host_pool(server):
    assert fanout.FANOUT_WORKERS == 16
    done = fanout.call_hosts(hosts(63), "version", {})
    assert server.max_in_flight == 16
    assert all(o["ok"] for o in done.outcomes.values())


def test_failing_hosts_are_reported_and_the_rest_answer(server, monkeypatch):
    monkeypatch.setattr(fanout, "FANOUT_WORKERS", 2)
    refs = hosts(8)
    server.behaviour[refs[1]] = Failure(["XENAPI_MISSING_PLUGIN",
                                         "netoffload"])
    server.behaviour[refs[2]] = ConnectionResetError("peer went away")
    server.behaviour[refs[3]] = Failure(["SESSION_INVALID", "x"])
    done = fanout.call_hosts(refs, "apply", {"target": "ALL"})
    assert done.outcomes[refs[1]] == {"ok": False, "error": [
        "XENAPI_MISSING_PLUGIN", "netoffload"]}
    assert done.outcomes[refs[2]] == {"ok": False, "error": [
        "ConnectionResetError", "peer went away"]}
    assert done.outcomes[refs[3]]["error"][0] == "SESSION_INVALID"
    for ref in refs[:1] + refs[4:]:
        assert done.outcomes[ref]["ok"] is True, ref
    # a session that may be broken is dropped and a fresh one opened
    assert server.logins >= 3
    assert server.logouts == server.logins


def test_a_session_that_cannot_be_opened_fails_each_host_alone(
        server, monkeypatch):
    monkeypatch.setattr(fanout, "FANOUT_WORKERS", 3)
    opened = []

    def flaky():
        opened.append(1)
        if len(opened) <= 2:
            raise XapiError("cannot reach xapi: refused")
        return server.open_session()

    monkeypatch.setattr(fanout.xapi, "open_session", flaky)
    done = fanout.call_hosts(hosts(9), "version", {})
    failed = [o for o in done.outcomes.values() if not o["ok"]]
    assert len(failed) == 2
    assert failed[0]["error"] == ["NETOFFLOAD_XAPI_ERROR",
                                  "cannot reach xapi: refused"]
    assert sum(1 for o in done.outcomes.values() if o["ok"]) == 7


def test_hung_hosts_do_not_starve_the_others(server, monkeypatch):
    # Two workers, both taken by hosts that never answer: past FANOUT_SLOW
    # they stop counting and new workers call the others in time.
    monkeypatch.setattr(fanout, "FANOUT_WORKERS", 2)
    monkeypatch.setattr(fanout, "FANOUT_SLOW", 0.3)
    monkeypatch.setattr(fanout, "FANOUT_TIMEOUT", 4.0)
    refs = hosts(12)
    server.behaviour[refs[0]] = server.behaviour[refs[1]] = "hang"
    started = time.time()
    done = fanout.call_hosts(refs, "status", {})
    took = time.time() - started
    assert [done.outcomes[r]["error"][0] for r in refs[:2]] == [
        "TIMEOUT", "TIMEOUT"]
    assert all(done.outcomes[r]["ok"] for r in refs[2:])
    # two hung calls plus at most two that count
    assert server.max_in_flight <= 4
    assert 3.9 <= took < 6.0  # waited for the hung ones until the deadline


def test_queued_hosts_past_the_deadline_are_timeouts(server, monkeypatch):
    monkeypatch.setattr(fanout, "FANOUT_WORKERS", 1)
    monkeypatch.setattr(fanout, "FANOUT_TIMEOUT", 0.5)
    refs = hosts(4)
    server.behaviour[refs[0]] = "hang"
    started = time.time()
    done = fanout.call_hosts(refs, "status", {})
    assert time.time() - started < 2.0
    for ref in refs:
        assert done.outcomes[ref] == {"ok": False, "error": [
            "TIMEOUT", "no answer in 0s"]}
    server.release.set()
    time.sleep(0.3)
    # the late answer and the queue left behind change nothing
    assert all(o["error"][0] == "TIMEOUT" for o in done.outcomes.values())
    assert [c[0] for c in server.calls] == refs[:1]


def test_no_hosts_no_threads(server):
    before = threading.active_count()
    done = fanout.call_hosts([], "status", {})
    assert (done.outcomes, done.peak) == ({}, 0)
    assert threading.active_count() == before
    assert server.logins == 0


# -- the real client, the simulator and the plugin --------------------------------

@pytest.mark.root
def test_bounded_through_the_simulator(monkeypatch):
    """Nine members (sharing h2's namespace) with three workers: the
    simulator never runs more than three plugin processes at once, each
    member's real plugin answers, and the fan-out logs in three times."""
    from netoffload.pool import context
    from tests.support.simpool import dom0_pool

    pool = dom0_pool()
    try:
        for index in range(3, 11):
            pool.add_host("h%d" % index, netns=pool.ns["h2"].name)
        from sim import xapi_plugins
        original = xapi_plugins.run_plugin
        seen = {"now": 0, "max": 0}
        lock = threading.Lock()

        def counting(*args):
            with lock:
                seen["now"] += 1
                seen["max"] = max(seen["max"], seen["now"])
            try:
                return original(*args)
            finally:
                with lock:
                    seen["now"] -= 1

        # each member's plugin process, as the simulator runs it
        monkeypatch.setattr(xapi_plugins, "run_plugin", counting)
        for key, value in pool.sim.plugin_env(pool.hosts["h1"]).items():
            if key.startswith("NETOFFLOAD_"):
                monkeypatch.setenv(key, value)
        ctx = context.CallContext(pool.session)
        monkeypatch.setattr(fanout, "FANOUT_WORKERS", 3)
        logins = pool.logins()
        entries = fanout.fan_out(ctx, "status", {"pool": "true"},
                                 {"here": True})
        by_name = dict((e["name_label"], e) for e in entries)
        assert sorted(by_name) == sorted(["h%d" % i for i in range(1, 11)])
        assert by_name["h1"]["result"] == {"here": True}
        for name in ["h%d" % i for i in range(2, 11)]:
            assert by_name[name]["ok"] is True, by_name[name]
            assert by_name[name]["result"]["host"]["name_label"] == name
        assert by_name["h2"]["result"]["summary"]["devices"] >= 1
        assert seen["max"] == 3
        assert pool.logins() - logins == 3
    finally:
        pool.close()
