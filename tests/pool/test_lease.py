"""The pool-wide writer lease (pool/lease.py) against the simulator's
real add_to_other_config semantics, with a clock the test moves."""
import json
import os
import subprocess
import time

import pytest

from netoffload.errors import Busy
from netoffload.pool import keys, lease, writer, xapi
from tests.support.simpool import SimPool


class Clock(object):
    def __init__(self):
        self.now = 1000000.0
        self.slept = 0.0

    def __call__(self):
        return self.now

    def sleep(self, seconds):
        self.now += seconds
        self.slept += seconds


@pytest.fixture
def pool(monkeypatch):
    with SimPool() as box:
        box.sim.add_host("h1")
        monkeypatch.setenv("NETOFFLOAD_XAPI_SOCKET", box.socket_path)
        yield box


@pytest.fixture
def client(pool):
    session = xapi.open_session()
    try:
        yield xapi.Xapi(session)
    finally:
        xapi.close_session(session)


def pool_config(pool):
    return pool.api.pool.get_other_config(pool.pool_ref)


def test_take_hold_and_give_back(pool, client):
    clock = Clock()
    with lease.held(client, "apply@h1:1", ttl_s=60, clock=clock) as held:
        value = json.loads(pool_config(pool)[keys.KEY_LEASE])
        # the holding process: no inventory here, so no host uuid
        with open("/proc/self/stat") as handle:
            start = handle.read().rpartition(")")[2].split()[19]
        with open("/proc/sys/kernel/random/boot_id") as handle:
            boot = handle.read().strip()
        assert value == {"holder": "apply@h1:1", "op": held.op,
                         "expires": 1000060.0, "host": None,
                         "pid": os.getpid(), "start": start, "boot": boot}
        assert keys.valid_op_id(held.op)
    assert pool_config(pool) == {}


def test_held_lease_waits_then_busy_naming_the_holder(pool, client):
    clock = Clock()
    first = lease.acquire(client, "apply@h1:1", ttl_s=60, clock=clock)
    with pytest.raises(Busy) as err:
        lease.acquire(client, "watch@h2:7", ttl_s=60, wait_s=5,
                      sleep=clock.sleep, clock=clock)
    assert "apply@h1:1" in err.value.message and first.op in err.value.message
    assert 5 <= clock.slept < 7
    assert json.loads(pool_config(pool)[keys.KEY_LEASE])["holder"] == \
        "apply@h1:1"


def test_an_expired_lease_is_taken_over_and_the_break_key_cleared(pool,
                                                                  client):
    clock = Clock()
    dead = lease.acquire(client, "apply@h1:1", ttl_s=60, clock=clock)
    clock.now += 61
    taken = lease.acquire(client, "apply@h2:2", ttl_s=60, wait_s=0,
                          clock=clock)
    config = pool_config(pool)
    assert json.loads(config[keys.KEY_LEASE])["op"] == taken.op != dead.op
    assert [k for k in config if k.startswith(keys.LEASE_BREAK_PREFIX)] == []
    lease.release(dead)  # not its lease any more: left alone
    assert json.loads(pool_config(pool)[keys.KEY_LEASE])["op"] == taken.op
    lease.release(taken)
    assert pool_config(pool) == {}


def test_two_takers_of_one_expired_lease_cannot_both_take_it(pool, client):
    clock = Clock()
    dead = lease.acquire(client, "apply@h1:1", ttl_s=60, clock=clock)
    clock.now += 61
    # another taker has won the break key of that lease and is at work
    pool.api.pool.add_to_other_config(
        pool.pool_ref, "%s%s.1" % (keys.LEASE_BREAK_PREFIX, dead.op),
        "%.3f" % (clock.now + 30))
    with pytest.raises(Busy):
        lease.acquire(client, "apply@h3:3", ttl_s=60, wait_s=1,
                      sleep=clock.sleep, clock=clock)
    # ... unless that taker died too: its break key expires, index 2 wins
    clock.now += 31
    taken = lease.acquire(client, "apply@h3:3", ttl_s=60, wait_s=0,
                          sleep=clock.sleep, clock=clock)
    config = pool_config(pool)
    assert json.loads(config[keys.KEY_LEASE])["op"] == taken.op
    assert [k for k in config if k.startswith(keys.LEASE_BREAK_PREFIX)] == []


def test_a_lease_that_is_not_json_counts_as_expired(pool, client):
    pool.api.pool.add_to_other_config(pool.pool_ref, keys.KEY_LEASE, "junk")
    taken = lease.acquire(client, "apply@h1:1", ttl_s=60, wait_s=0)
    assert json.loads(pool_config(pool)[keys.KEY_LEASE])["op"] == taken.op


def test_renewal_pushes_the_expiry_and_notices_a_take_over(pool, client):
    clock = Clock()
    held = lease.acquire(client, "apply@h1:1", ttl_s=60, clock=clock)
    held.renew_if_due()
    assert json.loads(pool_config(pool)[keys.KEY_LEASE])["expires"] == \
        1000060.0  # not due yet
    clock.now += 40
    held.renew_if_due()
    assert json.loads(pool_config(pool)[keys.KEY_LEASE])["expires"] == \
        1000100.0
    clock.now += 61
    lease.acquire(client, "apply@h2:2", ttl_s=60, wait_s=0, clock=clock)
    with pytest.raises(Busy):
        held.renew_if_due()


def test_an_operation_marks_itself_unfinished_until_it_ends(pool, client):
    with writer.operation(client, "apply@h1:1") as op:
        assert keys.unfinished_ops(pool_config(pool)) == {op.op}
    assert pool_config(pool) == {}


def test_an_operation_that_fails_settles_its_own_books(pool, client):
    with pytest.raises(RuntimeError):
        with writer.operation(client, "apply@h1:1"):
            raise RuntimeError("stopped part way")
    assert pool_config(pool) == {}


# -- a dead holder on this host ------------------------------------------------

HERE = "1111aaaa-2222-3333-4444-555566667777"
ELSEWHERE = "9999aaaa-2222-3333-4444-555566667777"


@pytest.fixture
def here(monkeypatch, tmp_path):
    """This process runs on host HERE (its inventory)."""
    inventory = tmp_path / "xensource-inventory"
    inventory.write_text("INSTALLATION_UUID='%s'\n" % HERE)
    monkeypatch.setenv("NETOFFLOAD_INVENTORY", str(inventory))
    return HERE


def _stat_start(pid):
    with open("/proc/%d/stat" % pid) as handle:
        return handle.read().rpartition(")")[2].split()[19]


def _boot():
    with open("/proc/sys/kernel/random/boot_id") as handle:
        return handle.read().strip()


def _dead_process(reap=True):
    """(pid, start time) of a process that has exited (reap=False: a
    zombie, killed but not waited for)."""
    proc = subprocess.Popen(["sleep", "60"])
    start = _stat_start(proc.pid)
    proc.kill()
    if reap:
        proc.wait()
    else:
        for _ in range(100):  # until the kernel has made it a zombie
            with open("/proc/%d/stat" % proc.pid) as handle:
                if handle.read().rpartition(")")[2].split()[0] == "Z":
                    break
            time.sleep(0.01)
    return proc, start


def _plant(pool, host, pid, start, boot, expires_in=300.0, op="ab" * 8):
    """A lease as a writer would have left it."""
    pool.api.pool.add_to_other_config(
        pool.pool_ref, keys.KEY_LEASE, json.dumps({
            "holder": "apply@x:%s" % pid, "op": op,
            "expires": time.time() + expires_in, "host": host, "pid": pid,
            "start": start, "boot": boot}))


def _taken(pool, taken):
    config = pool_config(pool)
    assert json.loads(config[keys.KEY_LEASE])["op"] == taken.op
    assert [k for k in config if k.startswith(keys.LEASE_BREAK_PREFIX)] == []


@pytest.mark.parametrize("reap", [True, False])
def test_a_dead_holder_on_this_host_is_broken_at_once(pool, client, here,
                                                      reap):
    proc, start = _dead_process(reap)
    try:
        _plant(pool, here, proc.pid, start, _boot())
        taken = lease.acquire(client, "apply@h1:1", wait_s=0)
        _taken(pool, taken)
        assert json.loads(pool_config(pool)[keys.KEY_LEASE])["host"] == here
    finally:
        proc.wait()


def test_a_reused_pid_is_not_taken_for_the_holder(pool, client, here):
    # the pid runs (this very process), but started at another time
    _plant(pool, here, os.getpid(), str(int(_stat_start(os.getpid())) - 1),
           _boot())
    _taken(pool, lease.acquire(client, "apply@h1:1", wait_s=0))


def test_a_holder_on_a_host_that_rebooted_since_is_gone(pool, client, here):
    _plant(pool, here, os.getpid(), _stat_start(os.getpid()),
           "0" * 8 + _boot()[8:])
    _taken(pool, lease.acquire(client, "apply@h1:1", wait_s=0))


def test_a_live_holder_on_this_host_is_waited_for(pool, client, here):
    _plant(pool, here, os.getpid(), _stat_start(os.getpid()), _boot())
    with pytest.raises(Busy):
        lease.acquire(client, "apply@h1:1", wait_s=0)


@pytest.mark.parametrize("whose", ["another host", "no host", "old form",
                                   "unknown here"])
def test_a_holder_not_known_dead_waits_for_its_expiry(pool, client, here,
                                                      monkeypatch, whose):
    proc, start = _dead_process()
    host = {"another host": ELSEWHERE, "no host": None}.get(whose, here)
    if whose == "old form":  # a lease written by an earlier version
        pool.api.pool.add_to_other_config(
            pool.pool_ref, keys.KEY_LEASE, json.dumps({
                "holder": "apply@x:1", "op": "cd" * 8,
                "expires": time.time() + 300}))
    else:
        _plant(pool, host, proc.pid, start, _boot())
    if whose == "unknown here":  # this host's uuid cannot be read
        monkeypatch.setenv("NETOFFLOAD_INVENTORY", "/nonexistent/inventory")
    with pytest.raises(Busy):
        lease.acquire(client, "apply@h1:1", wait_s=0)
    # ... and is taken over once it has expired
    clock = Clock()
    clock.now = time.time() + 301
    _taken(pool, lease.acquire(client, "apply@h1:1", wait_s=0, clock=clock))


def test_no_wait_given_is_the_default_wait(pool, client, monkeypatch):
    monkeypatch.setenv("NETOFFLOAD_LEASE_WAIT", "3")
    clock = Clock()
    lease.acquire(client, "apply@h1:1", ttl_s=60, clock=clock)
    with pytest.raises(Busy):
        lease.acquire(client, "watch@h2:7", ttl_s=60, wait_s=None,
                      sleep=clock.sleep, clock=clock)
    assert 3 <= clock.slept < 5
    monkeypatch.delenv("NETOFFLOAD_LEASE_WAIT")
    assert lease.default_wait() == lease.DEFAULT_WAIT_S == 20
