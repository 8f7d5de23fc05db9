"""The udev helper: bring one device into policy when it comes up.

Installed as /usr/libexec/netoffload/netoffload-udev and run by
udev/xen-netoffload.rules with one argument: the net device name
(vif<domid>.<devid>, tap<domid>.<devid> or a PIF device), or the xen-backend
device name vif-<domid>-<devid> on the backend's "online" event.

It reads only the local cache (never XAPI, which may be down at boot), through
cache.index: one byte search, not a parse of the whole pool's JSON. The
enforcement itself (a guest device's VM from xenstore, the cached desired
features applied through LiveStateStore so that revert can restore the
device) is netoffload.agents.cached, shared with the boot unit; this module
adds the udev side: the device from argv or $INTERFACE, the deadline, the
`remove` action, one log line and exit status 0.

It applies inline: a Python start, a cache read and one ETHTOOL_SFEATURES ioctl take
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
the second run finds nothing to change and sends no request.
"""
import os
import sys

try:
    # the C module: `signal` wraps it in enums (enum, functools,
    # collections...), a large part of this helper's start-up
    import _signal as signal  # pyright: ignore[reportMissingModuleSource]
except ImportError:  # pragma: no cover - every CPython 3 has it
    import signal

from netoffload import exitcodes
from netoffload.agents import cache, cached
from netoffload.engine import devices
from netoffload.errors import DeviceError, NetoffloadError, NotFound
from netoffload.log import get_logger, use_syslog_module

DEADLINE = 15
ACTIONS = ("add", "online", "change", "")
REMOVE = "remove"


def _backend_device(name):
    """vif<domid>.<devid> for a xen-backend name vif-<domid>-<devid>."""
    if not name.startswith("vif-"):
        return None
    parts = name[4:].split("-")
    if len(parts) != 2 or not all(
            0 < len(p) <= 5 and all(c in "0123456789" for c in p)
            for p in parts):
        return None
    return devices.guest_device_name("vif", parts[0], parts[1])


class _Deadline(Exception):
    pass


def device_name(argv, environ):
    """The net device this event is about (validated), from argv or $INTERFACE."""
    name = argv[0] if argv else environ.get("INTERFACE", "")
    return devices.validate_device(_backend_device(name or "") or name)


def handle(device, state_dir=None):
    """Apply the cached policy to device; return the line to log."""
    with cache.open_lookup(state_dir) as lookup:
        return cached.enforce_device(device, lookup, state_dir)


def forget(device, state_dir=None):
    """A guest device went away: drop its live-state record; the line."""
    if devices.parse_guest_device(device) is None:
        return "%s: not a guest device, nothing to forget" % device
    # as in cached.enforce_device: no livestate import unless needed
    from netoffload.engine import livestate  # noqa: PLC0415
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
    use_syslog_module()
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
    from netoffload import textio
    textio.utf8_process()  # UTF-8 argv and stdio on any dom0 locale
    sys.exit(main())
