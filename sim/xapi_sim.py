"""A XenAPI (XAPI) simulator that speaks the real wire protocol.

It serves XML-RPC over HTTP on 127.0.0.1 and over a unix socket, so the real
`XenAPI` client talks to it unchanged, and it keeps xapi's semantics where
clients can observe them: refs distinct from uuids, the
{"Status": ..., "Value"/"ErrorDescription": ...} envelope, real error codes
and params, sessions that die with a restart, event.from tokens, and
host.call_plugin running the plugin file as a subprocess. See
docs/simulator.md for what is modelled and the known gaps.

In-process use:

    sim = XapiSim(socket_path="/tmp/x/xapi.sock", port=0)
    sim.start()
    host = sim.add_host("host1", plugin_dir="plugins", netns="ns1")
    ...
    sim.stop()

Out of process: `python -m sim.xapi_sim --socket PATH --db FILE` and drive it
with `SimClient` (the `sim.*` admin calls over XML-RPC).
"""
import argparse
import collections
import json
import os
import signal
import socket
import socketserver
import sys
import tempfile
import threading
import time
import uuid as uuidlib

from netoffload import paths as netoffload_paths
from sim import dom0view, xapi_plugins
from sim import wire as protocol
from sim import xapi_schema as schema
from sim.xapi_db import Database
from sim.xapi_errors import ApiError

NULL = schema.NULL_REF
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SIM_PYLIB = os.path.join(REPO_ROOT, "sim", "pylib")
SIM_BIN = os.path.join(REPO_ROOT, "sim", "bin")
# What xapi gives a plugin: PATH only (ocaml/forkexecd/lib/forkhelpers.ml).
PLUGIN_ENV = {"PATH": "/sbin:/usr/sbin:/bin:/usr/bin"}
# dom0 paths of the plugin's world (the rest are in netoffload.paths)
DOM0_XAPI_SOCKET = "/var/lib/xcp/xapi"
DOM0_PLUGIN_DIR = "/etc/xapi.d/plugins"
DOM0_PYTHON3 = "/usr/bin/python3"
DOM0_LIBRARY_DIR = "/usr/lib/netoffload/python"  # the RPM's, plugins/netoffload
DOM0_XENSTORE_READ = "/usr/bin/xenstore-read"
# where sim/bin/xenstore-read finds its store inside a host's dom0 view
SIM_XENSTORE_FILE = "/var/lib/xenstored/netoffload-sim.json"
DEFAULT_PLUGIN_DIR = os.path.join(REPO_ROOT, "plugins")
DEFAULT_PLUGIN_TIMEOUT = 600.0
TOKEN_FORMAT = "%020d,%020d"
ASYNC_PREFIX = "Async."  # ocaml/xapi/server_helpers.ml async_wire_name
# What Xen Orchestra 6 writes on every VIF it creates (@xen-orchestra/web,
# its VIF form's defaults): a stamp, not an admin's decision.
XO6_VIF_OTHER_CONFIG = {"ethtool-tx": "true"}

# Values an API caller may send for each field kind (xapi's unmarshaller
# refuses anything else).
_STR_TYPES = (str,)


def success(value):
    return {"Status": "Success", "Value": value}


def failure(description):
    return {"Status": "Failure", "ErrorDescription": description}


_DATE_FIELDS = dict((cls, tuple(name for name, spec in fields.items()
                                if spec["kind"] == schema.DATETIME))
                    for cls, fields in schema.CLASSES.items())


def wire(cls, rec):
    """A record as xapi sends it. Int fields stay ints: XML-RPC writes them
    as bare strings ("-1"), JSON-RPC as numbers (sim/wire.py); dates are
    marked as dates.

    A shallow copy with lists copied: rows are updated in place and
    relation lists grow in place, while maps are always replaced whole.
    """
    out = dict(rec)
    for name, value in out.items():
        if type(value) is list:
            out[name] = list(value)
    for name in _DATE_FIELDS[cls]:
        out[name] = protocol.DateTime(out[name])
    return out


def _check_str(value, what):
    if not isinstance(value, _STR_TYPES):
        raise ApiError("FIELD_TYPE_ERROR", what)
    return value


def _check_map(value, what):
    if not isinstance(value, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        raise ApiError("FIELD_TYPE_ERROR", what)
    return dict(value)


def coerce(cls, field, value):
    """Check/convert an API-supplied value for cls.field to its stored form."""
    kind = schema.CLASSES[cls][field]["kind"]
    what = field
    if kind in (schema.STR, schema.REF):
        return _check_str(value, what)
    if kind == schema.ENUM:
        choices = schema.CLASSES[cls][field]["choices"]
        if not isinstance(value, str) or (choices and value not in choices):
            raise ApiError("INVALID_VALUE", field, str(value))
        return value
    if kind == schema.INT:
        try:
            if isinstance(value, bool):
                raise ValueError(value)
            return int(value)
        except (TypeError, ValueError):
            raise ApiError("FIELD_TYPE_ERROR", what) from None
    if kind == schema.BOOL:
        if not isinstance(value, bool):
            raise ApiError("FIELD_TYPE_ERROR", what)
        return value
    if kind == schema.FLOAT:
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise ApiError("FIELD_TYPE_ERROR", what)
        return float(value)
    if kind == schema.MAP:
        return _check_map(value, what)
    if kind in (schema.STRS, schema.REFS):
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ApiError("FIELD_TYPE_ERROR", what)
        return list(value)
    raise ApiError("FIELD_TYPE_ERROR", what)


# --------------------------------------------------------------------------
# HTTP / unix-socket servers (the protocols are in sim/wire.py)
# --------------------------------------------------------------------------
class _UnixHandler(protocol.Handler):
    disable_nagle_algorithm = False  # TCP_NODELAY fails on a unix socket


class _ServerMixin(object):
    daemon_threads = True
    block_on_close = False

    def _init_mixin(self, endpoint):
        self.endpoint = endpoint
        self._connections = set()
        self._conn_lock = threading.Lock()

    def track(self, conn, add):
        with self._conn_lock:
            if add:
                self._connections.add(conn)
            else:
                self._connections.discard(conn)

    def drop_connections(self):
        with self._conn_lock:
            conns = list(self._connections)
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def handle_error(self, request, client_address):
        pass  # a client that went away, or a connection cut by stop()


class _TCPServer(_ServerMixin, socketserver.ThreadingMixIn,
                 socketserver.TCPServer):
    allow_reuse_address = True

    def __init__(self, address, endpoint):
        socketserver.TCPServer.__init__(self, address, protocol.Handler)
        self._init_mixin(endpoint)


class _UnixServer(_ServerMixin, socketserver.ThreadingMixIn,
                  socketserver.UnixStreamServer):
    def __init__(self, path, endpoint):
        socketserver.UnixStreamServer.__init__(self, path, _UnixHandler)
        self._init_mixin(endpoint)


class _Endpoint(object):
    """What one listening socket dispatches to (a host's local xapi)."""

    def __init__(self, sim, via_host):
        self.sim = sim
        self.via_host = via_host

    def call(self, method, params, json_rpc):
        """(ok, contents) of an API call; ("raw", value) of a sim.* call."""
        if method.startswith("sim.") and not json_rpc:
            return "raw", self.sim.handle(method, params, self.via_host)
        reply = self.sim.handle(method, params, self.via_host)
        if reply["Status"] == "Success":
            return True, reply["Value"]
        return False, reply["ErrorDescription"]


# --------------------------------------------------------------------------
# The simulator
# --------------------------------------------------------------------------
class XapiSim(object):
    """A pool's xapi: one database, one or more listening sockets."""

    def __init__(self, socket_path=None, port=None, db_path=None,
                 latency_ms=0.0, plugin_dir=None, state_root=None,
                 credentials=None, plugin_timeout=DEFAULT_PLUGIN_TIMEOUT):
        """socket_path: unix socket (no '_' in it: the XenAPI client maps
        '_' to '/'); port: TCP port on 127.0.0.1 (0 = any free one, None =
        no HTTP); db_path: JSON file the database lives in across restarts;
        credentials: (user, password) required at login, None = any."""
        if socket_path is not None and "_" in socket_path:
            raise ValueError("socket path must not contain '_' (XenAPI's "
                             "UDS transport maps '_' to '/'): %s" % socket_path)
        if socket_path is None and port is None:
            raise ValueError("give a socket_path, a port or both")
        self.socket_path = socket_path
        self.port = port
        self.latency = float(latency_ms) / 1000.0
        self.plugin_dir = plugin_dir or DEFAULT_PLUGIN_DIR
        self.state_root = state_root
        self.credentials = credentials
        self.plugin_timeout = plugin_timeout
        self.db = Database()
        self.db_path = db_path
        self.host_config = {}  # host ref -> {plugin_dir, netns, env, cwd}
        self._counts = collections.Counter()
        self._count_lock = threading.Lock()
        self._traced = frozenset()  # methods whose commits are timed
        self._trace = []
        self._servers = []
        self._threads = []
        self._host_servers = {}  # host ref -> (server, thread) of its own socket
        self._running = False
        self._boot = 0
        self._domids = collections.Counter()
        if db_path:
            self.db.attach(db_path)
            self._load_sim_config()
        if not self.state_root:
            self.state_root = tempfile.mkdtemp(prefix="xapisim-")
        with self.db.lock:
            if not self.db.tables["pool"]:
                self.db.create("pool", {"name_label": ""})
        self._methods = self._build_methods()
        self._generic_entries = {}  # method -> _generic's entry
        # Calls with an Async form: xapi's custom messages, constructors and
        # destructors; not field accessors, session or event calls
        # (ocaml/idl/datamodel_common.ml call ~flags, datamodel_utils.ml).
        self._async_methods = frozenset(
            name for name in self._methods
            if not name.startswith(("session.", "event.")))

    # -- lifecycle ------------------------------------------------------------
    @property
    def url(self):
        if not self._servers or self.port is None:
            return None
        return "http://127.0.0.1:%d/" % self.port

    def start(self):
        if self._running:
            return self
        self._running = True
        self._boot += 1
        if self.socket_path:
            if os.path.exists(self.socket_path):
                os.unlink(self.socket_path)
            self._listen(_UnixServer(self.socket_path, _Endpoint(self, None)))
        if self.port is not None:
            server = _TCPServer(("127.0.0.1", self.port), _Endpoint(self, None))
            self.port = server.server_address[1]
            self._listen(server)
        with self.db.lock:
            hosts = list(self.host_config)
        for host in hosts:
            self._sync_host_socket(host)
        self._write_inventories()
        return self

    def _sync_host_socket(self, host):
        """A host's own xapi socket exists while the sim runs and the host is live.

        Like a member's local xapi, it serves the same pool database (the
        member forwards to the master); it just disappears when the host dies.
        """
        with self.db.lock:
            path = self.host_config.get(host, {}).get("socket")
            wanted = bool(path) and self._running and self._host_live(host)
        current = self._host_servers.get(host)
        if current and (not wanted or current[0].server_address != path):
            self._host_servers.pop(host)
            self._close_server(*current)
            if os.path.exists(current[0].server_address):
                os.unlink(current[0].server_address)
            current = None
        if wanted and not current:
            if "_" in path:
                raise ValueError("socket path must not contain '_': %s" % path)
            if os.path.exists(path):
                os.unlink(path)
            server = _UnixServer(path, _Endpoint(self, host))
            thread = self._serve(server)
            self._host_servers[host] = (server, thread)

    def _serve(self, server):
        thread = threading.Thread(target=server.serve_forever,
                                  kwargs={"poll_interval": 0.05},
                                  name="xapisim-%s" % (server.server_address,))
        thread.daemon = True
        thread.start()
        return thread

    @staticmethod
    def _close_server(server, thread):
        server.shutdown()
        server.server_close()
        server.drop_connections()
        thread.join(5)

    def _listen(self, server):
        thread = self._serve(server)
        self._servers.append(server)
        self._threads.append(thread)

    def stop(self):
        """Like xapi going down: listeners closed, connections cut, sessions gone."""
        if not self._running:
            return
        self._running = False
        for server, thread in zip(self._servers, self._threads):
            self._close_server(server, thread)
        self._servers, self._threads = [], []
        for host in list(self._host_servers):
            self._sync_host_socket(host)
        if self.socket_path and os.path.exists(self.socket_path):
            os.unlink(self.socket_path)
        with self.db.lock:
            # xapi destroys every session and task at start-up and forgets
            # deletions.
            for cls in schema.TRANSIENT_CLASSES:
                for ref in list(self.db.tables[cls]):
                    rec = self.db.tables[cls].pop(ref)
                    self.db.by_uuid[cls].pop(rec["uuid"], None)
                    self.db.stamps.pop(ref, None)
            self.db.deleted.clear()
            self.db.lock.notify_all()
            self.db.compact()

    def restart(self):
        """stop() then start() on the same socket/port with the same database."""
        self.stop()
        self.start()

    def close(self):
        self.stop()
        self.db.detach_journal()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.close()

    # -- dispatch ---------------------------------------------------------------
    def handle(self, method, params, via_host=None):
        """One call: {"Status": "Success", "Value": v} or {"Status":
        "Failure", "ErrorDescription": [code, params...]}."""
        if method.startswith("sim."):
            return self._admin_call(method[4:], params)
        with self._count_lock:
            self._counts[method] += 1
        if self.latency:
            time.sleep(self.latency)
        try:
            if method == "system.listMethods":
                if params:
                    raise ApiError("MESSAGE_PARAMETER_COUNT_MISMATCH", method,
                                   0, len(params))
                return success(self.list_methods())
            if method.startswith(ASYNC_PREFIX):
                return success(self._async(method, params, via_host))
            value = self._bind_call(method, params, via_host)()
            if method in self._traced:
                # committed, the reply not sent yet; CLOCK_MONOTONIC is
                # the same in every process of the machine
                entry = [time.monotonic(), method, list(params[1:]),
                         value if isinstance(value, str) else ""]
                with self._count_lock:
                    self._trace.append(entry)
            return success(value)
        except ApiError as exc:
            return failure(exc.description())
        except Exception as exc:  # a sim bug: report as xapi would
            return failure(_internal_error(exc))

    def _bind_call(self, method, params, via_host):
        """The call, checked as xapi checks it before running anything
        (method, parameter count, session), as a thunk."""
        entry = self._lookup(method)
        if entry is None:
            raise ApiError("MESSAGE_METHOD_UNKNOWN", method)
        fn, nargs, with_session = entry
        lo, hi = nargs if isinstance(nargs, tuple) else (nargs, nargs)
        received = len(params) - (1 if with_session else 0)
        if not lo <= received <= hi:
            raise ApiError("MESSAGE_PARAMETER_COUNT_MISMATCH", method, lo, received)
        if not with_session:
            return lambda: fn(via_host, *params)
        session = params[0]
        with self.db.lock:
            if not isinstance(session, str) or session not in self.db.tables["session"]:
                raise ApiError("SESSION_INVALID", session)
        return lambda: fn(session, *params[1:])

    def _async(self, method, params, via_host):
        """Async.<class>.<call>: the checks now, a task ref at once, the call
        in a thread; the task ends with its result (the XML-RPC form of the
        value, as taskHelper.ml stores it) or its error_info."""
        name = method[len(ASYNC_PREFIX):]
        if self._lookup(name) is None:
            raise ApiError("MESSAGE_METHOD_UNKNOWN", method)
        if name not in self._async_methods:
            # server_helpers.ml do_dispatch: response_of_fault
            raise ApiError("Fault", "No async mode for this operation (rpc: "
                           "%s)" % method)
        call = self._bind_call(name, params, via_host)
        with self.db.lock:
            task = self.db.create("task", {
                "name_label": method, "session": params[0],
                "created": _now(), "resident_on": self._master(),
                "status": "pending"})
        thread = threading.Thread(target=self._run_task, args=(task, call),
                                  name="xapisim-task")
        thread.daemon = True
        thread.start()
        return task

    def _run_task(self, task, call):
        try:
            result = call()
        except ApiError as exc:
            fields = {"status": "failure", "error_info": exc.description()}
        except Exception as exc:  # a sim bug: report as xapi would
            fields = {"status": "failure", "error_info": _internal_error(exc)}
        else:
            fields = {"status": "success",
                      "result": "" if result is None else protocol.xml_value(result)}
        with self.db.lock:
            if not self.db.exists("task", task):
                return  # destroyed meanwhile, or a restart
            fields.update(progress=1.0, finished=_now())
            for name in ("progress", "finished", "result", "error_info",
                         "status"):  # status last: clients wait for it
                if name in fields:
                    self.db.set_field("task", task, name, fields[name])

    def _task_cancel(self, session, task):
        with self.db.lock:
            rec = self.db.row("task", task)
            if "cancel" not in rec["allowed_operations"]:
                # call_plugin tasks are not cancellable (xapi_task.ml)
                raise ApiError("OPERATION_NOT_ALLOWED",
                               "Task cannot be cancelled")
        return ""

    def _task_destroy(self, session, task):
        with self.db.lock:
            self.db.row("task", task)
            self.db.destroy("task", task)
        return ""

    def list_methods(self):
        """system.listMethods: every call name the simulator answers."""
        names = set(self._methods)
        for cls, fields in schema.CLASSES.items():
            names.add("%s.get_record" % cls)
            names.add("%s.get_by_uuid" % cls)
            if cls in schema.GET_ALL_CLASSES:
                names.update(("%s.get_all" % cls, "%s.get_all_records" % cls))
            if cls in schema.NAMED_CLASSES:
                names.add("%s.get_by_name_label" % cls)
            for field, spec in fields.items():
                names.add("%s.get_%s" % (cls, field))
                if spec["rw"]:
                    names.add("%s.set_%s" % (cls, field))
                    if spec["kind"] == schema.MAP:
                        names.add("%s.add_to_%s" % (cls, field))
                        names.add("%s.remove_from_%s" % (cls, field))
                    elif spec["kind"] == schema.STRS:
                        names.add("%s.add_%s" % (cls, field))
                        names.add("%s.remove_%s" % (cls, field))
        names.add("system.listMethods")
        return sorted(names)

    def _lookup(self, method):
        entry = self._methods.get(method)
        if entry is not None:
            return entry
        entry = self._generic_entries.get(method)
        if entry is not None:
            return entry
        cls, _, name = method.partition(".")
        if cls not in schema.CLASSES:
            return None
        entry = self._generic(cls, name)
        if entry is not None:
            # a class's calls follow from the schema alone: made once
            self._generic_entries[method] = entry
        return entry

    def _generic(self, cls, name):
        fields = schema.CLASSES[cls]
        if name in ("get_all", "get_all_records") and \
                cls not in schema.GET_ALL_CLASSES:
            return None
        if name == "get_all":
            return (lambda s: self._get_all(cls), 0, True)
        if name == "get_all_records":
            return (lambda s: self._get_all_records(cls), 0, True)
        if name == "get_record":
            return (lambda s, ref: self._get_record(cls, ref), 1, True)
        if name == "get_by_uuid":
            return (lambda s, uuid: self._get_by_uuid(cls, uuid), 1, True)
        if name == "get_by_name_label" and cls in schema.NAMED_CLASSES:
            return (lambda s, label: self._get_by_name_label(cls, label), 1, True)
        for prefix, handler, nargs, kinds in (
                ("get_", self._get_field, 1, None),
                ("set_", self._set_field, 2, "rw"),
                ("add_to_", self._add_to_map, 3, (schema.MAP,)),
                ("remove_from_", self._remove_from_map, 2, (schema.MAP,)),
                ("add_", self._add_to_set, 2, (schema.STRS,)),
                ("remove_", self._remove_from_set, 2, (schema.STRS,))):
            if not name.startswith(prefix):
                continue
            field = name[len(prefix):]
            spec = fields.get(field)
            if spec is None:
                continue
            if kinds == "rw" and not spec["rw"]:
                continue
            if kinds not in (None, "rw") and (
                    spec["kind"] not in kinds or not spec["rw"]):
                continue
            return (self._bind(handler, cls, field), nargs, True)
        return None

    @staticmethod
    def _bind(handler, cls, field):
        return lambda s, *args: handler(cls, field, *args)

    def _build_methods(self):
        return {
            "session.login_with_password": (self._login, (2, 4), False),
            "session.logout": (self._logout, 0, True),
            "session.get_this_host": (self._session_this_host, 1, True),
            "pool.designate_new_master": (self._designate_new_master, 1, True),
            "host.call_plugin": (self._host_call_plugin, 4, True),
            "VM.create": (lambda s, rec: self._vm_create(rec), 1, True),
            "VM.destroy": (lambda s, vm: self._vm_destroy(vm), 1, True),
            "VM.start": (lambda s, vm, paused, force: self._vm_start(vm, None), 3, True),
            "VM.start_on": (lambda s, vm, host, paused, force: self._vm_start(vm, host), 4, True),
            "VM.clean_shutdown": (lambda s, vm: self._vm_shutdown(vm), 1, True),
            "VM.hard_shutdown": (lambda s, vm: self._vm_shutdown(vm), 1, True),
            "VM.shutdown": (lambda s, vm: self._vm_shutdown(vm), 1, True),
            "VIF.create": (lambda s, rec: self._vif_create(rec), 1, True),
            "VIF.destroy": (lambda s, vif: self._vif_destroy(vif), 1, True),
            "VIF.plug": (lambda s, vif: self._vif_plug(vif, True), 1, True),
            "VIF.unplug": (lambda s, vif: self._vif_plug(vif, False), 1, True),
            "PIF.set_property": (self._pif_set_property, 3, True),
            "VLAN.create": (lambda s, pif, tag, net: self._vlan_create(pif, tag, net),
                            3, True),
            "VLAN.destroy": (lambda s, vlan: self._vlan_destroy(vlan), 1, True),
            "network_sriov.create": (
                lambda s, pif, net: self._sriov_create(pif, net), 2, True),
            "network_sriov.destroy": (
                lambda s, sriov: self._sriov_destroy(sriov), 1, True),
            "event.from": (self._event_from, 3, True),
            "event.inject": (self._event_inject, 2, True),
            "task.cancel": (self._task_cancel, 1, True),
            "task.destroy": (self._task_destroy, 1, True),
        }

    # -- generic class calls ------------------------------------------------------
    def _get_all(self, cls):
        with self.db.lock:
            return list(self.db.tables[cls])

    def _get_all_records(self, cls):
        with self.db.lock:
            return dict((ref, wire(cls, rec))
                        for ref, rec in self.db.tables[cls].items())

    def _get_record(self, cls, ref):
        with self.db.lock:
            return wire(cls, self.db.row(cls, ref))

    def _get_by_uuid(self, cls, uuid):
        with self.db.lock:
            return self.db.ref_of_uuid(cls, uuid)

    def _get_by_name_label(self, cls, label):
        with self.db.lock:
            return [ref for ref, rec in self.db.tables[cls].items()
                    if rec["name_label"] == label]

    def _get_field(self, cls, field, ref):
        with self.db.lock:
            return wire(cls, self.db.row(cls, ref))[field]

    def _set_field(self, cls, field, ref, value):
        with self.db.lock:
            self.db.row(cls, ref)
            value = coerce(cls, field, value)
            if field == "affinity" and value != NULL:
                self.db.row("host", value)
            self.db.set_field(cls, ref, field, value)
        return ""

    def _add_to_map(self, cls, field, ref, key, value):
        with self.db.lock:
            current = self.db.row(cls, ref)[field]
            _check_str(key, "key")
            _check_str(value, "value")
            if key in current:
                raise ApiError("MAP_DUPLICATE_KEY", cls, field, ref, key)
            updated = dict(current)
            updated[key] = value
            self.db.set_field(cls, ref, field, updated)
        return ""

    def _remove_from_map(self, cls, field, ref, key):
        with self.db.lock:
            current = self.db.row(cls, ref)[field]
            _check_str(key, "key")
            if key in current:
                updated = dict(current)
                del updated[key]
                self.db.set_field(cls, ref, field, updated)
        return ""

    def _add_to_set(self, cls, field, ref, value):
        with self.db.lock:
            current = self.db.row(cls, ref)[field]
            _check_str(value, "value")
            if value not in current:
                self.db.set_field(cls, ref, field, current + [value])
        return ""

    def _remove_from_set(self, cls, field, ref, value):
        with self.db.lock:
            current = self.db.row(cls, ref)[field]
            _check_str(value, "value")
            if value in current:
                self.db.set_field(cls, ref, field, [v for v in current if v != value])
        return ""

    # -- session ------------------------------------------------------------------
    def _login(self, via_host, uname, password, version=None, originator=None):
        if self.credentials is not None and (uname, password) != tuple(self.credentials):
            raise ApiError("SESSION_AUTHENTICATION_FAILED", uname,
                           "Authentication failure")
        with self.db.lock:
            return self._new_session(uname, originator)

    def _new_session(self, uname, originator, pool=False):
        # A member's xapi forwards the login to the master, so the
        # session belongs to the master whichever socket was used.
        return self.db.create("session", {
            "this_host": self._master(), "auth_user_name": str(uname),
            "originator": str(originator or ""), "pool": bool(pool),
            "last_active": time.strftime("%Y%m%dT%H:%M:%SZ", time.gmtime())})

    def _logout(self, session):
        with self.db.lock:
            if session in self.db.tables["session"]:
                self.db.destroy("session", session)
        return ""

    def _session_this_host(self, session, target):
        with self.db.lock:
            return self.db.row("session", target)["this_host"]

    # -- pool / host ------------------------------------------------------------------
    def _pool_ref(self):
        return next(iter(self.db.tables["pool"]))

    def _master(self):
        return self.db.tables["pool"][self._pool_ref()]["master"]

    def _host_live(self, host):
        metrics = self.db.row("host", host)["metrics"]
        rec = self.db.tables["host_metrics"].get(metrics)
        return bool(rec and rec["live"])

    def _designate_new_master(self, session, host):
        with self.db.lock:
            self.db.row("host", host)
            self.db.set_field("pool", self._pool_ref(), "master", host)
            self._save_sim_config()
        return ""

    def _host_call_plugin(self, session, host, plugin, fn, args):
        _check_str(plugin, "plugin")
        _check_str(fn, "fn")
        args = _check_map(args, "args")
        with self.db.lock:
            self.db.row("host", host)
            # The call lands on the master, which runs it or forwards it.
            local = self._master()
            if host != local and not self._host_live(host):
                raise ApiError("HOST_OFFLINE", host)
            config = dict(self.host_config.get(host, {}))
        plugin_dir = config.get("plugin_dir") or self.plugin_dir
        try:
            names = os.listdir(plugin_dir)
        except OSError:
            names = []
        if plugin not in names:
            raise ApiError("XENAPI_MISSING_PLUGIN", plugin)
        # A call forwarded to a member runs there with a fresh internal pool
        # session, destroyed when the call returns
        # (ocaml/xapi/message_forwarding.ml); the master's own runs with the
        # caller's.
        forwarded = host != local
        if forwarded:
            with self.db.lock:
                session = self._new_session("", "", pool=True)
        try:
            out = xapi_plugins.run_plugin(
                self.plugin_command(host, plugin, fn, args, session),
                dict(PLUGIN_ENV), "/", self.plugin_timeout)
        finally:
            if forwarded:
                self._logout(session)
        return xapi_plugins.parse_output(out)

    def plugin_command(self, host, plugin, fn, args, session, dom0_files=None):
        """The argv that runs `plugin` on `host` as xapi runs it (with
        PLUGIN_ENV as its whole environment, stdin /dev/null): argv[1] is
        the methodCall, inside the host's network namespace and its dom0
        view (dom0_files(), plus `dom0_files` here, which win)."""
        argv = [os.path.join(DOM0_PLUGIN_DIR, plugin),
                xapi_plugins.method_call(fn, session, args)]
        with self.db.lock:
            config = dict(self.host_config.get(host, {}))
            files = self.dom0_files(host, dom0_files)
        if config.get("netns"):
            argv = ["ip", "netns", "exec", config["netns"]] + argv
        return dom0view.command(files, self._scratch(), argv)

    def host_dir(self, host):
        with self.db.lock:
            uuid = self.db.row("host", host)["uuid"]
        return os.path.join(self.state_root, uuid)

    def state_dir(self, host):
        """The host's /var/lib/netoffload (a directory of this machine)."""
        return os.path.join(self.host_dir(host), "state")

    def _scratch(self):
        path = os.path.join(self.state_root, "dom0-scratch")
        os.makedirs(path, exist_ok=True)
        return path

    def dom0_files(self, host, extra=None):
        """{dom0 path: path here} that make up `host`'s dom0 for its
        plugins: the xapi socket, the inventory, the state directory, the
        plugin directory, the netoffload library where the RPM installs it,
        XenAPI and XenAPIPlugin where dom0's python3 imports them from, the
        xenstore-read stand-in and its store, then the host's own
        `dom0_files` (which win; a None hides a path)."""
        config = self.host_config.get(host, {})
        extra = dict(extra or {})
        hdir = self.host_dir(host)
        python3 = extra.pop(DOM0_PYTHON3, None) or config.get("python3")
        purelib = dom0view.purelib(python3 or DOM0_PYTHON3)
        import XenAPI
        files = {
            netoffload_paths.INVENTORY: os.path.join(hdir, "xensource-inventory"),
            netoffload_paths.STATE_DIR: os.path.join(hdir, "state"),
            DOM0_PLUGIN_DIR: os.path.abspath(config.get("plugin_dir")
                                             or self.plugin_dir),
            DOM0_LIBRARY_DIR + "/netoffload": os.path.join(REPO_ROOT,
                                                           "netoffload"),
            purelib + "/XenAPI": os.path.dirname(os.path.abspath(
                XenAPI.__file__)),
            purelib + "/XenAPIPlugin.py": os.path.join(SIM_PYLIB,
                                                       "XenAPIPlugin.py"),
            DOM0_XENSTORE_READ: os.path.join(SIM_BIN, "xenstore-read"),
        }
        socket_path = config.get("socket") or self.socket_path
        if socket_path:
            files[DOM0_XAPI_SOCKET] = socket_path
        if config.get("xenstore"):
            files[SIM_XENSTORE_FILE] = config["xenstore"]
        if python3:
            files[DOM0_PYTHON3] = python3
        files.update(config.get("dom0_files") or {})
        files.update(extra)
        return files

    def plugin_env(self, host):
        """The environment for running helpers (CLI, watcher, udev helper)
        of `host` by hand, outside its dom0 view: NETOFFLOAD_* variables
        point them at the host's files. Plugins never get it: xapi gives
        them PATH only (PLUGIN_ENV)."""
        config = self.host_config.get(host, {})
        hdir = self.host_dir(host)
        bin_dir = os.path.dirname(os.path.abspath(sys.executable))
        env = {
            "PATH": ":".join([bin_dir, "/usr/local/sbin", "/usr/local/bin",
                              "/usr/sbin", "/usr/bin", "/sbin", "/bin"]),
            "HOME": "/root",
            "LANG": "C",
            "PYTHONPATH": ":".join([REPO_ROOT, SIM_PYLIB, self._xenapi_overlay()]),
            "PYTHONDONTWRITEBYTECODE": "1",
            "NETOFFLOAD_INVENTORY": os.path.join(hdir, "xensource-inventory"),
            "NETOFFLOAD_STATE_DIR": os.path.join(hdir, "state"),
        }
        if config.get("socket"):
            env["NETOFFLOAD_XAPI_SOCKET"] = config["socket"]
        elif self.socket_path:
            env["NETOFFLOAD_XAPI_SOCKET"] = self.socket_path
        elif self.url:
            env["NETOFFLOAD_XAPI_URL"] = self.url
        if config.get("xenstore"):
            env["NETOFFLOAD_SIM_XENSTORE"] = config["xenstore"]
        env.update(config.get("env") or {})
        return env

    def _xenapi_overlay(self):
        """A directory exposing only the XenAPI package to other interpreters."""
        overlay = os.path.join(self.state_root, "pylib")
        link = os.path.join(overlay, "XenAPI")
        if not os.path.lexists(link):
            try:
                import XenAPI
            except ImportError:
                return overlay
            os.makedirs(overlay, exist_ok=True)
            os.symlink(os.path.dirname(os.path.abspath(XenAPI.__file__)), link)
        return overlay

    def _write_inventories(self):
        with self.db.lock:
            hosts = dict(self.db.tables["host"])
            dom0 = dict((rec["resident_on"], rec["uuid"])
                        for rec in self.db.tables["VM"].values()
                        if rec["is_control_domain"])
        for ref, rec in hosts.items():
            hdir = os.path.join(self.state_root, rec["uuid"])
            os.makedirs(os.path.join(hdir, "state"), mode=0o700, exist_ok=True)
            lines = [
                "PRODUCT_BRAND='XenServer'",
                "PRODUCT_VERSION='8.4.0'",
                "BUILD_NUMBER='xapisim'",
                "INSTALLATION_UUID='%s'" % rec["uuid"],
                "CONTROL_DOMAIN_UUID='%s'" % dom0.get(ref, ""),
                "MANAGEMENT_INTERFACE='xenbr0'",
            ]
            path = os.path.join(hdir, "xensource-inventory")
            with open(path + ".tmp", "w") as fh:
                fh.write("\n".join(lines) + "\n")
            os.rename(path + ".tmp", path)

    # -- VM / VIF -----------------------------------------------------------------------
    _VM_CREATE_FIXED = ("uuid", "power_state", "resident_on", "domid", "VIFs",
                        "is_control_domain", "is_a_snapshot", "is_default_template")

    def _vm_create(self, record):
        if not isinstance(record, dict) or "name_label" not in record:
            raise ApiError("FIELD_TYPE_ERROR", "name_label")
        fields = {}
        for name, value in record.items():
            if name in schema.CLASSES["VM"] and name not in self._VM_CREATE_FIXED:
                fields[name] = coerce("VM", name, value)
        with self.db.lock:
            return self.db.create("VM", fields)

    def _vm_destroy(self, vm):
        with self.db.lock:
            rec = self.db.row("VM", vm)
            if rec["power_state"] != "Halted":
                raise ApiError("VM_BAD_POWER_STATE", vm, "halted",
                               rec["power_state"].lower())
            for vif in list(rec["VIFs"]):
                self.db.destroy("VIF", vif)
            self.db.destroy("VM", vm)
        return ""

    def _vm_start(self, vm, host, domid=None):
        with self.db.lock:
            rec = self.db.row("VM", vm)
            if rec["is_a_template"]:
                raise ApiError("VM_IS_TEMPLATE", vm)
            if rec["power_state"] != "Halted":
                raise ApiError("VM_BAD_POWER_STATE", vm, "halted",
                               rec["power_state"].lower())
            host = host or self._master()
            self.db.row("host", host)
            if not self._host_live(host):
                raise ApiError("HOST_OFFLINE", host)
            if domid is None:
                domid = self._next_domid(host)
            self.db.set_field("VM", vm, "resident_on", host)
            self.db.set_field("VM", vm, "domid", int(domid))
            self.db.set_field("VM", vm, "power_state", "Running")
            for vif in rec["VIFs"]:
                self.db.set_field("VIF", vif, "currently_attached", True)
        return ""

    def _next_domid(self, host):
        # Xen hands out increasing domids; they are not reused at once.
        used = [rec["domid"] for rec in self.db.tables["VM"].values()
                if rec["resident_on"] == host]
        domid = max(used + [self._domids[host]]) + 1
        self._domids[host] = domid
        return domid

    def _vm_shutdown(self, vm):
        with self.db.lock:
            rec = self.db.row("VM", vm)
            if rec["power_state"] != "Running":
                raise ApiError("VM_BAD_POWER_STATE", vm, "running",
                               rec["power_state"].lower())
            for vif in rec["VIFs"]:
                self.db.set_field("VIF", vif, "currently_attached", False)
            self.db.set_field("VM", vm, "power_state", "Halted")
            self.db.set_field("VM", vm, "resident_on", NULL)
            self.db.set_field("VM", vm, "domid", -1)
        return ""

    def _vif_create(self, record):
        if not isinstance(record, dict):
            raise ApiError("FIELD_TYPE_ERROR", "record")
        for required in ("device", "network", "VM"):
            if required not in record:
                raise ApiError("FIELD_TYPE_ERROR", required)
        fields = {}
        for name in ("device", "network", "VM", "MAC", "MTU", "other_config",
                     "qos_algorithm_type", "qos_algorithm_params", "locking_mode"):
            if name in record:
                fields[name] = coerce("VIF", name, record[name])
        device = fields["device"]
        with self.db.lock:
            self.db.row("network", fields["network"])
            vm = self.db.row("VM", fields["VM"])
            if not device.isdigit():
                raise ApiError("INVALID_DEVICE", device)
            for other in vm["VIFs"]:
                if int(self.db.tables["VIF"][other]["device"]) == int(device):
                    raise ApiError("DEVICE_ALREADY_EXISTS", device)
            if not fields.get("MAC"):
                fields["MAC"] = _random_mac()
                fields["MAC_autogenerated"] = True
            return self.db.create("VIF", fields)

    def _vif_destroy(self, vif):
        with self.db.lock:
            rec = self.db.row("VIF", vif)
            vm = self.db.tables["VM"].get(rec["VM"])
            if vm and vm["power_state"] == "Running" and rec["currently_attached"]:
                raise ApiError("OPERATION_NOT_ALLOWED",
                               "VIF currently attached to a running VM")
            self.db.destroy("VIF", vif)
        return ""

    def _vif_plug(self, vif, plug):
        with self.db.lock:
            rec = self.db.row("VIF", vif)
            vm = self.db.row("VM", rec["VM"])
            if vm["power_state"] != "Running":
                raise ApiError("VM_BAD_POWER_STATE", rec["VM"], "running",
                               vm["power_state"].lower())
            if rec["currently_attached"] == plug:
                raise ApiError("DEVICE_ALREADY_ATTACHED" if plug
                               else "DEVICE_ALREADY_DETACHED", vif)
            self.db.set_field("VIF", vif, "currently_attached", plug)
        return ""

    # -- PIF properties, VLANs, SR-IOV -----------------------------------------------
    def _pif_set_property(self, session, pif, name, value):
        """PIF.set_property as ocaml/xapi/xapi_pif.ml set_property."""
        _check_str(name, "name")
        _check_str(value, "value")
        with self.db.lock:
            rec = self.db.row("PIF", pif)
            if value not in schema.PIF_PROPERTY_VALUES.get(name, ()):
                raise ApiError("INVALID_VALUE", "properties",
                               "%s = %s" % (name, value))
            # only physical PIFs and bond masters, never a bond member
            has_properties = rec["physical"] or bool(rec["bond_master_of"])
            if not has_properties or rec["bond_slave_of"] != NULL:
                raise ApiError("CANNOT_CHANGE_PIF_PROPERTIES", pif)
            updated = dict(rec["properties"])
            updated[name] = value
            self.db.set_field("PIF", pif, "properties", updated)
        return ""

    def _assert_no_other_local_pif(self, host, network):
        for ref, rec in self.db.tables["PIF"].items():
            if rec["host"] == host and rec["network"] == network:
                raise ApiError("NETWORK_ALREADY_CONNECTED", host, ref)

    def _vlan_create(self, tagged_pif, tag, network):
        """VLAN.create as ocaml/xapi/xapi_vlan.ml: the untagged (VLAN) PIF
        carries the tagged PIF's device name, VLAN = tag, no properties."""
        with self.db.lock:
            tagged = self.db.row("PIF", tagged_pif)
            self.db.row("network", network)
            tag = coerce("VLAN", "tag", tag)
            if tagged["bond_slave_of"] != NULL:
                raise ApiError("CANNOT_ADD_VLAN_TO_BOND_SLAVE", tagged_pif)
            if tagged["VLAN_master_of"] != NULL:
                raise ApiError("PIF_IS_VLAN", tagged_pif)
            self._assert_no_other_local_pif(tagged["host"], network)
            if tag < 0 or tag > 4094:
                raise ApiError("VLAN_TAG_INVALID", str(tag))
            for rec in self.db.tables["VLAN"].values():
                if rec["tagged_PIF"] == tagged_pif and rec["tag"] == tag:
                    raise ApiError("PIF_VLAN_EXISTS", tagged["device"])
            untagged = self.db.create("PIF", {
                "host": tagged["host"], "network": network,
                "device": tagged["device"], "VLAN": tag,
                "MAC": schema.DUMMY_MAC, "MTU": tagged["MTU"],
                "physical": False, "currently_attached": True,
                "properties": {}})
            vlan = self.db.create("VLAN", {"tagged_PIF": tagged_pif,
                                           "untagged_PIF": untagged,
                                           "tag": tag})
            self.db.set_field("PIF", untagged, "VLAN_master_of", vlan)
            return vlan

    def _vlan_destroy(self, vlan):
        with self.db.lock:
            untagged = self.db.row("VLAN", vlan)["untagged_PIF"]
            if self.db.exists("PIF", untagged):
                if self.db.tables["PIF"][untagged]["management"]:
                    raise ApiError("PIF_IS_MANAGEMENT_INTERFACE", untagged)
                self.db.destroy("PIF", untagged)
            self.db.destroy("VLAN", vlan)
        return ""

    def _sriov_create(self, pif, network):
        """network_sriov.create as ocaml/xapi/xapi_network_sriov.ml: a
        logical PIF (the physical PIF's device, VLAN -1, not physical) on
        `network`. A VIF on that network gets a virtual function passed
        through to its guest, so it has no backend device in dom0."""
        with self.db.lock:
            physical = self.db.row("PIF", pif)
            self.db.row("network", network)
            if not physical["physical"]:
                raise ApiError("PIF_IS_NOT_PHYSICAL", pif)
            if physical["sriov_physical_PIF_of"]:
                raise ApiError("NETWORK_SRIOV_ALREADY_ENABLED", pif)
            self._assert_no_other_local_pif(physical["host"], network)
            logical = self.db.create("PIF", {
                "host": physical["host"], "network": network,
                "device": physical["device"], "VLAN": -1,
                "MAC": schema.DUMMY_MAC, "MTU": physical["MTU"],
                "physical": False, "currently_attached": True,
                "properties": {}})
            return self.db.create("network_sriov", {
                "physical_PIF": pif, "logical_PIF": logical})

    def _sriov_destroy(self, sriov):
        with self.db.lock:
            logical = self.db.row("network_sriov", sriov)["logical_PIF"]
            if self.db.exists("PIF", logical):
                if self.db.tables["PIF"][logical]["VLAN_slave_of"]:
                    raise ApiError("PIF_VLAN_STILL_EXISTS", logical)
                self.db.destroy("PIF", logical)
            self.db.destroy("network_sriov", sriov)
        return ""

    # -- events -----------------------------------------------------------------------------
    def _event_from(self, session, classes, token, timeout):
        if not isinstance(classes, list) or not all(isinstance(c, str) for c in classes):
            raise ApiError("FIELD_TYPE_ERROR", "classes")
        if not isinstance(token, str):
            raise ApiError("FIELD_TYPE_ERROR", "token")
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
            raise ApiError("FIELD_TYPE_ERROR", "timeout")
        since = _parse_token(token)
        tables, object_filter = _subscriptions(classes)
        deadline = time.time() + max(0.0, float(timeout))
        boot = self._boot
        db = self.db
        with db.lock:
            while True:
                if session not in db.tables["session"] or boot != self._boot:
                    raise ApiError("SESSION_INVALID", session)
                adds, mods, dels = db.changes_since(since, tables, object_filter)
                remaining = deadline - time.time()
                if adds or mods or dels or remaining <= 0 or not self._running:
                    break
                db.lock.wait(remaining)
            events = []
            for op, items in (("add", adds), ("mod", mods)):
                for cls, ref, stamp in sorted(items, key=lambda i: i[2]):
                    events.append({
                        "id": str(stamp), "timestamp": "0.0",
                        "class": cls.lower(), "operation": op, "ref": ref,
                        "snapshot": wire(cls, db.tables[cls][ref])})
            for cls, ref, stamp in sorted(dels, key=lambda i: i[2]):
                events.append({"id": str(stamp), "timestamp": "0.0",
                               "class": cls.lower(), "operation": "del",
                               "ref": ref})
            # int32 in xapi (ocaml/xapi-types/event_types.ml): <i4>
            counts = dict((name, protocol.Int32(n))
                          for name, n in db.counts().items())
            return {"events": events, "valid_ref_counts": counts,
                    "token": TOKEN_FORMAT % (db.generation, 0)}

    def _event_inject(self, session, cls, ref):
        _check_str(cls, "class")
        with self.db.lock:
            table = schema.table_of_event_class(cls) if cls not in schema.CLASSES else cls
            if table is None or table != cls or not self.db.exists(table, ref):
                raise ApiError("HANDLE_INVALID", cls, ref)
            before = self.db.generation
            self.db.touch(table, ref)
            return TOKEN_FORMAT % (before, 0)

    # -- admin API (tests, demo; also sim.* over XML-RPC) ------------------------------------
    ADMIN = ("add_host", "add_network", "add_pif", "add_vlan", "add_sriov",
             "add_vm", "add_vif",
             "start_vm", "shutdown_vm", "destroy_vm", "destroy_vif", "set_master",
             "set_host_live", "configure_host", "call_counts",
             "reset_call_counts", "snapshot_db", "restart", "set_latency_ms",
             "trace_commits", "traced_commits", "info", "host_env")

    def _admin_call(self, name, params):
        try:
            if name not in self.ADMIN:
                raise ApiError("MESSAGE_METHOD_UNKNOWN", "sim." + name)
            kwargs = params[0] if params else {}
            if len(params) > 1 or not isinstance(kwargs, dict):
                raise ApiError("MESSAGE_PARAMETER_COUNT_MISMATCH", "sim." + name,
                               1, len(params))
            if name == "restart":
                # Answer first, then restart (this call's connection dies).
                threading.Timer(0.05, self.restart).start()
                return success("")
            result = getattr(self, name)(**kwargs)
            if name == "snapshot_db":
                result = json.dumps(result, sort_keys=True)
            return success(result if result is not None else "")
        except ApiError as exc:
            return failure(exc.description())
        except (TypeError, ValueError, KeyError) as exc:
            return failure(["SIM_BAD_ARGUMENT", "%s: %s" % (type(exc).__name__, exc)])

    def info(self):
        with self.db.lock:
            pool = self._pool_ref()
            return {"url": self.url or "", "socket": self.socket_path or "",
                    "pool": pool, "master": self._master(),
                    "state_root": self.state_root, "pid": os.getpid()}

    def add_host(self, name_label, address=None, live=True, enabled=True,
                 plugin_dir=None, netns=None, env=None, cwd=None, uuid=None,
                 socket_path=None, dom0_files=None, python3=None,
                 xenstore=None):
        """A host with its host_metrics and its control domain (dom0) VM."""
        with self.db.lock:
            index = len(self.db.tables["host"]) + 1
            metrics = self.db.create("host_metrics", {"live": bool(live)})
            fields = {"name_label": name_label, "hostname": name_label,
                      "address": address or "10.0.0.%d" % index,
                      "enabled": bool(enabled), "metrics": metrics,
                      "software_version": {"product_version": "8.4.0",
                                           "xapi": "sim"}}
            if uuid:
                fields["uuid"] = uuid
            host = self.db.create("host", fields)
            self.db.create("VM", {
                "name_label": "Control domain on host: %s" % name_label,
                "is_control_domain": True, "power_state": "Running",
                "resident_on": host, "domid": 0})
            pool = self._pool_ref()
            if self.db.tables["pool"][pool]["master"] == NULL:
                self.db.set_field("pool", pool, "master", host)
            self.host_config[host] = {}
            self.configure_host(host, plugin_dir=plugin_dir, netns=netns,
                                env=env, cwd=cwd, socket_path=socket_path,
                                dom0_files=dom0_files, python3=python3,
                                xenstore=xenstore)
        self._write_inventories()
        return host

    def configure_host(self, host, plugin_dir=None, netns=None, env=None, cwd=None,
                       socket_path=None, dom0_files=None, python3=None,
                       xenstore=None):
        """Where and how host.call_plugin runs plugins for this host.

        Plugins run as xapi runs them: PATH only, stdin /dev/null, in the
        host's network namespace `netns` and in a private mount namespace
        showing the host's dom0 (dom0_files()). socket_path: the host's own
        local xapi socket (at /var/lib/xcp/xapi for its plugins); it goes
        away while the host is not live. dom0_files: {dom0 path: path here,
        or None to hide it}, added to the defaults. python3: the
        interpreter shown as /usr/bin/python3 (dom0's). xenstore: the JSON
        store the xenstore-read stand-in reads. env, cwd: for helpers run
        by hand (plugin_env), never the plugin.
        """
        with self.db.lock:
            self.db.row("host", host)
            config = self.host_config.setdefault(host, {})
            for key, value in (("plugin_dir", plugin_dir), ("netns", netns),
                               ("env", env), ("cwd", cwd),
                               ("socket", socket_path),
                               ("dom0_files", dom0_files),
                               ("python3", python3), ("xenstore", xenstore)):
                if value is not None:
                    config[key] = value
            self._save_sim_config()
        self._sync_host_socket(host)
        return ""

    def host_env(self, host):
        """The environment for running `host`'s helpers by hand
        (plugin_env); not what its plugins get."""
        with self.db.lock:
            self.db.row("host", host)
            return self.plugin_env(host)

    def add_network(self, name_label, bridge=None, other_config=None,
                    MTU=1500):  # noqa: N803 (xapi's field name)
        with self.db.lock:
            index = len(self.db.tables["network"])
            return self.db.create("network", {
                "name_label": name_label, "bridge": bridge or "xenbr%d" % index,
                "MTU": int(MTU), "other_config": dict(other_config or {})})

    def add_pif(self, host, network, device, vlan=-1, mac=None,
                other_config=None, physical=None, management=False,
                currently_attached=True, properties=None):
        """A PIF record. A physical PIF starts with properties {"gro": "on"}
        as xapi gives it, others with {} (properties: another whole map).
        A VLAN PIF with its VLAN object comes from add_vlan."""
        with self.db.lock:
            self.db.row("host", host)
            self.db.row("network", network)
            physical = (int(vlan) == -1) if physical is None else bool(physical)
            if properties is None:
                properties = schema.PIF_DEFAULT_PROPERTIES if physical else {}
            return self.db.create("PIF", {
                "host": host, "network": network, "device": device,
                "VLAN": int(vlan), "MAC": mac or _random_mac(),
                "physical": physical,
                "management": bool(management),
                "currently_attached": bool(currently_attached),
                "properties": dict(properties),
                "other_config": dict(other_config or {})})

    def add_vlan(self, tagged_pif, tag, network, other_config=None):
        """VLAN.create(tagged_pif, tag, network): the VLAN object and its
        untagged PIF (device = the tagged PIF's device, VLAN = tag).
        Returns {"VLAN": ref, "PIF": the VLAN PIF's ref}."""
        with self.db.lock:
            vlan = self._vlan_create(tagged_pif, tag, network)
            pif = self.db.tables["VLAN"][vlan]["untagged_PIF"]
            if other_config:
                self.db.set_field("PIF", pif, "other_config",
                                  dict(other_config))
            return {"VLAN": vlan, "PIF": pif}

    def add_sriov(self, pif, network):
        """network_sriov.create(pif, network): the network_sriov object and
        its logical PIF on `network`. Returns {"network_sriov": ref,
        "PIF": the logical PIF's ref}."""
        with self.db.lock:
            sriov = self._sriov_create(pif, network)
            return {"network_sriov": sriov,
                    "PIF": self.db.tables["network_sriov"][sriov]["logical_PIF"]}

    def add_vm(self, name_label, tags=(), power_state="Halted", resident_on=None,
               domid=None, other_config=None, is_a_template=False, uuid=None):
        with self.db.lock:
            fields = {"name_label": name_label, "tags": list(tags),
                      "is_a_template": bool(is_a_template),
                      "other_config": dict(other_config or {})}
            if uuid:
                fields["uuid"] = uuid
            vm = self.db.create("VM", fields)
            if power_state == "Running":
                self._vm_start(vm, resident_on, domid)
            elif power_state != "Halted":
                self.db.set_field("VM", vm, "power_state", power_state)
            return vm

    def add_vif(self, vm, network, device, mac=None, other_config=None,
                MTU=1500, xo6=False):  # noqa: N803 (xapi's field name)
        """xo6: created as Xen Orchestra 6 creates every VIF, with
        other_config {"ethtool-tx": "true"} (its form's default), plus
        other_config's own keys."""
        config = dict(XO6_VIF_OTHER_CONFIG) if xo6 else {}
        config.update(other_config or {})
        with self.db.lock:
            vif = self._vif_create({"VM": vm, "network": network,
                                    "device": str(device), "MAC": mac or "",
                                    "MTU": str(MTU),
                                    "other_config": config})
            if self.db.tables["VM"][vm]["power_state"] == "Running":
                self.db.set_field("VIF", vif, "currently_attached", True)
            return vif

    def start_vm(self, vm, host=None, domid=None):
        self._vm_start(vm, host, domid)
        with self.db.lock:
            return self.db.tables["VM"][vm]["domid"]

    def shutdown_vm(self, vm):
        return self._vm_shutdown(vm)

    def destroy_vm(self, vm):
        with self.db.lock:
            if self.db.row("VM", vm)["power_state"] == "Running":
                self._vm_shutdown(vm)
            return self._vm_destroy(vm)

    def destroy_vif(self, vif):
        with self.db.lock:
            self.db.set_field("VIF", vif, "currently_attached", False)
            return self._vif_destroy(vif)

    def set_master(self, host):
        """Promote `host` (what pool.designate_new_master ends with)."""
        return self._designate_new_master(None, host)

    def set_host_live(self, host, live):
        with self.db.lock:
            metrics = self.db.row("host", host)["metrics"]
            self.db.set_field("host_metrics", metrics, "live", bool(live))
        self._sync_host_socket(host)
        return ""

    def set_latency_ms(self, latency_ms):
        self.latency = float(latency_ms) / 1000.0
        return ""

    def call_counts(self):
        with self._count_lock:
            return dict(self._counts)

    def reset_call_counts(self):
        with self._count_lock:
            self._counts.clear()
        return ""

    def trace_commits(self, methods):
        """From now on, time each successful call of `methods` (a list;
        empty: stop) at the moment it has changed the database."""
        with self._count_lock:
            self._traced = frozenset(methods)
            self._trace = []
        return ""

    def traced_commits(self):
        """[[monotonic seconds, method, params without the session,
        result if a string (a new object's ref) else ""]] of the traced
        calls so far, each timed once it had run (changed the
        database)."""
        with self._count_lock:
            return list(self._trace)

    def snapshot_db(self):
        """Every object except sessions: {class: {ref: record}} (a copy)."""
        with self.db.lock:
            return self.db.snapshot()

    # -- sim-only config persistence (host plugin settings) -------------------------------
    def _sim_config_path(self):
        return self.db_path + ".sim.json" if self.db_path else None

    def _save_sim_config(self):
        path = self._sim_config_path()
        if not path:
            return
        with open(path + ".tmp", "w") as fh:
            json.dump({"host_config": self.host_config,
                       "state_root": self.state_root}, fh, sort_keys=True)
        os.rename(path + ".tmp", path)

    def _load_sim_config(self):
        path = self._sim_config_path()
        if path and os.path.exists(path):
            with open(path) as fh:
                data = json.load(fh)
            self.host_config = data.get("host_config", {})
            if not self.state_root:
                self.state_root = data.get("state_root")


def _now():
    return protocol.DateTime(time.strftime("%Y%m%dT%H:%M:%SZ", time.gmtime()))


def _internal_error(exc):
    return ["INTERNAL_ERROR", "%s: %s" % (type(exc).__name__, exc)]


def socket_dir(prefix="xsim"):
    """A fresh private directory whose path has no '_' (for socket paths)."""
    base = tempfile.gettempdir()
    if "_" in base:
        base = "/tmp"
    path = os.path.join(base, "%s%s" % (prefix, uuidlib.uuid4().hex))
    os.mkdir(path, 0o700)
    return path


def _random_mac():
    raw = uuidlib.uuid4().bytes[:5]
    return "02:" + ":".join("%02x" % b for b in raw)


def _parse_token(token):
    if token == "":
        return 0
    parts = token.split(",")
    try:
        if len(parts) != 2:
            raise ValueError(token)
        return int(parts[0])
    except ValueError:
        raise ApiError("EVENT_FROM_TOKEN_PARSE_FAILURE", token) from None


def _subscriptions(classes):
    """(tables, object filter) for event.from's class list, as xapi parses it."""
    everything = False
    whole = set()
    objects = set()
    for item in classes:
        if item == "*":
            everything = True
            continue
        cls, _, ref = item.partition("/")
        table = schema.table_of_event_class(cls)
        if table is None or table not in schema.EVENT_CLASSES:
            continue  # xapi accepts unknown classes and reports nothing for them
        if ref:
            objects.add((table, ref))
        else:
            whole.add(table)
    tables = (list(schema.EVENT_CLASSES) if everything
              else sorted(whole | set(t for t, _ in objects)))

    def object_filter(cls, ref):
        return everything or cls in whole or (cls, ref) in objects
    return tables, object_filter


# --------------------------------------------------------------------------
# Out-of-process admin client
# --------------------------------------------------------------------------
class SimError(Exception):
    def __init__(self, description):
        Exception.__init__(self, description)
        self.description = description


class SimClient(object):
    """Calls the `sim.*` admin API of a simulator in another process.

    SimClient(socket_path=...).add_vm(name_label="web01", power_state="Running")
    """

    def __init__(self, url=None, socket_path=None):
        import xmlrpc.client
        if socket_path:
            import XenAPI
            self._proxy = xmlrpc.client.ServerProxy(
                "http://%s/" % socket_path.replace("/", "_"),
                transport=XenAPI.UDSTransport(), allow_none=True)
        else:
            self._proxy = xmlrpc.client.ServerProxy(url, allow_none=True)

    def __getattr__(self, name):
        if name.startswith("_"):
            raise AttributeError(name)

        def call(**kwargs):
            result = getattr(self._proxy, "sim." + name)(kwargs)
            if result.get("Status") != "Success":
                raise SimError(result.get("ErrorDescription"))
            value = result["Value"]
            return json.loads(value) if name == "snapshot_db" else value
        return call


# --------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------
# glibc mallopt: from which size a block is mapped on its own, and how
# much free memory the heap keeps at its top.
_M_MMAP_THRESHOLD = -3
_M_TRIM_THRESHOLD = -1


def keep_big_blocks():
    """Serve MB-sized replies (a network's 10,000 VIF refs in every event)
    from the heap: mapping and faulting in a fresh block for each one cost
    the simulator more than building the reply (xapi, a compiled server,
    pays neither). Best effort: no ctypes or not glibc, nothing changes."""
    try:
        import ctypes  # the simulator process only
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(_M_MMAP_THRESHOLD, 32 * 1024 * 1024)
        libc.mallopt(_M_TRIM_THRESHOLD, 128 * 1024 * 1024)
    except (ImportError, OSError, AttributeError):
        pass


def main(argv=None):
    keep_big_blocks()
    parser = argparse.ArgumentParser(
        prog="python -m sim.xapi_sim",
        description="Run the XAPI simulator until SIGTERM/SIGINT.")
    parser.add_argument("--socket", help="unix socket path (no '_')")
    parser.add_argument("--port", type=int, help="HTTP port on 127.0.0.1 (0 = any)")
    parser.add_argument("--db", help="JSON database file (kept across restarts)")
    parser.add_argument("--latency-ms", type=float, default=0.0)
    parser.add_argument("--plugin-dir", help="default plugin directory")
    parser.add_argument("--state-root", help="per-host inventory/state dirs")
    args = parser.parse_args(argv)
    if not args.socket and args.port is None:
        parser.error("give --socket, --port or both")
    sim = XapiSim(socket_path=args.socket, port=args.port, db_path=args.db,
                  latency_ms=args.latency_ms, plugin_dir=args.plugin_dir,
                  state_root=args.state_root)
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *a: stop.set())
    sim.start()
    sys.stdout.write(json.dumps(sim.info(), sort_keys=True) + "\n")
    sys.stdout.flush()
    while not stop.wait(0.5):
        pass
    sim.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
