"""The watcher never drops a write that fails for a passing reason.

The watcher talks to the simulator through tests/support/faultproxy.py,
which refuses connections, stalls its accept queue (EAGAIN), cuts calls
before they reach the simulator and loses replies of calls the simulator
carried out. The test creates VIFs through the simulator directly, so
every VIF reaches the watcher as a real event; in the end every one of
them carries exactly the keys the policy asks for, and the to-do
(agents/todo.py) is empty.
"""
import os
import signal
import subprocess
import sys

import pytest

from netoffload.agents import cache, todo
from netoffload.pool import planning, xapi
from sim.xapi_sim import socket_dir
from tests.support import layout
from tests.support.faultproxy import FaultProxy
from tests.support.wait import wait_for

pytestmark = pytest.mark.root

XAPI_SIX = ("rx", "tx", "sg", "tso", "ufo", "gso")
BURST = 40
WRITE = r"^VIF\.(add|remove)_(to|from)_other_config$"


@pytest.fixture
def proxy(pool):
    directory = socket_dir("fproxy")
    box = FaultProxy(os.path.join(directory, "xapi.sock"), pool.socket_path)
    try:
        yield box
    finally:
        box.close()
        for name in os.listdir(directory):
            os.unlink(os.path.join(directory, name))
        os.rmdir(directory)


@pytest.fixture
def host(pool):
    host = pool.admin.add_host(name_label="xs1")
    net = pool.admin.add_network(name_label="net0")
    pool.admin.add_pif(host=host, network=net, device="eth0")
    pool.set_pool_policy("netoffload-vif", "all-off")
    return {"host": host, "net": net}


class Watch(object):
    """A watcher of host xs1 whose XAPI socket is the proxy; its stderr in
    a file (a pipe nobody reads could fill up and block it)."""

    def __init__(self, pool, host, proxy, netns, log_path):
        env = dict(pool.admin.host_env(host=host))
        env["PYTHONPATH"] = layout.REPO + ":" + env["PYTHONPATH"]
        env["NETOFFLOAD_XAPI_SOCKET"] = proxy.path
        self.state = env["NETOFFLOAD_STATE_DIR"]
        self.log_path = log_path
        self._log = open(log_path, "a")
        # a short writer lease: a killed watcher's lease (with pool-core's
        # lease) expires within the test
        self.proc = netns.popen(
            [sys.executable, "-m", "netoffload.agents.watch"]
            + pool.watch_options + ["--lease-ttl", "3"], env=env,
            stdout=subprocess.DEVNULL, stderr=self._log)
        pool.watchers.append(self.proc)

    def log(self):
        with open(self.log_path) as handle:
            return handle.read()

    def synced(self):
        return os.path.exists(cache.cache_path(self.state))

    def kill(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)
        self._log.close()


def keyed(pool, vif):
    """The six keys written, and the bookkeeping (whatever its form: the
    planner judges it, see nothing_left_to_write)."""
    config = pool.vif_config(vif)
    return all(config.get("ethtool-" + f) == "off" for f in XAPI_SIX) and \
        any(k.startswith("netoffload-") for k in config)


def nothing_left_to_write(pool, vifs):
    """Planned afresh from the database, no VIF needs a write: keys and
    bookkeeping complete, nothing half done."""
    records = xapi.Xapi(pool.session).snapshot()
    return [p.label for p in planning.plan_db(records, vifs) if p.writes]


def burst(pool, net, count=BURST):
    vifs = []
    for i in range(count):
        vm = pool.admin.add_vm(name_label="burst-%d" % i)
        vifs.append(pool.create_vif(vm, net, 0))
    return vifs


def all_keyed(pool, vifs):
    return not [v for v in vifs if not keyed(pool, v)]


def test_refused_stalled_cut_and_lost_calls_during_a_burst_lose_no_vif(
        pool, host, proxy, netns, tmp_path):
    watch = Watch(pool, host["host"], proxy, netns, str(tmp_path / "w.log"))
    wait_for(watch.synced, timeout=30, what="the first full sync")
    # the burst meets: the writers' new connections refused, a stalled
    # accept queue, writes cut before xapi, writes carried out whose reply
    # is lost
    proxy.refuse_connections(6)
    proxy.stall(1.0)
    proxy.drop_calls(WRITE, 25)
    proxy.lose_replies(WRITE, 10)
    vifs = burst(pool, host["net"])
    wait_for(lambda: all_keyed(pool, vifs), timeout=60, interval=0.2,
             what="keys on all %d VIFs" % BURST)
    assert proxy.faults["refused"] == 6
    assert proxy.faults["dropped"] == 25
    assert proxy.faults["lost_replies"] == 10
    wait_for(lambda: todo.read_todo(watch.state).count == 0, timeout=10,
             what="an empty to-do")
    assert nothing_left_to_write(pool, vifs) == []
    # exactly the policy's keys, nothing doubled by a retried write
    for vif in vifs:
        config = pool.vif_config(vif)
        assert sorted(k for k in config if k.startswith("ethtool-")) == \
            sorted("ethtool-" + f for f in XAPI_SIX)
    assert watch.proc.poll() is None


def test_writes_failing_past_the_call_retries_wait_in_the_to_do(
        pool, host, proxy, netns, tmp_path):
    watch = Watch(pool, host["host"], proxy, netns, str(tmp_path / "w.log"))
    wait_for(watch.synced, timeout=30, what="the first full sync")
    # more failures than a call's own retries absorb (5 tries each): whole
    # objects fail, the event loop (event.from) is left alone
    proxy.drop_calls(WRITE, 300)
    vifs = burst(pool, host["net"], 20)
    seen = wait_for(lambda: todo.read_todo(watch.state).count and
                    todo.read_todo(watch.state), timeout=30,
                    what="objects in the to-do")
    entries = seen.entries
    assert entries[0].cls == "VIF" and entries[0].attempts >= 1
    assert entries[0].uuid in [pool.api.VIF.get_uuid(v) for v in vifs]
    wait_for(lambda: all_keyed(pool, vifs), timeout=90, interval=0.2,
             what="keys on all VIFs once the failures stop")
    assert proxy.faults["dropped"] == 300
    assert nothing_left_to_write(pool, vifs) == []
    wait_for(lambda: todo.read_todo(watch.state).count == 0, timeout=10,
             what="an empty to-do")
    log = watch.log()
    assert "kept in the to-do, tried again" in log
    assert "objects still to bring into policy" in log


def test_the_to_do_survives_a_watcher_restart(pool, host, proxy, netns,
                                              tmp_path):
    log_path = str(tmp_path / "w.log")
    watch = Watch(pool, host["host"], proxy, netns, log_path)
    wait_for(watch.synced, timeout=30, what="the first full sync")
    proxy.drop_calls(WRITE, 100000)  # nothing lands while it runs
    vifs = burst(pool, host["net"], 5)
    wait_for(lambda: todo.read_todo(watch.state).count == 5, timeout=40,
             what="all five in the to-do")
    watch.kill()
    left = todo.read_todo(watch.state)
    assert left.count == 5
    assert sorted(e.uuid for e in left.entries) == \
        sorted(pool.api.VIF.get_uuid(v) for v in vifs)
    assert not [v for v in vifs if keyed(pool, v)]
    # xapi is well again; a new watcher starts from the file
    proxy.heal()
    again = Watch(pool, host["host"], proxy, netns, log_path)
    wait_for(lambda: all_keyed(pool, vifs), timeout=40, interval=0.2,
             what="keys on the VIFs after the restart")
    wait_for(lambda: todo.read_todo(again.state).count == 0, timeout=10,
             what="an empty to-do")
    assert nothing_left_to_write(pool, vifs) == []
    assert "5 objects left in the to-do by the last run" in again.log()
