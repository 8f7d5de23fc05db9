"""Diagnostics plugin functions: check_checksums, counters, doctor.

Each is `fn(session, args) -> dict` with string args (docs/policy.md);
dispatch.py merges PLUGIN_FUNCTIONS into its table. The work is host-local
and lives in netoffload.diagnostics (checksums, counters, doctor); these
wrappers only validate arguments, so bad input changes and runs nothing.
The wrappers carry the plugin's names, so the counters and doctor modules
are reached by their full path.
"""
import netoffload.diagnostics.counters
import netoffload.diagnostics.doctor
from netoffload.diagnostics import checksums
from netoffload.engine.devices import validate_device
from netoffload.plugin.args import (
    int_arg,
    reject_unknown,
    required_arg,
    string_arg,
)

MAX_COUNTER_SECONDS = 60


def check_checksums(session, args):
    """device=DEV [seconds=1..60 (10)] [packets=1..10000 (200)]."""
    reject_unknown(args, ("device", "seconds", "packets"))
    device = validate_device(required_arg(args, "device"))
    seconds = int_arg(args, "seconds", checksums.DEFAULT_SECONDS, 1,
                      checksums.MAX_SECONDS)
    packets = int_arg(args, "packets", checksums.DEFAULT_PACKETS, 1,
                      checksums.MAX_PACKETS)
    return checksums.check_checksums(device, seconds, packets)


def counters(session, args):
    """[device=DEV] [seconds=0..60 (0 = snapshot)]."""
    reject_unknown(args, ("device", "seconds"))
    device = string_arg(args, "device")
    if device == "":
        device = None
    if device is not None:
        validate_device(device)
    seconds = int_arg(args, "seconds", 0, 0, MAX_COUNTER_SECONDS)
    return netoffload.diagnostics.counters.counters(device, seconds)


def doctor(session, args):
    """No arguments; uses the caller's session for the policy section."""
    reject_unknown(args, ())
    return netoffload.diagnostics.doctor.doctor(session)


PLUGIN_FUNCTIONS = {
    "check_checksums": check_checksums,
    "counters": counters,
    "doctor": doctor,
}
