"""Diagnostics plugin functions: check_checksums, counters, doctor.

Each is `fn(session, args) -> dict` with string args (DESIGN section 3);
plugin.py merges PLUGIN_FUNCTIONS into its dispatch table. The work is
host-local and lives in checksums.py, counters.py and doctor.py; these
wrappers only validate arguments, so bad input changes and runs nothing.
"""
from netoffload.diagnostics import checksums, counters
from netoffload.diagnostics import doctor as doctor_mod
from netoffload.engine.devices import validate_device
from netoffload.plugin import args as A

MAX_COUNTER_SECONDS = 60


def check_checksums(session, args):
    """device=DEV [seconds=1..60 (10)] [packets=1..10000 (200)]."""
    A.reject_unknown(args, ("device", "seconds", "packets"))
    device = validate_device(A.require(args, "device"))
    seconds = A.parse_int(args, "seconds", checksums.DEFAULT_SECONDS, 1,
                          checksums.MAX_SECONDS)
    packets = A.parse_int(args, "packets", checksums.DEFAULT_PACKETS, 1,
                          checksums.MAX_PACKETS)
    return checksums.check_checksums(device, seconds, packets)


def counters_fn(session, args):
    """[device=DEV] [seconds=0..60 (0 = snapshot)]."""
    A.reject_unknown(args, ("device", "seconds"))
    device = A.get(args, "device")
    if device == "":
        device = None
    if device is not None:
        validate_device(device)
    seconds = A.parse_int(args, "seconds", 0, 0, MAX_COUNTER_SECONDS)
    return counters.counters(device, seconds)


def doctor(session, args):
    """No arguments; uses the caller's session for the policy section."""
    A.reject_unknown(args, ())
    return doctor_mod.doctor(session)


PLUGIN_FUNCTIONS = {
    "check_checksums": check_checksums,
    "counters": counters_fn,
    "doctor": doctor,
}
