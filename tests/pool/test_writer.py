"""writer.apply_db and xapi.Xapi against the simulator's real XAPI
semantics: MAP_DUPLICATE_KEY races, HANDLE_INVALID, call counts."""
import os

import pytest
import XenAPI

from netoffload.pool import keys, planning, writer, xapi
from tests.support.simpool import SimPool


@pytest.fixture
def sim():
    with SimPool() as pool:
        yield pool.sim


@pytest.fixture
def client(sim, monkeypatch):
    monkeypatch.setenv("NETOFFLOAD_XAPI_SOCKET", sim.socket_path)
    monkeypatch.delenv("NETOFFLOAD_XAPI_URL", raising=False)
    session = xapi.open_session()
    try:
        yield xapi.Xapi(session)
    finally:
        xapi.close_session(session)


def small_pool(sim, vms=1, policy="all-off"):
    sim.add_host("h1")
    lan = sim.add_network("LAN")
    vifs = []
    for i in range(vms):
        vm = sim.add_vm("vm%d" % i)
        vifs.append(sim.add_vif(vm, lan, 0))
    pool = sim.info()["pool"]
    sim.db.tables["pool"][pool]["other_config"]["netoffload-vif"] = policy
    return vifs


OP = "0123abcd"


def test_fresh_apply_is_one_call_per_key(sim, client):
    [vif] = small_pool(sim)
    records = client.snapshot()
    plans = planning.plan_db(records, [vif], op=OP)
    before = client.calls
    [result] = writer.apply_db(client, plans)
    assert result.status == writer.STATUS_CHANGED
    assert client.calls - before == 7  # 6 ethtool keys + 1 book


def test_lost_race_rereads_and_keeps_the_other_writers_key(sim, client):
    [vif] = small_pool(sim, policy="tx=off,sg=off")
    plans = planning.plan_db(client.snapshot(), [vif], op=OP)
    # Someone (say Xen Orchestra) sets tx between our read and our write.
    client.session.xenapi.VIF.add_to_other_config(vif, "ethtool-tx", "on")
    [result] = writer.apply_db(client, plans)
    assert result.status == writer.STATUS_CHANGED
    config = client.session.xenapi.VIF.get_other_config(vif)
    book = keys.read_book(config)
    assert (config["ethtool-tx"], config["ethtool-sg"]) == ("on", "off")
    assert (book.entries, book.taken) == (
        {"sg": keys.Entry(None, "off", None)}, {"tx"})


def test_a_value_written_before_a_remove_wins(sim, client):
    """issue 12 item 3: revert reads the object again right before it
    removes, and a value someone wrote since its snapshot is kept."""
    [vif] = small_pool(sim, policy="tx=off,sg=off")
    writer.apply_db(client, planning.plan_db(client.snapshot(), [vif],
                                             op=OP))
    plans = planning.plan_revert(client.snapshot(), [vif], op="aaaabbbb")
    api = client.session.xenapi
    api.VIF.remove_from_other_config(vif, "ethtool-tx")
    api.VIF.add_to_other_config(vif, "ethtool-tx", "on")  # the admin's
    [result] = writer.apply_db(client, plans)
    assert result.status == writer.STATUS_CHANGED
    assert api.VIF.get_other_config(vif) == {"ethtool-tx": "on"}


def test_object_gone_is_reported_and_others_continue(sim, client):
    vifs = small_pool(sim, vms=2)
    plans = planning.plan_db(client.snapshot(), vifs)
    sim.destroy_vif(vifs[0])
    results = writer.apply_db(client, plans)
    assert [r.status for r in results] == [writer.STATUS_GONE,
                                           writer.STATUS_CHANGED]


def test_parallel_apply_matches_sequential(sim, client, monkeypatch):
    vifs = small_pool(sim, vms=40)
    records = client.snapshot()
    plans = planning.plan_db(records, vifs, op=OP)
    extra = [xapi.Xapi(xapi.open_session()) for _ in range(3)]
    try:
        results = writer.apply_db(client, plans, [client] + extra)
    finally:
        for other in extra:
            xapi.close_session(other.session)
    assert [r.uuid for r in results] == [p.uuid for p in plans]
    assert set(r.status for r in results) == {writer.STATUS_CHANGED}
    calls = client.calls + sum(e.calls for e in extra)
    after = client.snapshot()
    assert all(after.vifs[v]["other_config"] == p.final
               for v, p in zip(vifs, plans))
    assert calls == 7 + 40 * 7


def test_set_other_config_key_replaces_with_remove_then_add(sim, client):
    small_pool(sim)
    pool = sim.info()["pool"]
    calls = client.calls
    client.set_other_config_key("pool", pool, "netoffload-vif", "tx-off",
                                "all-off")
    assert client.calls - calls == 2
    assert client.session.xenapi.pool.get_other_config(pool)[
        "netoffload-vif"] == "tx-off"
    client.set_other_config_key("pool", pool, "netoffload-vif", None, "tx-off")
    assert "netoffload-vif" not in client.session.xenapi.pool.get_other_config(
        pool)


def test_same_value_written_meanwhile_is_not_a_race(sim, client):
    [vif] = small_pool(sim)
    client.session.xenapi.VIF.add_to_other_config(vif, "ethtool-tx", "off")
    client.set_other_config_key("VIF", vif, "ethtool-tx", "off", None)
    assert client.session.xenapi.VIF.get_other_config(vif) == {
        "ethtool-tx": "off"}


def test_stale_ref_raises_object_gone(sim, client):
    [vif] = small_pool(sim)
    sim.destroy_vif(vif)
    with pytest.raises(xapi.ObjectGone):
        client.set_other_config_key("VIF", vif, "ethtool-tx", "off", None)


def test_other_failures_carry_the_xapi_code(sim, client):
    with pytest.raises(xapi.XapiError) as err:
        client.call("VIF.add_to_other_config", "OpaqueRef:nope", "k")
    assert err.value.params[0] == "MESSAGE_PARAMETER_COUNT_MISMATCH"
    assert err.value.code == "NETOFFLOAD_XAPI_ERROR"


def test_snapshot_uses_one_call_per_class(sim, client):
    small_pool(sim, vms=3)
    calls = client.calls
    records = client.snapshot()
    assert client.calls - calls == 7  # pool host network PIF VM VIF metrics
    assert len(records.vifs) == 3 and records.host_metrics


def test_session_survives_a_xapi_restart(sim, client):
    small_pool(sim)
    sim.restart()
    assert client.snapshot().vifs  # XenAPI logs in again on SESSION_INVALID


def test_unreachable_xapi_is_a_xapi_error(monkeypatch, tmp_path):
    monkeypatch.setenv("NETOFFLOAD_XAPI_SOCKET", "/tmp/nosuch-%d/sock"
                       % os.getpid())
    with pytest.raises(xapi.XapiError):
        xapi.open_session()


def test_url_session(sim, monkeypatch):
    sim.stop()
    sim.port = 0
    sim.start()
    monkeypatch.delenv("NETOFFLOAD_XAPI_SOCKET", raising=False)
    monkeypatch.setenv("NETOFFLOAD_XAPI_URL", sim.url)
    session = xapi.open_session()
    try:
        assert isinstance(session, XenAPI.Session)
        assert xapi.Xapi(session).get_all_records("pool")
    finally:
        xapi.close_session(session)


def test_revert_of_a_fresh_all_off_vif_is_eight_calls(sim, client):
    """6 removes + the book removal + the re-read right before them."""
    [vif] = small_pool(sim)
    writer.apply_db(client, planning.plan_db(client.snapshot(), [vif],
                                             op=OP))
    plans = planning.plan_revert(client.snapshot(), [vif], op="aaaabbbb")
    before = client.calls
    [result] = writer.apply_db(client, plans)
    assert result.status == writer.STATUS_CHANGED
    assert client.calls - before == 8
    assert client.session.xenapi.VIF.get_other_config(vif) == {}


class _Ctx(object):
    def __init__(self, client):
        self.xapi = client


def test_many_objects_are_written_over_at_most_eight_sessions(sim, client):
    vifs = small_pool(sim, vms=300)
    plans = planning.plan_db(client.snapshot(), vifs, op=OP)
    sim.reset_call_counts()
    results = writer.write_plans(_Ctx(client), plans)
    counts = sim.call_counts()
    assert counts.get("session.login_with_password", 0) == \
        writer.DB_SESSIONS - 1 == 7
    assert counts["VIF.add_to_other_config"] == 7 * 300
    assert set(r.status for r in results) == {writer.STATUS_CHANGED}


def test_writers_that_cannot_log_in_leave_their_objects_to_the_others(
        sim, client, monkeypatch):
    vifs = small_pool(sim, vms=300)
    plans = planning.plan_db(client.snapshot(), vifs, op=OP)
    tries = []
    real_open = xapi.open_session

    def flaky():
        tries.append(1)
        if len(tries) % 2:
            raise xapi.XapiError("cannot reach xapi: refused")
        return real_open()
    monkeypatch.setattr(xapi, "open_session", flaky)
    sim.reset_call_counts()
    results = writer.write_plans(_Ctx(client), plans)
    counts = sim.call_counts()
    assert len(tries) == writer.DB_SESSIONS - 1
    assert counts["session.login_with_password"] == len(tries) // 2 == \
        counts["session.logout"]
    assert counts["VIF.add_to_other_config"] == 7 * 300
    assert set(r.status for r in results) == {writer.STATUS_CHANGED}
