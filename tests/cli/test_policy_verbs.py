"""`netoffload policy set|clear` preview and confirm like `apply ALL`
(issue 11, item 2): run as a dom0 admin would, a process with the host's
environment, against the simulator and real namespaced devices."""
import json
import os
import pty
import subprocess
import sys

import pytest

from tests.support import layout
from tests.support.simpool import dom0_pool, live

pytestmark = pytest.mark.root


@pytest.fixture(scope="module")
def pool():
    box = dom0_pool(hosts=2)
    try:
        yield box
    finally:
        box.close()


@pytest.fixture
def start(pool):
    """{"state": the pool's state before the test}; after it, `revert
    ALL` returns every other-config map and device there."""
    before = {"state": pool.state()}
    yield before
    done = cli(pool, "revert", "ALL", "--yes", "--pool", "--json")
    assert done.returncode == 0, done.stderr
    assert pool.state() == before["state"]


def cli(box, *argv, **kw):
    env = box.sim.plugin_env(box.hosts["h1"])
    return subprocess.run([sys.executable, "-m", "netoffload"] + list(argv),
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          stdin=kw.get("stdin", subprocess.DEVNULL), env=env,
                          cwd=layout.REPO, timeout=120,
                          universal_newlines=True)


def on_a_terminal(box, answer, *argv):
    master, slave = pty.openpty()
    try:
        os.write(master, answer)
        return cli(box, *argv, stdin=slave)
    finally:
        os.close(slave)
        os.close(master)


def stored(box):
    return [(p["level"], p["name"], p["policy"]) for p in json.loads(
        cli(box, "policy", "get", "--json").stdout)["policies"]]


def test_a_pool_policy_without_a_terminal_or_yes_stores_nothing(pool, start):
    done = cli(pool, "policy", "set", "pool", "vif", "all-off")
    assert done.returncode == 2
    assert "--yes" in done.stderr
    assert "host h1" in done.stdout and "vif6.0" in done.stdout  # the plan
    assert pool.state() == start["state"]


def test_the_terminal_asks_yes_after_showing_the_plan(pool, start):
    done = on_a_terminal(pool, b"no\n", "policy", "set", "tag", "vif",
                         "tx-off", "--tag", "bsd")
    assert "Type YES to continue" in done.stdout
    assert "bsd/vif0" in done.stdout
    assert (done.returncode, pool.state()) == (2, start["state"])
    done = on_a_terminal(pool, b"YES\n", "policy", "set", "tag", "vif",
                         "tx-off", "--tag", "bsd")
    assert done.returncode == 0, done.stderr
    assert stored(pool) == [("tag", "bsd", "tx-off")]


def test_dry_run_shows_the_plan_and_stores_nothing(pool, start):
    done = cli(pool, "policy", "set", "pool", "pif", "sg=off", "--dry-run")
    assert done.returncode == 0, done.stderr
    assert "dry run, nothing was stored" in done.stdout
    assert "h1/eth0" in done.stdout and "h2/eth0" in done.stdout
    assert pool.state() == start["state"]


def test_yes_stores_and_says_when_the_watcher_enforces_it(pool, start):
    done = cli(pool, "policy", "set", "pool", "vif", "tx-off", "--yes")
    assert done.returncode == 0, done.stderr
    assert "pool vif" in done.stdout and "(none set) -> tx-off" in done.stdout
    assert "the watcher" in done.stdout and "within seconds" in done.stdout
    assert "netoffload apply" not in done.stdout
    # stored only: the keys and devices are the watcher's to change
    assert live(pool, "h1", "vif6.0")["tx"] == "on"
    cleared = cli(pool, "policy", "clear", "pool", "vif", "--yes", "--json")
    assert cleared.returncode == 0, cleared.stderr
    result = json.loads(cleared.stdout)
    assert (result["policy"], result["previous"]) == (None, "tx-off")
    assert stored(pool) == []


def test_a_vm_policy_needs_no_yes(pool, start):
    done = cli(pool, "policy", "set", "vm", "vif", "tx-off", "--vm", "bsd")
    assert done.returncode == 0, done.stderr
    assert "vif6.0" in done.stdout
    assert stored(pool) == [("vm", "bsd", "tx-off")]


@pytest.mark.parametrize("argv,needs", [
    (["policy", "set", "host", "pif", "gro=off", "--yes"], "host="),
    (["policy", "set", "vm", "vif", "tx-off"], "vm="),
    (["policy", "clear", "network", "vif", "--yes"], "network="),
], ids=["host", "vm", "network"])
def test_an_omitted_selector_is_a_usage_error(pool, start, argv, needs):
    done = cli(pool, *argv)
    assert done.returncode == 2
    assert "NETOFFLOAD_BAD_ARGUMENT" in done.stderr and needs in done.stderr
    assert pool.state() == start["state"]


def test_apply_with_a_tag_policy_asks_like_policy_set(pool, start):
    done = cli(pool, "apply", "tag=bsd", "--policy", "tx-off")
    assert done.returncode == 2 and "--yes" in done.stderr
    assert pool.state() == start["state"]
    done = cli(pool, "apply", "tag=bsd", "--policy", "tx-off", "--yes")
    assert done.returncode == 0, done.stderr
    assert live(pool, "h1", "vif6.0")["tx"] == "off"


def test_sriov_vifs_are_shown_as_skipped(pool, start):
    """(Last in this module: it adds an SR-IOV network and a VM to the
    module's pool.)"""
    [eth0] = [r for r in pool.api.PIF.get_all()
              if pool.api.PIF.get_physical(r)
              and pool.api.PIF.get_host(r) == pool.hosts["h1"]]
    net = pool.sim.add_network("SR-IOV")
    pool.add_sriov(eth0, net)
    fw = pool.sim.add_vm("fw", power_state="Running",
                         resident_on=pool.hosts["h1"], domid=8)
    pool.sim.add_vif(fw, net, 0)
    start.update(state=pool.state())  # the new objects are the start now
    line = "skipped fw/vif0: sr-iov (no dom0 device)"
    assert line in cli(pool, "status", "vm=fw").stdout
    assert line in cli(pool, "policy", "set", "pool", "vif", "tx-off",
                       "--dry-run").stdout
    done = cli(pool, "apply", "vm=fw", "--policy", "tx-off")
    assert done.returncode == 0, done.stderr
    assert line in done.stdout
