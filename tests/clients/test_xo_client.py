"""Xen Orchestra's own client (npm `xen-api`, pinned by
tests/clients/xo/package-lock.json, installed by tools/bootstrap) against
the simulator, over JSON-RPC and forced onto XML-RPC.

The client is the oracle: it refuses what xapi would not send (a 404 on
/jsonrpc, a wrong content type, pretty-printed XML, empty strings it cannot
read, no system.listMethods, no Async calls or task events, errors in
another form), so these tests fail when the simulator's wire behaviour
drifts from xapi's. The transcript (STEP lines) is printed.
"""
import json
import os
import shutil
import subprocess

import pytest

import netoffload
from tests.support import layout
from tests.support.simpool import SimPool
from tests.support.tools import in_ci

XO_DIR = os.path.join(layout.REPO, "tests", "clients", "xo")
SCRIPT = os.path.join(XO_DIR, "conformance.mjs")
VM = "web 01"
GHOST = "no such vm \u00e9"

pytestmark = pytest.mark.root  # the plugin runs in the host's namespace


def node():
    """The node binary, with the pinned client installed; else skip
    (locally) or fail (CI) saying how to get it."""
    path = shutil.which("node")
    installed = os.path.isdir(os.path.join(XO_DIR, "node_modules", "xen-api"))
    if path and installed:
        return path
    message = ("Xen Orchestra's client needs Node.js and `npm ci` in %s: "
               "run tools/bootstrap" % XO_DIR)
    if in_ci():
        pytest.fail("CI must run the XO client tests: " + message,
                    pytrace=False)
    pytest.skip(message)


@pytest.fixture(scope="module")
def pool():
    sp = SimPool(port=0)
    try:
        sim = sp.sim
        host = sp.add_host("h1", netns=True)
        sp.ns["h1"].add_veth("eth0", "peer0")
        lan = sim.add_network("LAN", other_config={})
        sim.add_pif(host, lan, "eth0", management=True)
        vm = sim.add_vm(VM, tags=["xo"], power_state="Running",
                        resident_on=host, domid=5)
        sim.add_vif(vm, lan, 0, xo6=True)
        sp.ns["h1"].add_veth("vif5.0", "guest5")
        yield sp
    finally:
        sp.close()


def run_client(pool, transport):
    proc = subprocess.run(
        [node(), SCRIPT, pool.sim.url.rstrip("/"), transport, pool.hosts["h1"],
         VM], cwd=XO_DIR, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        universal_newlines=True, timeout=180)
    print(proc.stdout)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[-1].startswith("RESULT ")
    steps = [line.split(" ", 1)[1] for line in lines if line.startswith("STEP ")]
    return json.loads(lines[-1][len("RESULT "):]), steps


@pytest.mark.parametrize("transport", ["json-rpc", "xml-rpc"])
def test_xo_client_connects_reads_follows_and_calls_the_plugin(pool,
                                                               transport):
    before = pool.call_counts()
    result, steps = run_client(pool, transport)
    calls = dict((m, n - before.get(m, 0))
                 for m, n in pool.call_counts().items())
    # connect: a session, the pool, the types from system.listMethods
    assert result["session"].startswith("OpaqueRef:")
    assert result["pool"] == pool.pool_ref
    assert calls.get("system.listMethods", 0) >= 1
    assert calls.get("event.inject", 0) >= 1 and calls.get("event.from", 0) >= 2
    # records, as each protocol carries them: int64 fields are numbers in
    # JSON-RPC and strings in XML-RPC; "" stays ""
    records = result["records"]
    db = pool.snapshot_db()
    assert (records["hosts"], records["vms"], records["vifs"],
            records["pifs"]) == (len(db["host"]), len(db["VM"]),
                                 len(db["VIF"]), len(db["PIF"]))
    assert (records["host_name"], records["vm_vifs"], records["vm_tags"],
            records["pif_device"], records["pif_properties"]) == (
        "h1", 1, ["xo"], "eth0", {"gro": "on"})
    assert records["empty_description"] == ""
    if transport == "json-rpc":
        assert (records["vm_domid"], records["pif_vlan"]) == (5, -1)
    else:
        assert (records["vm_domid"], records["pif_vlan"]) == ("5", "-1")
    cached = result["cached"]
    for cls in ("host", "VM", "VIF", "PIF", "network", "pool"):
        assert cached[cls] == len(db[cls])
    # events followed
    assert result["events"] == "followed"
    # plugin calls
    plugin = result["plugin"]
    assert plugin["version"] == netoffload.__version__
    assert plugin["status_devices"] == 1 and plugin["dry_run"] is True
    assert plugin["policies"] >= 0
    # callAsync: a task, followed until it succeeds with the plugin's JSON
    assert calls.get("Async.host.call_plugin") == 2
    assert calls.get("task.destroy") == 2  # XO cleans up its tasks
    assert json.loads(result["async"]["text"])["devices"][0]["device"] == \
        "vif5.0"
    # a plugin error, sync and through a failed task: code and params
    for key in ("error", "async_error"):
        assert result[key]["code"] == "NETOFFLOAD_NOT_FOUND"
        assert any(GHOST in p for p in result[key]["params"])
    assert result["async_error_task_status"] == "failure"
    assert result["api_error"] == {
        "code": "HANDLE_INVALID",
        "params": ["VM", "OpaqueRef:00000000-0000-0000-0000-000000000000"]}
    assert any(s.startswith("callAsync status") for s in steps)
    # nothing left behind: XO destroyed its tasks, logged out
    assert pool.api.task.get_all() == []
