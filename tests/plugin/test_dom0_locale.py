"""The plugin under xapi's exact conditions on a Python 3.6 dom0.

xapi runs a plugin with PATH only (no LANG) and stdin from /dev/null. On
Python 3.6 argv and stdio are then ASCII: the real XenAPIPlugin.dispatch
decodes argv[1] with xmlrpclib.loads outside its try block, so a non-ASCII
argument crashes it, and a non-ASCII Failure message crashes at print.
Either way the caller would get XENAPI_PLUGIN_FAILURE instead of the
answer. Here the simulator runs the plugin exactly so (sim/dom0view.py),
with Python 3.6 as dom0's /usr/bin/python3; every call must end in success
or a NETOFFLOAD_* code.
"""
import os
import stat

import pytest
import XenAPI

from tests.support.simpool import dom0_pool
from tests.support.tools import interpreter

pytestmark = pytest.mark.root

VM = "caf\u00e9 \u2615 d\u00e9j\u00e0"
NETWORK = "R\u00e9seau \u00e9tage 2"
TAG = "\u00fcn\u00efc\u00f8de"
GHOST = "fant\u00f4me \u2603"

# The naive plugin: what the trap does to any plugin that hands argv and
# stdout to XenAPIPlugin as they come. Proves the conditions are real.
NAIVE = u"""#!/usr/bin/python3
import sys

import XenAPIPlugin


def echo(session, args):
    return "ok"


def refuse(session, args):
    raise XenAPIPlugin.Failure("NAIVE_NOT_FOUND", [u"no VM named caf\\u00e9"])


def probe(session, args):
    return "%d.%d %s %s" % (sys.version_info[0], sys.version_info[1],
                            sys.getfilesystemencoding(), sys.stdout.encoding)


XenAPIPlugin.dispatch({"echo": echo, "refuse": refuse, "probe": probe})
"""


@pytest.fixture(scope="module")
def python36():
    found = interpreter("3.6")
    if found is None:
        pytest.skip("no Python 3.6 on this machine (pyenv or /usr/bin)")
    return found


@pytest.fixture
def pool(python36):
    box = dom0_pool()
    try:
        sim = box.sim
        box.net = sim.add_network(NETWORK)
        for name in box.hosts:
            sim.configure_host(box.hosts[name], python3=python36)
        box.cafe = sim.add_vm(VM, tags=[TAG], power_state="Running",
                              resident_on=box.hosts["h1"], domid=9)
        box.cafe_vif = sim.add_vif(box.cafe, box.net, 0)
        box.ns["h1"].add_veth("vif9.0", "guest9")
        yield box
    finally:
        box.close()


def outcome(pool, fn, host="h1", **args):
    """("ok", parsed JSON) or ("error", error description)."""
    try:
        return "ok", pool.call(fn, host=host, **args)
    except XenAPI.Failure as exc:
        return "error", exc.details


@pytest.mark.parametrize("fn, args", [
    ("status", {"vm": VM}),
    ("status", {"network": NETWORK}),
    ("status", {"tag": TAG}),
    ("apply", {"vm": VM, "policy": "tx-off", "dry_run": "yes"}),
    ("apply", {"tag": TAG, "policy": "tx-off"}),
    ("set_policy", {"level": "tag", "tag": TAG, "policy": "all-off"}),
    ("get_policy", {}),
    ("revert", {"vm": VM}),
    ("apply", {"vm": GHOST}),                  # non-ASCII Failure message
    ("status", {"network": GHOST}),
    ("set_policy", {"level": "vm", "vm": VM, "policy": "tx=\u00f6ff"}),
], ids=["status-vm", "status-network", "status-tag", "apply-dry-run",
        "apply-tag", "set-policy-tag", "get-policy", "revert-vm",
        "not-found-vm", "not-found-network", "bad-policy"])
def test_non_ascii_calls_end_in_success_or_a_netoffload_code(pool, fn, args):
    kind, value = outcome(pool, fn, **args)
    if kind == "error":
        assert value[0].startswith("NETOFFLOAD_"), value
        assert value[0] != "XENAPI_PLUGIN_FAILURE"
    else:
        assert isinstance(value, dict)


def test_non_ascii_names_reach_the_plugin_intact(pool):
    kind, value = outcome(pool, "apply", vm=GHOST)
    assert kind == "error" and value[0] == "NETOFFLOAD_NOT_FOUND"
    assert GHOST in " ".join(value[1:])  # decoded as UTF-8, not mangled
    kind, value = outcome(pool, "status", vm=VM)
    assert kind == "ok"
    assert [d["vm"]["name_label"] for d in value["devices"]
            if d.get("vm")] == [VM]


def test_forwarded_call_to_a_member_too(pool):
    kind, value = outcome(pool, "apply", host="h2", vm=GHOST)
    assert kind == "error" and value[0] == "NETOFFLOAD_NOT_FOUND", value


@pytest.fixture
def naive(pool, tmp_path):
    plugin_dir = tmp_path / "plugins"
    plugin_dir.mkdir()
    (plugin_dir / "naive").write_text(NAIVE, encoding="utf-8")
    os.chmod(str(plugin_dir / "naive"), stat.S_IRWXU)
    pool.sim.configure_host(pool.hosts["h1"], plugin_dir=str(plugin_dir))

    def call(fn, args):
        return pool.api.host.call_plugin(pool.hosts["h1"], "naive", fn, args)
    return call


def test_dom0_python_is_36_with_an_ascii_locale(naive):
    assert naive("probe", {}) == "3.6 ascii ANSI_X3.4-1968"


def test_the_conditions_break_a_naive_plugin(naive):
    """Control: the same conditions crash a plugin that does not protect
    itself (argv, then print), so the tests above cannot pass by accident."""
    assert naive("echo", {"vm": "plain"}) == "ok"
    for fn, args in (("echo", {"vm": VM}), ("refuse", {"vm": "plain"})):
        with pytest.raises(XenAPI.Failure) as info:
            naive(fn, args)
        assert info.value.details[0] == "XENAPI_PLUGIN_FAILURE"
        assert "UnicodeEncodeError" in info.value.details[-1]
