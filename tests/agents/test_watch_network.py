"""The watcher's network channel (watch.Watcher._network_loop) against the
simulator, the watcher in this process so that its threads can be pinned:
a network's policy reaches a VIF whose keys were being written when the
network channel's call began; nothing is written once the writers are
stopped for a reconnect."""
import threading

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
