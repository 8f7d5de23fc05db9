"""The watcher against the XAPI simulator, each watcher in its own netns.

The simulator runs as a separate process (`python -m sim.xapi_sim` with a
JSON database) so a test can kill it with SIGKILL and start it again on the
same database, like a crashed xapi. Objects are created through the real
XenAPI client (VIF.create, pool.add_to_other_config, ...) so every change
reaches the watcher as a real event; call counts come from the simulator.
"""
import math
import os
import signal
import time

import pytest

from netoffload.agents import cache
from netoffload.engine.ethtool import parse_features_text
from netoffload.pool import keys, planning
from tests.support import layout, simpool
from tests.support.wait import wait_for

pytestmark = pytest.mark.root

REPO = layout.REPO
EVENT_TIMEOUT = simpool.WATCHER_EVENT_TIMEOUT
XAPI_SIX = ("rx", "tx", "sg", "tso", "ufo", "gso")


def keys_written(config, values="off"):
    return all(config.get("ethtool-" + f) == values for f in XAPI_SIX)


@pytest.fixture
def one_host(pool, netns):
    """Host xs1 (master) with eth0, net0, policy all-off, a watcher running."""
    host = pool.admin.add_host(name_label="xs1")
    net = pool.admin.add_network(name_label="net0")
    pool.admin.add_pif(host=host, network=net, device="eth0")
    pool.set_pool_policy("netoffload-vif", "all-off")
    vm = pool.admin.add_vm(name_label="web 01")
    proc, state = pool.watch(host, netns)
    return {"host": host, "net": net, "vm": vm, "watcher": proc, "state": state}


def wait_synced(state):
    """Until the watcher's first full sync is done: it ends by writing the
    cache (the state directory starts empty), and the event token was taken
    before the sync, so anything created from now on reaches it as an event."""
    wait_for(lambda: os.path.exists(cache.cache_path(state)),
             what="the watcher's first full sync")


def _settled(pool, seconds=1.0):
    """The number of DB writes, once it has not moved for `seconds`."""
    last = pool.writes()
    while True:
        time.sleep(seconds)
        now = pool.writes()
        if now == last:
            return now
        last = now


def test_a_new_vif_gets_its_keys_and_the_watcher_does_not_loop(pool, one_host):
    wait_synced(one_host["state"])
    vif = pool.create_vif(one_host["vm"], one_host["net"], 0)
    config = wait_for(lambda: keys_written(pool.vif_config(vif))
                      and pool.vif_config(vif), what="keys on the VIF")
    assert keys.managed_features(config) == set(XAPI_SIX)
    # 6 keys + 1 book, then nothing more: our own mod events plan no writes
    assert _settled(pool) == 7
    events_before = pool.admin.call_counts().get("event.from", 0)
    window = 1.5
    time.sleep(window)
    assert pool.writes() == 7
    # Idle, each event.from blocks for the event timeout, except one early
    # return for a due (debounced) cache write and one for finished writes
    # to log (1 s timeout while writes are in flight). A watcher looping on
    # its own writes would call it hundreds of times.
    idle_bound = math.ceil(window / EVENT_TIMEOUT) + 2
    assert pool.admin.call_counts().get("event.from", 0) - events_before \
        <= idle_bound


def test_a_burst_of_vifs_all_get_keys(pool, one_host):
    vms = [pool.admin.add_vm(name_label="burst %d" % i) for i in range(10)]
    vifs = [pool.create_vif(vm, one_host["net"], dev)
            for vm in vms for dev in range(5)]
    wait_for(lambda: all(keys_written(pool.vif_config(v)) for v in vifs),
             timeout=20, what="keys on 50 VIFs")
    _settled(pool)
    # Exactly one add per key and none repeated: a new VIF has no keys, so
    # a remove (a re-write) or a second add (MAP_DUPLICATE_KEY after a
    # re-plan from a snapshot older than our writes) would show here.
    assert pool.write_calls() == {"VIF.add_to_other_config": 7 * len(vifs)}


def test_opt_out_vm_and_explicit_keys_are_left_alone(pool, one_host):
    opted_out = pool.admin.add_vm(name_label="db",
                                  other_config={"netoffload-vif": "none"})
    quiet = pool.create_vif(opted_out, one_host["net"], 0)
    # a decision (an on/true found on a new VIF is a default now: the
    # policy applies over it, issue 11)
    explicit = pool.create_vif(one_host["vm"], one_host["net"], 1,
                               other_config={"ethtool-tx": "TRUE"})
    marker = pool.create_vif(one_host["vm"], one_host["net"], 2)
    wait_for(lambda: keys_written(pool.vif_config(marker)), what="marker VIF")
    _settled(pool, 0.5)
    assert pool.vif_config(quiet) == {}
    config = pool.vif_config(explicit)
    assert config["ethtool-tx"] == "TRUE"
    assert "tx" not in keys.managed_features(config)
    assert all(config["ethtool-" + f] == "off" for f in XAPI_SIX if f != "tx")


def test_killing_the_simulator_mid_burst_loses_no_vif(pool, one_host):
    vms = [pool.admin.add_vm(name_label="k%d" % i) for i in range(10)]
    vifs = [pool.create_vif(vm, one_host["net"], 0) for vm in vms]
    pool.kill()  # the watcher is still working through the burst
    pool.start()
    vifs += [pool.create_vif(vm, one_host["net"], 1) for vm in vms]
    wait_for(lambda: all(keys_written(pool.vif_config(v)) for v in vifs),
             timeout=30, what="keys on every VIF after the restart")
    assert one_host["watcher"].poll() is None


def test_a_policy_change_reaches_existing_vifs_the_cache_and_live_devices(
        pool, one_host, netns):
    vm = pool.admin.add_vm(name_label="running", power_state="Running",
                           resident_on=one_host["host"])
    domid = pool.api.VM.get_domid(vm)
    device = "vif%s.0" % domid
    netns.add_veth(device, "guest0")
    vm_uuid = pool.api.VM.get_uuid(vm)
    pool.set_pool_policy("netoffload-vif", "tx-off")
    vif = pool.create_vif(vm, one_host["net"], 0)
    wait_for(lambda: keys.managed_features(pool.vif_config(vif)) == {"tx"},
             what="tx-off keys")

    def live():
        return parse_features_text(netns.ethtool_k(device), device).as_onoff()
    wait_for(lambda: live()["tx"] == "off", what="tx off live")
    assert live()["sg"] == "on"

    pool.set_pool_policy("netoffload-vif", "all-off")
    wait_for(lambda: keys_written(pool.vif_config(vif)), what="all-off keys")
    wait_for(lambda: cache.load(one_host["state"]).vif(vm_uuid, 0)[0]
             == dict((f, "off") for f in XAPI_SIX + ("gro", "lro")),
             what="all-off in the cache")
    wait_for(lambda: all(v == "off" for f, v in live().items()
                         if f in ("rx", "tx", "sg", "tso", "gso")),
             what="all-off live")


def test_only_the_master_writes_and_promotion_moves_the_writing(pool, netns):
    pool.admin.add_host(name_label="xs1")  # the master
    member = pool.admin.add_host(name_label="xs2")
    net = pool.admin.add_network(name_label="net0")
    pool.set_pool_policy("netoffload-vif", "all-off")
    vm = pool.admin.add_vm(name_label="web")
    member_ns = netns
    logins = pool.logins()
    member_proc, member_state = pool.watch(member, member_ns)
    wait_synced(member_state)
    vif = pool.create_vif(vm, net, 0)
    # the member sees the VIF (its cache lists it) but writes nothing
    vm_uuid = pool.api.VM.get_uuid(vm)
    wait_for(lambda: cache.load(member_state).vif(vm_uuid, 0)[0],
             what="member cache")
    # It handled that batch: a writer would have planned the VIF before the
    # cache write and opened its writer sessions then; the member logged
    # in once (its event session) and wrote nothing.
    assert pool.logins() - logins == 1
    assert pool.writes() == 0
    assert pool.vif_config(vif) == {}
    pool.admin.set_master(host=member)
    wait_for(lambda: keys_written(pool.vif_config(vif)),
             what="the new master writing")
    assert member_proc.poll() is None


def test_the_watcher_stops_cleanly_on_sigterm(pool, one_host):
    proc = one_host["watcher"]
    wait_for(lambda: os.path.exists(cache.cache_path(one_host["state"])),
             what="first cache")
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(10) == 0
    assert "Traceback" not in proc.stderr.read()


def test_a_mistyped_policy_leaves_its_objects_alone_and_warns_once(
        pool, one_host, netns):
    """Set with xe past set_policy's check, a typo must not read as "no
    policy": no key stripped, nothing restored live, the cache entry kept,
    one warning however many events touch it."""
    vm = pool.admin.add_vm(name_label="typo", power_state="Running",
                           resident_on=one_host["host"])
    device = "vif%s.0" % pool.api.VM.get_domid(vm)
    netns.add_veth(device, "guest0")
    vm_uuid = pool.api.VM.get_uuid(vm)
    vif = pool.create_vif(vm, one_host["net"], 0)
    pooled = pool.create_vif(one_host["vm"], one_host["net"], 0)
    wait_for(lambda: keys_written(pool.vif_config(vif))
             and keys_written(pool.vif_config(pooled)), what="all-off keys")

    def live():
        return parse_features_text(netns.ethtool_k(device), device).as_onoff()
    wait_for(lambda: live()["tx"] == "off", what="tx off live")
    # a full sync enforces live state before it writes the first cache
    wait_synced(one_host["state"])
    wait_for(lambda: cache.load(one_host["state"]).vif(vm_uuid, 0)[0]
             is not None, what="the VIF in the cache")
    keys, features = pool.vif_config(vif), live()
    pooled_keys = pool.vif_config(pooled)
    entry = cache.load(one_host["state"]).vif(vm_uuid, 0)
    pool.api.VM.add_to_other_config(vm, "netoffload-vif", "tx=of")
    for n in range(3):  # more events for the same broken key
        pool.api.VM.add_to_other_config(vm, "unrelated-%d" % n, "x")
    pool.set_pool_policy("netoffload-vif", "all-of")  # and a pool-level typo
    _settled(pool, 1.5)
    assert pool.vif_config(vif) == keys
    assert pool.vif_config(pooled) == pooled_keys
    assert live() == features
    assert cache.load(one_host["state"]).vif(vm_uuid, 0) == entry
    proc = one_host["watcher"]
    proc.terminate()
    _, stderr = proc.communicate(timeout=15)
    warnings = [line for line in stderr.splitlines() if "invalid policy" in line]
    assert len([w for w in warnings if "'tx=of'" in w]) == 1, stderr
    assert len([w for w in warnings if "'all-of'" in w]) == 1, stderr


def test_a_hot_plugged_vif_gets_its_live_only_features_when_plugged(
        pool, one_host, netns):
    """gro is live-only (xapi drops ethtool-gro on a VIF): a policy of gro
    alone writes no DB key, so no later event carries it. The VIF is created
    before its device exists; plugging it (currently_attached) enforces."""
    net = pool.admin.add_network(name_label="gro net",
                                 other_config={"netoffload-vif": "gro=on"})
    vm = pool.admin.add_vm(name_label="hot", power_state="Running",
                           resident_on=one_host["host"])
    device = "vif%s.0" % pool.api.VM.get_domid(vm)
    wait_synced(one_host["state"])
    vif = pool.create_vif(vm, net, 0)
    _settled(pool, 0.5)
    netns.add_veth(device, "guest0")

    def gro():
        return parse_features_text(netns.ethtool_k(device), device).as_onoff()["gro"]
    assert gro() == "off"  # a fresh veth; nothing has run for it yet
    pool.api.VIF.plug(vif)
    wait_for(lambda: gro() == "on", what="gro on after the plug")


class _Recorder(object):
    """Stands in for the watcher's logger: keeps (level, message)."""

    def __init__(self):
        self.lines = []

    def _add(self, level, msg, *args):
        self.lines.append((level, msg % args if args else msg))

    def info(self, msg, *args):
        self._add("info", msg, *args)

    def warning(self, msg, *args):
        self._add("warning", msg, *args)

    def error(self, msg, *args):
        self._add("error", msg, *args)


def test_a_failure_that_repeats_with_xapi_reachable_is_an_error_then_exit_1(
        pool, netns, tmp_path, monkeypatch, mocker):
    from netoffload.agents import watch
    host = pool.admin.add_host(name_label="xs1")
    net = pool.admin.add_network(name_label="net0")
    pool.set_pool_policy("netoffload-vif", "all-off")
    pool.create_vif(pool.admin.add_vm(name_label="halted"), net, 0)
    for key, value in pool.admin.host_env(host=host).items():
        if key.startswith("NETOFFLOAD_"):
            monkeypatch.setenv(key, value)
    mocker.patch("netoffload.pool.planning.plan_db", autospec=True,
                 side_effect=RuntimeError("a planning bug"))
    watcher = watch.Watcher(state_dir=str(tmp_path), event_timeout=0.2,
                            backoff_max=0.01, sleep=lambda seconds: None,
                            max_failures=4)
    watcher.log = _Recorder()
    with netns.entered():
        assert watcher.run() == 1
    assert planning.plan_db.call_count == 4
    failures = [(level, "a planning bug" in line)
                for level, line in watcher.log.lines if level != "info"]
    assert failures == [("warning", True), ("warning", True), ("error", True),
                        ("error", True)]
    assert "giving up" in [line for level, line in watcher.log.lines
                           if level == "error"][-1]


def test_the_watcher_plans_nothing_from_another_writers_half_done_state(
        pool, one_host):
    """Pinned: another writer (a revert ALL on some host) holds the pool
    lease and has removed one managed key when the watcher sees it; it then
    finishes (keys, book, policy, op key, lease) while the watcher waits.
    The watcher must plan from the state as it stands once the lease is
    gone (nothing to do), never from the half-done state it saw, which
    would write the keys back and undo them again."""
    import json
    wait_synced(one_host["state"])
    vif = pool.create_vif(one_host["vm"], one_host["net"], 0)
    wait_for(lambda: keys_written(pool.vif_config(vif)), what="keys")
    _settled(pool)
    pool_ref = pool.pool_ref
    wait_for(lambda: keys.KEY_LEASE not in pool.api.pool.get_other_config(
        pool_ref), what="the watcher giving its lease back")
    op = "0123456789abcdef"
    pool.api.pool.add_to_other_config(pool_ref, keys.KEY_LEASE, json.dumps(
        {"holder": "revert@elsewhere:1", "op": op,
         "expires": time.time() + 600}))
    pool.api.pool.add_to_other_config(pool_ref, keys.op_key(op), "{}")
    pool.api.VIF.remove_from_other_config(vif, "ethtool-tx")
    time.sleep(1.0)  # the watcher has seen the half-done state
    for key in sorted(pool.vif_config(vif)):
        pool.api.VIF.remove_from_other_config(vif, key)
    pool.api.pool.remove_from_other_config(pool_ref, "netoffload-vif")
    pool.api.pool.remove_from_other_config(pool_ref, keys.op_key(op))
    pool.api.pool.remove_from_other_config(pool_ref, keys.KEY_LEASE)
    writes = pool.writes()
    time.sleep(5.0)
    assert pool.vif_config(vif) == {}
    assert pool.writes() == writes, "the watcher wrote from a stale view"
    assert not [k for k in pool.api.pool.get_other_config(pool_ref)
                if keys.is_pack_key(k)]


def test_a_dead_writer_of_this_host_does_not_hold_up_the_watcher(
        pool, one_host):
    """A writer on this host that died holding the lease (its pid gone)
    cannot hold the watcher up until the lease's expiry: a new VIF gets
    its keys at once, the lease taken over through its break key."""
    import json
    import subprocess
    wait_synced(one_host["state"])
    pool_ref = pool.pool_ref
    wait_for(lambda: keys.KEY_LEASE not in pool.api.pool.get_other_config(
        pool_ref), what="the watcher giving its lease back")
    dead = subprocess.Popen(["true"])
    dead.wait()
    with open("/proc/sys/kernel/random/boot_id") as handle:
        boot = handle.read().strip()
    pool.api.pool.add_to_other_config(pool_ref, keys.KEY_LEASE, json.dumps(
        {"holder": "apply@xs1:%d" % dead.pid, "op": "fedcba9876543210",
         "expires": time.time() + 600,
         "host": pool.api.host.get_uuid(one_host["host"]), "pid": dead.pid,
         "start": "1", "boot": boot}))
    vif = pool.create_vif(one_host["vm"], one_host["net"], 0)
    wait_for(lambda: keys_written(pool.vif_config(vif)), timeout=10,
             what="keys despite a dead writer's lease")


def _set_network_policy(pool, net, policy):
    config = pool.api.network.get_other_config(net)
    config["netoffload-vif"] = policy
    pool.api.network.set_other_config(net, config)


def test_networks_are_read_on_their_own_channel_and_their_policy_arrives(
        pool, one_host):
    """Every VIF created changes its network's record (its VIFs set): the
    main event channel does not ask for networks, so its batches carry no
    network record; a network's policy still reaches its VIFs, from the
    network channel, while VIFs keep coming, and after xapi restarts."""
    wait_synced(one_host["state"])
    net = one_host["net"]
    pool.admin.trace_commits(methods=["event.from"])
    vms = [pool.admin.add_vm(name_label="n%d" % i) for i in range(20)]
    vifs = []
    for i, vm in enumerate(vms):
        vifs.append(pool.create_vif(vm, net, 0))
        if i == 10:
            _set_network_policy(pool, net, "tx-off")
        time.sleep(0.05)
    wait_for(lambda: all(keys.managed_features(pool.vif_config(v)) == {"tx"}
                         for v in vifs), timeout=20,
             what="the network's tx-off on all its VIFs")
    calls = [params[0] for _, _, params, _ in pool.admin.traced_commits()]
    pool.admin.trace_commits(methods=[])
    with_network = [c for c in calls if "network" in c or "*" in c]
    without = [c for c in calls if c not in with_network]
    # the burst made many main-channel batches; the network channel waits
    # NETWORK_COALESCE after each of its own
    assert len(without) >= 10
    assert with_network and all(c == ["network"] for c in with_network)
    assert len(with_network) <= len(without) // 2 + 2

    pool.kill()
    pool.start()
    _set_network_policy(pool, net, "all-off")
    wait_for(lambda: all(keys_written(pool.vif_config(v)) for v in vifs),
             timeout=30, what="all-off from the network after a restart")
    assert one_host["watcher"].poll() is None
