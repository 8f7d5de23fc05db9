"""A scope=local call's local snapshot gives exactly the whole-pool
snapshot's answers (pool/context.py local_snapshot).

Every function that takes scope=local (status, set_policy, apply, revert;
dry runs and real runs) is called on a three-host pool with policies at
every level (pool VIF and PIF, tag, network, host, VM; an invalid one; an
explicit key; a PIF property), SR-IOV VIFs, a VLAN PIF, VMs named alike
on two hosts, halted VMs and a template: once as the plugin does it (a
local snapshot) and once with the whole-pool snapshot in its place, in the
same plugin process on the host (a driver plugin in place of the real
file, which only swaps context.local_snapshot). The results, or the
errors, must be equal; the local runs must not have read any class of
the pool whole (get_all_records) besides the pool itself and SR-IOV.
"""
import json

import pytest

from netoffload.pool import keys
from tests.support.simpool import SimPool

DRIVER = r'''#!/usr/bin/python3
import json
import sys

sys.path.insert(0, "/usr/lib/netoffload/python")
import XenAPIPlugin  # noqa: E402

from netoffload import errors  # noqa: E402
from netoffload.plugin import functions  # noqa: E402
from netoffload.pool import context, xapi  # noqa: E402

LOCAL = context.local_snapshot
CALLS = []
_call = xapi.Xapi.call


def counted(self, method, *params):
    CALLS.append(method)
    return _call(self, method, *params)


xapi.Xapi.call = counted


def whole(client, host_ref, names):
    return client.snapshot()


def run(session, snapshot, fn, args):
    context.local_snapshot = snapshot
    del CALLS[:]
    try:
        outcome = {"ok": functions.FUNCTIONS[fn](session, dict(args))}
    except errors.NetoffloadError as err:
        outcome = {"error": [err.code] + [str(p) for p in
                                          err.failure_params()]}
    finally:
        context.local_snapshot = LOCAL
    outcome["whole_reads"] = sorted(set(
        m for m in CALLS if m.endswith(".get_all_records")))
    return outcome


def compare(session, args):
    """cases: [[fn, args], ...] each run whole then local; a case
    [[fn, args], [fn2, args2], ...] runs its steps whole, then local (a
    real apply, then the reverts that undo it)."""
    out = []
    for case in json.loads(args["cases"]):
        steps = case if isinstance(case[0], list) else [case]
        whole_runs = [run(session, whole, fn, a) for fn, a in steps]
        local_runs = [run(session, LOCAL, fn, a) for fn, a in steps]
        out.append({"steps": steps, "whole": whole_runs,
                    "local": local_runs})
    return json.dumps(out)


XenAPIPlugin.dispatch({"compare": compare})
'''

ALL_OFF = "all-off"


@pytest.fixture(scope="module")
def pool():
    """h1, h2, h3 (each a namespace with its devices) and policies at
    every level."""
    box = SimPool()
    try:
        _build(box)
        yield box
    finally:
        box.close()


def _build(box):
    sim = box.sim
    lan = sim.add_network("LAN", other_config={keys.KEY_VIF: "tx-off"})
    storage = sim.add_network("storage", other_config={
        keys.KEY_VIF: "sg=off,tso=off"})
    broken = sim.add_network("broken", other_config={keys.KEY_VIF: "tx=maybe"})
    fast = sim.add_network("fast")  # SR-IOV
    vlan_net = sim.add_network("vlan100")
    box.uuids = {}
    for name in ("h1", "h2", "h3"):
        host = box.add_host(name, netns=True)
        ns = box.ns[name]
        eth0 = sim.add_pif(host, lan, "eth0", other_config={
            "ethtool-autoneg": "off"})
        ns.add_veth("eth0", "peer0")
        if name != "h3":
            eth1 = sim.add_pif(host, storage, "eth1")
            ns.add_veth("eth1", "peer1")
            sim.add_sriov(eth1, fast)
            sim.add_vlan(eth0, 100, vlan_net)
    sim.add_pif(box.hosts["h3"], storage, "eth2",
                other_config={"ethtool-gso": "off"})
    box.ns["h3"].add_veth("eth2", "peer2")
    box.api.PIF.set_property(
        box.api.host.get_PIFs(box.hosts["h1"])[0], "gro", "off")
    h1, h2, h3 = (box.hosts[n] for n in ("h1", "h2", "h3"))
    box.set_pool_policy(keys.KEY_VIF, ALL_OFF)
    box.set_pool_policy(keys.KEY_PIF, "gro=off")
    box.set_pool_policy(keys.tag_key("front"), "tso=off")
    box.set_pool_policy(keys.tag_key("quiet"), "none")
    box.api.host.add_to_other_config(h1, keys.KEY_PIF, "sg=off")

    def vm(name, host, domid, vifs, **options):
        ref = sim.add_vm(name, power_state="Running" if host else "Halted",
                         resident_on=host, domid=domid, **options)
        for index, (network, config) in enumerate(vifs):
            sim.add_vif(ref, network, index, other_config=config)
            if host is not None and network != fast:
                ns = box.ns[[n for n, r in box.hosts.items() if r == host][0]]
                ns.add_veth("vif%d.%d" % (domid, index),
                            "g%d%d" % (domid, index))
                if index == 0:
                    ns.add_tap("tap%d.%d" % (domid, index))
        box.uuids[name + "@" + str(host)] = box.api.VM.get_uuid(ref)
        return ref

    vm("web", h1, 5, [(lan, {"ethtool-tx": "true"}), (storage, {})],
       tags=["front", "quiet"])
    vm("app", h1, 6, [(fast, {}), (lan, {"ethtool-sg": "off"})],
       other_config={keys.KEY_VIF: "gso=off"})
    vm("dup", h1, 8, [(broken, {})])
    vm("dup", h2, 9, [(lan, {})], tags=["front"])
    vm("db", h2, 7, [(storage, {}), (fast, {})], tags=["back"])
    # h3 has no SR-IOV NIC: only the other hosts' PIFs tell that "fast"
    # is an SR-IOV network (xapi would not start this VM there)
    vm("edge", h3, 10, [(storage, {}), (fast, {})], tags=["onlythere"])
    vm("halted", None, None, [(lan, {})], tags=["front"])
    sim.add_vm("a template", tags=["ghost"], is_a_template=True)
    box.db_uuid = box.uuids["db@" + h2]
    box.web_uuid = box.uuids["web@" + h1]


TARGETS = [
    {}, {"target": "ALL"}, {"vm": "web"}, {"vm": "db"}, {"vm": "dup"},
    {"vm": "nosuch"}, {"vm": "a template"}, {"vm": "DB_UUID"},
    {"tag": "front"}, {"tag": "back"}, {"tag": "onlythere"},
    {"tag": "ghost"}, {"tag": "nosuch"}, {"tag": "quiet"},
    {"network": "LAN"}, {"network": "fast"}, {"network": "broken"},
    {"network": "nosuch"}, {"pif": "eth0"}, {"pif": "eth0.100"},
    {"pif": "eth1"}, {"pif": "eth2"}, {"pif": "eth9"},
]

POLICIES = [
    {"level": "pool", "kind": "vif", "policy": "gro=off"},
    {"level": "pool", "kind": "vif", "policy": ""},
    {"level": "pool", "kind": "pif", "policy": ALL_OFF},
    {"level": "host", "host": "h1", "policy": "none"},
    {"level": "host", "host": "h2", "policy": "tso=off"},
    {"level": "host", "host": "nosuch", "policy": "tso=off"},
    {"level": "network", "network": "storage", "policy": ""},
    {"level": "network", "network": "LAN", "policy": ALL_OFF},
    {"level": "network", "network": "nosuch", "policy": ALL_OFF},
    {"level": "tag", "tag": "front", "policy": "none"},
    {"level": "tag", "tag": "back", "policy": ALL_OFF},
    {"level": "tag", "tag": "newtag", "policy": ALL_OFF},
    {"level": "vm", "vm": "web", "policy": "tx-off"},
    {"level": "vm", "vm": "app", "policy": ""},
    {"level": "vm", "vm": "db", "policy": ALL_OFF},
    {"level": "vm", "vm": "dup", "policy": ALL_OFF},
]


def _cases(pool):
    def local(args):
        return dict(args, scope="local")
    cases = [["status", local(t)] for t in TARGETS]
    cases += [["set_policy", local(p)] for p in POLICIES]
    for target in TARGETS[1:]:
        cases.append(["apply", local(dict(target, dry_run="true"))])
        cases.append(["revert", local(dict(target, dry_run="true"))])
    for target in ({"target": "ALL"}, {"vm": "web"}, {"tag": "front"},
                   {"network": "LAN"}, {"pif": "eth0"}):
        cases.append(["apply", local(dict(target, dry_run="true",
                                          policy="lro=off"))])
        cases.append(["apply", local(dict(target, dry_run="true",
                                          force="true"))])
    for target in ({"target": "ALL", "confirm": "yes"}, {"vm": "web"},
                   {"vm": "dup"}, {"tag": "front"}, {"network": "storage"},
                   {"pif": "eth0"}):
        # a revert leaves alone (kept) what a level above its target
        # governs: revert ALL then puts everything back, so that the local
        # run starts where the whole one did
        cases.append([["apply", local(target)], ["revert", local(target)],
                      ["revert", local({"target": "ALL", "confirm": "yes"})]])
    text = json.dumps(cases).replace("DB_UUID", pool.db_uuid)
    return json.loads(text)


def _compare(pool, host, tmp_path):
    from sim.xapi_sim import DOM0_PLUGIN_DIR
    plugins = tmp_path / ("plugins-" + host)
    plugins.mkdir()
    driver = plugins / "netoffload"
    driver.write_text(DRIVER)
    driver.chmod(0o755)
    before = pool.state()
    proc = pool.run_plugin("compare", host, dom0_files={
        DOM0_PLUGIN_DIR: str(plugins)}, cases=json.dumps(_cases(pool)))
    assert proc.returncode == 0, proc.stderr
    import xmlrpc.client
    (response,), _ = xmlrpc.client.loads(proc.stdout)
    assert response["Status"] == "Success", (response, proc.stderr[-3000:])
    # every real apply was undone by the reverts: nothing changed
    after = pool.state()
    assert after[0] == before[0]
    assert [d for d in after[1] if after[1][d] != before[1][d]] == []
    return json.loads(response["Value"])


@pytest.mark.parametrize("host", ["h1", "h2", "h3"])
def test_local_snapshot_answers_as_the_whole_pool(pool, host, tmp_path):
    results = _compare(pool, host, tmp_path)
    assert len(results) == len(_cases(pool))
    applied = errors = 0
    for result in results:
        for whole, local in zip(result["whole"], result["local"]):
            assert whole.get("ok") == local.get("ok") and \
                whole.get("error") == local.get("error"), result["steps"]
            # the whole snapshot reads every class whole; the local one
            # only the pool, SR-IOV, and the VMs for a tag it must
            # look for elsewhere
            assert "VIF.get_all_records" in whole["whole_reads"]
            assert set(local["whole_reads"]) <= set([
                "pool.get_all_records", "network_sriov.get_all_records",
                "VM.get_all_records"]), (result["steps"], local)
            if "VM.get_all_records" in local["whole_reads"]:
                assert "tag" in json.dumps(result["steps"])
            errors += "error" in local
            applied += '"action": "apply"' in json.dumps(local.get("ok"))
    # the comparison is not of empty answers: devices were changed, and
    # NotFound, Ambiguous and the invalid policy were met
    assert applied >= 3
    assert errors >= 6
    text = json.dumps(results)
    for code in ("NETOFFLOAD_NOT_FOUND", "NETOFFLOAD_AMBIGUOUS"):
        assert code in text
