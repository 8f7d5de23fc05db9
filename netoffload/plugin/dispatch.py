"""The plugin entry point's table: `FUNCTIONS` {name: fn(session, args)}.

Each function of netoffload.plugin.functions.FUNCTIONS and
netoffload.plugin.diagnostics.PLUGIN_FUNCTIONS (MODULES says which) is
imported only when it is called: a `status` does not pay for the
diagnostics' imports. It is wrapped so that xapi gets what it expects:
- success: the result dict as JSON text (sort_keys);
- NetoffloadError: XenAPIPlugin.Failure(code, [message, params...]);
- anything else (a bug, an unexpected OS or XenAPI failure): logged with its
  traceback to syslog/stderr and raised as a NETOFFLOAD_* Failure, never as
  XenAPIPlugin's generic XENAPI_PLUGIN_FAILURE: XenAPI failures and
  connection errors as NETOFFLOAD_XAPI_ERROR, OS errors as
  NETOFFLOAD_DEVICE_ERROR, other exceptions as NETOFFLOAD_XAPI_ERROR with
  "internal error" in the message (the plugin call itself failed).
Nothing is ever printed on stdout: XenAPIPlugin.dispatch prints the response.

`main()` is the plugin file's entry: it makes argv and stdout safe on any
dom0 locale (netoffload.textio) before XenAPIPlugin.dispatch decodes
argv[1] (outside its try block) and prints the response.
"""
import importlib
import json
import traceback

from netoffload import errors, textio
from netoffload.log import get_logger

# Which module's table holds each plugin function: (module, table name).
_FUNCTIONS = ("netoffload.plugin.functions", "FUNCTIONS")
_DIAGNOSTICS = ("netoffload.plugin.diagnostics", "PLUGIN_FUNCTIONS")
MODULES = {
    "version": _FUNCTIONS,
    "status": _FUNCTIONS,
    "get_policy": _FUNCTIONS,
    "set_policy": _FUNCTIONS,
    "apply": _FUNCTIONS,
    "revert": _FUNCTIONS,
    "report": _FUNCTIONS,
    "check_checksums": _DIAGNOSTICS,
    "counters": _DIAGNOSTICS,
    "doctor": _DIAGNOSTICS,
}


def _failure(code, params):
    # dom0's module (sim/pylib in tests): the CLI imports this file too
    import XenAPIPlugin  # noqa: PLC0415
    return XenAPIPlugin.Failure(code, [str(p) for p in params])


def _classify(err):
    if isinstance(err, (OSError, IOError)) and \
            not isinstance(err, ConnectionError):
        return errors.DEVICE_ERROR, "operating system error"
    name = type(err).__name__
    if name in ("Failure", "Fault", "ProtocolError") or \
            isinstance(err, ConnectionError):
        return errors.XAPI_ERROR, "XenAPI call failed"
    return errors.XAPI_ERROR, "internal error"


def wrap(name, fn):
    def call(session, args):
        log = get_logger()
        try:
            return json.dumps(fn(session, args), sort_keys=True)
        except errors.NetoffloadError as err:
            log.warning("%s: %s: %s", name, err.code, err.message)
            raise _failure(err.code, err.failure_params()) from err
        except Exception as err:  # never let xapi see a bare exception
            log.error("%s: unexpected %s: %s\n%s", name, type(err).__name__,
                      err, traceback.format_exc())
            code, what = _classify(err)
            raise _failure(code, ["%s in %s: %s: %s (see syslog)" % (
                what, name, type(err).__name__, str(err)[:500])]) from err
    call.__name__ = name
    call.__doc__ = fn.__doc__
    return call


def load(name):
    """The function `name`, its module imported now (and its table read
    now, at the call)."""
    module, table = MODULES[name]
    return getattr(importlib.import_module(module), table)[name]


def lazy(name):
    """fn(session, args) that imports `name`'s module when called; an
    import that fails is reported like any other bug (see wrap)."""
    def call(session, args):
        return load(name)(session, args)
    call.__name__ = name
    return call


def build_functions():
    return dict((name, wrap(name, lazy(name))) for name in MODULES)


FUNCTIONS = build_functions()


def main():
    # argv[1] from its bytes as UTF-8 and stdout writing UTF-8 whatever the
    # locale: on a Python 3.6 dom0 under xapi (PATH only, no LANG) both are
    # ASCII, and XenAPIPlugin.dispatch would crash on "café" (argv) or on a
    # non-ASCII Failure message (print) with XENAPI_PLUGIN_FAILURE.
    textio.utf8_process()
    import XenAPIPlugin  # noqa: PLC0415 (dom0's module; see _failure)
    XenAPIPlugin.dispatch(FUNCTIONS)
