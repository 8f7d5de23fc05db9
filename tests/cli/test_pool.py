"""The `netoffload` CLI verbs over the plugin, run as a dom0 admin would:
a process with the host's environment, talking to the simulator, which
runs the plugin in the host's network namespace."""
import json
import os
import pty
import subprocess
import sys

import pytest

from tests.support import layout
from tests.support.simpool import dom0_pool, live

pytestmark = pytest.mark.root

REPO = layout.REPO


@pytest.fixture(scope="module")
def pool():
    box = dom0_pool(hosts=2)
    try:
        yield box
    finally:
        box.close()


def cli(box, *argv, **kw):
    env = box.sim.plugin_env(box.hosts["h1"])
    return subprocess.run([sys.executable, "-m", "netoffload"] + list(argv),
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          stdin=kw.get("stdin", subprocess.DEVNULL), env=env,
                          cwd=REPO, timeout=120, universal_newlines=True)


def test_policy_set_get_and_clear(pool):
    done = cli(pool, "policy", "set", "tag", "vif", "tx-off", "--tag", "bsd",
               "--yes")
    assert done.returncode == 0, done.stderr
    assert "tag vif bsd: None -> tx-off" in done.stdout
    shown = cli(pool, "policy", "get", "--json")
    assert [(p["level"], p["name"], p["policy"])
            for p in json.loads(shown.stdout)["policies"]] == [
        ("tag", "bsd", "tx-off")]
    assert cli(pool, "policy", "set", "tag", "vif", "", "--tag",
               "bsd", "--yes").returncode == 0
    assert "no policy is set" in cli(pool, "policy", "get").stdout


USAGE_CASES = [
    ("lowercase-all", ["apply", "all"], "ALL (in capitals)"),
    ("bad-target-kind", ["apply", "host=h1"], "vm=NAME"),
    ("unknown-vm", ["apply", "vm=nobody"], "NETOFFLOAD_NOT_FOUND"),
    ("bad-policy", ["apply", "vm=bsd", "--policy", "tx=maybe"],
     "NETOFFLOAD_BAD_ARGUMENT"),
    ("all-without-tty-or-yes", ["apply", "ALL", "--policy", "all-off"],
     "--yes"),
    ("shell-in-name", ["status", "vm=$(reboot)"], "NETOFFLOAD_NOT_FOUND"),
]


@pytest.mark.parametrize("argv,message", [c[1:] for c in USAGE_CASES],
                         ids=[c[0] for c in USAGE_CASES])
def test_usage_errors_exit_2_and_change_nothing(pool, argv, message):
    before = pool.state()
    done = cli(pool, *argv)
    assert done.returncode == 2
    assert message in done.stderr
    assert pool.state() == before


def test_apply_vm_then_status_then_revert(pool):
    done = cli(pool, "apply", "vm=bsd", "--policy", "all-off")
    assert done.returncode == 0, done.stderr
    assert "bsd/vif0" in done.stdout and "vif6.0" in done.stdout
    assert "gro,lro on VIFs are enforced live only" in done.stdout
    status = cli(pool, "status", "vm=bsd", "--json")
    assert status.returncode == 0
    [dev] = json.loads(status.stdout)["devices"]
    assert (dev["device"], dev["compliant"]) == ("vif6.0", True)
    table = cli(pool, "status", "vm=bsd").stdout.splitlines()
    assert table[1].split()[:2] == ["DEVICE", "KIND"]
    assert table[2].split()[0] == "vif6.0" and table[2].split()[-1] == "ok"
    assert cli(pool, "revert", "vm=bsd").returncode == 0
    assert live(pool, "h1", "vif6.0")["tx"] == "on"
    cli(pool, "policy", "set", "vm", "vif", "", "--vm", "bsd")


def test_apply_all_asks_on_the_terminal(pool):
    before = pool.state()
    for answer, changed in ((b"no\n", False), (b"YES\n", True)):
        master, slave = pty.openpty()
        try:
            os.write(master, answer)
            done = cli(pool, "apply", "ALL", "--policy", "tx-off", stdin=slave)
        finally:
            os.close(slave)
            os.close(master)
        assert "Type YES to continue" in done.stdout
        assert "h1/eth0" in done.stdout  # the plan was shown first
        assert (pool.state() != before) == changed, done.stderr
    assert live(pool, "h1", "tap5.0")["tx"] == "off"
    done = cli(pool, "revert", "ALL", "--yes", "--pool", "--json")
    assert done.returncode == 0, done.stderr
    assert pool.state() == before


def test_pool_status_lists_every_host(pool):
    done = cli(pool, "status", "--pool", "--json")
    result = json.loads(done.stdout)
    assert sorted(h["name_label"] for h in result["hosts"]) == ["h1", "h2"]
    assert "host h2" in cli(pool, "status", "--pool").stdout
