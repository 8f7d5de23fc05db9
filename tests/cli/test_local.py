"""`netoffload show|set|restore` run as a real process inside a namespace."""
import json
import os
import sys

import pytest

from netoffload.engine.ethtool import parse_features_text
from tests.support import layout

ROOT = layout.REPO
pytestmark = pytest.mark.root


@pytest.fixture
def cli(netns, state_dir):
    def run(*argv):
        env = dict(os.environ, NETOFFLOAD_STATE_DIR=state_dir,
                   PYTHONPATH=ROOT, LC_ALL="C")
        return netns.run([sys.executable, "-m", "netoffload"] + list(argv),
                         check=False, env=env, cwd=ROOT)
    return run


@pytest.fixture
def veth(netns):
    netns.add_veth("dut", "dutpeer")
    return "dut"


def table_rows(text):
    lines = text.splitlines()
    header = lines[0].split()
    return dict((line.split()[0], dict(zip(header[1:], line.split()[1:])))
                for line in lines[1:] if line and not line.startswith("("))


def test_show_table_marks_fixed_and_absent(cli, netns, veth):
    done = cli("show")
    assert done.returncode == 0, done.stderr
    rows = table_rows(done.stdout)
    assert set(rows) == {"lo", "dut", "dutpeer"}
    expected = parse_features_text(netns.ethtool_k("dut"))
    for short, state in expected.features.items():
        cell = rows["dut"][short]
        if state.active is None:
            assert cell == "-"
        else:
            assert cell == ("on" if state.active else "off") + \
                ("*" if state.fixed else "")
    assert rows["dut"]["lro"] == "off*" and rows["dut"]["ufo"] == "-"


def test_show_json(cli, netns, veth):
    done = cli("show", "dut", "--json")
    assert done.returncode == 0
    data = json.loads(done.stdout)
    assert [d["device"] for d in data["devices"]] == ["dut"]
    assert data["devices"][0]["features"] == \
        parse_features_text(netns.ethtool_k("dut")).as_onoff()
    assert data["errors"] == []


@pytest.mark.parametrize("argv", [["show", "dut", "gone0"], ["show", "gone0"],
                                  ["set", "gone0", "tx=off"],
                                  ["set", "dut", "gone0", "tx=off"]])
def test_missing_device_is_usage_error_before_any_output(cli, netns, veth,
                                                         state_dir, argv):
    """docs/engine.md: an unknown device is bad usage (2); no table comes
    before the error, nothing changes, the name is said once."""
    before = netns.ethtool_k("dut")
    done = cli(*argv)
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr == "netoffload: NETOFFLOAD_NOT_FOUND: no network " \
        "device gone0 on this host\n"
    as_json = cli(*(argv + ["--json"]))
    assert as_json.returncode == 2
    assert json.loads(as_json.stdout)["error"]["code"] == "NETOFFLOAD_NOT_FOUND"
    assert netns.ethtool_k("dut") == before
    assert os.listdir(state_dir) == []


def test_set_then_restore_round_trip(cli, netns, veth):
    original = {d: netns.ethtool_k(d) for d in ("dut", "dutpeer")}
    done = cli("set", "dut", "dutpeer", "all-off", "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    data = json.loads(done.stdout)
    assert [r["device"] for r in data["results"]] == ["dut", "dutpeer"]
    for dev in ("dut", "dutpeer"):
        live = parse_features_text(netns.ethtool_k(dev)).as_onoff()
        assert set(live.values()) == {"off"}
    again = cli("set", "dut", "all-off", "--json")
    assert again.returncode == 0
    result = json.loads(again.stdout)["results"][0]
    assert result["ran_command"] is False
    assert set(result["features"].values()) == {"unchanged", "unsupported"}
    done = cli("restore", "--all")
    assert done.returncode == 0, done.stderr
    assert {d: netns.ethtool_k(d) for d in ("dut", "dutpeer")} == original


def test_set_dry_run_changes_nothing(cli, netns, veth, state_dir):
    before = netns.ethtool_k("dut")
    done = cli("set", "dut", "tx-off", "--dry-run")
    assert done.returncode == 0
    assert "tx on->off (dry run)" in done.stdout
    assert netns.ethtool_k("dut") == before
    assert os.listdir(state_dir) == []


@pytest.mark.parametrize("argv", [
    ["set", "dut", "all-of"],
    ["set", "dut", "tx=maybe"],
    ["set", "dut", "bad;name", "all-off"],
    ["set", "all-off"],
    ["set", "dut", "dut", "tx-off"],
    ["restore"],
    ["restore", "dut", "--all"],
    ["show", "x" * 20],
], ids=["bad-profile", "bad-value", "bad-device-among-good", "no-device",
        "duplicate", "restore-nothing", "restore-both", "show-bad-name"])
def test_bad_usage_exits_2_and_changes_nothing(cli, netns, veth, state_dir,
                                                argv):
    before = netns.ethtool_k("dut")
    done = cli(*argv)
    assert done.returncode == 2, done.stdout + done.stderr
    # our own refusal, or argparse's usage error
    assert "NETOFFLOAD_BAD_ARGUMENT" in done.stderr or \
        done.stderr.startswith("usage:")
    assert netns.ethtool_k("dut") == before
    assert os.listdir(state_dir) == []


def test_partial_failure_exits_1(cli, netns, veth):
    netns.add_macvlan("mv0", "dut")
    done = cli("set", "dutpeer", "mv0", "gso=off")
    # the veth peer changes; macvlan keeps gso from its lower device
    assert done.returncode == 1
    assert "dutpeer: gso on->off" in done.stdout
    assert "mv0: gso failed" in done.stdout


def test_policy_none_changes_nothing(cli, netns, veth, state_dir):
    before = netns.ethtool_k("dut")
    done = cli("set", "dut", "none")
    assert done.returncode == 0
    assert "dut: nothing to do" in done.stdout
    assert netns.ethtool_k("dut") == before
