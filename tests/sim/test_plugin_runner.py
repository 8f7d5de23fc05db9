"""host.call_plugin through the simulator: the plugin runs as a subprocess
with the call in argv[1] (using the sim's XenAPIPlugin double), and its stdout
is mapped to results and errors the way xapi maps them."""
import json
import os
import stat
import subprocess
import sys
import xmlrpc.client

import pytest
import XenAPI

from sim import xapi_plugins
from sim.xapi_sim import SIM_PYLIB
from tests.support.simpool import SimPool

# plugins run in a private mount namespace (sim/dom0view.py): root only
pytestmark = pytest.mark.root

PLUGIN = r'''#!/usr/bin/python3
import json
import os
import signal
import sys

import XenAPIPlugin


def inventory_uuid():
    with open("/etc/xensource-inventory") as fh:
        for line in fh:
            key, _, value = line.strip().partition("=")
            if key == "INSTALLATION_UUID":
                return value.strip("'")


def environment():
    with open("/proc/self/environ", "rb") as fh:
        items = [i.decode() for i in fh.read().split(b"\0") if i]
    return dict(i.partition("=")[::2] for i in items)


def whoami(session, args):
    host = session.xenapi.host.get_by_uuid(inventory_uuid())
    with open("/var/lib/netoffload/argv.json", "w") as fh:
        json.dump(sys.argv, fh)
    return json.dumps({"args": args, "host": host, "session": session.handle,
                       # as started (python >= 3.7 adds LC_CTYPE itself)
                       "env": environment(),
                       "stdin": os.readlink("/proc/self/fd/0"),
                       "pool_session": session.xenapi.session.get_pool(
                           session.handle),
                       "devices": sorted(os.listdir("/sys/class/net")),
                       "pool_vms": len(session.xenapi.VM.get_all())})


def fail(session, args):
    raise XenAPIPlugin.Failure("NETOFFLOAD_NOT_FOUND", ["no such VM", args.get("vm", "")])


def crash(session, args):
    return {}["missing"]


def chatty(session, args):
    print("debug output that breaks the call")
    return "ok"


def exit_3(session, args):
    sys.stderr.write("dying\n")
    sys.exit(3)


def killed(session, args):
    os.kill(os.getpid(), signal.SIGKILL)


def not_a_string(session, args):
    return {"a": "b"}


def int_params(session, args):
    raise XenAPIPlugin.Failure("CODE", [1, 2])


XenAPIPlugin.dispatch({"whoami": whoami, "fail": fail, "crash": crash,
                       "chatty": chatty, "exit_3": exit_3, "killed": killed,
                       "not_a_string": not_a_string, "int_params": int_params})
'''


@pytest.fixture
def plugin_dir(sock_dir):
    path = os.path.join(sock_dir, "plugins")
    os.mkdir(path)
    target = os.path.join(path, "testplugin")
    with open(target, "w") as fh:
        fh.write(PLUGIN)
    os.chmod(target, stat.S_IRWXU)
    return path


@pytest.fixture
def sim(plugin_dir):
    with SimPool(plugin_dir=plugin_dir) as pool:
        simulator = pool.sim
        simulator.master = pool.add_host("master")
        simulator.member = pool.add_host("member")
        simulator.add_vm("web01", power_state="Running",
                         resident_on=simulator.member)
        yield simulator


@pytest.fixture
def session(sim):
    client = XenAPI.Session("http://%s/" % sim.socket_path.replace("/", "_"),
                            transport=XenAPI.UDSTransport())
    client.login_with_password("root", "")
    return client


def test_plugin_runs_with_call_in_argv_and_reaches_the_sim(sim, session):
    hostile = {"vm": "a b; rm -rf / $(id) `x` 'q' \"d\" é", "long": "x" * 10240,
               "empty": ""}
    result = json.loads(session.xenapi.host.call_plugin(
        sim.master, "testplugin", "whoami", hostile))
    assert result["args"] == hostile
    assert result["host"] == sim.master  # its own inventory
    # on the master: the caller's session, no login
    assert result["session"] == session.handle
    # exactly xapi's conditions: PATH only, stdin /dev/null
    assert result["env"] == {"PATH": "/sbin:/usr/sbin:/bin:/usr/bin"}
    assert result["stdin"] == "/dev/null"
    assert result["pool_vms"] == len(session.xenapi.VM.get_all())
    with open(os.path.join(sim.state_dir(sim.master), "argv.json")) as fh:
        argv = json.load(fh)
    assert argv[0] == "/etc/xapi.d/plugins/testplugin" and len(argv) == 2
    params, method = xmlrpc.client.loads(argv[1])
    assert (method, params) == ("whoami", (session.handle, hostile))


def test_forwarded_call_gets_a_fresh_session_destroyed_after(sim, session):
    """A call to a member is forwarded: it runs there with a fresh internal
    pool session that the master destroys when the call returns
    (ocaml/xapi/message_forwarding.ml), never the caller's."""
    result = json.loads(session.xenapi.host.call_plugin(
        sim.member, "testplugin", "whoami", {}))
    assert result["host"] == sim.member  # the member's inventory
    assert result["session"] != session.handle
    assert result["pool_session"] is True  # alive during the call: internal
    with pytest.raises(XenAPI.Failure) as info:  # gone after
        session.xenapi.session.get_pool(result["session"])
    assert info.value.details == ["HANDLE_INVALID", "session",
                                  result["session"]]
    assert session.xenapi.session.get_pool(session.handle) is False
    assert result["env"] == {"PATH": "/sbin:/usr/sbin:/bin:/usr/bin"}


CASES = [
    ("failure", "fail", {"vm": "ghost"},
     ["NETOFFLOAD_NOT_FOUND", "no such VM", "ghost"]),
    ("unexpected-exception", "crash", {},
     ["XENAPI_PLUGIN_FAILURE", "crash", "KeyError", "'missing'"]),
    ("unknown-function", "nosuchfn", {},
     ["UNKNOWN_XENAPI_PLUGIN_FUNCTION", "nosuchfn"]),
]


@pytest.mark.parametrize("fn,args,expected", [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])
def test_plugin_failures_reach_the_caller(sim, session, fn, args, expected):
    with pytest.raises(XenAPI.Failure) as info:
        session.xenapi.host.call_plugin(sim.master, "testplugin", fn, args)
    assert info.value.details == expected


def test_stdout_noise_breaks_the_call(sim, session):
    with pytest.raises(XenAPI.Failure) as info:
        session.xenapi.host.call_plugin(sim.master, "testplugin", "chatty", {})
    code, what, output, error = info.value.details
    assert (code, what) == ("XENAPI_PLUGIN_FAILURE", "failed to parse plugin output")
    assert output.startswith("debug output that breaks the call\n<?xml")
    assert error


def test_nonzero_exit_and_signal(sim, session):
    with pytest.raises(XenAPI.Failure) as info:
        session.xenapi.host.call_plugin(sim.master, "testplugin", "exit_3", {})
    assert info.value.details == ["XENAPI_PLUGIN_FAILURE", "non-zero exit", "", "dying\n"]
    with pytest.raises(XenAPI.Failure) as info:
        session.xenapi.host.call_plugin(sim.master, "testplugin", "killed", {})
    assert info.value.details[:2] == ["XENAPI_PLUGIN_FAILURE", "signal: SIGKILL"]


@pytest.mark.parametrize("fn", ["not_a_string", "int_params"])
def test_ill_typed_responses_are_internal_errors(sim, session, fn):
    with pytest.raises(XenAPI.Failure) as info:
        session.xenapi.host.call_plugin(sim.master, "testplugin", fn, {})
    assert info.value.details[0] == "INTERNAL_ERROR"


@pytest.mark.parametrize("name", ["nosuch", "../plugins/testplugin", ""],
                         ids=["absent", "path-traversal", "empty"])
def test_missing_plugin(sim, session, name):
    with pytest.raises(XenAPI.Failure) as info:
        session.xenapi.host.call_plugin(sim.master, name, "whoami", {})
    assert info.value.details == ["XENAPI_MISSING_PLUGIN", name]


def test_offline_host_and_bad_args(sim, session):
    sim.set_host_live(sim.member, False)
    with pytest.raises(XenAPI.Failure) as info:
        session.xenapi.host.call_plugin(sim.member, "testplugin", "whoami", {})
    assert info.value.details == ["HOST_OFFLINE", sim.member]
    with pytest.raises(XenAPI.Failure) as info:
        session.xenapi.host.call_plugin("OpaqueRef:gone", "testplugin", "whoami", {})
    assert info.value.details == ["HANDLE_INVALID", "host", "OpaqueRef:gone"]
    with pytest.raises(XenAPI.Failure) as info:
        session.xenapi.host.call_plugin(sim.master, "testplugin", "whoami", {"n": 1})
    assert info.value.details == ["FIELD_TYPE_ERROR", "args"]


def test_plugin_runs_inside_the_hosts_network_namespace(sim, session, netns):
    netns.ip("link", "add", "eth7", "type", "veth", "peer", "name", "eth8")
    sim.configure_host(sim.member, netns=netns.name)
    result = json.loads(session.xenapi.host.call_plugin(
        sim.member, "testplugin", "whoami", {}))
    assert result["devices"] == ["eth7", "eth8", "lo"]
    assert result["host"] == sim.member  # the unix socket is reachable from the ns


# -- the XenAPIPlugin double on its own ---------------------------------------
DIRECT = r'''
import sys
sys.path.insert(0, %r)
import XenAPIPlugin
def ok(session, args):
    return "handle=%%s args=%%s" %% (session.handle, sorted(args.items()))
XenAPIPlugin.dispatch({"ok": ok})
''' % SIM_PYLIB


@pytest.mark.parametrize("argv,expected", [
    ([xapi_plugins.method_call("ok", "OpaqueRef:s", {"k": "v"})],
     {"Status": "Success", "Value": "handle=OpaqueRef:s args=[('k', 'v')]"}),
    ([xmlrpc.client.dumps(("OpaqueRef:s", {}), methodname="ok")],
     {"Status": "Success", "Value": "handle=OpaqueRef:s args=[]"}),
    ([xapi_plugins.method_call("other", "OpaqueRef:s", {})],
     {"Status": "Failure", "ErrorDescription": ["UNKNOWN_XENAPI_PLUGIN_FUNCTION", "other"]}),
], ids=["xapi-style-xml", "python-style-xml", "unknown-fn"])
def test_double_prints_exactly_one_method_response(argv, expected):
    proc = subprocess.run([sys.executable, "-c", DIRECT] + argv,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          universal_newlines=True, timeout=30,
                          env=dict(os.environ, NETOFFLOAD_XAPI_URL="http://127.0.0.1:9/"))
    assert proc.returncode == 0, proc.stderr
    params, method = xmlrpc.client.loads(proc.stdout)
    assert method is None and params == (expected,)


def test_double_with_wrong_argv_fails_like_the_real_module():
    proc = subprocess.run([sys.executable, "-c", DIRECT],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          universal_newlines=True, timeout=30)
    assert proc.returncode != 0 and proc.stdout == ""
    assert "Incorrect number of commandline arguments" in proc.stderr
