"""The watcher's network channel (watch.Watcher._network_loop) against the
simulator, the watcher in this process so that its threads can be pinned:
a network's policy reaches a VIF whose keys were being written when the
network channel's call began; nothing is written once the writers are
stopped for a reconnect."""
import threading
import time

import pytest

from netoffload.agents import watch
from netoffload.pool import keys
from tests.support.wait import wait_for

pytestmark = pytest.mark.root

XAPI_SIX = ("rx", "tx", "sg", "tso", "ufo", "gso")


def all_off(config):
    return all(config.get("ethtool-" + f) == "off" for f in XAPI_SIX)


def set_network_policy(pool, net, policy):
    pool.api.network.add_to_other_config(net, keys.KEY_VIF, policy)


class Running(object):
    """A Watcher running in a thread of this process (in the host's netns)."""

    def __init__(self, pool, netns, tmp_path, monkeypatch, **options):
        self.host = pool.admin.add_host(name_label="xs1")
        self.net = pool.admin.add_network(name_label="net0")
        pool.set_pool_policy("netoffload-vif", "all-off")
        self.vm = pool.admin.add_vm(name_label="halted")
        for key, value in pool.admin.host_env(host=self.host).items():
            if key.startswith("NETOFFLOAD_"):
                monkeypatch.setenv(key, value)
        options.setdefault("event_timeout", 2.0)
        self.watcher = watch.Watcher(
            state_dir=str(tmp_path), cache_debounce=0.2, backoff_max=0.01,
            drift_interval=0, **options)
        self.netns = netns
        self.thread = threading.Thread(target=self._run)
        self.thread.daemon = True

    def _run(self):
        with self.netns.entered():
            self.watcher.run()

    def start(self):
        self.thread.start()
        wait_for(lambda: self.watcher._network_token is not None,
                 timeout=20, what="the watcher's first full sync")
        return self

    def keyed_vif(self, pool):
        """A new VIF on the network, once the watcher has written its keys."""
        vif = pool.create_vif(self.vm, self.net, 0)
        wait_for(lambda: all_off(pool.vif_config(vif)), what="keys on a VIF")
        return vif

    def stop(self):
        self.watcher.stop()
        self.watcher._channel.abort()
        self.thread.join(30)


@pytest.fixture
def running(pool, netns, tmp_path, monkeypatch):
    made = []

    def make(**options):
        made.append(Running(pool, netns, tmp_path, monkeypatch, **options))
        return made[-1]
    yield make
    for one in made:
        one.stop()


def test_a_network_policy_reaches_a_vif_written_when_its_call_began(
        pool, running):
    """Pinned: the network channel's call begins while a new VIF's keys are
    being written; the write ends and is collected by the loop; then the
    network's policy changes. That VIF must get it (before: it was taken
    for a VIF whose write was still in flight, put in `recheck`, and as no
    write of it was left to collect, never planned again)."""
    run = running()
    watcher = run.watcher
    run.start()
    early = pool.create_vif(run.vm, run.net, 0)
    wait_for(lambda: all_off(pool.vif_config(early)), what="keys on a VIF")

    write_gate, net_gate = threading.Event(), threading.Event()
    pinned = threading.Event()
    late = []
    writes = watcher._writers

    def write_one(plan, _orig=writes._write_one):
        if late and plan.ref == late[0]:
            assert write_gate.wait(20)
        return _orig(plan)
    writes._write_one = write_one

    armed = threading.Event()

    def network_call(*args, _orig=watcher._network_channel.call):
        # pinned: the first call after one that ended with the VIF's write
        # in flight (so the loop took it for in flight before this call)
        if armed.is_set() and not pinned.is_set():
            pinned.set()
            assert net_gate.wait(20)
        result = _orig(*args)
        if late and late[0] in writes.in_flight():
            armed.set()
        return result
    watcher._network_channel.call = network_call

    late.append(pool.create_vif(run.vm, run.net, 1))
    # the VIF's create changed the network (its VIFs): the network channel
    # has a batch, then calls again while the VIF's write is held
    assert pinned.wait(20)
    write_gate.set()
    wait_for(lambda: all_off(pool.vif_config(late[0])) and
             late[0] not in writes.in_flight(),
             what="the held write done and collected")
    set_network_policy(pool, run.net, "tx-off")
    net_gate.set()
    wait_for(lambda: keys.managed_features(pool.vif_config(early)) == {"tx"},
             timeout=20, what="the network's policy on the other VIF")
    wait_for(lambda: keys.managed_features(pool.vif_config(late[0])) ==
             {"tx"}, timeout=10,
             what="the network's policy on the VIF written as the call began")


def test_no_write_is_submitted_once_the_writers_are_stopped_for_a_reconnect(
        pool, running):
    """Pinned: the loop fails and reconnects; while its writers stop, the
    network channel's call returns a network's new policy. No write may be
    submitted from then until the writers are closed (before: the network
    thread applied the batch and started writer threads again, on
    sessions about to be logged out, their results then forgotten)."""
    from netoffload.pool import xapi
    run = running()
    watcher = run.watcher
    run.start()
    vif = run.keyed_vif(pool)
    writes = watcher._writers
    fail, armed = threading.Event(), threading.Event()
    returned, window, late_submits = [], [], []

    def events(token, timeout, _orig=watcher._events):
        if fail.is_set():
            fail.clear()
            raise xapi.XapiError("test: the event channel failed")
        return _orig(token, timeout)
    watcher._events = events

    def network_call(*args, _orig=watcher._network_channel.call):
        result = _orig(*args)
        returned.append(result)
        return result
    watcher._network_channel.call = network_call

    def stop(_orig=writes.stop):
        _orig()
        if not armed.is_set():
            return
        armed.clear()
        window.append("open")
        seen = len(returned)
        set_network_policy(pool, run.net, "tx-off")
        # its call returns the change at once, unless the network thread
        # no longer calls (no token: it waits for the resync)
        wait_for(lambda: len(returned) > seen or
                 watcher._network_token is None, what="the network call back")
        time.sleep(0.5)  # the network thread's batch, if it is applied
    writes.stop = stop

    def close(_orig=writes.close):
        if window == ["open"]:
            window.append("closed")
        _orig()
    writes.close = close

    def submit(plans, _orig=writes.submit):
        if window == ["open"]:
            late_submits.append([p.ref for p in plans])
        return _orig(plans)
    writes.submit = submit

    armed.set()
    fail.set()
    wait_for(lambda: window == ["open", "closed"], timeout=20,
             what="the reconnect's disconnect")
    assert late_submits == []
    # nothing lost either: the resync plans the network's policy
    wait_for(lambda: keys.managed_features(pool.vif_config(vif)) == {"tx"},
             timeout=20, what="the network's policy after the resync")


@pytest.mark.parametrize("event_first", [False, True],
                         ids=["collected-first", "event-first"])
def test_a_network_policy_reaches_a_vif_whose_policy_change_was_in_flight(
        pool, running, event_first):
    """Pinned: a managed VIF's keys are being changed value to value (the
    pool's policy changed: intent book, keys, final book, the book keys
    each written twice) when its network's policy changes. Once that write
    is collected the VIF must get the network's policy, whether the event
    of its last write came before the loop collected it or after."""
    run = running()
    watcher = run.watcher
    run.start()
    vif = run.keyed_vif(pool)
    writes = watcher._writers
    held, gate = threading.Event(), threading.Event()

    def write_one(plan, _orig=writes._write_one):
        if plan.ref == vif and not held.is_set():
            held.set()
            assert gate.wait(20)
        return _orig(plan)
    writes._write_one = write_one
    pool.set_pool_policy("netoffload-vif", ",".join(
        f + "=on" for f in XAPI_SIX))
    assert held.wait(20)
    set_network_policy(pool, run.net, "tx-off")
    wait_for(lambda: watcher.records.networks[run.net].get(
        "other_config", {}).get(keys.KEY_VIF) == "tx-off",
        what="the network's policy seen")
    time.sleep(0.2)
    if event_first:
        # the loop collects the write only once the event of its last
        # write (the final book) is in its snapshot
        def finished(_orig=writes.finished):
            config = watcher.records.vifs[vif].get("other_config") or {}
            if any(ref == vif for ref, _done in list(writes._finished)) \
                    and keys.KEY_BOOK_ALT in config:
                return []
            return _orig()
        writes.finished = finished
    gate.set()
    wait_for(lambda: keys.managed_features(pool.vif_config(vif)) == {"tx"},
             timeout=15, what="the network's policy on the VIF")


def test_abort_ends_a_long_wait_on_a_reused_connection():
    """EventChannel.abort from another thread ends the call in progress
    (the network thread's at a reconnect or stop, the loop's when the
    network thread failed), also on a keep-alive connection used before:
    the wire must not take the cut for an idle connection the server
    closed and send the call again, to wait the whole timeout."""
    from tests.support.simpool import SimPool
    with SimPool() as pool:
        endpoint = ("socket", pool.sim.socket_path)
        session = watch.LeanSession(endpoint).login()
        channel = watch.EventChannel(endpoint)
        try:
            token = channel.call(session._session, ["network"], "",
                                 0.0)["token"]
            outcome = []

            def wait():
                started = time.monotonic()
                try:
                    channel.call(session._session, ["network"], token, 20.0)
                    outcome.append("returned")
                except Exception as err:  # what abort makes of the call
                    outcome.append(type(err).__name__)
                outcome.append(time.monotonic() - started)
            waiter = threading.Thread(target=wait)
            waiter.start()
            time.sleep(0.5)  # in the call, on the reused connection
            channel.abort()
            waiter.join(25)
            assert outcome[0] != "returned"
            assert outcome[1] < 3.0
        finally:
            channel.close()
            session.logout()


def test_a_network_batch_that_fails_has_the_loop_resync_at_once(
        pool, running, monkeypatch):
    """The network thread cannot apply a batch: the loop, in a long wait
    on its own channel, is woken to reconnect and resync (before: the
    abort of its call was taken for a blip, the call sent again, and the
    resync waited for the loop's whole event timeout, the network
    channel idle meanwhile)."""
    run = running(event_timeout=30.0)
    watcher = run.watcher
    run.start()
    vif = run.keyed_vif(pool)
    wait_for(lambda: watcher._lease is None, timeout=10,
             what="the lease given back")
    time.sleep(1.0)  # the loop in a long wait now
    failed = []

    def apply_events(events, _orig=watcher._apply_events):
        if threading.current_thread().name == "networks" and not failed:
            failed.append(time.monotonic())
            raise RuntimeError("test: a network batch that cannot apply")
        return _orig(events)
    watcher._apply_events = apply_events
    warned = []

    def warning(msg, *args, _orig=watcher.log.warning):
        warned.append(msg % args)
        _orig(msg, *args)
    monkeypatch.setattr(watcher.log, "warning", warning)  # a shared logger
    assert watcher.stats["syncs"] == 1
    set_network_policy(pool, run.net, "tx-off")
    wait_for(lambda: failed, what="the network batch failing")
    wait_for(lambda: watcher.stats["syncs"] == 2, timeout=5,
             what="the resync")
    # the reason logged is the network thread's, not the cut it made
    assert any("a network batch that cannot apply; reconnecting" in line
               for line in warned), warned
    wait_for(lambda: keys.managed_features(pool.vif_config(vif)) == {"tx"},
             timeout=10, what="the network's policy after the resync")


def test_a_cache_flush_that_fails_in_the_network_thread_has_the_loop_resync(
        pool, running, monkeypatch):
    """Pinned: the network thread is the one that flushes the due cache
    (the loop in a long wait), and the flush fails: as when the loop's own
    flush fails, the loop reconnects and resyncs, and networks are read
    on (before: the network thread died, silently, and no network's
    policy reached a VIF again)."""
    run = running(event_timeout=30.0)
    watcher = run.watcher
    run.start()
    vif = run.keyed_vif(pool)
    failed = []

    def flush_cache(wait=False, _orig=watcher._flush_cache):
        if threading.current_thread().name != "networks":
            if not failed and watcher._cache.is_due(time.monotonic()):
                return None  # pinned: the network thread flushes first
            return _orig(wait)
        if not failed:
            failed.append(True)
            raise OSError("test: a flush that fails")
        return _orig(wait)
    monkeypatch.setattr(watcher, "_flush_cache", flush_cache)
    pool.create_vif(pool.admin.add_vm(name_label="more"), run.net, 0)
    wait_for(lambda: failed, timeout=10, what="the network thread's flush")
    wait_for(lambda: watcher.stats["syncs"] == 2, timeout=10,
             what="the resync")
    set_network_policy(pool, run.net, "tx-off")
    wait_for(lambda: keys.managed_features(pool.vif_config(vif)) == {"tx"},
             timeout=10, what="the network's policy after the resync")


def test_a_network_channel_that_keeps_failing_is_said_once_and_again_when_back(
        pool, running, monkeypatch):
    """Only the network channel fails (the loop's works, so nothing
    reconnects): after NETWORK_FAILURES_LOUD calls in a row one warning
    says networks' policy is not followed, one line when it works again,
    and the policy set meanwhile arrives."""
    run = running(event_timeout=2.0)
    watcher = run.watcher
    run.start()
    vif = run.keyed_vif(pool)
    lines = []

    def recorder(level):
        original = getattr(watcher.log, level)

        def log(msg, *args):
            lines.append((level, msg % args))
            original(msg, *args)
        return log
    for level in ("warning", "info"):
        monkeypatch.setattr(watcher.log, level, recorder(level))  # shared
    failing = [True]
    real_call = watcher._network_channel.call

    def call(*args):
        if failing[0]:
            raise ConnectionRefusedError("test: the network channel fails")
        return real_call(*args)
    monkeypatch.setattr(watcher._network_channel, "call", call)
    watcher._network_channel.abort()  # its long wait ends: the next fails
    set_network_policy(pool, run.net, "tx-off")

    def warned():
        return [text for level, text in lines if level == "warning"
                and "reading network events failed" in text]
    wait_for(warned, timeout=15, what="the warning")
    time.sleep(2.0)  # more failures: still one warning
    assert len(warned()) == 1
    assert "ConnectionRefusedError" in warned()[0]
    assert keys.managed_features(pool.vif_config(vif)) == set(XAPI_SIX)
    failing[0] = False
    wait_for(lambda: keys.managed_features(pool.vif_config(vif)) == {"tx"},
             timeout=10, what="the network's policy once the channel works")
    assert ("info", "watch: reading network events again") in lines
