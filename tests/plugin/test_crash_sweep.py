"""Issue 12: a crash after any mutating XAPI call loses nothing.

For each scenario (apply, a policy change both ways, force apply, revert
ALL) the plugin is stopped dead right after its N-th mutating XAPI call,
for every N it makes; then the recovery (the same command again, then
`revert ALL`) must give:
- after the repeated command, the same keys and books as a run that never
  crashed (compared by what the books say, not their op ids);
- after `revert ALL`, every other-config map exactly as at the start: 0
  keys lost, 0 keys left behind (pool lease and op keys included).

The sweep runs the plugin functions in this process against the simulator
(the kill is an exception no handler catches, raised on every call after
the N-th, so not even a `finally` reaches xapi); one scenario kills a real
plugin subprocess run through host.call_plugin (SIGKILL from the
simulator right after it served the N-th mutating call).
"""
import json
import re
import subprocess
import time

import pytest

from netoffload.plugin import functions
from netoffload.pool import keys, xapi
from sim import xapi_plugins
from tests.support.simpool import SimPool, live

MUTATING = re.compile(r"\.(add_to_|remove_from_|set_)")


def expire_lease(sim):
    """Time passes for a dead writer's lease (and for the break key of a
    taker that died taking it over): their expiry is moved into the past
    in the database (the lease's default TTL is minutes), so the next
    writer takes it over as it would after that long."""
    with sim.db.lock:
        [pool] = sim.db.tables["pool"].values()
        config = dict(pool["other_config"])
        raw = config.get(keys.KEY_LEASE)
        if raw is not None:
            data = json.loads(raw)
            data["expires"] = time.time() - 1
            config[keys.KEY_LEASE] = json.dumps(data)
        for key in config:
            if key.startswith(keys.LEASE_BREAK_PREFIX):
                config[key] = "%.3f" % (time.time() - 1)
        pool["other_config"] = config


class Killed(BaseException):
    """The plugin process died here (not an Exception: nothing catches it)."""


class Injector(object):
    """Wraps Xapi.call: after the `kill_after`-th mutating call the
    process is dead; every later call raises Killed."""

    def __init__(self):
        self.kill_after = None
        self.mutating = 0
        self.dead = False
        self.log = []

    def reset(self, kill_after=None):
        self.kill_after, self.mutating, self.dead = kill_after, 0, False
        self.log = []

    def wrap(self, original):
        injector = self

        def call(client, method, *params):
            if injector.dead:
                raise Killed()
            result = original(client, method, *params)
            if MUTATING.search(method):
                injector.mutating += 1
                injector.log.append((method, params[1] if len(params) > 1
                                     else None))
                if injector.mutating == injector.kill_after:
                    injector.dead = True
                    raise Killed()
            return result
        return call


def canon(configs):
    """other-config maps with each book as what it says (entries, taken)."""
    result = {}
    for name, config in configs.items():
        plain = dict((k, v) for k, v in config.items()
                     if k not in keys.BOOK_KEYS + keys.LEGACY_KEYS)
        if keys.book_keys_present(config):
            book = keys.read_book(config)
            plain["<book>"] = (sorted((f, e.prior, e.value) for f, e in
                                      book.entries.items()),
                               sorted(book.taken), bool(book.problems))
        result[name] = plain
    return result


class Sweep(object):
    """A small pool in the in-process simulator, driven in-process."""

    def __init__(self, monkeypatch):
        self.pool = SimPool()
        sim = self.pool.sim
        self.host = self.pool.add_host("h1")
        env = sim.plugin_env(self.host)
        for name in ("NETOFFLOAD_INVENTORY", "NETOFFLOAD_STATE_DIR",
                     "NETOFFLOAD_XAPI_SOCKET"):
            monkeypatch.setenv(name, env[name])
        monkeypatch.setenv("NETOFFLOAD_LEASE_WAIT", "5")
        lan = sim.add_network("LAN", other_config={"keep": "me"})
        # devices no host here has: the live part finds nothing to change
        sim.add_pif(self.host, lan, "nosweep0",
                    other_config={"ethtool-autoneg": "off"})
        vms = [sim.add_vm("vm%d" % i, power_state="Running",
                          resident_on=self.host, domid=900 + i)
               for i in range(4)]
        self.fresh = sim.add_vif(vms[0], lan, 0)
        # Xen Orchestra 6's stamp: a default the policy applies over
        self.stamped = sim.add_vif(vms[1], lan, 0,
                                   other_config={"ethtool-tx": "true"})
        # an admin's decision, kept unless forced
        self.decided = sim.add_vif(vms[2], lan, 0, other_config={
            "ethtool-tx": "false", "ethtool-rx": "off", "note": "x"})
        self.halted = sim.add_vif(sim.add_vm("halted"), lan, 0)
        self.other = sim.add_vif(vms[3], lan, 0, other_config={"a": "b"})
        self.injector = Injector()
        monkeypatch.setattr(xapi.Xapi, "call",
                            self.injector.wrap(xapi.Xapi.call))
        self.session = xapi.open_session()

    def close(self):
        xapi.close_session(self.session)
        self.pool.close()

    # -- the database ------------------------------------------------------------
    def configs(self):
        return self.pool.other_configs()

    # -- calling -------------------------------------------------------------------
    def run(self, fn, args=None, **more):
        return functions.FUNCTIONS[fn](self.session, dict(args or {}, **more))

    def crash(self, kill_after, fn, args=None):
        """Run fn, dead after the kill_after-th mutating call; True if it
        died (False: it finished first)."""
        self.injector.reset(kill_after)
        try:
            self.run(fn, args)
        except Killed:
            return True
        finally:
            self.injector.reset()
        return False

    def legacy_apply(self):
        """What an older netoffload left: the two-key form."""
        api = self.pool.api
        api.VIF.add_to_other_config(self.other, "ethtool-tx", "off")
        api.VIF.add_to_other_config(self.other, "netoffload-managed", "tx")
        api.VIF.add_to_other_config(self.other, "netoffload-saved",
                                    '{"tx":[null,"off"]}')
        self.pool.set_pool_policy("netoffload-vif", "tx-off")


def _apply(policy, force=False):
    args = dict(target="ALL", policy=policy, confirm="yes")
    if force:
        args["force"] = "true"
    return ("apply", args)


REVERT_ALL = ("revert", dict(target="ALL", confirm="yes"))

# name: (steps before the crashed call, the crashed call)
SCENARIOS = {
    "apply": ([], _apply("all-off")),
    "apply-migrating-old-books": (["legacy"], _apply("all-off")),
    "policy-tx-off-to-all-off": ([_apply("tx-off")], _apply("all-off")),
    "policy-all-off-to-tx-off": ([_apply("all-off")], _apply("tx-off")),
    "force-apply": ([], _apply("tx=on,rx=on,sg=off", force=True)),
    "revert-all": ([_apply("tx-off"), _apply("all-off", force=True)],
                   REVERT_ALL),
}
FIGURES = {}  # name: (crash points run, mutating calls of a clean run)


@pytest.fixture(scope="module")
def sweep():
    patch = pytest.MonkeyPatch()
    box = Sweep(patch)
    try:
        yield box
    finally:
        box.close()
        patch.undo()


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_a_crash_after_any_mutating_call_loses_nothing(sweep, name):
    before_steps, (fn, args) = SCENARIOS[name]
    pristine = sweep.pool.save_tables()
    start = sweep.configs()

    def prepare():
        sweep.pool.restore_tables(pristine)
        for step in before_steps:
            if step == "legacy":
                sweep.legacy_apply()
            else:
                sweep.run(*step)
        return sweep.pool.save_tables()

    prepared = prepare()
    # the run that never crashes: how many mutating calls, and its end
    sweep.injector.reset()
    sweep.run(fn, args)
    total = sweep.injector.mutating
    clean = canon(sweep.configs())
    points = 0
    for kill_after in range(1, total + 1):
        sweep.pool.restore_tables(prepared)
        assert sweep.crash(kill_after, fn, args), kill_after
        points += 1
        expire_lease(sweep.pool.sim)  # the dead writer's lease expires
        sweep.run(fn, args)
        assert canon(sweep.configs()) == clean, (name, kill_after)
        sweep.run(*REVERT_ALL)
        assert sweep.configs() == start, (name, kill_after)
    FIGURES[name] = (points, total)
    print("crash sweep %s: %d crash points, all exact" % (name, points))
    assert points == total > 5
    sweep.pool.restore_tables(pristine)


def test_revert_all_crashed_then_apply_and_revert_recovers(sweep):
    """Recovery by apply first (the issue's order), from every point of a
    crashed revert ALL."""
    pristine = sweep.pool.save_tables()
    start = sweep.configs()
    sweep.run(*_apply("all-off", force=True))
    applied = sweep.pool.save_tables()
    sweep.injector.reset()
    sweep.run(*REVERT_ALL)
    total = sweep.injector.mutating
    for kill_after in range(1, total + 1):
        sweep.pool.restore_tables(applied)
        assert sweep.crash(kill_after, *REVERT_ALL)
        expire_lease(sweep.pool.sim)
        sweep.run(*_apply("all-off"))
        sweep.run(*REVERT_ALL)
        assert sweep.configs() == start, kill_after
    print("crash sweep revert-all (recovered by apply, revert ALL): %d "
          "crash points, all exact" % total)
    sweep.pool.restore_tables(pristine)


# -- one scenario with a real plugin process, killed by SIGKILL ---------------------

@pytest.fixture
def killing_pool(monkeypatch):
    pool = SimPool()
    try:
        sim = pool.sim
        host = pool.add_host("h1", netns=True)
        lan = sim.add_network("LAN")
        vm = sim.add_vm("fw", power_state="Running", resident_on=host,
                        domid=5)
        pool.vif = sim.add_vif(vm, lan, 0, other_config={
            "ethtool-tx": "false"})
        pool.stamped = sim.add_vif(sim.add_vm("xo"), lan, 0, other_config={
            "ethtool-tx": "true"})
        pool.ns["h1"].add_veth("vif5.0", "guest5")
        pool.ns["h1"].add_tap("tap5.0")
        pool.procs = []
        real_popen = subprocess.Popen

        def popen(*a, **kw):
            proc = real_popen(*a, **kw)
            pool.procs.append(proc)
            return proc
        monkeypatch.setattr(xapi_plugins.subprocess, "Popen", popen)
        yield pool
    finally:
        pool.close()


def _kill_plugin_after(pool, monkeypatch, kill_after):
    """The simulator SIGKILLs the running plugin right after it served
    its kill_after-th mutating call (the write is in the database)."""
    sim = pool.sim
    served = [0]
    handle = type(sim).handle.__get__(sim)  # unwrapped: one counter at a time

    def counted(method, params, via_host=None):
        response = handle(method, params, via_host)
        if MUTATING.search(method) and method.split(".")[0] in (
                "VIF", "PIF", "pool", "VM", "network", "host"):
            served[0] += 1
            if served[0] == kill_after and pool.procs:
                pool.procs[-1].kill()
                pool.procs[-1].wait()
        return response
    monkeypatch.setattr(sim, "handle", counted)
    return served


def test_sigkill_of_the_plugin_during_force_apply_loses_nothing(
        killing_pool, monkeypatch):
    """Issue 12 finding 1, with a real process: VIF ethtool-tx=false (an
    admin's decision) under force=true, killed after each mutating call."""
    pool = killing_pool
    db_start = pool.other_configs()
    features_start = pool.features()
    args = dict(target="ALL", policy="tx=on,sg=off", confirm="yes",
                force="true")
    served = _kill_plugin_after(pool, monkeypatch, None)
    pool.call("apply", **args)
    total = served[0]
    clean = canon(pool.other_configs())
    clean_live = live(pool, "h1", "vif5.0")
    pool.call("revert", target="ALL", confirm="yes")
    assert pool.other_configs() == db_start
    monkeypatch.undo()
    monkeypatch.setattr(xapi_plugins.subprocess, "Popen",
                        _recording_popen(pool))
    for kill_after in range(1, total + 1):
        _kill_plugin_after(pool, monkeypatch, kill_after)
        details = pool.fail("apply", **args)
        assert "signal" in " ".join(details), (kill_after, details)
        expire_lease(pool.sim)
        pool.call("apply", **args)
        assert canon(pool.other_configs()) == clean, kill_after
        assert live(pool, "h1", "vif5.0") == clean_live
        pool.call("revert", target="ALL", confirm="yes")
        assert pool.other_configs() == db_start, kill_after
        assert pool.features() == features_start, kill_after
    print("crash sweep force-apply, SIGKILL of the plugin process: %d "
          "crash points, all exact" % total)


def test_a_killed_writers_lease_is_broken_at_once_on_its_own_host(
        killing_pool, monkeypatch):
    """The plugin is SIGKILLed right after it took the pool's lease (its
    first mutating call). A writer on another host cannot tell that it is
    dead: it waits (here the 1 s it asks for) and gets BUSY. The next
    writer on the same host sees the holder's process gone and takes the
    lease at once, not after its 300 s expiry; then all is as after a
    crash (the repeated apply settles it; revert ALL restores)."""
    pool = killing_pool
    pool.add_host("h2", netns=True)
    db_start = pool.other_configs()
    args = dict(target="ALL", policy="tx=on,sg=off", confirm="yes",
                force="true")
    _kill_plugin_after(pool, monkeypatch, 1)
    details = pool.fail("apply", **args)
    assert "signal" in " ".join(details), details
    monkeypatch.undo()
    config = pool.api.pool.get_other_config(pool.pool_ref)
    held = json.loads(config[keys.KEY_LEASE])
    assert held["host"] == pool.api.host.get_uuid(pool.hosts["h1"])
    assert held["expires"] > time.time() + 200
    details = pool.fail("apply", "h2", wait="1", **args)
    assert details[0] == "NETOFFLOAD_BUSY"
    started = time.time()
    result = pool.call("apply", **args)
    assert time.time() - started < 15  # no wait for the lease at all
    assert result["summary"]["objects"]
    pool.call("revert", target="ALL", confirm="yes")
    assert pool.other_configs() == db_start


def _recording_popen(pool):
    real_popen = subprocess.Popen

    def popen(*a, **kw):
        proc = real_popen(*a, **kw)
        pool.procs.append(proc)
        return proc
    return popen


@pytest.mark.parametrize("name", ["policy-tx-off-to-all-off", "revert-all"])
def test_a_crash_while_settling_a_crash_loses_nothing(sweep, name):
    """The recovery itself killed part way (while it settles the first
    crash's books, or after): two crashed ops, then a clean recovery."""
    before_steps, (fn, args) = SCENARIOS[name]
    pristine = sweep.pool.save_tables()
    start = sweep.configs()
    sweep.pool.restore_tables(pristine)
    for step in before_steps:
        sweep.run(*step)
    prepared = sweep.pool.save_tables()
    sweep.injector.reset()
    sweep.run(fn, args)
    total = sweep.injector.mutating
    clean = canon(sweep.configs())
    runs = 0
    for first in range(2, total + 1, 4):
        for second in range(1, 9):
            sweep.pool.restore_tables(prepared)
            assert sweep.crash(first, fn, args)
            expire_lease(sweep.pool.sim)
            sweep.crash(second, fn, args)
            expire_lease(sweep.pool.sim)
            sweep.run(fn, args)
            assert canon(sweep.configs()) == clean, (first, second)
            sweep.run(*REVERT_ALL)
            assert sweep.configs() == start, (first, second)
            runs += 1
    print("double crash sweep %s: %d pairs of crash points, all exact"
          % (name, runs))
    sweep.pool.restore_tables(pristine)


def test_a_write_xapi_refuses_mid_replace_loses_nothing(sweep, monkeypatch):
    """Not a crash: xapi refuses the add of a replace (the key is already
    removed). The object fails, the operation still ends, and its half-done
    entry must not be left to read as someone else's change: the stamp
    tx=true is put back, stays a default, and revert restores it."""
    pristine = sweep.pool.save_tables()
    start = sweep.configs()
    stamped = sweep.pool.api.VIF.get_uuid(sweep.stamped)
    original = xapi.Xapi.call
    refused = []

    def refuse(client, method, *params):
        if method == "VIF.add_to_other_config" and \
                params[0] == sweep.stamped and params[1] == "ethtool-tx" \
                and not refused:
            refused.append(method)
            raise xapi.XapiError("%s failed: INTERNAL_ERROR" % method,
                                 "INTERNAL_ERROR")
        return original(client, method, *params)
    monkeypatch.setattr(xapi.Xapi, "call", refuse)
    result = sweep.run(*_apply("all-off"))
    assert refused
    [failed] = [o for o in result["objects"] if o["status"] == "failed"]
    assert failed["uuid"] == stamped
    config = sweep.configs()["VIF/" + stamped]
    assert config["ethtool-tx"] == "true"
    assert not keys.unfinished_ops(sweep.configs()[
        "pool/" + sweep.pool.api.pool.get_uuid(sweep.pool.pool_ref)])
    assert "tx" not in keys.read_book(config).taken
    sweep.run(*_apply("all-off"))
    config = sweep.configs()["VIF/" + stamped]
    assert config["ethtool-tx"] == "off"
    assert keys.read_book(config).entries["tx"] == keys.Entry(
        "true", "off", None)
    sweep.run(*REVERT_ALL)
    assert sweep.configs() == start
    sweep.pool.restore_tables(pristine)
