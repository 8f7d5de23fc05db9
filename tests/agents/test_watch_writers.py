"""The watcher's writer pool (watch.KeyWriters): writes run in its
threads, an object's write result or exception comes back through
finished(), and stop() cancels what has not started and waits for what
runs. The writes themselves are stubbed here (writer.apply_db is tested
in tests/pool and end to end in test_watch*.py)."""
import collections
import subprocess
import sys
import threading

import pytest

from netoffload.agents import watch
from tests.support.wait import wait_for

Plan = collections.namedtuple("Plan", "ref")


class Session(object):
    _session = "OpaqueRef:test-session"


class StubWriters(watch.KeyWriters):
    """KeyWriters whose write of a plan is `behaviour(plan)`."""

    def __init__(self, behaviour, size):
        watch.KeyWriters.__init__(self, Session, size)
        self.behaviour = behaviour
        self.started = []

    def _write_one(self, plan):
        self.started.append(plan.ref)
        return self.behaviour(plan)


def collect(writers, count):
    done = []
    wait_for(lambda: done.extend(writers.finished()) or len(done) >= count,
             timeout=10)
    return done


def test_results_and_exceptions_come_back_once_each():
    def behaviour(plan):
        if plan.ref == "bad":
            raise ValueError("boom")
        return "wrote " + plan.ref

    writers = StubWriters(behaviour, size=3)
    try:
        plans = [Plan("a"), Plan("bad"), Plan("c")]
        writers.submit(plans)
        assert writers.in_flight() == {"a", "bad", "c"}
        done = dict((ref, (plan, outcome))
                    for ref, plan, outcome in collect(writers, 3))
        assert sorted(done) == ["a", "bad", "c"]
        assert done["a"][0] is plans[0]
        assert done["a"][1].result() == "wrote a"
        assert done["c"][1].result() == "wrote c"
        with pytest.raises(ValueError, match="boom"):
            done["bad"][1].result()
        assert writers.in_flight() == set()
        assert writers.finished() == []
        assert len(writers._threads) <= 3
    finally:
        writers.stop()
        writers.close()


def test_stop_cancels_the_writes_not_started_and_waits_for_the_running():
    release = threading.Event()
    running = threading.Event()

    def behaviour(plan):
        running.set()
        assert release.wait(10)
        return "wrote " + plan.ref

    writers = StubWriters(behaviour, size=1)
    writers.submit([Plan("first"), Plan("second"), Plan("third")])
    assert running.wait(10)
    stopper = threading.Thread(target=writers.stop)
    stopper.start()
    stopper.join(0.3)
    assert stopper.is_alive()  # waits for the running write
    release.set()
    stopper.join(10)
    assert not stopper.is_alive()
    done = dict((ref, outcome) for ref, _plan, outcome in writers.finished())
    assert writers.started == ["first"]
    assert done["first"].result() == "wrote first"
    assert done["second"] is None and done["third"] is None
    assert all(not t.is_alive() for t in threading.enumerate()
               if t.name == "netoffload-writer")
    writers.close()


def test_the_watcher_loads_no_concurrent_futures_logging_or_typing():
    # each about 0.1-0.5 MiB of the watcher's RSS (issue 15: <= 35 MiB)
    code = ("import sys, netoffload.agents.watch; print(' '.join(sorted("
            "m for m in ('concurrent.futures', 'logging', 'typing', "
            "'random') if m in sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], check=True,
                         stdout=subprocess.PIPE, timeout=60,
                         universal_newlines=True).stdout
    assert out.strip() == ""


# -- an object's keys at once, against the simulator ------------------------------
# (the real writes: writer.begin / KeyRun on the watcher's lean sessions)

SIX = ("rx", "tx", "sg", "tso", "ufo", "gso")
ALL_ON = ",".join(f + "=on" for f in SIX)
OP = "0123abcd"
WRITES = ("VIF.add_to_other_config", "VIF.remove_from_other_config",
          "VIF.get_other_config")


class Traced(object):
    """The in-process simulator with every VIF other_config call logged
    as ("start"|"end", method, key) in the order they happened (start: the
    request arrived); `before` (method, key) -> what to do before the
    call is served."""

    def __init__(self, monkeypatch, pool):
        self.pool = pool
        self.log = []
        self.before = {}
        self._lock = threading.Lock()
        handle = type(pool.sim).handle.__get__(pool.sim)

        def traced(method, params, via_host=None):
            if method not in WRITES:
                return handle(method, params, via_host)
            key = params[2] if len(params) > 2 else None
            with self._lock:
                self.log.append(("start", method, key))
            hook = self.before.get((method, key))
            try:
                reply = hook(handle) if hook is not None else None
                if reply is not None:
                    return reply  # served by the hook
                return handle(method, params, via_host)
            finally:
                with self._lock:
                    self.log.append(("end", method, key))
        monkeypatch.setattr(pool.sim, "handle", traced)

    def index(self, event, method, key):
        return [i for i, e in enumerate(self.log)
                if e == (event, method, key)]


@pytest.fixture
def simpool(monkeypatch):
    from tests.support.simpool import SimPool
    with SimPool() as pool:
        monkeypatch.setenv("NETOFFLOAD_XAPI_SOCKET", pool.sim.socket_path)
        monkeypatch.delenv("NETOFFLOAD_XAPI_URL", raising=False)
        sim = pool.sim
        sim.add_host("h1")
        lan = sim.add_network("LAN")
        pool.vif = sim.add_vif(sim.add_vm("vm"), lan, 0,
                               other_config={"note": "mine"})
        yield pool


def _plan(pool, policy):
    from netoffload.pool import planning, xapi
    pool.set_pool_policy("netoffload-vif", policy)
    client = xapi.Xapi(pool.session)
    [plan] = planning.plan_db(client.snapshot(), [pool.vif], op=OP)
    return plan


def _owned_off(pool):
    """The VIF's six keys written off (and owned) first."""
    from netoffload.pool import writer, xapi
    [result] = writer.apply_db(xapi.Xapi(pool.session),
                               [_plan(pool, "all-off")])
    assert result.status == writer.STATUS_CHANGED


def _cut_once(pool, monkeypatch, method, key, carried_out):
    """The first `method` call on `key` has its connection cut, after the
    simulator carried it out or before; the list gets its reply (None:
    not carried out)."""
    handle = type(pool.sim).handle.__get__(pool.sim)
    cuts = []

    def cut(called, params, via_host=None):
        if called == method and len(params) > 2 and params[2] == key \
                and not cuts:
            cuts.append(handle(called, params, via_host) if carried_out
                        else None)
            raise ConnectionAbortedError("the connection is cut")
        return handle(called, params, via_host)
    monkeypatch.setattr(pool.sim, "handle", cut)
    return cuts


def _write(plan):
    writers = watch.KeyWriters(watch.open_lean_session, watch.WRITERS)
    try:
        writers.submit([plan])
        [(ref, _plan_back, outcome)] = collect(writers, 1)
        assert ref == plan.ref
        return outcome.result()
    finally:
        writers.stop()
        writers.close()


@pytest.mark.parametrize("owned", [False, True], ids=["claim", "change"])
def test_an_objects_keys_are_in_flight_at_once_and_the_book_waits(
        simpool, monkeypatch, owned):
    """Every key add of the run is held until all six are in flight (a
    barrier: with keys written one after another it breaks and the write
    fails); the final book starts after every key write returned."""
    from netoffload.pool import keys, writer
    if owned:
        _owned_off(simpool)
    plan = _plan(simpool, ALL_ON if owned else "all-off")
    trace = Traced(monkeypatch, simpool)
    barrier = threading.Barrier(len(SIX), timeout=10)

    def all_in_flight(_handle):
        barrier.wait()
    for feature in SIX:
        trace.before[("VIF.add_to_other_config",
                      keys.ethtool_key(feature))] = all_in_flight
    result = _write(plan)
    assert result.status == writer.STATUS_CHANGED, result.error
    assert not barrier.broken
    assert result.written == [(k, v) for k, v, _ in plan.writes]
    config = simpool.api.VIF.get_other_config(simpool.vif)
    assert config == plan.final
    ends = [i for f in SIX for i in trace.index(
        "end", "VIF.add_to_other_config", keys.ethtool_key(f))]
    starts = [i for f in SIX for i in trace.index(
        "start", "VIF.add_to_other_config", keys.ethtool_key(f))]
    assert len(ends) == len(starts) == len(SIX)
    # all six started before any of them ended: at once
    assert max(starts) < min(ends)
    book_adds = [i for k in keys.BOOK_KEYS for i in trace.index(
        "start", "VIF.add_to_other_config", k)]
    intent, final = min(book_adds), max(book_adds)
    assert intent < min(starts)
    if owned:  # a final book after the intent: only once all keys are in
        assert len(book_adds) == 2 and final > max(ends)
        last_removal = max(i for k in keys.BOOK_KEYS for i in trace.index(
            "start", "VIF.remove_from_other_config", k))
        assert last_removal > max(ends)
    else:  # a fresh claim: the intent is the final book, nothing after
        assert book_adds == [intent]


@pytest.mark.parametrize("owned", [False, True], ids=["claim", "change"])
def test_an_admin_writing_a_key_while_the_run_is_in_flight_wins(
        simpool, monkeypatch, owned):
    """The admin sets ethtool-tx right before our add of it (after our
    remove, for a change): MAP_DUPLICATE_KEY. Once every key write of the
    run is done, the map is read again and the rest re-planned: their
    value stays, recorded as theirs (t); the other five are ours; the
    other keys of the map are untouched."""
    from netoffload.pool import keys, writer
    if owned:
        _owned_off(simpool)
    target = "on" if owned else "off"
    theirs = "false" if owned else "on"
    plan = _plan(simpool, ALL_ON if owned else "all-off")
    trace = Traced(monkeypatch, simpool)
    admin = simpool.session._session

    def admin_edit(handle):
        trace.before.clear()  # once
        reply = handle("VIF.add_to_other_config",
                       [admin, simpool.vif, "ethtool-tx", theirs])
        assert reply["Status"] == "Success", reply
    trace.before[("VIF.add_to_other_config", "ethtool-tx")] = admin_edit
    result = _write(plan)
    assert result.status == writer.STATUS_CHANGED, result.error
    config = simpool.api.VIF.get_other_config(simpool.vif)
    book = keys.read_book(config)
    assert config["ethtool-tx"] == theirs
    assert book.taken == {"tx"}
    assert config["note"] == "mine"
    assert dict((f, config[keys.ethtool_key(f)]) for f in SIX
                if f != "tx") == dict((f, target) for f in SIX if f != "tx")
    assert sorted(book.entries) == sorted(f for f in SIX if f != "tx")
    assert all(e.value == target and e.was is None
               for e in book.entries.values())
    assert book.op == OP and not book.stale
    assert result.done_plan is not None and result.done_plan.final == config
    # what was written, in plan order: never tx
    assert "ethtool-tx" not in dict(result.written)
    ours = [k for k, _ in result.written if k.startswith("ethtool-")]
    assert ours == [k for k, _, _ in plan.writes
                    if k.startswith("ethtool-") and k != "ethtool-tx"]
    # the re-read that decided the rest came after every key write
    reads = trace.index("start", "VIF.get_other_config", None)
    key_ends = [i for i, e in enumerate(trace.log)
                if e[0] == "end" and (e[2] or "").startswith("ethtool-")]
    assert reads and max(reads) > max(key_ends)


def test_a_key_xapi_refuses_fails_the_object_and_the_book_is_not_finished(
        simpool, monkeypatch):
    from netoffload.pool import keys, writer
    _owned_off(simpool)
    plan = _plan(simpool, ALL_ON)
    trace = Traced(monkeypatch, simpool)
    trace.before[("VIF.add_to_other_config", "ethtool-sg")] = \
        lambda _handle: {"Status": "Failure",
                         "ErrorDescription": ["INTERNAL_ERROR", "refused"]}
    result = _write(plan)
    assert result.status == writer.STATUS_FAILED
    assert result.error and "INTERNAL_ERROR" in " ".join(result.error)
    assert result.done_plan is None
    config = simpool.api.VIF.get_other_config(simpool.vif)
    # the five others are written, the final book is not (the watcher
    # settles its op: writer.operation)
    assert [config.get(keys.ethtool_key(f)) for f in SIX] == [
        None if f == "sg" else "on" for f in SIX]
    assert keys.read_book(config).entries["sg"].was == "off"
    assert not trace.index("start", "VIF.add_to_other_config",
                           keys.KEY_BOOK)


def test_a_vif_destroyed_while_its_keys_are_written_is_gone(
        simpool, monkeypatch):
    from netoffload.pool import keys, writer
    plan = _plan(simpool, "all-off")
    trace = Traced(monkeypatch, simpool)

    def destroy(_handle):
        trace.before.clear()
        simpool.sim.destroy_vif(simpool.vif)
    trace.before[("VIF.add_to_other_config", keys.ethtool_key("gso"))] = \
        destroy
    result = _write(plan)
    assert result.status == writer.STATUS_GONE


@pytest.mark.parametrize("carried_out", [True, False],
                         ids=["reply-lost", "request-lost"])
@pytest.mark.parametrize("owned", [False, True], ids=["claim", "change"])
def test_a_key_whose_call_is_cut_in_the_run_is_written_again_the_checked_way(
        simpool, monkeypatch, owned, carried_out):
    """The run's calls are sent at once, each on a connection of its own:
    a call whose connection is cut (after xapi carried it out, or before)
    is written again through the checked path (a repeated add finds our
    value: MAP_DUPLICATE_KEY, read back, done), and the object ends as
    planned."""
    from netoffload.pool import keys, writer
    if owned:
        _owned_off(simpool)
    plan = _plan(simpool, ALL_ON if owned else "all-off")
    cuts = _cut_once(simpool, monkeypatch, "VIF.add_to_other_config",
                     keys.ethtool_key("tso"), carried_out)
    result = _write(plan)
    assert cuts and (cuts[0] is None) != carried_out
    assert result.status == writer.STATUS_CHANGED, result.error
    assert result.written == [(k, v) for k, v, _ in plan.writes]
    assert simpool.api.VIF.get_other_config(simpool.vif) == plan.final


def test_an_admin_edit_after_a_remove_whose_reply_is_lost_is_kept(
        simpool, monkeypatch):
    """A change: our remove of ethtool-tso is carried out, its reply lost
    (the connection cut); right then the admin writes the key. Whether
    our remove ran is not known, so the checked write must not remove
    the key blind (that would delete the admin's value): the map is
    read, their value found, and it stays theirs (t), as when the admin
    writes between our remove and our add."""
    from netoffload.pool import keys, writer
    _owned_off(simpool)
    plan = _plan(simpool, ALL_ON)
    handle = type(simpool.sim).handle.__get__(simpool.sim)
    admin = simpool.session._session
    tso = keys.ethtool_key("tso")
    cuts = []

    def cut(method, params, via_host=None):
        if method == "VIF.remove_from_other_config" and len(params) > 2 \
                and params[2] == tso and not cuts:
            cuts.append(handle(method, params, via_host))
            reply = handle("VIF.add_to_other_config",
                           [admin, simpool.vif, tso, "off-by-admin"])
            assert reply["Status"] == "Success", reply
            raise ConnectionAbortedError("the connection is cut")
        return handle(method, params, via_host)
    monkeypatch.setattr(simpool.sim, "handle", cut)
    result = _write(plan)
    assert cuts
    assert result.status == writer.STATUS_CHANGED, result.error
    config = simpool.api.VIF.get_other_config(simpool.vif)
    assert config[tso] == "off-by-admin"
    book = keys.read_book(config)
    assert book.taken == {"tso"}
    assert tso not in dict(result.written)
    assert dict((f, config[keys.ethtool_key(f)]) for f in SIX
                if f != "tso") == dict((f, "on") for f in SIX if f != "tso")


@pytest.mark.parametrize("carried_out", [True, False],
                         ids=["reply-lost", "request-lost"])
def test_a_remove_whose_reply_is_lost_ends_the_change_as_planned(
        simpool, monkeypatch, carried_out):
    """The remove of a replace cut (after xapi carried it out, or
    before), nobody else writing: the map read back tells which, and the
    key gets our value."""
    from netoffload.pool import keys, writer
    _owned_off(simpool)
    plan = _plan(simpool, ALL_ON)
    cuts = _cut_once(simpool, monkeypatch, "VIF.remove_from_other_config",
                     keys.ethtool_key("gso"), carried_out)
    result = _write(plan)
    assert cuts and (cuts[0] is None) != carried_out
    assert result.status == writer.STATUS_CHANGED, result.error
    assert result.written == [(k, v) for k, v, _ in plan.writes]
    assert simpool.api.VIF.get_other_config(simpool.vif) == plan.final


def test_a_run_whose_session_died_fails_without_retrying_every_key(
        simpool, monkeypatch):
    """The session dies (a master restart) once the intent is written:
    every key call of the run fails. The checked fallback retries one key
    until its retries run out; the other keys would wait as long each
    (serially on this thread: 9 s here, while the watcher's reconnect
    waits for this object), so they fail with it: the object fails as it
    would anyway, its book not finished (settled later)."""
    from netoffload.pool import keys, writer
    _owned_off(simpool)
    plan = _plan(simpool, ALL_ON)
    handle = type(simpool.sim).handle.__get__(simpool.sim)
    run_keys = [keys.ethtool_key(f) for f in SIX]
    calls = []

    def dead(method, params, via_host=None):
        if method.endswith("_other_config") and len(params) > 2 and \
                params[2] in run_keys:
            calls.append(method)
            return {"Status": "Failure",
                    "ErrorDescription": ["SESSION_INVALID", params[0]]}
        return handle(method, params, via_host)
    monkeypatch.setattr(simpool.sim, "handle", dead)
    result = _write(plan)
    assert result.status == writer.STATUS_FAILED
    assert "SESSION_INVALID" in result.error
    # the six at once, then one key's retries
    assert len(calls) <= len(SIX) + watch.CALL_ATTEMPTS
    config = simpool.api.VIF.get_other_config(simpool.vif)
    assert [config[k] for k in run_keys] == ["off"] * len(SIX)
    assert sorted(keys.read_book(config).entries) == sorted(SIX)


def test_a_key_answered_with_an_http_error_leaves_its_connection_in_step(
        simpool, monkeypatch):
    """One key's call of the run answered HTTP 500 (its body read, the
    connection kept): written again the checked way; the next object on
    the same thread (and so the same connections) reads its own
    replies, and both end as planned."""
    from netoffload.pool import keys, planning, writer, xapi
    from sim.wire import BadRequest
    sim = simpool.sim
    second = sim.add_vif(sim.add_vm("vm2"), sim.add_network("LAN2"), 0)
    first_plan = _plan(simpool, "all-off")
    [second_plan] = planning.plan_db(xapi.Xapi(simpool.session).snapshot(),
                                     [second], op=OP)
    handle = type(sim).handle.__get__(sim)
    cut = []

    def http_error(method, params, via_host=None):
        if method == "VIF.add_to_other_config" and len(params) > 2 and \
                params[2] == keys.ethtool_key("tso") and not cut:
            cut.append(params[1])
            raise BadRequest("refused at the HTTP layer")
        return handle(method, params, via_host)
    monkeypatch.setattr(sim, "handle", http_error)
    writers = watch.KeyWriters(watch.open_lean_session, 1)
    try:
        results = []
        for plan in (first_plan, second_plan):
            writers.submit([plan])
            [(_ref, _p, outcome)] = collect(writers, 1)
            results.append(outcome.result())
    finally:
        writers.stop()
        writers.close()
    assert cut == [simpool.vif]
    for result, plan, ref in zip(results, (first_plan, second_plan),
                                 (simpool.vif, second)):
        assert result.status == writer.STATUS_CHANGED, result.error
        assert simpool.api.VIF.get_other_config(ref) == plan.final
