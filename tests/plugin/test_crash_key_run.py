"""Issue 15 target 4: the watcher writes an object's ethtool-* keys at
once (writer.begin, KeyRun) once its intent book is written. A crash can
then leave ANY subset of those key writes done, not only a prefix: each
must be a state the next writer settles exactly.

For a fresh claim, a value->value change (the intent carries `was`) and a
revert to values, a writer takes the lease and its op key, writes every
object's head (up to and including the intent book), then one subset of
its run's keys per object, and dies (lease and op key stay, as a killed
watcher leaves them). All 2^6 subsets of the six keys are covered, eight
objects (eight subsets) per crash. Then, as tests/plugin/test_crash_sweep.py
recovers: the dead writer's lease expires; the same command again must
give the same keys and books as a run that never crashed (compared by what
the books say); `revert ALL` must give every other_config map back
exactly, the pool's lease and op keys included.
"""
import itertools

import pytest

from netoffload.plugin import functions
from netoffload.pool import keys, lease, planning, writer, xapi
from tests.plugin.test_crash_sweep import REVERT_ALL, canon, expire_lease
from tests.support.simpool import SimPool

SIX = ("rx", "tx", "sg", "tso", "ufo", "gso")
ALL_ON = ",".join(f + "=on" for f in SIX)
OBJECTS = 8
# every subset of the run's six key writes (as index tuples), in groups of
# OBJECTS: one group per crash, one subset per object
SUBSETS = [s for n in range(len(SIX) + 1)
           for s in itertools.combinations(range(len(SIX)), n)]


def write_all(client, plan):
    """One object written as the watcher writes it, nothing cut."""
    step = writer.begin(client, plan)
    if isinstance(step, writer.KeyRun):
        for index in range(len(step.run)):
            step.write_key(client, index)
        step = step.finish(client)
    return step


class Pool(object):
    """OBJECTS VIFs of halted VMs (so no live part) in the in-process
    simulator, other keys around them, driven in this process."""

    def __init__(self, monkeypatch, vif_config):
        self.pool = SimPool()
        sim = self.pool.sim
        host = self.pool.add_host("h1")
        env = sim.plugin_env(host)
        for name in ("NETOFFLOAD_INVENTORY", "NETOFFLOAD_STATE_DIR",
                     "NETOFFLOAD_XAPI_SOCKET"):
            monkeypatch.setenv(name, env[name])
        monkeypatch.delenv("NETOFFLOAD_XAPI_URL", raising=False)
        monkeypatch.setenv("NETOFFLOAD_LEASE_WAIT", "5")
        lan = sim.add_network("LAN", other_config={"keep": "me"})
        self.vifs = [sim.add_vif(sim.add_vm("vm%d" % i), lan, 0,
                                 other_config=dict(vif_config, note=str(i)))
                     for i in range(OBJECTS)]
        self.session = xapi.open_session()
        self.client = xapi.Xapi(self.session)

    def close(self):
        xapi.close_session(self.session)
        self.pool.close()

    def configs(self):
        return self.pool.other_configs()

    def plans(self, op, revert=False):
        make = planning.plan_revert if revert else planning.plan_db
        return make(self.client.snapshot(), self.vifs, op=op)

    def command(self, revert=False):
        """The watcher's write of every VIF, as one whole operation."""
        with writer.operation(self.client, "test-watch") as op:
            results = [write_all(self.client, p)
                       for p in self.plans(op.op, revert)]
        # (after a crash, an object the settling finished is unchanged)
        assert set(r.status for r in results) <= {writer.STATUS_CHANGED,
                                                  writer.STATUS_UNCHANGED}
        return results

    def crash(self, subsets, revert=False):
        """A writer that dies after each object's head and the given
        subset of its run's keys: its lease and op key stay."""
        held = lease.acquire(self.client, "test-watch-dies", wait_s=5)
        lease.begin_op(self.client, held)
        steps = [writer.begin(self.client, p)
                 for p in self.plans(held.op, revert)]
        for step, subset in zip(steps, subsets):
            assert isinstance(step, writer.KeyRun), step
            assert sorted(k for k, _, _ in step.run) == sorted(
                keys.ethtool_key(f) for f in SIX)
            for index in subset:
                step.write_key(self.client, index)
            assert step.outcomes.count(writer.WRITTEN) == len(subset)
        return steps

    def revert_all(self):
        fn, args = REVERT_ALL
        return functions.FUNCTIONS[fn](self.session, dict(args))


# name: (the VIFs' other_config at the start, pool policy before the
# crashed command, steps before it, pool policy for it, revert?)
SCENARIOS = {
    # a fresh VIF, no key yet: intent == final book, six adds
    "fresh-claim": ({"other": "x"}, None, False, "all-off", False),
    # owned off -> on: each key a replace, its intent entry has `was`,
    # the final book after; tx's prior is the XO stamp "true"
    "value-to-value": ({"ethtool-tx": "true"}, "all-off", True, ALL_ON,
                       False),
    # revert of keys whose priors are values: six replaces back to them
    "revert-to-values": (dict((keys.ethtool_key(f), "true") for f in SIX),
                         "all-off", True, "all-off", True),
}


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_any_subset_of_a_key_run_after_the_intent_recovers_exactly(
        monkeypatch, name):
    vif_config, first_policy, first_run, policy, revert = SCENARIOS[name]
    box = Pool(monkeypatch, vif_config)
    try:
        start = box.configs()
        box.pool.set_pool_policy("netoffload-vif", first_policy or policy)
        if first_run:
            box.command()
            box.pool.set_pool_policy("netoffload-vif", policy)
        prepared = box.pool.save_tables()
        assert set(r.status for r in box.command(revert)) == {
            writer.STATUS_CHANGED}
        clean = canon(box.configs())
        assert clean != canon(start)
        crashes = 0
        for group in range(0, len(SUBSETS), OBJECTS):
            subsets = SUBSETS[group:group + OBJECTS]
            box.pool.restore_tables(prepared)
            box.crash(subsets, revert)
            crashes += 1
            pool_config = box.configs()["pool/" + box.pool.api.pool.get_uuid(
                box.pool.pool_ref)]
            assert keys.KEY_LEASE in pool_config
            assert keys.unfinished_ops(pool_config)
            expire_lease(box.pool.sim)  # the dead writer's lease expires
            box.command(revert)
            assert canon(box.configs()) == clean, (name, subsets)
            box.revert_all()
            assert box.configs() == start, (name, subsets)
        assert crashes * OBJECTS >= len(SUBSETS) == 2 ** len(SIX)
        print("key-run crash %s: %d subsets in %d crashes, all exact"
              % (name, len(SUBSETS), crashes))
    finally:
        box.close()
