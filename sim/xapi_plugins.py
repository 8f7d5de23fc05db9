"""host.call_plugin as xapi runs it (ocaml/xapi/xapi_plugins.ml).

xapi looks the plugin up by exact file name in its plugin directory, runs it
with one argument (an XML-RPC methodCall: method = fn, params = (session
ref, {str: str})), waits without a timeout, and reads stdout as one XML-RPC
methodResponse. The mapping of outcomes to API errors below is xapi's.
"""
import signal
import subprocess
import xml.parsers.expat
import xmlrpc.client
from xml.sax.saxutils import escape

from sim.xapi_errors import ApiError

PLUGIN_FAILURE = "XENAPI_PLUGIN_FAILURE"


def _value(text):
    # xapi writes strings as bare <value>text</value>, "" as <value/>.
    return "<value/>" if text == "" else "<value>%s</value>" % escape(text)


def method_call(fn, session_ref, args):
    """The argv[1] xapi passes: compact XML, no declaration, bare strings."""
    members = "".join("<member><name>%s</name>%s</member>" % (escape(k), _value(v))
                      for k, v in args.items())
    return ("<methodCall><methodName>%s</methodName><params>"
            "<param>%s</param><param><value><struct>%s</struct></value></param>"
            "</params></methodCall>") % (escape(fn), _value(session_ref), members)


def _signal_name(num):
    try:
        return signal.Signals(num).name
    except ValueError:
        return str(num)


def _internal(what):
    # xapi's XML-RPC decoder raises RunTimeTypeError, which the API layer
    # turns into INTERNAL_ERROR with the printed exception.
    return ApiError("INTERNAL_ERROR", "XMLRPC.RunTimeTypeError(%s)" % what)


def parse_output(output):
    """Map a plugin's stdout to its result string or the ApiError xapi raises."""
    try:
        params, methodname = xmlrpc.client.loads(output)
    except xmlrpc.client.Fault as fault:
        raise ApiError(PLUGIN_FAILURE, "fault", str(fault.faultCode),
                       str(fault.faultString)) from fault
    except xml.parsers.expat.ExpatError as exc:
        raise ApiError(PLUGIN_FAILURE, "failed to parse plugin output",
                       output, str(exc)) from exc
    except Exception as exc:  # structurally wrong XML-RPC
        raise _internal("response: %s" % exc) from exc
    if methodname is not None or len(params) != 1:
        raise _internal("Expected single return value (struct status)")
    status = params[0]
    if not isinstance(status, dict) or "Status" not in status:
        raise _internal("Status")
    if status["Status"] == "Success" and "Value" in status:
        value = status["Value"]
        if not isinstance(value, str):
            raise _internal("string: result is %s" % type(value).__name__)
        return value
    if status["Status"] == "Failure" and "ErrorDescription" in status:
        description = status["ErrorDescription"]
        if not isinstance(description, list) or not description:
            raise _internal("Empty array of error strings")
        if not all(isinstance(item, str) for item in description):
            raise _internal("string: error description holds a non-string")
        raise ApiError(description[0], *description[1:])
    raise _internal("Status")


def run_plugin(argv, env, cwd, timeout):
    """Run argv and return its stdout, or raise xapi's error for the failure.

    `timeout` is a safety net for tests (xapi itself has none); hitting it
    kills the plugin, which xapi would report as a signal.
    """
    try:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                env=env, cwd=cwd)
    except OSError as exc:
        # forkexecd's child fails to exec and exits non-zero.
        raise ApiError(PLUGIN_FAILURE, "non-zero exit", "", str(exc)) from exc
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
    out = out.decode("utf-8", "replace")
    err = err.decode("utf-8", "replace")
    if proc.returncode < 0:
        raise ApiError(PLUGIN_FAILURE,
                       "signal: %s" % _signal_name(-proc.returncode), out, err)
    if proc.returncode != 0:
        raise ApiError(PLUGIN_FAILURE, "non-zero exit", out, err)
    return out
