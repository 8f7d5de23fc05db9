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
"""
import threading

from netoffload import paths
from netoffload.errors import NotFound, XapiError
from netoffload.pool.records import CLASSES, PoolRecords

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


def failure_details(failure):
    return [str(d) for d in getattr(failure, "details", None) or ["UNKNOWN"]]


class Xapi(object):
    """A thin wrapper over one session: error mapping and call counting."""

    def __init__(self, session):
        self.session = session
        self.calls = 0
        self._count_lock = threading.Lock()

    def call(self, method, *params):
        """session.xenapi.<method>(*params) with our error mapping."""
        client_lib = _xenapi()
        target = self.session.xenapi
        for part in method.split("."):
            target = getattr(target, part)
        with self._count_lock:
            self.calls += 1
        try:
            return target(*params)
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
