"""Symbolic error codes shared by every entry point.

Users see them as NETOFFLOAD_<CODE> (docs/policy.md, "Plugin functions and
JSON").
"""
from netoffload import exitcodes

BAD_ARGUMENT = "NETOFFLOAD_BAD_ARGUMENT"
NOT_FOUND = "NETOFFLOAD_NOT_FOUND"
AMBIGUOUS = "NETOFFLOAD_AMBIGUOUS"
CONFIRM_REQUIRED = "NETOFFLOAD_CONFIRM_REQUIRED"
BUSY = "NETOFFLOAD_BUSY"
DEVICE_ERROR = "NETOFFLOAD_DEVICE_ERROR"
XAPI_ERROR = "NETOFFLOAD_XAPI_ERROR"


class NetoffloadError(Exception):
    """An error with a symbolic code, a human message and extra params.

    The plugin turns it into XenAPIPlugin.Failure(code, [message] + params);
    the CLI prints the message and exits non-zero.
    """

    code = None  # set by subclasses
    exit_code = exitcodes.PARTIAL  # what the CLI exits with

    def __init__(self, message, *params):
        Exception.__init__(self, message)
        self.message = message
        self.params = [str(p) for p in params]

    def failure_params(self):
        return [self.message] + self.params


class UsageError(NetoffloadError):
    """The caller asked for something that cannot be done as asked."""
    exit_code = exitcodes.USAGE


class BadArgument(UsageError):
    """A missing, unknown or malformed argument: nothing was changed."""
    code = BAD_ARGUMENT


class NotFound(UsageError):
    """No VM, network, tag, PIF or device has the name given."""
    code = NOT_FOUND


class Ambiguous(UsageError):
    """Several objects have the name given; the params list their uuids."""
    code = AMBIGUOUS


class ConfirmRequired(UsageError):
    """A change this wide needs confirm=yes; the params carry the plan."""
    code = CONFIRM_REQUIRED


class Busy(NetoffloadError):
    """Another apply or revert holds this host's lock: try again later."""
    code = BUSY


class DeviceError(NetoffloadError):
    """A device, a dom0 tool or the state directory failed."""
    code = DEVICE_ERROR


class XapiError(NetoffloadError):
    """xapi refused a call or could not be reached."""
    code = XAPI_ERROR


# code -> class, for a caller that gets the code back over the wire
BY_CODE = dict((cls.code, cls) for cls in (
    BadArgument, NotFound, Ambiguous, ConfirmRequired, Busy, DeviceError,
    XapiError))
