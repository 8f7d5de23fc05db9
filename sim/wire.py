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
import json
import re
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


def _escape(text):
    # ocaml-rpc's encode_buf: the four entities, control chars dropped
    text = _BAD_CHARS.sub("", text)
    return (text.replace("&", "&amp;").replace("<", "&lt;")
            .replace(">", "&gt;").replace('"', "&quot;"))


def xml_value(value, out=None):
    """A value as xapi's XML-RPC writes it (one <value> element)."""
    parts = [] if out is None else out
    if value is None:
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


def parse_xml_call(body):
    """(method, params) of an XML-RPC methodCall body."""
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

    def _send(self, status, content_type, body, extra=()):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in extra:
            self.send_header(name, value)
        # headers and body in one write: two small writes on a keep-alive
        # connection would meet the client's delayed ACK
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
        else:
            text = xml_response(
                {"Status": "Success", "Value": contents} if ok else
                {"Status": "Failure", "ErrorDescription": contents})
        self._send(200, "text/xml", text.encode("utf-8"), cors)
