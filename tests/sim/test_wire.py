"""The simulator through the real XenAPI client: wire protocol and xapi semantics."""
import threading
import time
import xmlrpc.client

import pytest
import XenAPI

from sim.xapi_sim import XapiSim
from tests.support.simpool import SimPool

EVENT_FROM = "from"  # a Python keyword: called with getattr


@pytest.fixture
def sim():
    """The simulator on a unix socket and on HTTP (a free port)."""
    with SimPool(port=0) as pool:
        yield pool.sim


@pytest.fixture
def pool(sim):
    """Two hosts, a network, PIFs, a running VM with a VIF, a halted VM."""
    host1 = sim.add_host("host1")
    host2 = sim.add_host("host2")
    net = sim.add_network("Pool-wide network", bridge="xenbr0")
    pifs = [sim.add_pif(h, net, "eth0", management=True) for h in (host1, host2)]
    web = sim.add_vm("web 01 'quoted' é", tags=["pfsense"], power_state="Running",
                     resident_on=host2)
    vif = sim.add_vif(web, net, 0)
    db = sim.add_vm("db", power_state="Halted")
    return {"hosts": [host1, host2], "net": net, "pifs": pifs, "web": web,
            "vif": vif, "db": db}


def unix_session(sim):
    return XenAPI.Session("http://%s/" % sim.socket_path.replace("/", "_"),
                          transport=XenAPI.UDSTransport())


def http_session(sim):
    return XenAPI.Session(sim.url)


def logged_in(factory, sim):
    session = factory(sim)
    session.login_with_password("root", "secret", "1.0", "netoffload-test")
    return session


def failure_of(call, *args):
    with pytest.raises(XenAPI.Failure) as info:
        call(*args)
    return info.value.details


@pytest.mark.parametrize("factory", [unix_session, http_session],
                         ids=["unix-socket", "http"])
def test_records_over_both_transports(sim, pool, factory):
    session = logged_in(factory, sim)
    api = session.xenapi
    web = api.VM.get_record(pool["web"])
    assert web["name_label"] == "web 01 'quoted' é"
    assert web["power_state"] == "Running"
    assert web["resident_on"] == pool["hosts"][1]
    assert web["domid"] == "1"  # xapi sends int fields as strings
    assert web["VIFs"] == [pool["vif"]]
    assert web["tags"] == ["pfsense"]
    assert web["uuid"] != pool["web"] and pool["web"].startswith("OpaqueRef:")
    assert api.VM.get_by_uuid(web["uuid"]) == pool["web"]
    assert api.VM.get_by_name_label("web 01 'quoted' é") == [pool["web"]]
    vif = api.VIF.get_record(pool["vif"])
    assert (vif["device"], vif["VM"], vif["network"], vif["currently_attached"]) == (
        "0", pool["web"], pool["net"], True)
    pif = api.PIF.get_all_records()[pool["pifs"][0]]
    assert (pif["device"], pif["host"], pif["VLAN"]) == ("eth0", pool["hosts"][0], "-1")
    vms = api.VM.get_all_records()
    dom0s = [r for r in vms.values() if r["is_control_domain"]]
    assert sorted(r["resident_on"] for r in dom0s) == sorted(pool["hosts"])
    pool_ref = api.pool.get_all()[0]
    assert api.pool.get_master(pool_ref) == pool["hosts"][0]
    metrics = api.host.get_metrics(pool["hosts"][1])
    assert api.host_metrics.get_live(metrics) is True
    assert api.session.get_this_host(session.handle) == pool["hosts"][0]
    session.xenapi.session.logout()


def test_raw_envelope_is_xapis(sim, pool):
    """Without the XenAPI client's unwrapping: Status/Value and Status/ErrorDescription."""
    proxy = xmlrpc.client.ServerProxy(sim.url, allow_none=True)
    login = proxy.session.login_with_password("root", "x")
    assert login["Status"] == "Success" and login["Value"].startswith("OpaqueRef:")
    assert proxy.VM.get_all(login["Value"]) == {"Status": "Success",
                                                "Value": proxy.VM.get_all(login["Value"])["Value"]}
    assert proxy.VM.get_record("OpaqueRef:nope", pool["web"]) == {
        "Status": "Failure", "ErrorDescription": ["SESSION_INVALID", "OpaqueRef:nope"]}


ERROR_CASES = [
    ("unknown-method", lambda api, p: api.VM.frobnicate(p["web"]),
     lambda p: ["MESSAGE_METHOD_UNKNOWN", "VM.frobnicate"]),
    ("read-only-field-has-no-setter", lambda api, p: api.VM.set_power_state(p["web"], "Halted"),
     lambda p: ["MESSAGE_METHOD_UNKNOWN", "VM.set_power_state"]),
    ("too-many-params", lambda api, p: api.VM.get_record(p["web"], "extra"),
     lambda p: ["MESSAGE_PARAMETER_COUNT_MISMATCH", "VM.get_record", "1", "2"]),
    ("too-few-params", lambda api, p: api.VIF.add_to_other_config(p["vif"], "k"),
     lambda p: ["MESSAGE_PARAMETER_COUNT_MISMATCH", "VIF.add_to_other_config", "3", "2"]),
    ("stale-ref", lambda api, p: api.VM.get_record("OpaqueRef:00000000-dead"),
     lambda p: ["HANDLE_INVALID", "VM", "OpaqueRef:00000000-dead"]),
    ("ref-of-other-class", lambda api, p: api.VM.get_other_config(p["vif"]),
     lambda p: ["HANDLE_INVALID", "VM", p["vif"]]),
    ("unknown-uuid", lambda api, p: api.VIF.get_by_uuid("not-a-uuid"),
     lambda p: ["UUID_INVALID", "VIF", "not-a-uuid"]),
    ("start-running-vm", lambda api, p: api.VM.start(p["web"], False, False),
     lambda p: ["VM_BAD_POWER_STATE", p["web"], "halted", "running"]),
    ("duplicate-vif-device", lambda api, p: api.VIF.create({
        "VM": p["web"], "network": p["net"], "device": "0", "MAC": "",
        "MTU": "1500", "other_config": {}, "qos_algorithm_type": "",
        "qos_algorithm_params": {}}),
     lambda p: ["DEVICE_ALREADY_EXISTS", "0"]),
    ("destroy-attached-vif", lambda api, p: api.VIF.destroy(p["vif"]),
     lambda p: ["OPERATION_NOT_ALLOWED", "VIF currently attached to a running VM"]),
    ("bad-event-token", lambda api, p: getattr(api.event, EVENT_FROM)(["vm"], "garbage", 0.1),
     lambda p: ["EVENT_FROM_TOKEN_PARSE_FAILURE", "garbage"]),
]


@pytest.mark.parametrize("call,expected", [c[1:] for c in ERROR_CASES],
                         ids=[c[0] for c in ERROR_CASES])
def test_errors_are_xapis_and_change_nothing(sim, pool, call, expected):
    api = logged_in(unix_session, sim).xenapi
    before = sim.snapshot_db()
    assert failure_of(call, api, pool) == expected(pool)
    assert sim.snapshot_db() == before


def test_other_config_map_semantics(sim, pool):
    api = logged_in(unix_session, sim).xenapi
    vif = pool["vif"]
    api.VIF.add_to_other_config(vif, "ethtool-tx", "off")
    assert failure_of(api.VIF.add_to_other_config, vif, "ethtool-tx", "on") == [
        "MAP_DUPLICATE_KEY", "VIF", "other_config", vif, "ethtool-tx"]
    assert api.VIF.get_other_config(vif) == {"ethtool-tx": "off"}
    api.VIF.remove_from_other_config(vif, "ethtool-tx")
    api.VIF.remove_from_other_config(vif, "ethtool-tx")  # missing key: no error
    assert api.VIF.get_other_config(vif) == {}
    api.pool.set_other_config(api.pool.get_all()[0], {"netoffload-vif": "tx-off"})
    assert api.pool.get_other_config(api.pool.get_all()[0]) == {"netoffload-vif": "tx-off"}
    api.VM.add_tags(pool["db"], "b")
    api.VM.add_tags(pool["db"], "a")
    api.VM.add_tags(pool["db"], "a")  # a set: no duplicate
    api.VM.remove_tags(pool["db"], "b")
    api.VM.remove_tags(pool["db"], "zzz")
    assert api.VM.get_tags(pool["db"]) == ["a"]


def test_vif_create_destroy_and_power_cycle(sim, pool):
    api = logged_in(unix_session, sim).xenapi
    vif = api.VIF.create({"VM": pool["db"], "network": pool["net"], "device": "1",
                          "MAC": "", "MTU": "1500", "other_config": {"k": "v"},
                          "qos_algorithm_type": "", "qos_algorithm_params": {}})
    rec = api.VIF.get_record(vif)
    assert rec["currently_attached"] is False and rec["MAC_autogenerated"] is True
    assert api.VM.get_VIFs(pool["db"]) == [vif]
    assert api.network.get_VIFs(pool["net"]) == [pool["vif"], vif]
    api.VM.start_on(pool["db"], pool["hosts"][1], False, False)
    started = api.VM.get_record(pool["db"])
    assert started["power_state"] == "Running" and started["domid"] == "2"
    assert api.VIF.get_currently_attached(vif) is True
    assert pool["db"] in api.host.get_resident_VMs(pool["hosts"][1])
    api.VM.clean_shutdown(pool["db"])
    assert api.VM.get_domid(pool["db"]) == "-1"
    api.VIF.destroy(vif)
    assert failure_of(api.VIF.get_record, vif) == ["HANDLE_INVALID", "VIF", vif]
    assert api.VM.get_VIFs(pool["db"]) == []


def _event_from(api, classes, token, timeout):
    return getattr(api.event, EVENT_FROM)(classes, token, timeout)


def test_event_from_full_sync_then_incremental(sim, pool):
    api = logged_in(unix_session, sim).xenapi
    full = _event_from(api, ["vm", "vif"], "", 5.0)
    assert all(e["operation"] == "add" for e in full["events"])
    seen = set((e["class"], e["ref"]) for e in full["events"])
    expected = set(("vm", r) for r in api.VM.get_all()) | set(("vif", r) for r in api.VIF.get_all())
    assert seen == expected
    snapshot = [e for e in full["events"] if e["ref"] == pool["web"]][0]["snapshot"]
    assert snapshot == api.VM.get_record(pool["web"])
    assert full["valid_ref_counts"]["vm"] == len(api.VM.get_all())

    # nothing new: blocks for the timeout, then an empty batch
    started = time.time()
    idle = _event_from(api, ["vm", "vif"], full["token"], 0.4)
    assert idle["events"] == [] and time.time() - started >= 0.35

    api.VIF.add_to_other_config(pool["vif"], "ethtool-sg", "off")
    api.network.add_to_other_config(pool["net"], "unsubscribed", "x")
    mod = _event_from(api, ["vm", "vif"], idle["token"], 5.0)
    assert [(e["class"], e["operation"], e["ref"]) for e in mod["events"]] == [
        ("vif", "mod", pool["vif"])]
    assert mod["events"][0]["snapshot"]["other_config"] == {"ethtool-sg": "off"}

    sim.destroy_vif(pool["vif"])
    gone = _event_from(api, ["vif"], mod["token"], 5.0)
    assert [(e["operation"], e["ref"]) for e in gone["events"]] == [("del", pool["vif"])]
    assert "snapshot" not in gone["events"][0]


def test_event_from_wakes_on_change_from_another_client(sim, pool):
    api = logged_in(unix_session, sim).xenapi
    other = logged_in(http_session, sim).xenapi
    token = _event_from(api, ["vif"], "", 5.0)["token"]
    timer = threading.Timer(0.2, other.VIF.create, [{
        "VM": pool["db"], "network": pool["net"], "device": "3", "MAC": "",
        "MTU": "1500", "other_config": {}, "qos_algorithm_type": "",
        "qos_algorithm_params": {}}])
    timer.start()
    started = time.time()
    batch = _event_from(api, ["vif"], token, 10.0)
    timer.join()
    assert time.time() - started < 5
    assert [(e["operation"], e["snapshot"]["device"]) for e in batch["events"]] == [("add", "3")]


def test_created_and_deleted_between_calls_is_not_reported(sim, pool):
    api = logged_in(unix_session, sim).xenapi
    token = _event_from(api, ["vm"], "", 5.0)["token"]
    vm = sim.add_vm("ephemeral")
    sim.destroy_vm(vm)
    assert _event_from(api, ["vm"], token, 0.2)["events"] == []


def test_restart_invalidates_sessions_and_client_logs_in_again(sim, pool):
    session = logged_in(unix_session, sim)
    old = session.handle
    raw = xmlrpc.client.ServerProxy(sim.url, allow_none=True)
    sim.restart()
    assert raw.VM.get_all(old) == {"Status": "Failure",
                                   "ErrorDescription": ["SESSION_INVALID", old]}
    # the XenAPI client sees SESSION_INVALID, logs in again and retries
    assert pool["web"] in session.xenapi.VM.get_all()
    assert session.handle != old


def test_session_from_plugin_style_handoff_cannot_relogin(sim, pool):
    """A session built from a passed ref (as XenAPIPlugin does) has no credentials."""
    owner = logged_in(unix_session, sim)
    borrowed = unix_session(sim)
    borrowed._session = owner.handle
    assert borrowed.xenapi.VM.get_record(pool["web"])["name_label"].startswith("web")
    sim.restart()
    with pytest.raises(xmlrpc.client.Fault):
        borrowed.xenapi.VM.get_all()


def test_event_from_blocked_across_restart(sim, pool):
    """The waiter's connection is cut. The client either sees the socket error
    (its resend hit the restart gap, as with a real xapi restart) or resends,
    gets SESSION_INVALID, logs in again and waits on with its token, which
    stays parseable because the generation count persists."""
    api = logged_in(http_session, sim).xenapi
    token = _event_from(api, ["vm"], "", 5.0)["token"]
    outcome = []

    def wait():
        try:
            outcome.append(_event_from(api, ["vm"], token, 30.0))
        except OSError as exc:
            outcome.append(exc)
    thread = threading.Thread(target=wait)
    thread.start()
    time.sleep(0.3)
    started = time.time()
    sim.restart()
    assert time.time() - started < 5
    time.sleep(0.3)
    new_vm = sim.add_vm("after restart")
    thread.join(10)
    assert not thread.is_alive()
    if not isinstance(outcome[0], OSError):
        assert [(e["operation"], e["ref"]) for e in outcome[0]["events"]] == [
            ("add", new_vm)]


def test_login_with_configured_credentials(sock_dir):
    with XapiSim(socket_path=sock_dir + "/c.sock", credentials=("root", "pw"),
                 state_root=sock_dir + "/state") as sim:
        bad = unix_session(sim)
        with pytest.raises(XenAPI.Failure) as info:
            bad.login_with_password("root", "wrong")
        assert info.value.details == ["SESSION_AUTHENTICATION_FAILED", "root",
                                      "Authentication failure"]
        logged_in_ok = unix_session(sim)
        logged_in_ok.login_with_password("root", "pw")
        assert logged_in_ok.xenapi.pool.get_all()


def test_call_counters_and_latency(sim, pool):
    api = logged_in(unix_session, sim).xenapi
    sim.reset_call_counts()
    for _ in range(5):
        api.VIF.get_record(pool["vif"])
    api.VM.get_all()
    assert sim.call_counts() == {"VIF.get_record": 5, "VM.get_all": 1}
    started = time.time()
    for _ in range(10):
        api.VM.get_all()
    fast = time.time() - started
    sim.set_latency_ms(30)
    started = time.time()
    for _ in range(10):
        api.VM.get_all()
    slow = time.time() - started
    assert slow >= 0.3 and slow > fast


def test_socket_path_with_underscore_is_refused(sock_dir):
    with pytest.raises(ValueError):
        XapiSim(socket_path=sock_dir + "/bad_name.sock")


def test_host_socket_lives_and_dies_with_the_host(sim, pool, sock_dir):
    member = pool["hosts"][1]
    path = sock_dir + "/member.sock"
    sim.configure_host(member, socket_path=path)
    assert sim.host_env(member)["NETOFFLOAD_XAPI_SOCKET"] == path
    local = XenAPI.Session("http://%s/" % path.replace("/", "_"),
                           transport=XenAPI.UDSTransport())
    local.login_with_password("root", "")
    # the member forwards to the master: same database, master-owned session
    assert local.xenapi.VM.get_record(pool["web"])["resident_on"] == member
    assert local.xenapi.session.get_this_host(local.handle) == pool["hosts"][0]
    sim.set_host_live(member, False)
    with pytest.raises(OSError):
        local.xenapi.VM.get_all()
    sim.set_host_live(member, True)
    assert pool["web"] in local.xenapi.VM.get_all()  # logged in again
    sim.restart()
    assert pool["web"] in local.xenapi.VM.get_all()


@pytest.mark.parametrize("classes,expected_classes", [
    (["*"], {"pool", "host", "host_metrics", "network", "pif", "vm", "vif"}),
    (["VM", "Vif"], {"vm", "vif"}),
    (["nosuchclass"], set()),
], ids=["star", "case-insensitive", "unknown-class"])
def test_event_subscription_classes(sim, pool, classes, expected_classes):
    api = logged_in(unix_session, sim).xenapi
    batch = _event_from(api, classes, "", 0.2)
    assert set(e["class"] for e in batch["events"]) == expected_classes


def test_event_object_subscription_and_inject(sim, pool):
    api = logged_in(unix_session, sim).xenapi
    token = _event_from(api, ["vm/" + pool["web"]], "", 5.0)["token"]
    sim.add_vm("unrelated")
    api.VM.add_to_other_config(pool["db"], "k", "v")
    assert _event_from(api, ["vm/" + pool["web"]], token, 0.2)["events"] == []
    injected = api.event.inject("VM", pool["web"])
    batch = _event_from(api, ["vm"], injected, 5.0)
    assert [(e["operation"], e["ref"]) for e in batch["events"]] == [("mod", pool["web"])]
    assert failure_of(api.event.inject, "VIF", pool["web"]) == [
        "HANDLE_INVALID", "VIF", pool["web"]]


def test_creating_a_vif_stamps_its_vm_and_network(sim, pool):
    api = logged_in(unix_session, sim).xenapi
    token = _event_from(api, ["vm", "network", "vif"], "", 5.0)["token"]
    vif = sim.add_vif(pool["db"], pool["net"], 4)
    batch = _event_from(api, ["vm", "network", "vif"], token, 5.0)
    assert sorted((e["class"], e["operation"], e["ref"]) for e in batch["events"]) == sorted([
        ("vif", "add", vif), ("vm", "mod", pool["db"]), ("network", "mod", pool["net"])])
