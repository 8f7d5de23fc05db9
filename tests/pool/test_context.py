"""context.local_snapshot: what a scope=local call reads of the pool.

Each of its tables is a subset of the whole snapshot's, record for record,
and it holds exactly this host's part and what the names give; it reads no
class of the pool whole but the pool itself and network_sriov. (That the
answers built on it equal the whole pool's is
tests/plugin/test_local_snapshot.py.)
"""
import pytest

from netoffload.pool import context, keys, xapi
from tests.support.simpool import SimPool


@pytest.fixture
def pool():
    box = SimPool()
    try:
        sim = box.sim
        box.lan = sim.add_network("LAN")
        box.fast = sim.add_network("fast")
        box.other = sim.add_network("other", other_config={
            keys.KEY_VIF: "tx-off"})
        for name in ("h1", "h2", "h3"):
            host = box.add_host(name)
            sim.add_pif(host, box.lan, "eth0")
            eth1 = sim.add_pif(host, box.other, "eth1")
            if name == "h2":
                box.logical = sim.add_sriov(eth1, box.fast)["PIF"]
        h1, h2 = box.hosts["h1"], box.hosts["h2"]
        box.web = sim.add_vm("web", tags=["front"], power_state="Running",
                             resident_on=h1, domid=5)
        box.web_vifs = [sim.add_vif(box.web, box.lan, 0),
                        sim.add_vif(box.web, box.fast, 1)]
        box.db_vm = sim.add_vm("db", tags=["back"], power_state="Running",
                               resident_on=h2, domid=6)
        sim.add_vif(box.db_vm, box.other, 0)
        box.halted = sim.add_vm("halted", tags=["back"])
        sim.add_vif(box.halted, box.lan, 0)
        yield box
    finally:
        box.close()


def _tables(records):
    return dict((name, getattr(records, name)) for name in
                ("pool", "hosts", "networks", "pifs", "vms", "vifs"))


def _snapshots(pool, names=context.NO_NAMES, host="h1"):
    client = xapi.Xapi(pool.session)
    whole = client.snapshot()
    before = pool.call_counts()
    local = context.local_snapshot(client, pool.hosts[host], names)
    counts = pool.call_counts()
    calls = dict((m, n - before.get(m, 0)) for m, n in counts.items()
                 if n != before.get(m, 0))
    for name, table in _tables(local).items():
        whole_table = getattr(whole, name)
        for ref, record in table.items():
            assert record == whole_table[ref], (name, ref)
    return whole, local, calls


def test_local_snapshot_is_this_hosts_part(pool):
    whole, local, calls = _snapshots(pool)
    h1 = pool.hosts["h1"]
    assert local.local_to == h1 and whole.local_to is None
    assert list(local.hosts) == [h1]
    assert set(local.pifs) == set(whole.pifs_of_host(h1)) | {pool.logical}
    assert set(local.vms) == set(r for r, vm in whole.vms.items()
                                 if vm.get("resident_on") == h1)
    assert set(local.vifs) == set(pool.web_vifs)
    assert set(local.networks) == {pool.lan, pool.fast}
    assert local.pool == whole.pool
    reads = sorted(m for m in calls if m.endswith(".get_all_records"))
    assert reads == ["network_sriov.get_all_records", "pool.get_all_records"]


def test_names_are_looked_up_pool_wide(pool):
    names = context.Names("db", "other", "h3", None)
    whole, local, calls = _snapshots(pool, names)
    assert pool.db_vm in local.vms and pool.db_vm in whole.vms
    assert pool.other in local.networks
    assert pool.hosts["h3"] in local.hosts
    # by uuid too
    uuid = whole.vms[pool.halted]["uuid"]
    _, local, _ = _snapshots(pool, context.Names(uuid, None, None, None))
    assert pool.halted in local.vms
    # a name nothing has adds nothing
    _, local, _ = _snapshots(pool, context.Names("x", "y", "z", None))
    assert set(local.hosts) == {pool.hosts["h1"]}


def test_a_tag_is_looked_for_elsewhere_only_when_unknown_here(pool):
    _, _, calls = _snapshots(pool, context.Names(None, None, None, "front"))
    assert "VM.get_all_records" not in calls
    pool.set_pool_policy(keys.tag_key("back"), "tx-off")
    _, _, calls = _snapshots(pool, context.Names(None, None, None, "back"))
    assert "VM.get_all_records" not in calls
    pool.set_pool_policy(keys.tag_key("back"), None)
    _, local, calls = _snapshots(pool, context.Names(None, None, None,
                                                     "back"))
    assert calls["VM.get_all_records"] == 1
    # the eligible VMs carrying it, halted or elsewhere
    assert {pool.db_vm, pool.halted} <= set(local.vms)


def test_a_vm_gone_meanwhile_is_left_out(pool, monkeypatch):
    client = xapi.Xapi(pool.session)
    real = client.call

    def racing(method, *params):
        if method == "VM.get_record" and params[0] == pool.web:
            raise xapi.ObjectGone("VM.get_record: gone", "HANDLE_INVALID")
        return real(method, *params)
    monkeypatch.setattr(client, "call", racing)
    local = context.local_snapshot(client, pool.hosts["h1"])
    assert pool.web not in local.vms and not local.vifs
