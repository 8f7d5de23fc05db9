"""Symbolic error codes shared by every entry point.

Users see them as NETOFFLOAD_<CODE> (docs/policy.md, "Plugin functions and
JSON").
"""

BAD_ARGUMENT = "NETOFFLOAD_BAD_ARGUMENT"
NOT_FOUND = "NETOFFLOAD_NOT_FOUND"
AMBIGUOUS = "NETOFFLOAD_AMBIGUOUS"
CONFIRM_REQUIRED = "NETOFFLOAD_CONFIRM_REQUIRED"
BUSY = "NETOFFLOAD_BUSY"
DEVICE_ERROR = "NETOFFLOAD_DEVICE_ERROR"
XAPI_ERROR = "NETOFFLOAD_XAPI_ERROR"

ALL_CODES = (BAD_ARGUMENT, NOT_FOUND, AMBIGUOUS, CONFIRM_REQUIRED, BUSY,
             DEVICE_ERROR, XAPI_ERROR)


class NetoffloadError(Exception):
    """An error with a symbolic code, a human message and extra params.

    The plugin turns it into XenAPIPlugin.Failure(code, [message] + params);
    the CLI prints the message and exits non-zero.
    """

    code = None  # set by subclasses

    def __init__(self, message, *params):
        Exception.__init__(self, message)
        self.message = message
        self.params = [str(p) for p in params]

    def failure_params(self):
        return [self.message] + self.params


class BadArgument(NetoffloadError):
    code = BAD_ARGUMENT


class NotFound(NetoffloadError):
    code = NOT_FOUND


class Ambiguous(NetoffloadError):
    code = AMBIGUOUS


class ConfirmRequired(NetoffloadError):
    code = CONFIRM_REQUIRED


class Busy(NetoffloadError):
    code = BUSY


class DeviceError(NetoffloadError):
    code = DEVICE_ERROR


class XapiError(NetoffloadError):
    code = XAPI_ERROR
