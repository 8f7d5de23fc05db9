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


# -- split_writes: which writes of a plan may go out at once (the watcher) ------

SIX = ("rx", "tx", "sg", "tso", "ufo", "gso")
SIX_OFF = dict(("ethtool-" + f, "off") for f in SIX)
OLD_OP = "feedbeef"     # finished: no op key on the pool


def _book(entries, op=OLD_OP, gen=1, key=keys.KEY_BOOK):
    return {key: keys.Book(dict((f, keys.Entry(*(list(e) + [None])[:3]))
                                for f, e in entries.items()),
                           (), op, gen).to_text()}


def _plan(pool=None, vif=None, revert=False):
    from tests.support.poolrecords import build
    records = build(pool=pool, vif=vif)
    make = planning.plan_revert if revert else planning.plan_db
    [plan] = make(records, ["OpaqueRef:vif"], op=OP)
    return plan


def _checked_split(plan):
    """split_writes of a real plan, with what must hold of any split."""
    head, run, tail = writer.split_writes(plan.writes)
    assert head + run + tail == plan.writes
    if not run:
        assert tail == []
        return head, run, tail
    # the run: distinct ethtool-* keys, each named by the intent book that
    # the head ends with (then only removals of other book keys), under op
    assert len(run) >= 2
    assert len(set(k for k, _, _ in run)) == len(run)
    assert all(keys.feature_of_key(k) for k, _, _ in run)
    [intent] = [i for i, (k, v, _) in enumerate(head)
                if k in keys.BOOK_KEYS and v is not None]
    assert all(v is None and k in keys.BOOK_KEYS + keys.LEGACY_KEYS
               for k, v, _ in head[intent + 1:])
    book = keys.read_book({head[intent][0]: head[intent][1]})
    assert book.op == OP
    for key, value, _ in run:
        entry = book.entries[keys.feature_of_key(key)]
        assert value in (entry.value, entry.prior)
    # after the run only book keys: the final book, stale removals
    assert all(k in keys.BOOK_KEYS + keys.LEGACY_KEYS for k, _, _ in tail)
    return head, run, tail


def test_split_of_a_fresh_claim_is_the_book_then_six_keys_at_once():
    plan = _plan(pool={"netoffload-vif": "all-off"})
    head, run, tail = _checked_split(plan)
    assert [k for k, _, _ in head] == [keys.KEY_BOOK]
    assert sorted(k for k, _, _ in run) == sorted(SIX_OFF)
    assert tail == []


def test_split_of_a_value_to_value_change_keeps_the_final_book_after():
    vif = dict(SIX_OFF, **_book(dict((f, (None, "off")) for f in SIX)))
    plan = _plan(pool={"netoffload-vif": ",".join(f + "=on" for f in SIX)},
                 vif=vif)
    head, run, tail = _checked_split(plan)
    assert [k for k, _, _ in head] == [keys.KEY_BOOK_ALT, keys.KEY_BOOK]
    assert [(v, e) for _, v, e in run] == [("on", "off")] * 6
    intent = keys.read_book({head[0][0]: head[0][1]})
    assert set(e.was for e in intent.entries.values()) == {"off"}
    assert [(k, v is None) for k, v, _ in tail] == [
        (keys.KEY_BOOK, False), (keys.KEY_BOOK_ALT, True)]


def test_split_of_a_revert_to_values_runs_the_restores_after_the_intent():
    # priors that are values (an XO stamp): each restore is a replace
    vif = dict(SIX_OFF, **_book(dict((f, ("true", "off")) for f in SIX)))
    head, run, tail = _checked_split(_plan(vif=vif, revert=True))
    assert [(k, v) for k, v, _ in run] == [
        ("ethtool-" + f, "true") for f in ("rx", "tx", "sg", "tso", "ufo",
                                          "gso")]
    assert [(k, v is None) for k, v, _ in head] == [
        (keys.KEY_BOOK_ALT, False), (keys.KEY_BOOK, True)]
    assert [(k, v) for k, v, _ in tail] == [(keys.KEY_BOOK_ALT, None)]


def test_split_of_a_revert_to_absent_keys_has_no_intent_so_no_run():
    vif = dict(SIX_OFF, **_book(dict((f, (None, "off")) for f in SIX)))
    plan = _plan(vif=vif, revert=True)
    assert len(plan.writes) == 7
    assert _checked_split(plan) == (plan.writes, [], [])


def test_split_of_a_legacy_migration_leaves_the_old_keys_removed_first():
    legacy = {"netoffload-managed": "gso,rx,sg,tso,tx,ufo",
              "netoffload-saved": '{"gso":[null,"off"],"rx":[null,"off"],'
                                  '"sg":[null,"off"],"tso":[null,"off"],'
                                  '"tx":[null,"off"],"ufo":[null,"off"]}'}
    plan = _plan(pool={"netoffload-vif": "tx=on,rx=on"},
                 vif=dict(SIX_OFF, **legacy))
    head, run, tail = _checked_split(plan)
    assert [k for k, _, _ in head] == [keys.KEY_BOOK] + list(
        keys.LEGACY_KEYS)
    # tx, rx replaced by "on"; the four the policy no longer covers go
    # back to their prior, absent: in the intent too, so in the run
    assert sorted((k, v) for k, v, _ in run) == sorted(
        ("ethtool-" + f, "on" if f in ("tx", "rx") else None) for f in SIX)
    assert [k for k, _, _ in tail] == [keys.KEY_BOOK_ALT, keys.KEY_BOOK]


def test_split_keeps_a_crashed_ops_fixes_in_the_head_before_the_intent():
    crashed = "0badc0de"
    # crashed mid-replace: tx and rx absent, sg still at `was`
    vif = dict(_book({"tx": ("true", "off", "on"), "rx": (None, "off", "on"),
                      "sg": (None, "off", "on")}, op=crashed),
               **{"ethtool-sg": "on"})
    plan = _plan(pool={"netoffload-vif": "all-off",
                       keys.op_key(crashed): "{}"}, vif=vif)
    head, run, tail = _checked_split(plan)
    # tx gets back its `was` (rx's prior is absent: nothing to put back)
    assert [(k, v) for k, v, _ in head[:1]] == [("ethtool-tx", "on")]
    assert head[1][0] in keys.BOOK_KEYS and head[1][1] is not None
    assert sorted(k for k, _, _ in run) == sorted(SIX_OFF)


def test_split_finds_no_run_where_no_intent_precedes_the_keys():
    # a final book only (normalised), a claim of one key, hand-made writes
    book_text = _book({"tx": (None, "off")}, op=OP)[keys.KEY_BOOK]
    for writes in (
            [(keys.KEY_BOOK, book_text, None)],
            [(keys.KEY_BOOK, book_text, None), ("ethtool-tx", "off", None)],
            [("ethtool-tx", "off", None), ("ethtool-sg", "off", None),
             (keys.KEY_BOOK, book_text, None)],
            # a book under no op is not an intent
            [(keys.KEY_BOOK, _book({"tx": (None, "off"), "sg": (
                None, "off")}, op=None)[keys.KEY_BOOK], None),
             ("ethtool-tx", "off", None), ("ethtool-sg", "off", None)]):
        assert writer.split_writes(writes) == (writes, [], [])


def test_split_stops_the_run_at_a_key_the_intent_does_not_name():
    text = _book({"tx": (None, "off"), "sg": (None, "off"),
                  "rx": (None, "off")}, op=OP)[keys.KEY_BOOK]
    writes = [(keys.KEY_BOOK, text, None), ("ethtool-tx", "off", None),
              ("ethtool-sg", "off", None), ("ethtool-gso", "off", None),
              ("ethtool-rx", "off", None)]
    assert writer.split_writes(writes) == (writes[:1], writes[1:3],
                                           writes[3:])
    # a value the entry does not hold ends it too
    writes[2] = ("ethtool-sg", "on", None)
    assert writer.split_writes(writes) == (writes, [], [])
