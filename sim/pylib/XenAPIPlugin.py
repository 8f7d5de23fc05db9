"""Test double of dom0's XenAPIPlugin module, written from the protocol.

xapi runs a plugin with one argument, an XML-RPC methodCall whose method is
the function name and whose params are (session ref, {str: str}).
`dispatch(table)` decodes it, gives the function a XenAPI session carrying
the caller's session ref (no login), and prints exactly one XML-RPC
methodResponse on stdout:

- success: {'Status': 'Success', 'Value': result};
- `Failure(code, params)`: {'Status': 'Failure', 'ErrorDescription': [code] + params};
- any other exception: ErrorDescription
  ['XENAPI_PLUGIN_FAILURE', fn, exception class name, str(exception)];
- an unknown function: ['UNKNOWN_XENAPI_PLUGIN_FUNCTION', fn].

The session is XenAPI.xapi_local(), as in the real module: the simulator
shows each host's xapi socket at /var/lib/xcp/xapi in the plugin's private
mount namespace (sim/dom0view.py). Like the real module, it decodes argv[1]
outside any try block and prints with print(), so a plugin meets the same
locale traps (ASCII argv and stdout on a Python 3.6 dom0 without LANG).
"""
import sys
import xmlrpc.client

import XenAPI


class Failure(Exception):
    """Raise to fail the call with an API error: code plus string params."""

    def __init__(self, code, params):
        Exception.__init__(self)
        self.params = [code] + params

    def __str__(self):
        return str(self.params)


def _response(status):
    return xmlrpc.client.dumps((status,), "", True)


def success_message(result):
    return _response({"Status": "Success", "Value": result})


def failure_message(description):
    return _response({"Status": "Failure", "ErrorDescription": description})


def dispatch(fn_table):
    if len(sys.argv) != 2:
        raise Exception("Incorrect number of commandline arguments")
    params, methodname = xmlrpc.client.loads(sys.argv[1])
    session_ref, args = params[0], params[1]
    if methodname not in fn_table:
        print(failure_message(["UNKNOWN_XENAPI_PLUGIN_FUNCTION", methodname]))
        return
    session = XenAPI.xapi_local()
    session._session = session_ref
    try:
        result = fn_table[methodname](session, args)
        print(success_message(result))
    except Failure as exc:
        print(failure_message(exc.params))
    except Exception as exc:
        print(failure_message(["XENAPI_PLUGIN_FAILURE", methodname,
                               exc.__class__.__name__, str(exc)]))
