"""doctor: parsers, and the plugin function as xapi runs it (simulator)."""
import json
import os
import re
import shlex
import sys

import pytest

from netoffload.cli import build_parser, output
from netoffload.diagnostics import doctor
from netoffload.errors import BadArgument
from netoffload.plugin import diagnostics
from tests.support import layout
from tests.support.simpool import SimPool

FIXTURES = os.path.join(layout.FIXTURES, "diag")
REPO = layout.REPO


def test_parse_xl_sched_credit_table():
    with open(os.path.join(FIXTURES, "xl_sched_credit_d0.txt")) as handle:
        rows = doctor.parse_sched_table(handle.read())
    assert rows == [{"Name": "Domain-0", "ID": 0, "Weight": 256, "Cap": 0}]


@pytest.mark.parametrize("text,expected", [
    pytest.param("Cpupool Pool-0: tslice=30ms ratelimit=1000us\n"
                 "Name                                ID Weight  Cap\n"
                 "Domain-0                             0    512    0\n"
                 "my vm with spaces                    3    256   50\n",
                 [{"Name": "Domain-0", "ID": 0, "Weight": 512, "Cap": 0},
                  {"Name": "my vm with spaces", "ID": 3, "Weight": 256,
                   "Cap": 50}], id="pool-line-and-spaced-name"),
    pytest.param("Domain-0                             0    256    0\n", [],
                 id="no-header"),
    pytest.param("", [], id="empty"),
])
def test_parse_sched_table_shapes(text, expected):
    assert doctor.parse_sched_table(text) == expected


def test_netback_absent_is_unavailable_not_error(tmp_path):
    result = doctor.netback_queues(str(tmp_path / "max_queues"))
    assert result["available"] is False and "not loaded" in result["reason"]
    (tmp_path / "max_queues").write_text("4\n")
    assert doctor.netback_queues(str(tmp_path / "max_queues")) == {
        "available": True, "max_queues": 4}


def test_doctor_takes_no_arguments():
    with pytest.raises(BadArgument):
        diagnostics.doctor(None, {"verbose": "yes"})


# Every branch of the advice: a report with something wrong in each section.
_INVALID = [
    {"level": "pool", "kind": "vif", "uuid": "p-uuid", "name": "",
     "key": "netoffload-vif", "policy": "tx=of", "valid": False, "error": "bad"},
    {"level": "tag", "kind": "vif", "uuid": "p-uuid", "name": "free bsd",
     "key": "netoffload-vif-tag-free bsd", "policy": "x", "valid": False},
    {"level": "host", "kind": "pif", "uuid": "h-uuid", "name": "h1",
     "key": "netoffload-pif", "policy": "x", "valid": False},
    {"level": "network", "kind": "vif", "uuid": "n-uuid", "name": "LAN",
     "key": "netoffload-vif", "policy": "x", "valid": False},
    {"level": "vm", "kind": "vif", "uuid": "v-uuid", "name": "web",
     "key": "netoffload-vif", "policy": "x", "valid": False},
]
_TROUBLED_REPORT = {
    "policy": {
        "available": True, "devices": 2, "covered": 2,
        "non_compliant": [{"device": "vif5.0", "kind": "vif",
                           "differs": ["sg"]}],
        "db_out_of_date": ["vif5.0"],
        "pending_replugs": [{"device": "vif5.0", "vm": "web",
                             "database": {"tx": "off"}, "differs": ["tx"]}],
        "invalid_policies": _INVALID,
    },
    "checksum_counters": {"udp_in_csum_errors": {"value": 3}},
    "devices_with_errors": [{"device": "eth0", "kind": "pif",
                             "nonzero": ["rx_crc_errors"]}],
    "dom0": {"vcpus": 4, "scheduler": {"available": True, "weight": 256},
             "netback": {"available": True, "max_queues": 2}},
}
# What the advice's placeholders stand for, as a user would fill them in.
_PLACEHOLDERS = {"POLICY": "tx-off", "TARGET": "vm=web", "DEV": "eth0",
                 "NAME": "web"}


def _advised_commands(items):
    found = []
    for item in items:
        for text in item.values():
            found.extend(re.findall(r"`(netoffload [^`]*)`", text or ""))
    return found


def _parse_error(command):
    """None if the real CLI parser takes `command` to a verb, else why not."""
    argv = [_PLACEHOLDERS.get(word, word) for word in shlex.split(command)[1:]]
    try:
        args = build_parser().parse_args(argv)
    except (SystemExit, BadArgument):  # netoffload.cli's parser raises
        return "argparse refused %r" % argv
    handler = getattr(args, "handler", None)
    if handler is None or handler is output.show_group_help:
        return "no verb in %r" % argv
    return None


def test_every_command_the_doctor_advises_parses_with_the_real_cli(capsys):
    items = doctor._advice(_TROUBLED_REPORT)
    commands = _advised_commands(items)
    assert "netoffload policy set vm vif POLICY --vm v-uuid" in commands
    assert "netoffload policy set pool vif POLICY" in commands
    assert "netoffload policy set tag vif POLICY --tag 'free bsd'" in commands
    assert any(c.startswith("netoffload apply ") for c in commands)
    assert any(c.startswith("netoffload check-checksums ") for c in commands)
    assert dict((c, _parse_error(c)) for c in commands) == \
        dict((c, None) for c in commands)
    capsys.readouterr()  # argparse's complaints, if any


def test_the_advice_check_catches_a_command_the_cli_lacks(capsys):
    assert _parse_error("netoffload set-policy vm vif tx-off") is not None
    assert _parse_error("netoffload policy") is not None  # no verb
    capsys.readouterr()


@pytest.fixture
def simpool():
    """One simulated host (a namespace) with eth0 and a running VM whose
    VIF carries ethtool-tx=off in the database while its vif5.0 is live
    with tx on (a pending replug); the test's pool policy sg=off makes it
    non-compliant too (the explicit tx key is left to xapi)."""
    with SimPool() as pool:
        sim = pool.sim
        lan = sim.add_network("LAN")
        host = pool.add_host("h1", netns=True)
        ns = pool.ns["h1"]
        ns.add_veth("eth0", "peer0")
        sim.add_pif(host, lan, "eth0")
        vm = sim.add_vm("web", power_state="Running", resident_on=host,
                        domid=5)
        sim.add_vif(vm, lan, 0, other_config={"ethtool-tx": "off"})
        ns.add_veth("vif5.0", "guest5")
        yield sim, pool.session, host, ns


@pytest.mark.root
def test_doctor_plugin_reports_policy_replugs_and_advice(simpool):
    sim, session, host, ns = simpool
    session.xenapi.host.call_plugin(host, "netoffload", "set_policy", {
        "level": "pool", "kind": "vif", "policy": "sg=off",
        "confirm": "yes"})
    text = session.xenapi.host.call_plugin(host, "netoffload", "doctor", {})
    report = json.loads(text)
    policy = report["policy"]
    assert policy["available"] is True, policy
    assert [(d["device"], d["differs"]) for d in policy["non_compliant"]] == \
        [("vif5.0", ["sg"])]
    assert [(d["device"], d["database"], d["differs"])
            for d in policy["pending_replugs"]] == \
        [("vif5.0", {"tx": "off"}, ["tx"])]
    items = dict((a["item"], a) for a in report["advice"])
    assert "non-compliant device vif5.0" in items
    assert "pending replug vif5.0" in items
    # the tx key is someone else's: no claim that netoffload enforces it
    replug = items["pending replug vif5.0"]["advice"]
    assert "already enforces" not in replug
    assert "ethtool-tx=off" in replug and "not set by netoffload" in replug
    assert "set-policy" not in json.dumps(report)
    assert all(a["reason"] for a in report["advice"])
    # no Xen here: reported as unavailable, not as a failure
    assert report["dom0"]["scheduler"]["available"] is False
    assert report["dom0"]["netback"]["available"] is False
    assert report["dom0"]["vcpus"] >= 1
    assert "tx off also forces tso" in items["checksum drops"]["cost"] or \
        "lowers throughput" in items["checksum drops"]["cost"]


@pytest.mark.root
def test_doctor_cli_without_xapi_says_so_and_continues(netns):
    env = dict(os.environ, NETOFFLOAD_XAPI_URL="http://127.0.0.1:1/",
               PYTHONPATH=REPO)
    done = netns.run([sys.executable, "-m", "netoffload", "doctor", "--json"],
                     env=env, check=False, cwd=REPO)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["policy"]["available"] is False
    assert "unreachable" in report["policy"]["reason"]
    assert report["advice"][0]["item"] == "policy"
    assert "checksum_counters" in report and "devices_with_errors" in report


@pytest.mark.root
def test_doctor_counts_an_invalid_policy_as_status_does(simpool):
    """A typo stored with xe: status calls the device not compliant (exit
    1), and the doctor counts it the same way."""
    sim, session, host, ns = simpool
    pool = session.xenapi.pool.get_all()[0]
    session.xenapi.pool.add_to_other_config(pool, "netoffload-vif", "tx=of")
    status = json.loads(session.xenapi.host.call_plugin(
        host, "netoffload", "status", {}))
    not_compliant = sorted(d["device"] for d in status["devices"]
                           if not d["compliant"])
    assert not_compliant == ["vif5.0"]
    report = json.loads(session.xenapi.host.call_plugin(
        host, "netoffload", "doctor", {}))
    policy = report["policy"]
    assert sorted(d["device"] for d in policy["non_compliant"]) == not_compliant
    assert policy["non_compliant"][0]["policy_error"]
    assert len(policy["invalid_policies"]) == 1
    items = [a["item"] for a in report["advice"]]
    assert "invalid policy netoffload-vif on pool " in " ".join(items) + " "
    # the invalid policy's item says what to do; no second, vaguer one
    assert "non-compliant device vif5.0" not in items


def test_doctor_counts_overrides_and_drift():
    """docs/policy.md fields, as status entries carry them."""
    report = dict(_TROUBLED_REPORT)
    report["policy"] = dict(_TROUBLED_REPORT["policy"], overrides=[
        {"device": "vif3.0", "overrides": [
            {"feature": "tx", "value": "on", "source": "explicit",
             "why": "changed by someone after netoffload wrote it"}]}],
        drift=[{"device": "vif1.0", "drift": {"features": {"tx": "on"},
                                              "since": 1764633600.0}}])
    items = dict((a["item"], a) for a in doctor._advice(report))
    assert "vif3.0" in items["explicit settings"]["reason"]
    assert items["drift vif1.0"]["reason"] == \
        "live tx=on differ from the policy since 2025-12-02 00:00:00 UTC"
