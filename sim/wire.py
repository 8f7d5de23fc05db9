"""xapi's wire protocols: XML-RPC and JSON-RPC over HTTP/1.1.

Checked against xapi's source:
- routing (ocaml/xapi/xapi.ml handler table, ocaml/idl/datamodel.ml URIs,
  ocaml/libs/http-lib/http_svr.ml): the handler is chosen by the longest
  registered prefix of the request path, so POST /jsonrpc... is JSON-RPC,
  /json... the legacy JSON handler (not modelled: 404 here), and every
  other path (/, /RPC2, /xmlrpc, ...) XML-RPC;
- XML-RPC (ocaml/xapi/api_server.ml callback; mirage/ocaml-rpc
  src/lib/xmlrpc.ml): compact, no whitespace between elements; strings as
  bare `<value>text</value>` (so "" is `<value></value>`), int64 as bare
  strings too, int32 as <i4>, booleans as 1/0, doubles with %.16g; the
  reply is the {Status, Value|ErrorDescription} struct, except
  system.listMethods whose reply is the bare array; content type text/xml;
- JSON-RPC (api_server.ml jsoncallback/callback1; ocaml-rpc
  src/lib/jsonrpc.ml): version 2.0 when the request says "jsonrpc": "2.0",
  else 1.0; results bare; a failure in 2.0 is {"code": 1, "message":
  CODE, "data": [params]} (not for system.listMethods), in 1.0 the error
  array; ints are JSON numbers; content type application/json.
"""
import email.parser
import http.client
import json
import re
import time
import xmlrpc.client
from http.server import BaseHTTPRequestHandler

# xapi answers a failed JSON-RPC 2.0 call with this error.code
# (api_server.ml error_code_lit: "non-zero because some clients treat 0 as
# no error").
JSONRPC_ERROR_CODE = 1


class Int32(int):
    """An int xapi marshals as Int32 (<i4> in XML-RPC): valid_ref_counts."""


class DateTime(str):
    """A date xapi marshals as <dateTime.iso8601> (a string in JSON)."""


_BAD_CHARS = re.compile(u"[\x00-\x08\x0b\x0c\x0e-\x1f]")
# what _escape changes; most strings (refs, keys, values) hold none of it
_TO_ESCAPE = re.compile(u"[\x00-\x08\x0b\x0c\x0e-\x1f&<>\"]")


def _escape(text):
    # ocaml-rpc's encode_buf: the four entities, control chars dropped
    if _TO_ESCAPE.search(text) is None:
        return text
    text = _BAD_CHARS.sub("", text)
    return (text.replace("&", "&amp;").replace("<", "&lt;")
            .replace(">", "&gt;").replace('"', "&quot;"))


_JUST_STR = frozenset((str,))
# The bytes _TO_ESCAPE matches, and a few more (tab, newline, CR): a text
# holding none of them needs no escaping.
_ESCAPE_OR_SPACE = bytes(range(32)) + b'&<>"'


def _str_values(items):
    """<value>s of a list of plain strings (exactly str): the items escaped
    one by one, or, when none needs it (a network's 10,000 VIF refs), joined
    at once: the same text, in C loops."""
    joined = "".join(items)
    try:
        raw = joined.encode("ascii")
    except UnicodeEncodeError:
        raw = None
    if raw is not None and len(raw.translate(None, _ESCAPE_OR_SPACE)) == len(raw):
        return "<value>" + "</value><value>".join(items) + "</value>" if items else ""
    return "".join(["<value>%s</value>" % _escape(v) for v in items])


def xml_value(value, out=None):
    """A value as xapi's XML-RPC writes it (one <value> element)."""
    parts = [] if out is None else out
    kind = type(value)
    if kind is str:  # the common case first (DateTime is a str subclass)
        parts.append("<value>%s</value>" % _escape(value))
    elif kind is dict and out is not None:
        # a record or a map: its plain members written here, the rest by
        # the general case below (the same text either way)
        parts.append("<value><struct>")
        for key, item in value.items():
            parts.append("<member><name>%s</name>" % _escape(str(key)))
            item_kind = type(item)
            if item_kind is str:
                parts.append("<value>%s</value></member>" % _escape(item))
            elif item_kind is int:
                parts.append("<value>%d</value></member>" % item)
            elif item_kind is bool:
                parts.append("<value><boolean>%d</boolean></value></member>"
                             % item)
            elif item_kind is list and set(map(type, item)) <= _JUST_STR:
                parts.append("<value><array><data>%s</data></array></value>"
                             "</member>" % _str_values(item))
            else:
                xml_value(item, parts)
                parts.append("</member>")
        parts.append("</struct></value>")
    elif value is None:
        parts.append("<value><nil/></value>")
    elif isinstance(value, bool):
        parts.append("<value><boolean>%d</boolean></value>" % int(value))
    elif isinstance(value, Int32):
        parts.append("<value><i4>%d</i4></value>" % value)
    elif isinstance(value, int):
        parts.append("<value>%d</value>" % value)
    elif isinstance(value, float):
        parts.append("<value><double>%.16g</double></value>" % value)
    elif isinstance(value, DateTime):
        parts.append("<value><dateTime.iso8601>%s</dateTime.iso8601></value>"
                     % _escape(value))
    elif isinstance(value, str):
        parts.append("<value>%s</value>" % _escape(value))
    elif isinstance(value, (list, tuple)):
        parts.append("<value><array><data>")
        for item in value:
            xml_value(item, parts)
        parts.append("</data></array></value>")
    elif isinstance(value, dict):
        parts.append("<value><struct>")
        for key, item in value.items():
            # ocaml-rpc writes member names unescaped; escaping keeps the
            # XML well-formed for map keys holding & or <
            parts.append("<member><name>%s</name>" % _escape(str(key)))
            xml_value(item, parts)
            parts.append("</member>")
        parts.append("</struct></value>")
    else:
        raise TypeError("no XML-RPC form for %r" % (value,))
    return "".join(parts) if out is None else None


def xml_response(value):
    """The methodResponse body around one value."""
    return ('<?xml version="1.0"?><methodResponse><params><param>%s'
            '</param></params></methodResponse>' % xml_value(value))


_SUCCESS_HEAD = ('<?xml version="1.0"?><methodResponse><params><param>'
                 '<value><struct><member><name>Status</name><value>Success'
                 '</value></member><member><name>Value</name>')
_ENVELOPE_TAIL = ('</member></struct></value></param></params>'
                  '</methodResponse>')


def xml_success(value):
    """xml_response({"Status": "Success", "Value": value}), the same text
    built around the value alone."""
    parts = [_SUCCESS_HEAD]
    xml_value(value, parts)
    parts.append(_ENVELOPE_TAIL)
    return "".join(parts)


def json_default(value):
    raise TypeError("no JSON form for %r" % (value,))


def json_response(version2, request_id, ok, contents, method):
    """The JSON-RPC reply xapi writes for one call (a dict)."""
    if ok:
        if version2:
            return {"jsonrpc": "2.0", "result": contents, "id": request_id}
        return {"result": contents, "error": None, "id": request_id}
    if version2:
        if method != "system.listMethods":
            code, params = (contents[0], contents[1:]) if contents else ("", [])
            contents = {"code": JSONRPC_ERROR_CODE, "message": code,
                        "data": list(params)}
        return {"jsonrpc": "2.0", "error": contents, "id": request_id}
    return {"result": None, "error": contents, "id": request_id}


class BadRequest(Exception):
    """A body xapi cannot parse as a call: answered with HTTP 500."""


def parse_json_call(body):
    """(version2, id, method, params) of a JSON-RPC request body."""
    try:
        call = json.loads(body.decode("utf-8"))
    except ValueError as exc:
        raise BadRequest("unable to parse JSON: %s" % exc) from exc
    if not isinstance(call, dict) or not isinstance(call.get("method"), str):
        raise BadRequest("Invalid request body")
    version = call.get("jsonrpc")
    if version not in (None, "2.0"):
        raise BadRequest("Invalid field 'jsonrpc' in request body")
    params = call.get("params")
    if version is None:
        if not isinstance(params, list):
            raise BadRequest("Invalid field 'params' in request body")
    elif params is None:
        params = []
    elif isinstance(params, dict):
        params = [params]
    elif not isinstance(params, list):
        raise BadRequest("Invalid field 'params' in request body")
    request_id = call.get("id")
    if request_id is None or isinstance(request_id, bool) or \
            not isinstance(request_id, (int, str)):
        raise BadRequest("Invalid field 'id' in request body")
    return version == "2.0", request_id, call["method"], params


# The methodCall Python's xmlrpc.client (so the XenAPI client) writes when
# every parameter is a plain ASCII string with nothing to escape: read with
# one match instead of expat and xmlrpc's unmarshaller, which were a third
# of the simulator's CPU per call. Anything else (a struct, an entity, a
# non-ASCII or control character, a CR that XML would normalise, any other
# layout) goes through xmlrpc.client.loads as before, so what a call means
# and how a bad body fails do not change.
_TEXT = rb"[\t\n\x20-\x25\x27-\x3b\x3d\x3f-\x7e]*"
_PLAIN_CALL = re.compile(
    rb"<\?xml version='1\.0'\?>\n<methodCall>\n<methodName>(" + _TEXT +
    rb")</methodName>\n<params>\n((?:<param>\n<value><string>" + _TEXT +
    rb"</string></value>\n</param>\n)*)</params>\n</methodCall>\n\Z")
_PLAIN_PARAM = re.compile(rb"<string>(" + _TEXT + rb")</string>")


def parse_xml_call(body):
    """(method, params) of an XML-RPC methodCall body."""
    plain = _PLAIN_CALL.match(body)
    if plain is not None:
        return (plain.group(1).decode("ascii"),
                [text.decode("ascii")
                 for text in _PLAIN_PARAM.findall(plain.group(2))])
    try:
        params, method = xmlrpc.client.loads(body)
    except Exception as exc:  # expat, or a structurally wrong call
        raise BadRequest("unable to parse XML-RPC: %s" % exc) from exc
    if method is None:
        raise BadRequest("not a methodCall")
    return method, list(params)


def route(path):
    """The handler xapi picks for a POST to path (longest prefix)."""
    path = path.split("?", 1)[0]
    if path.startswith("/jsonrpc"):
        return "jsonrpc"
    if path.startswith("/json"):
        return None  # xapi's legacy /json handler: not modelled
    return "xmlrpc"


# A request line the fast path takes as BaseHTTPRequestHandler would:
# one method, a path (not '//', which Python versions treat differently),
# HTTP/1.0 or 1.1, single spaces. Anything else: the standard parser.
_PLAIN_REQUEST = re.compile(rb"([A-Z]+) (/(?!/)[!-~]*) HTTP/1\.([01])\r?\n\Z")
# A header line email's parser reads as name: value (no continuation, no
# odd name, no stray CR): anything else is parsed by email as before.
_PLAIN_HEADERS = re.compile(rb"(?:[!-9;-~]+:[^\r\n]*\r?\n)*\r?\n\Z")
_PLAIN_HEADER = re.compile(u"([!-9;-~]+):[ \t]*([^\r\n]*)\r?\n")
_MAX_HEADER_LINE = 65536  # http.client's _MAXLINE and _MAXHEADERS
_MAX_HEADERS = 100


class PlainHeaders(object):
    """The request headers when every line is a plain `name: value`: what
    the handler reads of them (get, first match, case-insensitive), without
    email's parser."""
    __slots__ = ("_fields",)

    def __init__(self, pairs):
        self._fields = {}
        for name, value in pairs:
            self._fields.setdefault(name.lower(), value)

    def get(self, name, default=None):
        return self._fields.get(name.lower(), default)


def _read_header_lines(rfile):
    """http.client's header reading: the lines up to the blank one, with
    its limits and errors."""
    lines = []
    while True:
        line = rfile.readline(_MAX_HEADER_LINE + 1)
        if len(line) > _MAX_HEADER_LINE:
            raise http.client.LineTooLong("header line")
        lines.append(line)
        if len(lines) > _MAX_HEADERS:
            raise http.client.HTTPException("got more than %d headers"
                                            % _MAX_HEADERS)
        if line in (b"\r\n", b"\n", b""):
            return lines


def _buffered_header_lines(rfile):
    """The header lines _read_header_lines would read, taken in one read
    when the whole block is already buffered, every line ends in CRLF and
    it is within the limits; else None (nothing consumed)."""
    try:
        ahead = rfile.peek(_MAX_HEADER_LINE)
    except (AttributeError, OSError, ValueError):
        return None
    if ahead[:2] == b"\r\n":
        return [rfile.read(2)]
    end = ahead.find(b"\r\n\r\n")
    if end < 0:
        return None
    block = ahead[:end + 4]
    count = block.count(b"\n")
    if count != block.count(b"\r\n") or count > _MAX_HEADERS:
        return None  # a bare LF ends a line (or the block) earlier
    block = rfile.read(len(block))
    lines = block.split(b"\r\n")[:-1]
    return [line + b"\r\n" for line in lines]


class _DateCache(object):
    """The Date header's text, made once per second (it has no finer
    resolution) instead of once per reply."""

    def __init__(self):
        self.second = None
        self.text = ""

    def now(self, handler):
        stamp = time.time()
        second = int(stamp)
        if second != self.second:
            self.text = handler.date_time_string(second)
            self.second = second
        return self.text


_DATE = _DateCache()


class Handler(BaseHTTPRequestHandler):
    """POST: the call, by route(); the server's `endpoint.call(method,
    params, json)` returns (ok, contents) for xapi calls, or
    ("raw", value) for the simulator's own sim.* calls (Python's
    marshalling, XML-RPC only)."""
    protocol_version = "HTTP/1.1"  # keep-alive, as xapi and its clients use
    disable_nagle_algorithm = True  # replies leave at once (TCP)
    server_version = "xapi"
    sys_version = ""

    def setup(self):
        BaseHTTPRequestHandler.setup(self)
        self.server.track(self.connection, True)

    def finish(self):
        try:
            BaseHTTPRequestHandler.finish(self)
        finally:
            self.server.track(self.connection, False)

    def address_string(self):
        if isinstance(self.client_address, tuple) and self.client_address:
            return str(self.client_address[0])
        return "unix"

    def log_message(self, format, *args):
        pass

    def parse_request(self):
        """BaseHTTPRequestHandler.parse_request, the same results and the
        same errors, without email's header parser for a plain request
        (it was a third of the simulator's CPU per call)."""
        plain = _PLAIN_REQUEST.match(self.raw_requestline)
        if plain is None:
            return BaseHTTPRequestHandler.parse_request(self)
        self.requestline = str(self.raw_requestline,
                               "iso-8859-1").rstrip("\r\n")
        self.command = plain.group(1).decode("ascii")
        self.path = plain.group(2).decode("ascii")
        self.request_version = "HTTP/1." + plain.group(3).decode("ascii")
        self.close_connection = not (plain.group(3) == b"1" and
                                     self.protocol_version >= "HTTP/1.1")
        try:
            lines = _buffered_header_lines(self.rfile) or \
                _read_header_lines(self.rfile)
        except http.client.LineTooLong as err:
            self.send_error(431, "Line too long", str(err))
            return False
        except http.client.HTTPException as err:
            self.send_error(431, "Too many headers", str(err))
            return False
        block = b"".join(lines)
        if lines[-1] == b"" or _PLAIN_HEADERS.match(block) is None:
            self.headers = email.parser.Parser(
                _class=self.MessageClass).parsestr(
                    block.decode("iso-8859-1"))
        else:
            self.headers = PlainHeaders(
                _PLAIN_HEADER.findall(block.decode("iso-8859-1")))
        conntype = self.headers.get("Connection", "")
        if conntype.lower() == "close":
            self.close_connection = True
        elif (conntype.lower() == "keep-alive" and
              self.protocol_version >= "HTTP/1.1"):
            self.close_connection = False
        expect = self.headers.get("Expect", "")
        if (expect.lower() == "100-continue" and
                self.protocol_version >= "HTTP/1.1" and
                self.request_version >= "HTTP/1.1"):
            if not self.handle_expect_100():
                return False
        return True

    def _send(self, status, content_type, body, extra=()):
        if self.request_version == "HTTP/0.9":
            self._send_standard(status, content_type, body, extra)
            return
        # what send_response and send_header write, in one piece (their
        # bookkeeping is for a Connection header, which is never sent here)
        self.log_request(status)
        head = ["%s %d %s\r\nServer: %s\r\nDate: %s\r\n"
                "Content-Type: %s\r\nContent-Length: %d\r\n" % (
                    self.protocol_version, status,
                    self.responses.get(status, ("",))[0],
                    self.version_string(), _DATE.now(self), content_type,
                    len(body))]
        for name, value in extra:
            head.append("%s: %s\r\n" % (name, value))
        head.append("\r\n")
        # headers and body in one write: two small writes on a keep-alive
        # connection would meet the client's delayed ACK
        self.wfile.write("".join(head).encode("latin-1", "strict") + body)

    def _send_standard(self, status, content_type, body, extra):
        """_send through BaseHTTPRequestHandler's own calls."""
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in extra:
            self.send_header(name, value)
        self._headers_buffer.append(b"\r\n" + body)
        self.flush_headers()

    def do_GET(self):
        self._send(404, "text/html", b"<html><body>Not found</body></html>")

    def do_OPTIONS(self):
        # api_server.ml options_callback: CORS preflight
        self._send(200, "text/plain", b"", (
            ("Access-Control-Allow-Origin", "*"),
            ("Access-Control-Allow-Headers", "X-Requested-With")))

    def do_POST(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length)
        kind = route(self.path)
        if kind is None:
            self.do_GET()
            return
        cors = (("Access-Control-Allow-Origin", "*"),
                ("Access-Control-Allow-Headers", "X-Requested-With"))
        endpoint = self.server.endpoint
        try:
            if kind == "jsonrpc":
                version2, request_id, method, params = parse_json_call(body)
                ok, contents = endpoint.call(method, params, True)
                reply = json_response(version2, request_id, ok, contents,
                                      method)
                text = json.dumps(reply, separators=(",", ":"),
                                  ensure_ascii=False, default=json_default)
                self._send(200, "application/json", text.encode("utf-8"),
                           cors)
                return
            method, params = parse_xml_call(body)
            ok, contents = endpoint.call(method, params, False)
        except BadRequest as exc:
            self._send(500, "text/plain", str(exc).encode("utf-8"))
            return
        if ok == "raw":
            text = xmlrpc.client.dumps((contents,), methodresponse=True,
                                       allow_none=True)
        elif method == "system.listMethods" and ok:
            text = xml_response(contents)
        elif ok:
            text = xml_success(contents)
        else:
            text = xml_response(
                {"Status": "Failure", "ErrorDescription": contents})
        self._send(200, "text/xml", text.encode("utf-8"), cors)
