"""The watcher's lean read of event.from (watch_events.parse_event_reply and
watch.EventChannel) gives what the XenAPI client gives, trimmed.

Checked against the real client on the simulator's replies, and on xapi's
own compact form (no whitespace, strings as bare text, `<value/>` for an
empty string).
"""
import pytest
import XenAPI

from netoffload.agents import watch, watch_events
from netoffload.errors import XapiError
from tests.support.simpool import SimPool
from tests.support.wireserver import serve_replies

XAPI_STYLE = (
    b"<?xml version=\"1.0\"?><methodResponse><params><param><value><struct>"
    b"<member><name>Status</name><value>Success</value></member>"
    b"<member><name>Value</name><value><struct>"
    b"<member><name>events</name><value><array><data>"
    b"<value><struct>"
    b"<member><name>id</name><value>12</value></member>"
    b"<member><name>class</name><value>VIF</value></member>"
    b"<member><name>operation</name><value>mod</value></member>"
    b"<member><name>ref</name><value>OpaqueRef:v1</value></member>"
    b"<member><name>snapshot</name><value><struct>"
    b"<member><name>uuid</name><value>u-1</value></member>"
    b"<member><name>device</name><value>0</value></member>"
    b"<member><name>MAC</name><value/></member>"
    b"<member><name>currently_attached</name><value><boolean>1</boolean></value></member>"
    b"<member><name>other_config</name><value><struct>"
    b"<member><name>ethtool-tx</name><value>off</value></member>"
    b"<member><name>note</name><value/></member>"
    b"</struct></value></member>"
    b"<member><name>qos_algorithm_params</name><value><struct/></value></member>"
    b"</struct></value></member>"
    b"</struct></value>"
    b"<value><struct>"
    b"<member><name>class</name><value>vm</value></member>"
    b"<member><name>operation</name><value>del</value></member>"
    b"<member><name>ref</name><value>OpaqueRef:m1</value></member>"
    b"<member><name>snapshot</name><value><struct/></value></member>"
    b"</struct></value>"
    b"</data></array></value></member>"
    b"<member><name>valid_ref_counts</name><value><struct/></value></member>"
    b"<member><name>token</name><value>tok,1</value></member>"
    b"</struct></value></member>"
    b"</struct></value></param></params></methodResponse>")


def test_xapi_compact_form():
    reply = watch_events.parse_event_reply(XAPI_STYLE)
    assert reply["token"] == "tok,1"
    vif, vm = reply["events"]
    assert (vif["class"], vif["operation"], vif["ref"]) == \
        ("VIF", "mod", "OpaqueRef:v1")
    # only the fields the pack reads; MAC and qos are left unread
    assert vif["snapshot"] == {"uuid": "u-1", "device": "0",
                               "currently_attached": True,
                               "other_config": {"ethtool-tx": "off",
                                                "note": ""}}
    assert vm["snapshot"] == {}


def test_a_failure_and_garbage():
    failure = (b"<methodResponse><params><param><value><struct>"
               b"<member><name>Status</name><value>Failure</value></member>"
               b"<member><name>ErrorDescription</name><value><array><data>"
               b"<value>EVENTS_LOST</value></data></array></value></member>"
               b"</struct></value></param></params></methodResponse>")
    with pytest.raises(watch_events.EventReplyError) as err:
        watch_events.parse_event_reply(failure)
    assert err.value.details == ["EVENTS_LOST"]
    for junk in (b"", b"<html>busy</html>", b"<methodResponse"):
        with pytest.raises(ValueError):
            watch_events.parse_event_reply(junk)



def _records_reply(value):
    return (b"<?xml version=\"1.0\"?><methodResponse><params><param><value>"
            b"<struct><member><name>Status</name><value>Success</value>"
            b"</member>" + value + b"</struct></value></param></params>"
            b"</methodResponse>")


def test_a_records_reply_with_no_map_of_records_is_an_error_not_none():
    """get_all_records read as it streams: a reply that holds no map of
    records (no Value, or a Value that is no struct) is no reply of that
    call, not a class without objects, which would drop every cache entry
    of the class; a map of none is {}."""
    empty = _records_reply(b"<member><name>Value</name><value><struct/>"
                           b"</value></member>")
    assert watch_events.parse_records_stream([empty], "vif") == {}
    for value in (b"", b"<member><name>Value</name><value/></member>",
                  b"<member><name>Value</name><value>x</value></member>"):
        with pytest.raises(ValueError):
            watch_events.parse_records_stream([_records_reply(value)], "vif")
    with pytest.raises(ValueError):
        watch_events.parse_records_stream([b"<html>busy</html>"], "vif")

def test_the_simulators_replies_read_as_the_xenapi_client_reads_them(
        monkeypatch):
    with SimPool() as box:
        host = box.add_host("h1")
        net = box.admin.add_network(name_label="n0",
                                    other_config={"netoffload-vif": "tx-off"})
        vm = box.admin.add_vm(name_label="caf\u00e9 & <web>",
                              power_state="Running", resident_on=host,
                              tags=["a", "b"])
        box.create_vif(vm, net, 0, other_config={"ethtool-tx": "true",
                                                 "k": "<&>"})
        monkeypatch.setenv("NETOFFLOAD_XAPI_SOCKET", box.socket_path)
        channel = watch.EventChannel()
        session = box.session
        classes = ["pool", "host", "network", "vm", "vif", "pif"]
        try:
            lean = channel.call(session._session, classes, "", 0.0)
        finally:
            channel.close()
        full = getattr(session.xenapi.event, "from")(classes, "", 0.0)
    assert lean["events"]
    assert len(lean["events"]) == len(full["events"])
    for mine, theirs in zip(lean["events"], full["events"]):
        cls = theirs["class"].lower()
        assert mine["ref"] == theirs["ref"] and mine["class"] == theirs["class"]
        assert mine["operation"] == theirs["operation"]
        if cls in watch_events.KEEP:
            assert watch_events.trim(cls, mine["snapshot"]) == \
                watch_events.trim(cls, theirs["snapshot"])


def test_a_lost_session_is_a_resync_not_a_retry():
    with SimPool() as box:
        box.add_host("h1")
        channel = watch.EventChannel(("socket", box.socket_path))
        try:
            with pytest.raises(XapiError) as err:
                channel.call("OpaqueRef:not-a-session", ["pool"], "", 0.0)
        finally:
            channel.close()
    assert "session was renewed" in err.value.message
    from netoffload.pool import retry
    assert not retry.is_transient(err.value)
    assert XenAPI  # the client the comparison above is made with


def test_sets_the_pack_never_reads_are_cut_before_parsing():
    import xmlrpc.client
    refs = ["OpaqueRef:vif-%d" % i for i in range(3000)]
    reply = xmlrpc.client.dumps(({"Status": "Success", "Value": {
        "token": "t", "events": [
            {"class": "network", "operation": "mod", "ref": "OpaqueRef:n",
             "snapshot": {"uuid": "n-1", "name_label": "net0", "VIFs": refs,
                          "PIFs": [], "other_config": {
                              "VIFs": "an admin's key", "netoffload-vif":
                              "tx-off"}}},
            {"class": "vm", "operation": "mod", "ref": "OpaqueRef:v",
             "snapshot": {"uuid": "v-1", "tags": ["VIFs", "x"],
                          "VIFs": refs[:2]}}]}},), methodresponse=True)
    data = reply.encode("utf-8")
    cut = watch_events.strip_unread_sets(data)
    assert len(cut) < len(data) / 20
    assert b"OpaqueRef:vif-" not in cut
    net, vm = watch_events.parse_event_reply(data)["events"]
    assert net["snapshot"] == {"uuid": "n-1", "name_label": "net0",
                               "other_config": {"VIFs": "an admin's key",
                                                "netoffload-vif": "tx-off"}}
    assert vm["snapshot"]["tags"] == ["VIFs", "x"]
    # xapi's compact form
    compact = data.replace(b"\n", b"")
    assert b"OpaqueRef:vif-" not in watch_events.strip_unread_sets(compact)
    assert watch_events.parse_event_reply(compact)["events"][0] == net


def test_get_all_records_read_lean_equals_the_client_trimmed(monkeypatch):
    from netoffload.pool.records import CLASSES
    with SimPool() as box:
        host = box.add_host("h1")
        net = box.admin.add_network(name_label="n0",
                                    other_config={"netoffload-vif": "tx-off"})
        box.admin.add_pif(host=host, network=net, device="eth0")
        for i in range(30):
            vm = box.admin.add_vm(name_label="vm %d <&>" % i, tags=["t%d" % i])
            box.create_vif(vm, net, 0, other_config={"k": "v%d" % i})
        channel = watch.EventChannel(("socket", box.socket_path))
        session = box.session
        try:
            for xapi_class in CLASSES:
                lean = channel.all_records(session._session, xapi_class)
                full = getattr(session.xenapi, xapi_class.name).get_all_records()
                assert sorted(lean) == sorted(full)
                for ref, record in full.items():
                    assert watch_events.trim(xapi_class.event, lean[ref]) == \
                        watch_events.trim(xapi_class.event, record)
            # the connection stays usable after a streamed reply
            assert channel.call(session._session, ["pool"], "", 0.0)["token"]
            with pytest.raises(XapiError) as err:
                channel.all_records("OpaqueRef:nobody", CLASSES[0])
            assert "session was renewed" in err.value.message
        finally:
            channel.close()


def test_lean_writer_calls_map_errors_as_the_client_wrapper_does():
    from netoffload.pool import xapi
    with SimPool() as box:
        box.add_host("h1")
        net = box.admin.add_network(name_label="n0")
        vm = box.admin.add_vm(name_label="v")
        vif = box.create_vif(vm, net, 0, other_config={"a": "1"})
        lean = watch.LeanXapi(box.session,
                              watch.EventChannel(("socket", box.socket_path)))
        try:
            lean.set_other_config_key("VIF", vif, "ethtool-tx", "off", None)
            assert lean.get_other_config("VIF", vif) == \
                box.api.VIF.get_other_config(vif) == \
                {"a": "1", "ethtool-tx": "off"}
            with pytest.raises(XapiError) as dup:
                lean.call("VIF.add_to_other_config", vif, "a", "2")
            assert dup.value.params[:1] == ["MAP_DUPLICATE_KEY"]
            # someone else's value in between: a lost race, their map given
            box.api.VIF.add_to_other_config(vif, "ethtool-sg", "on")
            with pytest.raises(xapi.LostRace) as race:
                lean.set_other_config_key("VIF", vif, "ethtool-sg", "off", None)
            assert race.value.other_config["ethtool-sg"] == "on"
            box.api.VIF.destroy(vif)
            with pytest.raises(xapi.ObjectGone):
                lean.set_other_config_key("VIF", vif, "ethtool-gso", "off", None)
            assert lean.calls == 6
        finally:
            lean.channel.close()


def _one_reply_server(path, replies):
    """A unix socket server answering each request with the next raw reply
    of `replies` (bytes; None: close the connection before answering)."""
    import socket
    import threading
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(4)

    def serve():
        pending = list(replies)
        while pending:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            with conn:
                while pending:
                    request = b""
                    while b"</methodCall>" not in request:
                        chunk = conn.recv(65536)
                        if not chunk:
                            break
                        request += chunk
                    if not request:
                        break
                    reply = pending.pop(0)
                    if reply is None:
                        break  # hang up: the client must come back
                    conn.sendall(reply)
    thread = threading.Thread(target=serve)
    thread.daemon = True
    thread.start()
    return listener, thread


def _reply_bytes(value):
    import xmlrpc.client
    return xmlrpc.client.dumps(({"Status": "Success", "Value": value},),
                               methodresponse=True).encode()


def test_the_wire_reads_sized_chunked_and_closing_replies(tmp_path):
    import os

    from sim.xapi_sim import socket_dir
    directory = socket_dir("wire")
    path = os.path.join(directory, "s")
    one, two, three = (_reply_bytes(v) for v in ("a", {"k": "v"}, ["x"]))
    chunked = b"".join(b"%x\r\n%s\r\n" % (len(p), p)
                       for p in (two[:10], two[10:])) + b"0\r\n\r\n"
    replies = [
        b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(one) + one,
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + chunked,
        None,  # an idle keep-alive connection closed by the server
        b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n" + three,
    ]
    listener, thread = _one_reply_server(path, replies)
    channel = watch.EventChannel(("socket", path))
    try:
        assert channel.value("x.y", ("s",)) == "a"
        assert channel.value("x.y", ("s",)) == {"k": "v"}
        assert channel.value("x.y", ("s",)) == ["x"]  # sent again, once
    finally:
        channel.close()
        listener.close()
        thread.join(5)
        for name in os.listdir(directory):
            os.unlink(os.path.join(directory, name))
        os.rmdir(directory)


def test_the_watcher_loads_no_xenapi_xmlrpc_http_client_or_ssl():
    """Those modules are 7 MiB of the watcher's RSS; it logs in, writes
    its calls and reads HTTP itself."""
    import subprocess
    import sys

    from tests.support import layout
    code = ("import sys; from netoffload.agents import watch; "
            "print(' '.join(m for m in ('XenAPI', 'xmlrpc.client', "
            "'http.client', 'ssl', 'email', 'decimal') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=layout.REPO,
                         stdout=subprocess.PIPE, universal_newlines=True,
                         timeout=60, check=True).stdout
    assert out.strip() == ""


def test_a_lean_session_logs_in_again_where_the_xenapi_client_would():
    """The watcher's own session (relogin=True) outlives SESSION_INVALID
    as the XenAPI client's does (its lease is given back through it after a
    xapi restart); a writer session (relogin=False) reports it."""
    from netoffload.pool import retry
    with SimPool() as box:
        box.add_host("h1")
        session = watch.LeanSession(("socket", box.socket_path)).login()
        first = session._session
        assert first.startswith("OpaqueRef:")
        own = watch.LeanXapi(session, session.channel, relogin=True)
        writer = watch.LeanXapi(session, watch.EventChannel(
            ("socket", box.socket_path)))
        try:
            pool = own.call("pool.get_all")[0]
            session.channel.value("session.logout", (first,))
            with pytest.raises(XapiError) as gone:
                writer.call("pool.get_other_config", pool)
            assert gone.value.params[:1] == ["SESSION_INVALID"]
            assert retry.is_transient(gone.value)
            assert own.call("pool.get_other_config", pool) == \
                box.api.pool.get_other_config(pool)
            assert session._session != first
            assert own.calls == 2 and writer.calls == 1
        finally:
            writer.channel.close()
            session.logout()


def test_a_failed_login_is_a_xapi_error_and_unreachable_is_transient(tmp_path):
    from netoffload.pool import retry
    with pytest.raises(XapiError) as err:
        watch.LeanSession(("socket", str(tmp_path / "none"))).login()
    assert "cannot reach xapi" in err.value.message
    assert retry.is_transient(err.value)


def test_lean_settling_reads_the_pool_trimmed_as_the_client_does():
    """writer.settle_crashed's snapshot through the watcher's own wire: the
    fields the pack reads, equal to the XenAPI client's records trimmed."""
    with SimPool() as box:
        box.add_host("h1")
        net = box.admin.add_network(name_label="n0")
        vm = box.admin.add_vm(name_label="v")
        box.create_vif(vm, net, 0, other_config={"a": "1"})
        lean = watch.LeanXapi(box.session,
                              watch.EventChannel(("socket", box.socket_path)))
        try:
            mine = lean.snapshot()
            assert lean.calls == 6
            from netoffload.pool.records import CLASSES
            for xapi_class in CLASSES:
                theirs = box.api.__getattr__(xapi_class.name).get_all_records()
                table = mine.table(xapi_class.event)
                assert set(table) == set(theirs)
                for ref, record in theirs.items():
                    assert table[ref] == watch_events.trim(xapi_class.event,
                                                           record)
        finally:
            lean.channel.close()


@pytest.mark.parametrize("status, transient", [
    (b"HTTP/1.1 503 Service Unavailable", True),
    (b"HTTP/1.1 502 Bad Gateway", True),
    (b"HTTP/1.1 404 Not Found", False),
    (b"SSH-2.0-OpenSSH", True),  # not HTTP: cut short, a passing failure
])
def test_http_failures_are_told_as_before(status, transient):
    import os

    from netoffload.pool import retry
    from sim.xapi_sim import socket_dir
    directory = socket_dir("wire")
    path = os.path.join(directory, "s")
    listener, thread = _one_reply_server(
        path, [status + b"\r\nContent-Length: 0\r\n\r\n"])
    session = watch.LeanSession()
    session._session = "OpaqueRef:s"
    lean = watch.LeanXapi(session, watch.EventChannel(("socket", path)))
    try:
        with pytest.raises(XapiError) as err:
            lean.call("pool.get_all")
        assert retry.is_transient(err.value) is transient
    finally:
        lean.channel.close()
        listener.close()
        thread.join(5)
        for name in os.listdir(directory):
            os.unlink(os.path.join(directory, name))
        os.rmdir(directory)


def test_the_watchers_wire_never_sends_a_call_again_after_part_of_a_reply():
    """A key write answered in part may have run: sending it again would
    turn a lease taken by us into MAP_DUPLICATE_KEY, another holder. Only
    a reused connection that answered nothing is tried again."""
    import socket
    sized = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
    cut = b"HTTP/1.1 200 OK\r\nContent-Le"  # then the connection goes
    path, requests = serve_replies([sized, (cut,), sized, b"", sized,
                                    (b"SSH-2.0-x\r\n\r\n",)])
    wire = watch._Wire(socket.AF_UNIX, path)
    socket.setdefaulttimeout(30)  # the wire's sockets take it
    try:
        assert wire.request(b"1")[2] == b"ok"
        with pytest.raises(ConnectionError):
            wire.request(b"2")
        assert wire.request(b"3")[2] == b"ok"
        assert wire.request(b"4")[2] == b"ok"  # idle, closed unanswered
        with pytest.raises(watch.WireError, match="not an HTTP reply"):
            wire.request(b"5")
    finally:
        socket.setdefaulttimeout(None)
        wire.close()
    assert [r[-1:] for r in requests] == [b"1", b"2", b"3", b"4", b"4", b"5"]
