"""The simulator's fast path for plain calls (sim/wire.py) changes no byte:
every request, plain or not, gets the same reply with the fast path as with
the standard library's parsers alone, and a plain methodCall reads as
xmlrpc.client.loads reads it."""
import json
import random
import re
import socket
import uuid
import xmlrpc.client

import pytest

from sim import wire
from tests.support.simpool import SimPool


def body(method, *params):
    return xmlrpc.client.dumps(params, method).encode("utf-8")


def post(data, path="/", extra=b"", version=b"HTTP/1.1"):
    return (b"POST " + path.encode() + b" " + version + b"\r\nHost: x\r\n"
            b"Content-Type: text/xml\r\n" + extra +
            b"Content-Length: %d\r\n\r\n" % len(data) + data)


def requests(session, vif):
    get = body("VIF.get_other_config", session, vif)
    plain = {
        "get": post(get),
        "record": post(body("VIF.get_record", session, vif)),
        "add": post(body("VIF.add_to_other_config", session, vif, "k", "v")),
        "add-again": post(body("VIF.add_to_other_config", session, vif, "k",
                               "v")),
        "remove": post(body("VIF.remove_from_other_config", session, vif,
                            "k")),
        "bad-session": post(body("VIF.get_other_config", "OpaqueRef:x", vif)),
        "gone": post(body("VIF.get_other_config", session, "OpaqueRef:x")),
        "unknown": post(body("VIF.frob", session, vif)),
        "arity": post(body("VIF.get_other_config", session)),
        "http-1.0": post(get, version=b"HTTP/1.0"),
        "close": post(get, extra=b"Connection: close\r\n"),
        "keep-alive-1.0": post(get, extra=b"Connection: keep-alive\r\n",
                               version=b"HTTP/1.0"),
        "expect": post(get, extra=b"Expect: 100-continue\r\n"),
        "two-calls": post(body("VIF.get_MTU", session, vif)) +
        post(body("VIF.get_device", session, vif)),
        "two-calls-1.0": post(body("VIF.get_MTU", session, vif),
                              version=b"HTTP/1.0") +
        post(body("VIF.get_device", session, vif)),
        "two-calls-close": post(body("VIF.get_MTU", session, vif),
                                extra=b"Connection: close\r\n") +
        post(body("VIF.get_device", session, vif)),
        "get-page": b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        "options": b"OPTIONS / HTTP/1.1\r\nHost: x\r\n\r\n",
        "put": b"PUT / HTTP/1.1\r\nHost: x\r\n\r\n",
    }
    other = {
        "escaped": post(body("VIF.add_to_other_config", session, vif,
                             "k&<>\"'", "v\r\n\tx ]]>")),
        "struct": post(body("VIF.set_other_config", session, vif,
                            {"x": "1"})),
        "int": post(body("VIF.get_other_config", session, 5)),
        "non-ascii": post(body("VM.get_by_name_label", session, "\xe9")),
        "control": post(b"<methodCall><methodName>VM.get_by_name_label"
                        b"</methodName><params><param><value><string>\x01"
                        b"</string></value></param></params></methodCall>"),
        "crlf-body": post(get.replace(b"\n", b"\r\n")),
        "bare-value": post(("<methodCall><methodName>VIF.get_MTU</methodName>"
                            "<params><param><value> %s</value></param><param>"
                            "<value>%s</value></param></params></methodCall>"
                            % (session, vif)).encode()),
        "junk-after": post(get + b"<x/>"),
        "not-xml": post(b"hello"),
        "empty": post(b""),
        "json": post(json.dumps({"jsonrpc": "2.0", "id": 1,
                                 "method": "VIF.get_other_config",
                                 "params": [session, vif]}).encode(),
                     "/jsonrpc"),
        "folded-header": b"POST / HTTP/1.1\r\nX-A: 1\r\n  2\r\n"
                         b"Content-Length: %d\r\n\r\n" % len(get) + get,
        "two-lengths": b"POST / HTTP/1.1\r\nContent-Length: %d\r\n"
                       b"Content-Length: 3\r\n\r\n" % len(get) + get,
        "lower-case": b"POST / HTTP/1.1\r\ncontent-length:%d\r\n\r\n"
                      % len(get) + get,
        "bare-lf": b"POST / HTTP/1.1\nContent-Length: %d\n\n" % len(get) + get,
        "no-length": b"POST / HTTP/1.1\r\nHost: x\r\n\r\n",
        "bad-length": b"POST / HTTP/1.1\r\nContent-Length: abc\r\n\r\n",
        "bad-version": b"POST / HTTP/x.1\r\n\r\n",
        "http-2": b"POST / HTTP/2.0\r\n\r\n",
        "bad-syntax": b"POST / x HTTP/1.1\r\n\r\n",
        "long-header": b"POST / HTTP/1.1\r\nX: " + b"a" * 70000 + b"\r\n\r\n",
        "many-headers": b"POST / HTTP/1.1\r\n" + b"".join(
            b"X%d: 1\r\n" % i for i in range(101)) + b"\r\n",
        "double-slash": post(get, "//RPC2"),
    }
    return plain, other


def exchange(path, raw):
    """The reply bytes to `raw`, sent on a connection we then half-close:
    the server answers what it reads and closes at the end of input (or
    earlier: a second request after HTTP/1.0 stays unanswered)."""
    sock = socket.socket(socket.AF_UNIX)
    sock.settimeout(30)
    sock.connect(path)
    out = b""
    try:
        sock.sendall(raw)
        sock.shutdown(socket.SHUT_WR)
        while True:
            piece = sock.recv(65536)
            if not piece:
                break
            out += piece
    finally:
        sock.close()
    return re.sub(rb"Date: [^\r]*", b"Date: -", out)


def replies(monkeypatch, fast):
    """Every request's reply, from a fresh simulator with the same refs,
    uuids and MACs."""
    seeded = random.Random(15)
    monkeypatch.setattr(uuid, "uuid4", lambda: uuid.UUID(
        int=seeded.getrandbits(128), version=4))
    if not fast:
        never = re.compile(rb"(?!)")
        monkeypatch.setattr(wire, "_PLAIN_REQUEST", never)
        monkeypatch.setattr(wire, "_PLAIN_CALL", never)
    with SimPool() as pool:
        sim = pool.sim
        vif = sim.add_vif(sim.add_vm("vm"), sim.add_network("n"), 0,
                          other_config={"a&b": "<x>"})
        session = sim.handle("session.login_with_password",
                             ["root", ""])["Value"]
        plain, other = requests(session, vif)
        out = {}
        for name, raw in sorted(list(plain.items()) + list(other.items())):
            out[name] = exchange(sim.socket_path, raw)
    monkeypatch.undo()
    return out, set(plain)


def test_fast_path_replies_are_the_standard_paths(monkeypatch):
    fast, plain = replies(monkeypatch, True)
    standard, _ = replies(monkeypatch, False)
    assert sorted(fast) == sorted(standard)
    for name in sorted(fast):
        assert fast[name] == standard[name], name
    # the plain ones were answered
    assert all(fast[name].startswith(b"HTTP/1.1 ") for name in plain)
    assert fast["two-calls"].count(b"HTTP/1.1 200") == 2
    assert fast["two-calls-1.0"].count(b"HTTP/1.1 200") == 1


TEXT = "ab \t\n&<>\r\x01\x7f]\u00e9'\"=:"


@pytest.mark.parametrize("seed", range(4))
def test_plain_calls_read_as_xmlrpc_client_reads_them(seed):
    rnd = random.Random(seed)

    def standard(data):
        try:
            params, method = xmlrpc.client.loads(data)
        except Exception as exc:
            return ("error", "unable to parse XML-RPC: %s" % exc)
        return ("ok", (method, list(params)))

    def fast(data):
        try:
            return ("ok", wire.parse_xml_call(data))
        except wire.BadRequest as exc:
            return ("error", str(exc))
    plain = 0
    for _ in range(3000):
        params = tuple("".join(rnd.choice(TEXT) for _ in range(
            rnd.randint(0, 6))) for _ in range(rnd.randint(0, 3)))
        method = "".join(rnd.choice(TEXT) for _ in range(rnd.randint(1, 5)))
        data = xmlrpc.client.dumps(params, method).encode("utf-8")
        plain += wire._PLAIN_CALL.match(data) is not None
        assert fast(data) == standard(data), (method, params)
    assert plain > 100  # the fast path was taken, and agreed


def test_records_written_inline_read_back_exactly():
    """Record members written inline (strings, ints, booleans, string
    lists) are xapi's text: escaped, control characters dropped, and read
    back by xmlrpc.client as the values they were (ints as bare strings)."""
    awkward = "a&b<c>\"d'\x01e\u00e9"
    record = {"s": awkward, "i": 7, "t": True, "f": False, "l": [awkward, ""],
              "m": {awkward: awkward}, "e": [], "n": wire.Int32(2),
              "d": wire.DateTime("20240101T00:00:00Z"), "x": 1.5,
              awkward: "key"}
    text = wire.xml_success({"OpaqueRef:1": record})
    assert "a&amp;b&lt;c&gt;&quot;d'e\u00e9" in text and "\x01" not in text
    value = xmlrpc.client.loads(text.encode("utf-8"))[0][0]["Value"]
    clean = awkward.replace("\x01", "")
    assert value == {"OpaqueRef:1": {
        "s": clean, "i": "7", "t": True, "f": False, "l": [clean, ""],
        "m": {clean: clean}, "e": [], "n": 2,
        "d": xmlrpc.client.DateTime("20240101T00:00:00Z"), "x": 1.5,
        clean: "key"}}
    # the same text as the general case writes (the top-level dict)
    assert text == wire.xml_response({"Status": "Success",
                                      "Value": {"OpaqueRef:1": record}})


@pytest.mark.parametrize("items", [
    [],
    ["OpaqueRef:%s" % uuid.uuid4() for _ in range(2000)],
    ["a&b", "<x>", 'q"q', "plain"],
    ["tab\there", "new\nline", "cr\rhere", "bell\x07gone"],
    [u"caf\u00e9", u"\u2603", "ascii"],
    [wire.DateTime("20240501T10:00:00Z"), "x"],   # a str subclass: not plain
    ["x", 3, True],
], ids=["empty", "refs", "entities", "control", "non-ascii", "datetime",
        "mixed"])
def test_a_list_inside_a_record_is_written_as_the_general_path_writes_it(items):
    """A record's list member (a network's VIFs) is joined at once when no
    item needs escaping: the text equals the element-by-element form of
    the general path, and reads back as the same list."""
    inner = wire.xml_value(items)          # not inside a struct: general path
    record = wire.xml_value({"VIFs": items, "name": "n"})
    assert record == ("<value><struct><member><name>VIFs</name>%s</member>"
                      "<member><name>name</name><value>n</value></member>"
                      "</struct></value>" % inner)
    text = wire.xml_success({"VIFs": items})
    [reply], _ = xmlrpc.client.loads(text)
    # control characters dropped; an XML parser reads a CR as a newline
    expected = [re.sub(u"[\x00-\x08\x0b\x0c\x0e-\x1f]", "", v)
                .replace("\r", "\n") if isinstance(v, str)
                # xapi writes ints as bare strings
                else v if isinstance(v, bool) else str(v) for v in items]
    if items and isinstance(items[0], wire.DateTime):
        expected[0] = xmlrpc.client.DateTime(items[0])
    assert reply["Value"]["VIFs"] == expected
