"""Issue 12 items 2, 3 and 7 through host.call_plugin: two hosts writing at
once (the pinned interleaving), an admin's remove+add racing apply and
revert (pinned), and saved priors that cannot be trusted."""
import json
import threading
import time

import pytest
import XenAPI

from netoffload.pool import keys, lease
from tests.plugin.test_crash_sweep import canon

ALL = dict(target="ALL", confirm="yes")


class Pin(object):
    """Holds the simulator's answer to the first call matching `match`
    (method, params) until `release()`: the caller (a plugin process) is
    stopped right there, after the call took effect."""

    def __init__(self, pool, monkeypatch, match):
        self.reached = threading.Event()
        self.go = threading.Event()
        self.fired = False
        handle = pool.sim.handle

        def pinned(method, params, via_host=None):
            response = handle(method, params, via_host)
            if not self.fired and match(method, params):
                self.fired = True
                self.reached.set()
                self.go.wait(60)
            return response
        monkeypatch.setattr(pool.sim, "handle", pinned)

    def release(self):
        self.go.set()


def _own_call(sim_pool, host, fn, args):
    """pool.call on a session of its own (a XenAPI session is one
    connection: threads must not share it)."""
    session = XenAPI.Session(
        "http://%s/" % sim_pool.socket_path.replace("/", "_"),
        transport=XenAPI.UDSTransport())
    session.login_with_password("root", "", "1.0", "tests")
    try:
        return json.loads(session.xenapi.host.call_plugin(
            sim_pool.hosts[host], "netoffload", fn, args))
    finally:
        session.xenapi.session.logout()


def _in_thread(fn, sim_pool, host, **args):
    box = {}

    def run():
        try:
            box["result"] = _own_call(sim_pool, host, fn, args)
        except Exception as err:  # handed to the test
            box["error"] = err
    thread = threading.Thread(target=run)
    thread.daemon = True
    thread.start()
    return thread, box


def _lease_refusals(pool):
    return pool.call_counts().get("pool.add_to_other_config", 0)


def test_two_hosts_applying_at_once_never_read_each_others_half_done_state(
        pool, monkeypatch):
    """The pinned interleaving of issue 12 item 2: host a has written the
    book of web 01's VIF (its XO stamp tx=true about to be replaced) and
    stops; host b runs apply ALL pool=true to the end meanwhile."""
    start = pool.other_configs()
    pool.call("set_policy", level="pool", kind="vif", policy="all-off",
              confirm="yes")
    web = pool.session.xenapi.VIF.get_uuid(pool.web_vif)
    pin = Pin(pool, monkeypatch, lambda method, params: (
        method == "VIF.add_to_other_config" and params[1] == pool.web_vif
        and params[2] in keys.BOOK_KEYS))
    host_a, box_a = _in_thread("apply", pool, "h1", **ALL)
    assert pin.reached.wait(60)
    # a's intent is recorded, the key not yet replaced
    half = pool.other_configs()["VIF/" + web]
    assert half["ethtool-tx"] == "true" and keys.book_keys_present(half)
    refusals = _lease_refusals(pool)
    host_b, box_b = _in_thread("apply", pool, "h2", pool="true", **ALL)
    deadline = time.time() + 30
    while _lease_refusals(pool) < refusals + 2 and time.time() < deadline:
        time.sleep(0.05)  # b is waiting for the lease a holds
    assert pool.other_configs()["VIF/" + web] == half  # b wrote nothing
    pin.release()
    host_a.join(60)
    host_b.join(60)
    assert "error" not in box_a and "error" not in box_b, (box_a, box_b)
    after = pool.other_configs()
    assert after["VIF/" + web]["ethtool-tx"] == "off"
    assert keys.read_book(after["VIF/" + web]).entries["tx"] == keys.Entry(
        "true", "off", None)
    assert not [k for k in after["pool/" + pool.api.pool.get_uuid(
        pool.pool_ref)] if k.startswith(("netoffload-op:", "netoffload-lease"))]
    pool.call("revert", **ALL)
    assert pool.other_configs() == start


def test_a_second_writer_that_cannot_wait_gets_busy_naming_the_holder(
        pool, monkeypatch):
    # h2 waits the 2 s it asks for (wait=; the default is 20 s), not less
    pool.call("set_policy", level="pool", kind="vif", policy="all-off",
              confirm="yes")
    pin = Pin(pool, monkeypatch, lambda method, params: (
        method == "VIF.add_to_other_config" and params[2] in keys.BOOK_KEYS))
    host_a, box_a = _in_thread("apply", pool, "h1", **ALL)
    assert pin.reached.wait(60)
    before = pool.other_configs()
    started = time.time()
    details = pool.fail("apply", "h2", wait="2", **ALL)
    assert 2 <= time.time() - started < lease.DEFAULT_WAIT_S
    assert details[0] == "NETOFFLOAD_BUSY"
    assert "apply@" in details[1] and "lease" in details[1]
    assert pool.other_configs() == before
    pin.release()
    host_a.join(60)
    assert "error" not in box_a


def _first_policy_write(method, params):
    return method in ("pool.add_to_other_config",
                      "pool.remove_from_other_config") and \
        params[2] in ("netoffload-vif", "netoffload-pif")


def _admin_sets_tx_on(pool, vifs):
    for vif in vifs:
        pool.api.VIF.remove_from_other_config(vif, "ethtool-tx")
        pool.api.VIF.add_to_other_config(vif, "ethtool-tx", "on")


def _all_vifs(pool):
    return sorted(ref for ref, rec in pool.api.VIF.get_all_records().items()
                  if not pool.api.VM.get_is_a_template(rec["VM"]))


def test_an_admins_value_written_as_revert_starts_is_kept(pool, monkeypatch):
    """Issue 12 item 3, pinned: the admin sets ethtool-tx=on on every VIF
    at the moment revert ALL makes its first write."""
    pool.call("apply", policy="all-off", **ALL)
    vifs = _all_vifs(pool)
    pin = Pin(pool, monkeypatch, _first_policy_write)
    reverting, box = _in_thread("revert", pool, "h1", **ALL)
    assert pin.reached.wait(60)
    _admin_sets_tx_on(pool, vifs)
    pin.release()
    reverting.join(60)
    assert "error" not in box, box
    for vif in vifs:
        config = pool.api.VIF.get_other_config(vif)
        assert config.get("ethtool-tx") == "on", config
        assert not keys.book_keys_present(config)
        assert not [k for k in config if k.startswith("ethtool-")
                    and k != "ethtool-tx"]


def test_an_admins_value_written_as_apply_starts_is_kept(pool, monkeypatch):
    """The same race against apply: a policy change (tx-off to all-off
    and a VIF's tx) meets the admin's remove+add."""
    start = pool.other_configs()
    pool.call("apply", policy="tx-off", **ALL)
    vifs = _all_vifs(pool)
    pin = Pin(pool, monkeypatch, _first_policy_write)
    applying, box = _in_thread("apply", pool, "h1", policy="all-off",
                               **ALL)
    assert pin.reached.wait(60)
    _admin_sets_tx_on(pool, vifs)
    pin.release()
    applying.join(60)
    assert "error" not in box, box
    for vif in vifs:
        config = pool.api.VIF.get_other_config(vif)
        assert config["ethtool-tx"] == "on"  # theirs, it wins
        assert config["ethtool-sg"] == "off"
        assert "tx" in keys.read_book(config).taken
    status = pool.call("status", vm="bsd")
    [vif] = [d for d in status["devices"] if d["device"] == "vif6.0"]
    assert vif["overrides"][0]["why"] == \
        "changed by someone after netoffload wrote it"
    pool.call("revert", **ALL)
    after = pool.other_configs()
    for name, config in start.items():
        if name.startswith("VIF/") and name in after and \
                after[name] != config:
            # only their tx=on is left: revert keeps someone else's value
            assert after[name] == dict(config, **{"ethtool-tx": "on"})
        else:
            assert after[name] == config


@pytest.mark.parametrize("saved", ["{not json", '{"tx":["%s","off"]}'
                                   % ("A" * 1000000)],
                         ids=["not-json", "hostile-1000000-chars"])
def test_saved_priors_that_cannot_be_trusted_are_refused(pool, saved):
    """Issue 12 item 7: never written back, keys not removed as if their
    prior were absent, reported."""
    api = pool.api
    api.VIF.add_to_other_config(pool.bsd_vif, "ethtool-tx", "off")
    api.VIF.add_to_other_config(pool.bsd_vif, "netoffload-managed", "tx")
    api.VIF.add_to_other_config(pool.bsd_vif, "netoffload-saved", saved)
    before = api.VIF.get_other_config(pool.bsd_vif)
    result = pool.call("revert", **ALL)
    assert api.VIF.get_other_config(pool.bsd_vif) == before
    [refused] = [o for o in result["objects"] if o["status"] == "refused"]
    assert refused["uuid"] == api.VIF.get_uuid(pool.bsd_vif)
    assert "netoffload-saved" in refused["error"][0]
    applied = pool.call("apply", policy="all-off", **ALL)
    assert api.VIF.get_other_config(pool.bsd_vif) == before
    assert [o["status"] for o in applied["objects"]
            if o["uuid"] == refused["uuid"]] == ["refused"]
    assert len(canon({"x": before})["x"]["<book>"][0]) == 0
