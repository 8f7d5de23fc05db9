"""xapi.py helpers that need no XAPI: the inventory and error mapping."""
import pytest

from netoffload.errors import NotFound
from netoffload.pool import xapi
from tests.support.wireserver import serve_replies

INVENTORY_CASES = [
    ("single-quotes", "INSTALLATION_UUID='6f1d-aa'\n", "6f1d-aa"),
    ("double-quotes", 'BUILD="x"\nINSTALLATION_UUID="77-bb"\n', "77-bb"),
    ("bare", "INSTALLATION_UUID=88-cc\n", "88-cc"),
    ("blanks-and-comments", "# INSTALLATION_UUID='no'\n\n"
     "INSTALLATION_UUID = '99-dd' \n", "99-dd"),
]


@pytest.mark.parametrize("text,uuid", [c[1:] for c in INVENTORY_CASES],
                         ids=[c[0] for c in INVENTORY_CASES])
def test_local_host_uuid(tmp_path, monkeypatch, text, uuid):
    path = tmp_path / "xensource-inventory"
    path.write_text(text)
    monkeypatch.setenv("NETOFFLOAD_INVENTORY", str(path))
    assert xapi.local_host_uuid() == uuid


@pytest.mark.parametrize("text", ["PRODUCT_BRAND='XenServer'\n",
                                  "INSTALLATION_UUID=''\n", None],
                         ids=["missing-key", "empty", "no-file"])
def test_local_host_uuid_not_found(tmp_path, monkeypatch, text):
    path = tmp_path / "xensource-inventory"
    if text is not None:
        path.write_text(text)
    monkeypatch.setenv("NETOFFLOAD_INVENTORY", str(path))
    with pytest.raises(NotFound):
        xapi.local_host_uuid()


def test_real_inventory_fixture_format(tmp_path):
    # The layout of a XenServer 8 dom0 inventory (values single-quoted).
    path = tmp_path / "inv"
    path.write_text("PRIMARY_DISK='/dev/disk/by-id/scsi-1'\n"
                    "PRODUCT_VERSION='8.4.0'\n"
                    "CONTROL_DOMAIN_UUID='0a8f-1'\n"
                    "INSTALLATION_UUID='3b4e-2'\n"
                    "MANAGEMENT_INTERFACE='xenbr0'\n")
    inventory = xapi.read_inventory(str(path))
    assert (inventory["INSTALLATION_UUID"], inventory["MANAGEMENT_INTERFACE"]) \
        == ("3b4e-2", "xenbr0")


def test_failure_details_are_strings():
    import XenAPI
    failure = XenAPI.Failure(["HANDLE_INVALID", "VIF", "OpaqueRef:x"])
    assert xapi.failure_details(failure) == ["HANDLE_INVALID", "VIF",
                                          "OpaqueRef:x"]
    assert xapi.failure_details(ValueError("x")) == ["UNKNOWN"]


# -- the lean wire ---------------------------------------------------------------

REQUEST_PARAMS = [
    ("OpaqueRef:1", "ethtool-tx", "off"),
    ("a&b<c>d", "\u00e9\u20ac", "", "line\nbreak\ttab"),
    ("s", {"target": "ALL"}),
    ("s", ["vif", "vm"], "", 30.0),
    ("s", 5, True, None),
]


@pytest.mark.parametrize("params", REQUEST_PARAMS)
def test_request_body_is_the_xmlrpc_clients(params):
    import xmlrpc.client
    assert xapi.request_body("VIF.add_to_other_config", params) == \
        xmlrpc.client.dumps(params, "VIF.add_to_other_config",
                            allow_none=True).encode("utf-8")


def test_parse_reply_decodes_as_xmlrpc_client_does():
    import xmlrpc.client

    from sim import wire
    values = ["", "x & <y>", {"a": "b", "l": ["1", "2"], "t": True, "i": 5,
                              "f": 1.5, "n": None, "m": {}},
              [], ["a", {"b": []}], wire.DateTime("20240101T00:00:00Z"),
              wire.Int32(3)]
    for value in values:
        body = wire.xml_success(value).encode("utf-8")
        expected = xmlrpc.client.loads(body)[0][0]
        got = xapi.parse_reply(body)
        assert got == expected and \
            type(got["Value"]) is type(expected["Value"])
    failure = wire.xml_response({"Status": "Failure", "ErrorDescription": [
        "HANDLE_INVALID", "VIF", "OpaqueRef:x"]}).encode("utf-8")
    assert xapi.parse_reply(failure) == xmlrpc.client.loads(failure)[0][0]
    fault = xmlrpc.client.dumps(xmlrpc.client.Fault(3, "boom"),
                                methodresponse=True).encode("utf-8")
    with pytest.raises(xmlrpc.client.Fault) as info:
        xapi.parse_reply(fault)
    assert (info.value.faultCode, info.value.faultString) == (3, "boom")
    from xml.parsers.expat import ExpatError
    with pytest.raises(ExpatError):  # a reply cut short, as XenAPI raises
        xapi.parse_reply(failure[:40])


def test_no_wire_for_a_session_whose_endpoint_is_unknown():
    import XenAPI

    class Fake(object):
        xenapi = None
    assert xapi.wire_for(Fake()) is None
    assert xapi.wire_for(XenAPI.Session("https://192.0.2.1/")) is None
    wire = xapi.wire_for(XenAPI.Session("http://192.0.2.1:8080/"))
    assert wire.address == ("192.0.2.1", 8080)
    wire = xapi.wire_for(XenAPI.xapi_local())
    assert wire.address == "/var/lib/xcp/xapi"
    # credentials in the URL: XenAPI's Basic auth, which the wire lacks
    assert xapi.wire_for(XenAPI.Session("http://root:pw@192.0.2.1/")) is None


def test_http_wire_reaches_an_ipv6_endpoint():
    """http://[::1]:port/ (XenAPI connects to it with http.client) is
    reached by the wire too, not tried as an IPv4 address."""
    import socket
    import threading

    import XenAPI
    try:
        server = socket.socket(socket.AF_INET6)
        server.bind(("::1", 0))
    except OSError:
        pytest.skip("no IPv6 loopback")
    server.listen(1)
    port = server.getsockname()[1]
    got = []

    def answer():
        conn, _ = server.accept()
        with conn:
            got.append(conn.recv(65536))
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
    thread = threading.Thread(target=answer)
    thread.daemon = True
    thread.start()
    wire = xapi.wire_for(XenAPI.Session("http://[::1]:%d/" % port))
    socket.setdefaulttimeout(30)  # the wire's sockets take it
    try:
        assert wire.request(b"<a/>") == (200, "OK", b"ok")
    finally:
        socket.setdefaulttimeout(None)
        wire.close()
        server.close()
    assert got[0].startswith(b"POST / HTTP/1.1\r\nHost: [::1]:%d\r\n" % port)


def test_lean_and_xenapi_calls_agree_on_results_and_errors(monkeypatch):
    from tests.support.simpool import SimPool
    with SimPool() as pool:
        sim = pool.sim
        vm = sim.add_vm("vm")
        vif = sim.add_vif(vm, sim.add_network("LAN"), 0,
                          other_config={"k": "v & <w>"})
        monkeypatch.setenv("NETOFFLOAD_XAPI_SOCKET", sim.socket_path)
        session = xapi.open_session()
        try:
            lean, plain = xapi.Xapi(session), xapi.Xapi(session, lean=False)
            assert lean._wire is not None and plain._wire is None

            def outcome(client, method, *params):
                try:
                    return ("ok", client.call(method, *params))
                except xapi.XapiError as err:
                    return (type(err).__name__, err.message, err.params)
            calls = [("VIF.get_other_config", vif),
                     ("VIF.get_record", vif),
                     ("VIF.add_to_other_config", vif, "k", "x"),
                     ("VIF.get_other_config", "OpaqueRef:gone"),
                     ("VIF.no_such_call", vif),
                     ("VM.get_by_name_label", "vm")]
            for call in calls:
                assert outcome(lean, *call) == outcome(plain, *call)
            assert lean._wire.sock is not None  # the calls used the wire
            assert lean.calls == plain.calls == len(calls)
            sim.restart()  # sessions die: XenAPI logs in again, then the wire
            assert lean.call("VIF.get_other_config", vif) == {"k": "v & <w>"}
            assert lean.call("VIF.get_other_config", vif) == {"k": "v & <w>"}
            lean.close()
        finally:
            xapi.close_session(session)


def test_http_wire_reads_sized_chunked_and_closing_replies():
    import socket
    sized = (b"HTTP/1.1 200 OK\r\nContent-Type: text/xml\r\n"
             b"content-length: 5\r\n\r\nhello")
    chunked = (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
               b"3\r\nabc\r\n2;x=y\r\nde\r\n0\r\n\r\n")
    closing = (b"HTTP/1.1 500 Internal Error\r\nConnection: close\r\n"
               b"Content-Length: 2\r\n\r\nno")
    path, requests = serve_replies([sized, chunked, closing, sized])
    wire = xapi.HttpWire(socket.AF_UNIX, path, "h", "/RPC2",
                         [("originator", "me")])
    assert wire.request(b"<a/>") == (200, "OK", b"hello")
    assert wire.request(b"<b/>") == (200, "OK", b"abcde")
    assert wire.request(b"<c/>") == (500, "Internal Error", b"no")
    assert wire.sock is None  # Connection: close
    assert wire.request(b"<d/>") == (200, "OK", b"hello")  # a new one
    assert requests[0] == (b"POST /RPC2 HTTP/1.1\r\nHost: h\r\n"
                           b"originator: me\r\nContent-Type: text/xml\r\n"
                           b"Content-Length: 4\r\n\r\n<a/>")
    wire.close()


def test_http_wire_sends_again_on_an_idle_connection_the_server_closed():
    import socket
    sized = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
    path, requests = serve_replies([sized, b"", sized])
    wire = xapi.HttpWire(socket.AF_UNIX, path)
    assert wire.request(b"1")[2] == b"ok"
    assert wire.request(b"2")[2] == b"ok"  # closed unanswered: sent again
    assert [r[-1:] for r in requests] == [b"1", b"2", b"2"]
    wire.close()


def test_http_wire_does_not_send_again_after_part_of_a_reply():
    import socket
    sized = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
    cut = b"HTTP/1.1 200 OK\r\nContent-Le"  # then the connection goes
    path, requests = serve_replies([sized, (cut,), sized])
    wire = xapi.HttpWire(socket.AF_UNIX, path)
    socket.setdefaulttimeout(30)  # the wire's sockets take it
    try:
        assert wire.request(b"1")[2] == b"ok"
    finally:
        socket.setdefaulttimeout(None)
    with pytest.raises(ConnectionError):
        wire.request(b"2")  # answered in part: the call may have run
    assert wire.request(b"3")[2] == b"ok"
    assert [r[-1:] for r in requests] == [b"1", b"2", b"3"]
    wire.close()


def test_http_wire_reads_a_large_sized_reply_in_linear_time(monkeypatch):
    """A pool's get_all_records reply is megabytes, arriving a socket
    buffer at a time: the pieces are joined once (adding each to the
    buffer was quadratic: 8 MiB in 1 KiB pieces took 2.5 s of CPU here,
    0.06 s joined once)."""
    import socket
    import threading
    import time
    monkeypatch.setattr(xapi, "RECV_CHUNK", 1024)
    body = b"<x/>" * (2 << 20)  # 8 MiB
    ours, theirs = socket.socketpair()
    reply = (b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) +
             body + b"HTTP/1.1")  # and the start of a next reply, kept

    def answer():
        theirs.recv(65536)
        theirs.sendall(reply)
    thread = threading.Thread(target=answer)
    thread.daemon = True
    thread.start()
    wire = xapi.HttpWire(socket.AF_UNIX, "/nonexistent")
    wire.sock = ours  # connected: the request goes to `answer`
    ours.settimeout(60)
    began = time.process_time()
    try:
        status, _, data = wire.request(b"<call/>")
        spent = time.process_time() - began
        thread.join(60)
        assert status == 200 and data == body
        assert wire._buf == b"HTTP/1.1"
        assert spent < 1.0, spent  # linear: tens of ms
    finally:
        wire.close()
        theirs.close()


def _holding_server(answers):
    """A unix socket server: on each connection, requests are answered
    with `answers` in turn (bytes); (bytes,): those, then the connection
    closed; None: read the request and answer nothing, holding the
    connection open. (path, requests, stop)."""
    import os
    import socket
    import tempfile
    import threading
    path = tempfile.mktemp(prefix="nowire", dir="/tmp")
    server = socket.socket(socket.AF_UNIX)
    server.bind(path)
    server.listen(8)
    requests, done = [], threading.Event()
    queue = list(answers)

    def serve(conn):
        conn.settimeout(None)
        with conn:
            while queue:
                data = conn.recv(65536)
                if not data:
                    return
                requests.append(data)
                reply = queue.pop(0)
                if reply is None:
                    done.wait(30)
                    return
                conn.sendall(reply if isinstance(reply, bytes) else reply[0])
                if not isinstance(reply, bytes):
                    return

    def run():
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            threading.Thread(target=serve, args=(conn,), daemon=True).start()
    threading.Thread(target=run, daemon=True).start()

    def stop():
        done.set()
        server.close()
        os.unlink(path)
    return path, requests, stop


@pytest.mark.parametrize("split", [False, True], ids=["post", "send-reply"])
def test_http_wire_never_sends_again_after_a_timeout(split):
    """A reused connection whose reply does not come in time: the call
    may be running in xapi, so it is not sent again (post and the
    send/reply split alike), and the next request opens a new
    connection."""
    import socket
    sized = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
    path, requests, stop = _holding_server([sized, None, sized])
    wire = xapi.HttpWire(socket.AF_UNIX, path)
    socket.setdefaulttimeout(0.5)  # the wire's sockets take it
    try:
        assert wire.request(b"1")[2] == b"ok"
        with pytest.raises(socket.timeout):
            if split:
                wire.send(b"2")
                wire.reply()
            else:
                wire.post(b"2")
        assert wire.sock is None
        assert [r[-1:] for r in requests] == [b"1", b"2"]
        wire.send(b"3")
        status, _, body = wire.reply()
        assert (status, b"".join(body)) == (200, b"ok")
        assert [r[-1:] for r in requests] == [b"1", b"2", b"3"]
    finally:
        socket.setdefaulttimeout(None)
        wire.close()
        stop()


def test_http_wire_send_reply_on_several_connections_resends_a_stale_one():
    """Requests sent on two connections before either reply is read; the
    second, reused, had been closed by the server while idle: its reply
    comes from its request sent again on a new connection; the first's
    reply is its own."""
    import socket
    sized = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n"
    path, requests, stop = _holding_server(
        [(sized + b"aa",), sized + b"cc", sized + b"dd"])
    one = xapi.HttpWire(socket.AF_UNIX, path)
    two = xapi.HttpWire(socket.AF_UNIX, path)
    try:
        assert two.request(b"x")[2] == b"aa"  # then closed by the server
        assert wait_for_requests(requests, 1)
        one.send(b"1")
        assert wait_for_requests(requests, 2)
        two.send(b"2")
        _, _, body_two = two.reply()
        _, _, body_one = one.reply()
        assert (b"".join(body_one), b"".join(body_two)) == (b"cc", b"dd")
        assert [r[-1:] for r in requests] == [b"x", b"1", b"2"]
    finally:
        one.close()
        two.close()
        stop()


def wait_for_requests(requests, count):
    import time
    deadline = time.monotonic() + 10
    while len(requests) < count and time.monotonic() < deadline:
        time.sleep(0.01)
    return len(requests) >= count
