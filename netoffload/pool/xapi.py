"""The XAPI layer: sessions, whole-pool snapshots and other-config edits.

Interfaces other modules use:

- `open_session()`: a logged-in session. Env `NETOFFLOAD_XAPI_SOCKET=/path`
  (a unix socket; its path must not contain `_`, because XenAPI's UDS
  transport maps `_` to `/`) or `NETOFFLOAD_XAPI_URL=http://host:port/`,
  else `XenAPI.xapi_local()` (pre-authenticated as root in dom0).
- `close_session(session)`: log out, ignoring errors (xapi caps sessions).
- `local_host_uuid()`: INSTALLATION_UUID from the inventory file
  (env `NETOFFLOAD_INVENTORY`, default /etc/xensource-inventory).
- `Xapi(session)`: maps `XenAPI.Failure` to our errors (HANDLE_INVALID ->
  `ObjectGone`, others -> `XapiError` carrying xapi's code), counts calls
  (`.calls`), `snapshot()` -> `PoolRecords` with one
  `get_all_records` per class, `local_host_ref()`, and
  `set_other_config_key(cls, ref, key, value_or_None, expected)`.

Replacing an other-config value is remove-then-add (xapi has no "set one
key"; `set_other_config` would overwrite everyone else's keys). When the key
is known absent (`expected is None`) the remove is skipped, which is what
keeps a fresh apply at one call per key.

The wire: `Xapi` makes its calls itself over one keep-alive HTTP/1.1
connection (`HttpWire`) to the endpoint of its XenAPI session (xapi's unix
socket, or plain http), XML-RPC on `/` as xapi speaks it (DESIGN.md §1);
the XenAPI client, whose http.client and xmlrpc.client cost more CPU per
call than xapi's own work on a key write, logs in and out, re-logs in after
SESSION_INVALID, and serves a session it cannot see the endpoint of (https,
another transport). The same errors come out either way: XenAPI.Failure
mapped as below, xmlrpc.client.Fault and ProtocolError, ExpatError for a
reply cut short, the socket's OSError family.
`HttpWire.post` has the watcher's `_Wire.post` form (agents/watch.py), so
the two can become one.
"""
import os
import re
import socket
import threading
from xml.etree import ElementTree
from xml.parsers.expat import ExpatError

from netoffload import paths
from netoffload.errors import NotFound, XapiError
from netoffload.pool.records import CLASSES, PoolRecords

# Only for the type checker (basedpyright takes a name TYPE_CHECKING as
# true): typing costs the watcher about 0.2 MiB of RSS at run time.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Optional  # noqa: F401 (type comments)

ORIGINATOR = "netoffload"


class ObjectGone(XapiError):
    """The object was destroyed under us (HANDLE_INVALID); callers skip it."""


class LostRace(XapiError):
    """Someone else wrote the key between our remove and add.

    `.other_config` holds the object's fresh map so the caller can re-decide.
    """

    def __init__(self, message, other_config, *params):
        XapiError.__init__(self, message, *params)
        self.other_config = other_config


def _xenapi():
    # On use: about 30 ms that `netoffload show` and the other local
    # verbs, which never talk to xapi, should not pay.
    import XenAPI  # noqa: PLC0415
    return XenAPI


def open_session():
    """A new logged-in XenAPI session (see the module docstring)."""
    client_lib = _xenapi()
    endpoint = paths.xapi_endpoint()
    if endpoint and endpoint[0] == "socket":
        session = client_lib.Session("http://" + endpoint[1].replace("/", "_") + "/",
                                     transport=client_lib.UDSTransport())
    elif endpoint:
        session = client_lib.Session(endpoint[1])
    else:
        session = client_lib.xapi_local()
    try:
        session.login_with_password("root", "", "1.0", ORIGINATOR)
    except client_lib.Failure as failure:
        raise XapiError("cannot log in to xapi: %s" % (failure.details,),
                        *failure.details) from failure
    except (OSError, IOError) as err:
        raise XapiError("cannot reach xapi: %s" % err) from err
    return session


def close_session(session):
    try:
        session.xenapi.session.logout()
    except Exception:  # logging out is best effort: the session may be gone
        pass


def read_inventory(path=None):
    """The inventory file as a dict (values unquoted)."""
    path = paths.inventory(path)
    result = {}
    try:
        with open(path) as handle:
            lines = handle.read().splitlines()
    except (OSError, IOError) as err:
        raise NotFound("cannot read the xapi inventory %s: %s" % (path, err)) from err
    for line in lines:
        key, sep, value = line.partition("=")
        if not sep or key.strip().startswith("#"):
            continue
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        result[key.strip()] = value
    return result


def local_host_uuid(path=None):
    uuid = read_inventory(path).get("INSTALLATION_UUID")
    if not uuid:
        raise NotFound("INSTALLATION_UUID is missing from the xapi inventory")
    return uuid


# -- the wire -----------------------------------------------------------------

# the reply body is read in pieces of this size
RECV_CHUNK = 1 << 16
# a reply header that frames the body: name, value
_FRAMING = re.compile(rb"(?im)^[ \t]*(content-length|transfer-encoding|"
                      rb"connection)[ \t]*:([^\r\n]*)")


class HttpWire(object):
    """One keep-alive HTTP/1.1 connection to xapi: POST a body, read the
    reply by hand (status line, Content-Length or chunked body).
    One request at a time."""

    def __init__(self, family, address, host="localhost", handler="/",
                 extra_headers=()):
        self.family = family
        self.address = address
        self.sock = None
        self._buf = b""
        self._request, self._reused = b"", False  # the request sent last
        self._head = ("POST %s HTTP/1.1\r\nHost: %s\r\n%s"
                      "Content-Type: text/xml\r\n" % (
                          handler, host, "".join(
                              "%s: %s\r\n" % pair for pair in extra_headers))
                      ).encode("latin-1")

    def close(self):
        if self.sock is not None:
            self.sock.close()
        self.sock, self._buf = None, b""

    def _recv(self):
        data = self.sock.recv(RECV_CHUNK) if self.sock is not None else b""
        if not data:
            raise ConnectionResetError("xapi closed the connection")
        return data

    def post(self, body):
        """Send the request; (status, reason, iterator over the body)."""
        self.send(body)
        return self.reply()

    def reply(self):
        """The reply to the request send() sent: (status, reason, iterator
        over its body), to be read whole before this connection's next
        request."""
        status, reason, fields = self.read_head()
        keep = fields.get(b"connection") != b"close"
        if fields.get(b"transfer-encoding") == b"chunked":
            body_iter = self._chunked(keep)
        elif b"content-length" in fields:
            body_iter = self._sized(int(fields[b"content-length"]), keep)
        else:
            body_iter = self._to_eof()
        return status, reason, body_iter

    def _exchange(self, body):
        """Send the request, read the reply's head: (status, reason, the
        framing fields)."""
        self.send(body)
        return self.read_head()

    def send(self, body):
        """Send a request, not reading its reply (reply() or read_head()
        does): a caller may send on several connections, then read."""
        self._request = self._head + b"Content-Length: %d\r\n\r\n" \
            % len(body) + body
        self._reused = self.sock is not None
        if self.sock is None:
            self.sock = self._connect()
        try:
            self.sock.sendall(self._request)
        except ConnectionError:
            self.close()
            if not self._reused:
                raise
            self._send_again()
        except BaseException:
            self.close()
            raise

    def _send_again(self):
        """An idle keep-alive connection the server had closed: nothing of
        the request was answered, send it again on a new one (a timeout is
        not retried: the call may be running)."""
        self._reused = False
        self.sock = self._connect()
        try:
            self.sock.sendall(self._request)
        except BaseException:
            self.close()
            raise

    def read_head(self):
        """The head of the reply to the request sent: (status, reason,
        the framing fields)."""
        while True:
            try:
                while b"\r\n\r\n" not in self._buf:
                    self._buf += self._recv()
                break
            except ConnectionError:
                answered = bool(self._buf)
                self.close()
                if not self._reused or answered:
                    raise
                self._send_again()
            except BaseException:
                self.close()
                raise
        head, _, self._buf = self._buf.partition(b"\r\n\r\n")
        first, _, rest = head.partition(b"\r\n")
        status = first.split(None, 2)
        if len(status) < 2 or not status[0].startswith(b"HTTP/") or \
                not status[1].isdigit():
            self.close()
            raise self._bad_status(first)
        # the three fields that frame the body; the rest are not read
        fields = dict((name.lower(), value.strip().lower())
                      for name, value in _FRAMING.findall(rest))
        reason = status[2].decode("ascii", "replace") if len(status) > 2 else ""
        return int(status[1]), reason, fields

    def _bad_status(self, first):
        # type: (bytes) -> Exception
        """The exception for a reply whose first line is not HTTP."""
        return http_client().BadStatusLine(repr(first))

    def _connect(self):
        """A new connection to the address (the default socket timeout)."""
        if self.family != socket.AF_UNIX:
            # TCP: a host name or an address of either family (IPv6 too),
            # as http.client connects
            return socket.create_connection(self.address)
        sock = socket.socket(self.family, socket.SOCK_STREAM)
        sock.settimeout(socket.getdefaulttimeout())
        try:
            sock.connect(self.address)
        except BaseException:
            sock.close()
            raise
        return sock

    def _sized(self, length, keep):
        while length > 0:
            if not self._buf:
                self._buf = self._recv()
            piece, self._buf = self._buf[:length], self._buf[length:]
            length -= len(piece)
            yield piece
        if not keep:
            self.close()

    def _chunked(self, keep):
        while True:
            while b"\r\n" not in self._buf:
                self._buf += self._recv()
            size_line, _, self._buf = self._buf.partition(b"\r\n")
            size = int(size_line.split(b";")[0].strip() or b"0", 16)
            if size == 0:
                while b"\r\n" not in self._buf:  # (no trailers from xapi)
                    self._buf += self._recv()
                self._buf = self._buf.partition(b"\r\n")[2]
                break
            for piece in self._sized(size, True):
                yield piece
            while len(self._buf) < 2:
                self._buf += self._recv()
            self._buf = self._buf[2:]
        if not keep:
            self.close()

    def _to_eof(self):
        if self._buf:
            yield self._buf
        self._buf = b""
        while self.sock is not None:
            data = self.sock.recv(RECV_CHUNK)
            if not data:
                break
            yield data
        self.close()

    def request(self, body):
        """POST body; (status, reason, the whole reply body). A failure
        part way closes the connection (the next request opens another)."""
        try:
            status, reason, fields = self._exchange(body)
            length = fields.get(b"content-length")
            if length is None or b"transfer-encoding" in fields:
                keep = fields.get(b"connection") != b"close"
                chunks = self._chunked(keep) if fields.get(
                    b"transfer-encoding") == b"chunked" else self._to_eof()
                return status, reason, b"".join(chunks)
            # the common reply: its length known, read at once (the
            # pieces joined once: adding each to the buffer copied the
            # whole reply per piece, seconds for a pool's records)
            length = int(length)
            pieces, have = [self._buf], len(self._buf)
            while have < length:
                piece = self._recv()
                pieces.append(piece)
                have += len(piece)
            whole = b"".join(pieces) if len(pieces) > 1 else self._buf
            data, self._buf = whole[:length], whole[length:]
            if fields.get(b"connection") == b"close":
                self.close()
            return status, reason, data
        except BaseException:
            self.close()
            raise


def _xmlrpc():
    # On use: xmlrpc.client brings http.client, the email package and ssl
    # (7 MiB), which the watcher, making its calls itself, does without.
    import xmlrpc.client  # noqa: PLC0415
    return xmlrpc.client


def http_client():
    import http.client  # noqa: PLC0415 (only on an unexpected reply)
    return http.client


def wire_for(session):
    """An HttpWire to the endpoint `session` (a XenAPI.Session) talks to,
    or None when that is not plain HTTP over a unix socket or TCP."""
    transport = getattr(session, "_ServerProxy__transport", None)
    host = getattr(session, "_ServerProxy__host", None)
    handler = getattr(session, "_ServerProxy__handler", None) or "/"
    if not isinstance(host, str) or not host or transport is None:
        return None
    uds = getattr(_xenapi(), "UDSTransport", None)
    if uds is not None and type(transport) is uds:
        # XenAPI's unix transport: the host names the socket, '_' for '/'
        extra = [(name, os.environ[var]) for name, var in (
            ("traceparent", "TRACEPARENT"), ("baggage", "BAGGAGE"),
            ("originator", "ORIGINATOR")) if os.environ.get(var)]
        return HttpWire(socket.AF_UNIX, host.replace("_", "/"), host,
                        handler, extra)
    if type(transport) is _xmlrpc().Transport:
        if "@" in host:
            return None  # user:password@: XenAPI sends them (Basic auth)
        name, _, port = host.rpartition(":")
        if not name or not port.isdigit():
            name, port = host, "80"
        return HttpWire(socket.AF_INET, (name.strip("[]"), int(port)), host,
                        handler)
    return None


def _escape(text):
    # xmlrpc.client.escape
    if "&" in text or "<" in text or ">" in text:
        return text.replace("&", "&amp;").replace("<", "&lt;").replace(
            ">", "&gt;")
    return text


def request_body(method, params, encoding="utf-8", allow_none=True):
    """The methodCall xmlrpc.client (so XenAPI) sends: the same bytes;
    strings, by far the most common parameters, without its marshaller."""
    if encoding == "utf-8" and all(type(p) is str for p in params):
        text = "".join(["<?xml version='1.0'?>\n<methodCall>\n<methodName>",
                        method, "</methodName>\n<params>\n"] +
                       ["<param>\n<value><string>%s</string></value>\n"
                        "</param>\n" % _escape(p) for p in params] +
                       ["</params>\n</methodCall>\n"])
    else:
        text = _xmlrpc().dumps(tuple(params), method, encoding=encoding,
                                   allow_none=allow_none)
    return text.encode(encoding, "xmlcharrefreplace")


def _value(elem):
    # type: (Any) -> Any
    """An XML-RPC <value> element as xmlrpc.client decodes it."""
    if len(elem) == 0:
        return elem.text or ""
    child = elem[0]
    tag = child.tag
    text = child.text or ""
    if tag == "string":
        return text
    if tag == "struct":
        out = {}
        for member in child:
            if len(member) == 2 and member[0].tag == "name" and \
                    member[1].tag == "value":
                name, value = member[0], member[1]  # xapi's order
            else:
                name, value = member.find("name"), member.find("value")
                if name is None or value is None:
                    raise _xmlrpc().ResponseError(
                        "a struct member without a name or a value")
            out[name.text or ""] = _value(value)
        return out
    if tag == "array":
        data = child[0] if len(child) and child[0].tag == "data" else \
            child.find("data")
        return [] if data is None else [_value(v) for v in data]
    if tag in ("int", "i4", "i8", "i1", "i2", "biginteger"):
        return int(text)
    if tag == "boolean":
        if text not in ("0", "1"):
            raise TypeError("bad boolean value")
        return text == "1"
    if tag in ("double", "float", "bigdecimal"):
        return float(text)
    if tag == "nil":
        return None
    if tag == "dateTime.iso8601":
        return _xmlrpc().DateTime(text)
    if tag == "base64":
        binary = _xmlrpc().Binary()
        binary.decode(text.encode("ascii"))
        return binary
    raise _xmlrpc().ResponseError("unknown XML-RPC type %s" % tag)


# xapi's reply to a call that returns "" (every other-config write), as
# its compact XML-RPC writes it: known without parsing
_EMPTY_SUCCESS = (b'<?xml version="1.0"?><methodResponse><params><param>'
                  b'<value><struct><member><name>Status</name><value>Success'
                  b'</value></member><member><name>Value</name><value>'
                  b'</value></member></struct></value></param></params>'
                  b'</methodResponse>')


def parse_reply(data):
    # type: (bytes) -> Any
    """A methodResponse's single value, as xmlrpc.client.loads gives it;
    xmlrpc.client.Fault for a <fault>, ExpatError for a reply that is not
    XML (cut short)."""
    if data == _EMPTY_SUCCESS:
        return {"Status": "Success", "Value": ""}
    try:
        root = ElementTree.fromstring(data)
    except ElementTree.ParseError as err:
        raise ExpatError(str(err)) from err
    value = root.find("params/param/value")
    if root.tag != "methodResponse" or value is None:
        fault = root.find("fault/value")
        if root.tag == "methodResponse" and fault is not None:
            detail = _value(fault)
            if isinstance(detail, dict):
                raise _xmlrpc().Fault(detail.get("faultCode", 0),
                                          detail.get("faultString", ""))
        raise _xmlrpc().ResponseError("not an XML-RPC reply")
    return _value(value)


def failure_details(failure):
    return [str(d) for d in getattr(failure, "details", None) or ["UNKNOWN"]]


class Xapi(object):
    """A thin wrapper over one session: error mapping and call counting."""

    def __init__(self, session, lean=True):
        """lean: make the calls over an HttpWire of our own when the
        session's endpoint allows (see the module docstring)."""
        self.session = session
        self.calls = 0
        self._count_lock = threading.Lock()
        self._wire = wire_for(session) if lean else \
            None  # type: Optional[HttpWire]
        self._wire_lock = threading.Lock()

    def close(self):
        """Close our own connection (the session stays logged in)."""
        if self._wire is not None:
            with self._wire_lock:
                self._wire.close()

    def _xenapi_call(self, method, params):
        # type: (str, Any) -> Any
        target = self.session.xenapi
        for part in method.split("."):
            target = getattr(target, part)
        return target(*params)

    def _lean_call(self, method, params):
        # type: (str, Any) -> Any
        """What XenAPI's session.xenapi.<method>(*params) does, over our
        wire; SESSION_INVALID goes to XenAPI, which logs in again."""
        session = self.session
        body = request_body(method, (session._session,) + tuple(params),
                            getattr(session, "_ServerProxy__encoding", None)
                            or "utf-8",
                            getattr(session, "_ServerProxy__allow_none", True))
        wire = self._wire
        assert wire is not None  # call() takes this path only with a wire
        with self._wire_lock:
            status, reason, data = wire.request(body)
        if status != 200:
            raise _xmlrpc().ProtocolError(
                getattr(session, "_ServerProxy__host", "xapi"), status,
                reason, {})
        result = parse_reply(data)
        if type(result) is not dict or "Status" not in result:
            raise _xmlrpc().Fault(
                500, "Missing Status in response from server")
        if result["Status"] == "Success":
            if "Value" not in result:
                raise _xmlrpc().Fault(
                    500, "Missing Value in response from server")
            return result["Value"]
        details = result.get("ErrorDescription")  # type: Any
        if not details:
            raise _xmlrpc().Fault(
                500, "Missing ErrorDescription in response from server")
        if details[0] == "SESSION_INVALID":
            return self._xenapi_call(method, params)
        raise _xenapi().Failure(details)

    def call(self, method, *params):
        # type: (str, Any) -> Any
        """session.xenapi.<method>(*params) with our error mapping."""
        client_lib = _xenapi()
        with self._count_lock:
            self.calls += 1
        try:
            if self._wire is not None:
                return self._lean_call(method, params)
            return self._xenapi_call(method, params)
        except client_lib.Failure as failure:
            details = failure_details(failure)
            if details[0] == "HANDLE_INVALID":
                raise ObjectGone("%s: the object no longer exists" % method,
                                 *details) from failure
            raise XapiError("%s failed: %s" % (method, " ".join(details)),
                            *details) from failure
        except (OSError, IOError) as err:
            raise XapiError("%s failed: cannot reach xapi: %s" % (method, err)) from err

    # -- reading ---------------------------------------------------------------
    def get_all_records(self, cls):
        return self.call("%s.get_all_records" % cls)

    def snapshot(self):
        """Every record the pack needs, one get_all_records per class."""
        records = [self.get_all_records(cls.name) for cls in CLASSES]
        try:
            metrics = self.get_all_records("host_metrics")
        except ObjectGone:
            metrics = {}
        except XapiError:
            metrics = None  # unknown: treat every enabled host as live
        return PoolRecords(*records, host_metrics=metrics)

    def local_host_ref(self, uuid=None):
        uuid = uuid or local_host_uuid()
        try:
            return self.call("host.get_by_uuid", uuid)
        except XapiError as err:
            if err.params and err.params[0] == "UUID_INVALID":
                raise NotFound("this host (%s) is not in the xapi database"
                               % uuid, uuid) from err
            raise

    def get_other_config(self, cls, ref):
        return self.call("%s.get_other_config" % cls, ref)

    # -- writing ---------------------------------------------------------------
    def set_other_config_key(self, cls, ref, key, value, expected):
        """Make other_config[key] == value (None: absent).

        `expected` is what we believe the key holds now (None: absent), so a
        known-absent key costs one add. MAP_DUPLICATE_KEY on the add means
        someone wrote the key between our remove and add: if they wrote our
        value we are done, otherwise LostRace carries the fresh map.
        HANDLE_INVALID raises ObjectGone.
        """
        if value is None:
            if expected is not None:
                self.call("%s.remove_from_other_config" % cls, ref, key)
            return
        if expected is not None:
            self.call("%s.remove_from_other_config" % cls, ref, key)
        try:
            self.call("%s.add_to_other_config" % cls, ref, key, value)
        except ObjectGone:
            raise
        except XapiError as err:
            if not err.params or err.params[0] != "MAP_DUPLICATE_KEY":
                raise
            fresh = self.get_other_config(cls, ref)
            if fresh.get(key) == value:
                return
            raise LostRace("%s %s: %s was changed by someone else"
                           % (cls, ref, key), fresh, cls, ref, key) from err
