"""Fan-out: run a plugin function on every other live host, in parallel,
through `host.call_plugin`; an unreachable or slow host is reported and
does not fail the others.
"""
import json
import threading
import time
import traceback

from netoffload.errors import XapiError
from netoffload.log import get_logger
from netoffload.pool import xapi

PLUGIN_NAME = "netoffload"

# The plugin's scope= argument: the whole call, or (what the fan-out sends
# to the other hosts) their live part only.
SCOPE_POOL = "pool"
SCOPE_LOCAL = "local"


# How long the fan-out waits for the other hosts, all together. The caller
# holds this host's lock meanwhile (others get BUSY), so keep it short; a
# host that has not answered by then is reported as TIMEOUT.
FANOUT_TIMEOUT = 120.0


def fan_out(ctx, fn, args, local_result, host_refs=None):
    """Per host (of `host_refs`; None: every host): the local result here,
    host.call_plugin elsewhere.

    Every entry has `ok`: a host that fails in any way, or does not answer
    within FANOUT_TIMEOUT, is reported and does not fail the others. The
    threads write into their own dicts; what is returned is a copy taken
    after the joins, so a late thread cannot change it while it is encoded.
    """
    call_args = dict((k, v) for k, v in args.items() if k != "pool")
    call_args["scope"] = SCOPE_LOCAL
    entries = []
    threads = []
    deadline = time.time() + FANOUT_TIMEOUT
    for host_ref in sorted(ctx.records.hosts,
                           key=lambda r: ctx.records.hosts[r].get(
                               "name_label", "")):
        if host_refs is not None and host_ref not in host_refs:
            continue
        entry = ctx.host_json(host_ref)
        entries.append(entry)
        if host_ref == ctx.host_ref:
            entry.update(ok=True, result=local_result)
        elif not ctx.records.host_is_live(host_ref):
            entry.update(ok=False, error=["HOST_OFFLINE",
                                          "the host is not live"])
        else:
            outcome = {}
            thread = threading.Thread(target=_call_host,
                                      args=(host_ref, fn, call_args, outcome))
            thread.daemon = True
            thread.start()
            threads.append((thread, entry, outcome))
    for thread, entry, outcome in threads:
        thread.join(max(0.0, deadline - time.time()))
        done = dict(outcome)  # one copy; the thread may still be running
        if thread.is_alive() or "ok" not in done:
            done = {"ok": False, "error": [
                "TIMEOUT", "no answer in %ds" % FANOUT_TIMEOUT]}
        entry.update(done)
    return [dict(entry) for entry in entries]


def _call_host(host_ref, fn, call_args, outcome):
    """Fill `outcome` with ok/result or ok/error; never raises."""
    session = None
    try:
        session = xapi.open_session()
        text = session.xenapi.host.call_plugin(host_ref, PLUGIN_NAME, fn,
                                               call_args)
        result = {"ok": True, "result": json.loads(text)}
    except XapiError as err:
        result = {"ok": False, "error": [err.code, err.message]}
    except Exception as err:  # any failure of this host: report, go on
        details = getattr(err, "details", None)
        if details and isinstance(details, (list, tuple)):
            error = [str(d) for d in details]
        else:
            error = [type(err).__name__, str(err)]
            get_logger().error("host %s: %s: %s", host_ref, fn,
                               traceback.format_exc())
        result = {"ok": False, "error": error}
    finally:
        if session is not None:
            xapi.close_session(session)
    if not result["ok"]:
        get_logger().warning("host %s: %s failed: %s", host_ref, fn,
                             result["error"])
    outcome.update(result)
