"""The udev helper: bring one device into policy when it comes up.

Installed as /usr/libexec/netoffload/netoffload-udev and run by
udev/xen-netoffload.rules with one argument: the net device name
(vif<domid>.<devid>, tap<domid>.<devid> or a PIF device), or the xen-backend
device name vif-<domid>-<devid> on the backend's "online" event.

It reads only the local cache (never XAPI, which may be down at boot), through
cache.index: one byte search, not a parse of the whole pool's JSON. For a
guest device it maps the domain to its VM through xenstore
(/local/domain/<domid>/vm -> /vm/<vm-uuid>), then applies the cached desired
features through LiveStateStore, so that revert can restore the device.

It applies inline: a Python start, a cache read and one `ethtool -K` take
tens of milliseconds, far inside udev's event timeout, and doing it inside
the event means vif-real and we never race over the same device. A hard
deadline (DEADLINE seconds, SIGALRM) bounds it anyway; subprocesses have
their own shorter timeouts.

On `remove` of a vif/tap device it forgets that device's live-state record
(the name returns with another VM once domids are reused); a guest record
also carries its owner (<vm-uuid>/<devid>) so a stale one is never taken
for the new device's past.

It logs one line to syslog and always exits 0: a missing or corrupt cache, an
unknown domain, a bad name or an ethtool failure leaves the device alone.
Running it twice is harmless (Windows PV guests register their vif twice);
the second run finds nothing to change and runs no ethtool -K.
"""
import os
import re
import signal
import sys

from netoffload import exitcodes, runner
from netoffload import log as netoffload_log
from netoffload.agents import cache
from netoffload.engine import devices
from netoffload.errors import DeviceError, NetoffloadError, NotFound
from netoffload.log import get_logger
from netoffload.pool import keys

DEADLINE = 15
XENSTORE_TIMEOUT = 3.0
XENSTORE_READ = "xenstore-read"
ACTIONS = ("add", "online", "change", "")
REMOVE = "remove"

# xen-backend device names: vif-<domid>-<devid>
_BACKEND_RE = re.compile(r"^vif-([0-9]{1,5})-([0-9]{1,5})$")
_VM_PATH_RE = re.compile(r"^/vm/([0-9a-fA-F-]{36})$")


class _Deadline(Exception):
    pass


def device_name(argv, environ):
    """The net device this event is about (validated), from argv or $INTERFACE."""
    name = argv[0] if argv else environ.get("INTERFACE", "")
    backend = _BACKEND_RE.match(name or "")
    if backend:
        name = "vif%s.%s" % (int(backend.group(1)), int(backend.group(2)))
    return devices.validate_device(name)


def _xenstore_read(path):
    done = runner.run([XENSTORE_READ, path], timeout=XENSTORE_TIMEOUT)
    if done.returncode != 0:
        raise NotFound("xenstore has no %s (%s)" % (
            path, done.stderr.strip() or "exit %d" % done.returncode))
    return done.stdout.strip()


def vm_uuid_of_domain(domid):
    """The uuid of the VM running as domain domid, from xenstore."""
    vm_path = _xenstore_read("/local/domain/%d/vm" % domid)
    match = _VM_PATH_RE.match(vm_path)
    uuid = match.group(1) if match else None
    if uuid is None or not cache.is_uuid(uuid):
        # not the usual /vm/<uuid>: ask that node for its uuid, as vif-real does
        if not vm_path.startswith("/vm/") or ".." in vm_path:
            raise NotFound("domain %d: unexpected vm path %r" % (domid, vm_path[:80]))
        uuid = _xenstore_read(vm_path + "/uuid")
        if not cache.is_uuid(uuid):
            raise NotFound("domain %d: %s/uuid is not a uuid" % (domid, vm_path))
    return uuid.lower()


def _summary(result):
    """'changed tx,sg; unchanged rx; fixed lro' from an ApplyResult."""
    by_status = {}
    for feature, status in sorted(result.features.items()):
        by_status.setdefault(status, []).append(feature)
    return "; ".join("%s %s" % (status, ",".join(names))
                     for status, names in sorted(by_status.items()))


def handle(device, state_dir=None, loaded=None):
    """Apply the cached policy to device; return the line to log.

    loaded: a LocalCache already open (the boot unit's, for every device).
    """
    if loaded is None:
        loaded = cache.open_lookup(state_dir)
    guest = devices.parse_guest_device(device)
    owner = None
    if guest:
        kind, domid, devid = guest
        vm_uuid = vm_uuid_of_domain(domid)
        wanted, entry = loaded.vif(vm_uuid, devid)
        owner = keys.owner_key(vm_uuid, devid)
        what = "%s of VM %s (%s) device %d" % (
            kind, vm_uuid, (entry or {}).get("vm", "?"), devid)
    else:
        wanted, entry = loaded.pif(device)
        what = "PIF"
    if wanted is None:
        return "%s: %s: no policy in the cache, left alone" % (device, what)
    from netoffload.engine import livestate  # only once there is work to do
    result = livestate.LiveStateStore(state_dir).apply(device, wanted,
                                                       owner=owner)
    outcome = "applied" if result.ok else "partly applied"
    return "%s: %s: %s %s from %s: %s" % (
        device, what, outcome, entry.get("policy") or "explicit keys",
        entry.get("source") or "explicit", _summary(result))


def forget(device, state_dir=None):
    """A guest device went away: drop its live-state record; the line."""
    if devices.parse_guest_device(device) is None:
        return "%s: not a guest device, nothing to forget" % device
    from netoffload.engine import livestate
    if livestate.LiveStateStore(state_dir).forget(device):
        return "%s: removed, its live-state record forgotten" % device
    return "%s: removed, no live-state record" % device


def _on_alarm(signum, frame):
    raise _Deadline()


def main(argv=None, environ=None):
    """Entry point for udev; returns 0 whatever happens."""
    argv = sys.argv[1:] if argv is None else argv
    environ = os.environ if environ is None else environ
    # syslog through the C module: no logging import on every bring-up
    netoffload_log.use_syslog_module()
    log = get_logger()
    action = environ.get("ACTION", "")
    shown = (argv[0] if argv else environ.get("INTERFACE", ""))[:40]
    if action not in ACTIONS and action != REMOVE:
        return exitcodes.OK
    previous = signal.signal(signal.SIGALRM, _on_alarm)
    signal.alarm(DEADLINE)
    try:
        device = device_name(argv, environ)
        if action == REMOVE:
            log.info("udev remove %s", forget(device))
        else:
            log.info("udev %s %s", action or "run", handle(device))
    except (NotFound, DeviceError) as err:  # CacheUnusable is a NotFound
        log.warning("udev %s %s: left alone: %s", action, shown, err.message)
    except NetoffloadError as err:
        log.warning("udev %s %r: refused: %s", action, shown, err.message)
    except _Deadline:
        log.warning("udev %s %s: gave up after %ds", action, shown, DEADLINE)
    except Exception as err:  # never fail the udev event
        log.exception("udev %s %s: unexpected error: %s", action, shown, err)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    return exitcodes.OK


if __name__ == "__main__":
    sys.exit(main())
