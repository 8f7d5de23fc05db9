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
    assert "tag vif bsd: (none set) -> tx-off" in done.stdout
    assert "None" not in done.stdout
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
    ("wait-too-long", ["apply", "vm=bsd", "--policy", "all-off", "--wait",
                       "301"], "from 0 to 300"),
    ("wait-not-seconds", ["revert", "ALL", "--yes", "--wait", "soon"],
     "from 0 to 300"),
    ("wait-negative", ["policy", "set", "pool", "vif", "tx-off", "--yes",
                       "--wait", "-1"], "from 0 to 300"),
]


@pytest.mark.parametrize("argv,message", [c[1:] for c in USAGE_CASES],
                         ids=[c[0] for c in USAGE_CASES])
def test_usage_errors_exit_2_and_change_nothing(pool, argv, message):
    before = pool.state()
    done = cli(pool, *argv)
    assert done.returncode == 2
    assert message in done.stderr
    assert pool.state() == before


def test_wait_is_how_long_a_change_waits_for_the_pool_lease(pool):
    import time
    lease = json.dumps({"holder": "apply@elsewhere:1",
                        "op": "0123456789abcdef",
                        "expires": time.time() + 600})
    pool.api.pool.add_to_other_config(pool.pool_ref, "netoffload-lease",
                                      lease)
    try:
        before = pool.state()
        for argv in (["apply", "vm=bsd", "--policy", "all-off"],
                     ["revert", "vm=bsd"],
                     ["policy", "set", "vm", "vif", "tx-off", "--vm", "bsd"]):
            started = time.time()
            done = cli(pool, *(argv + ["--wait", "1", "--json"]))
            assert 1 <= time.time() - started < 15, argv
            assert done.returncode != 0, argv
            assert json.loads(done.stdout)["error"]["code"] == \
                "NETOFFLOAD_BUSY", (argv, done.stdout)
            assert pool.state() == before
    finally:
        pool.api.pool.remove_from_other_config(pool.pool_ref,
                                               "netoffload-lease")


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
    # this host's devices in `summary`, every host's in `pool_summary`
    every = sum(len(h["result"]["devices"]) for h in result["hosts"])
    assert result["pool_summary"]["devices"] == every > \
        result["summary"]["devices"]
    assert result["pool_summary"]["hosts"] == 2
    assert "host h2" in cli(pool, "status", "--pool").stdout


def _widest(text):
    return max([len(line) for line in text.splitlines()] or [0])


def test_status_of_a_vm_on_another_host_says_where_it_runs(pool):
    done = cli(pool, "status", "vm=db")
    assert done.returncode == 1
    assert "db runs on h2, not on this host (h1): add --pool" in done.stderr
    as_json = cli(pool, "status", "vm=db", "--json")
    assert as_json.returncode == 1 and as_json.stderr == ""
    assert "runs on h2" in json.loads(as_json.stdout)["hint"]
    everywhere = cli(pool, "status", "vm=db", "--pool")
    assert everywhere.returncode == 0, everywhere.stderr
    assert "vif7.0" in everywhere.stdout and "runs on" not in everywhere.stderr
    halted = cli(pool, "status", "vm=halted")
    assert halted.returncode == 0
    assert "halted is halted: it has no devices now" in halted.stdout


def test_an_empty_result_from_an_unknown_tag_says_so(pool):
    done = cli(pool, "status", "tag=nosuch")
    # the CLI's note, or the plugin's NOT_FOUND once selection refuses it
    assert "no VM carries the tag 'nosuch'" in done.stdout + done.stderr


@pytest.mark.parametrize("argv,code,exit_code", [
    (["status", "vm=nobody", "--json"], "NETOFFLOAD_NOT_FOUND", 2),
    (["apply", "--json"], "NETOFFLOAD_BAD_ARGUMENT", 2),
    (["apply", "vm=bsd", "--policy", "tx=maybe", "--json"],
     "NETOFFLOAD_BAD_ARGUMENT", 2),
    (["policy", "set", "vm", "vif", "tx-off", "--vm", "nobody", "--json"],
     "NETOFFLOAD_NOT_FOUND", 2),
    (["nosuchverb", "--json"], "NETOFFLOAD_BAD_ARGUMENT", 2),
])
def test_json_errors_are_one_document_on_stdout(pool, argv, code, exit_code):
    done = cli(pool, *argv)
    assert done.returncode == exit_code
    doc = json.loads(done.stdout)  # exactly one document, nothing else
    assert doc["error"]["code"] == code
    assert doc["error"]["message"] and isinstance(doc["error"]["params"], list)


def test_not_found_says_the_name_once(pool):
    done = cli(pool, "status", "vm=nobody")
    assert done.returncode == 2
    assert done.stderr == "netoffload: NETOFFLOAD_NOT_FOUND: no VM has the " \
        "name-label or uuid 'nobody'\n"


def test_refused_all_with_json_is_its_plan(pool):
    before = pool.state()
    done = cli(pool, "apply", "ALL", "--policy", "tx-off", "--pool", "--json")
    assert done.returncode == 2
    doc = json.loads(done.stdout)
    assert doc["error"]["code"] == "NETOFFLOAD_CONFIRM_REQUIRED"
    assert doc["plan"]["dry_run"] is True
    assert any(o["label"] == "h1/eth0" for o in doc["plan"]["objects"])
    assert sorted(h["name_label"] for h in doc["plan"]["hosts"]) == ["h1", "h2"]
    assert pool.state() == before


def test_pool_dry_run_shows_every_hosts_live_plan(pool):
    before = pool.state()
    pool.set_pool_policy("netoffload-vif", "tx-off")
    try:
        done = cli(pool, "apply", "ALL", "--pool", "--dry-run")
        assert done.returncode == 0, done.stderr
        text = done.stdout
        assert "\nhost h1\n" in text and "\nhost h2\n" in text
        h2_part = text.split("\nhost h2\n")[1]
        assert "vif7.0" in h2_part and "would change: tx" in h2_part
        assert text.splitlines()[-1].startswith("plan: ")
        assert _widest(text) <= 100
        doc = json.loads(cli(pool, "apply", "ALL", "--pool", "--dry-run",
                             "--json").stdout)
        h2 = [h for h in doc["hosts"] if h["name_label"] == "h2"][0]
        assert [d["device"] for d in h2["result"]["devices"]
                if d["action"] == "plan"] == ["vif7.0"]
    finally:
        pool.set_pool_policy("netoffload-vif", None)
    assert pool.state() == before


def test_report_which_vms_have_offload_off_and_why(pool):
    pool.set_pool_policy("netoffload-tag:bsd", "all-off")
    pool.set_pool_policy("netoffload-vif", "tx-off")
    try:
        done = cli(pool, "report", "--json")
        assert done.returncode == 0, done.stderr
        doc = json.loads(done.stdout)
        rows = dict((v["vm"], v) for v in doc["vifs"])
        assert rows["bsd"]["off"] == ["gro", "gso", "lro", "rx", "sg", "tso",
                                      "tx", "ufo"]
        assert rows["bsd"]["level"] == "tag:bsd"
        assert rows["bsd"]["devices"] == ["vif6.0"]
        # halted VMs come from the database
        assert rows["halted"]["power_state"] == "Halted"
        assert rows["halted"]["off"] == ["tx"] and rows["halted"]["host"] is None
        # the ethtool-tx=true found on the VIF is a default (XO's stamp):
        # the report shows it, and that the pool's policy decides tx
        assert rows["web 01"]["explicit"] == {"tx": "on"}
        assert rows["web 01"]["sources"]["tx"] == "pool"
        assert rows["web 01"]["off"] == ["tx"]
        assert rows["web 01"]["overrides"] == []
        assert rows["db"]["host"] == "h2" and rows["db"]["devices"] == ["vif7.0"]
        table = cli(pool, "report")
        lines = table.stdout.splitlines()
        assert lines[0].split() == ["VM", "POWER", "HOST", "VIF", "OFF", "WHY"]
        assert any(line.split()[:2] == ["bsd", "Running"] and "all-off" in line
                   and "tag:bsd" in line for line in lines)
        assert _widest(table.stdout) <= 100
        as_csv = cli(pool, "report", "--csv").stdout.splitlines()
        assert as_csv[0].startswith("vm,power_state,host,vif,")
        assert any(line.startswith("halted,Halted,,vif0,") for line in as_csv)
    finally:
        pool.set_pool_policy("netoffload-tag:bsd", None)
        pool.set_pool_policy("netoffload-vif", None)


def test_policy_get_names_the_pool_not_its_uuid(pool):
    pool.set_pool_policy("netoffload-vif", "tx=of")
    try:
        text = cli(pool, "policy", "get").stdout
        pool_uuid = pool.api.pool.get_uuid(pool.pool_ref)
        assert pool_uuid not in text
        assert "(INVALID)" in text and "treated as none" in text
    finally:
        pool.set_pool_policy("netoffload-vif", None)


def test_pool_runs_on_a_terminal_show_progress_on_stderr(pool):
    master, slave = pty.openpty()
    try:
        env = pool.sim.plugin_env(pool.hosts["h1"])
        done = subprocess.run([sys.executable, "-m", "netoffload", "status",
                               "--pool"], stdout=subprocess.PIPE, stderr=slave,
                              stdin=subprocess.DEVNULL, env=env, cwd=REPO,
                              timeout=120, universal_newlines=True)
        os.close(slave)
        slave = None
        err = b""
        while True:
            try:
                chunk = os.read(master, 4096)
            except OSError:
                break
            if not chunk:
                break
            err += chunk
    finally:
        if slave is not None:
            os.close(slave)
        os.close(master)
    assert done.returncode == 0
    text = err.decode()
    assert "netoffload: status on 2 host(s): h1, h2 ..." in text
    assert "every host answered or timed out in" in text
    # not on a pipe
    assert "status on" not in cli(pool, "status", "--pool").stderr
