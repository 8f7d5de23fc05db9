"""Logging for dom0: syslog with tag `netoffload`, plus stderr.

Never stdout: the plugin's stdout carries its XML-RPC response only.

`get_logger()` gives a `logging.Logger` (syslog through /dev/log, and
warnings on stderr). A process whose start-up time counts (the udev helper)
calls `use_syslog_module()` first: get_logger() then gives a small logger
over the C `syslog` module with the same tag, levels and stderr lines,
without importing logging and logging.handlers (8 ms of a 40 ms budget).
Nothing is configured at import time.
"""
import os
import sys
import syslog

from netoffload import paths

_CONFIGURED = set()
_LIGHT = {}
_USE_SYSLOG_MODULE = []


def use_syslog_module():
    """From now on get_logger() returns a SyslogLogger (process-wide)."""
    if not _USE_SYSLOG_MODULE:
        _USE_SYSLOG_MODULE.append(True)


class SyslogLogger(object):
    """The Logger methods the pack uses (debug/info/warning/error/exception,
    %-style arguments) over the `syslog` module: tag `netoffload`, facility
    user like logging's SysLogHandler; warnings and worse also on stderr."""

    def __init__(self, tag="netoffload", stderr=True):
        self._syslog = syslog
        self._tag = tag
        self._stderr = stderr
        syslog.openlog(tag, 0, syslog.LOG_USER)

    def _log(self, priority, level, msg, args, exc_text=None):
        text = msg % args if args else str(msg)
        if exc_text:
            text = "%s\n%s" % (text, exc_text.rstrip("\n"))
        self._syslog.syslog(priority, text)
        if self._stderr and priority <= self._syslog.LOG_WARNING:
            sys.stderr.write("%s: %s %s\n" % (self._tag, level, text))
            sys.stderr.flush()

    def debug(self, msg, *args):
        pass  # the level is INFO, as for the logging.Logger

    def info(self, msg, *args):
        self._log(self._syslog.LOG_INFO, "INFO", msg, args)

    def warning(self, msg, *args):
        self._log(self._syslog.LOG_WARNING, "WARNING", msg, args)

    def error(self, msg, *args):
        self._log(self._syslog.LOG_ERR, "ERROR", msg, args)

    def exception(self, msg, *args):
        # traceback costs ~3 ms: the udev helper pays it only on a failure
        import traceback  # noqa: PLC0415
        self._log(self._syslog.LOG_ERR, "ERROR", msg, args,
                  traceback.format_exc())


def get_logger(name="netoffload", stderr=True):
    """The project logger, configured once, on first use (not at import)."""
    # the C syslog module knows only /dev/log: a box's own socket needs logging
    if _USE_SYSLOG_MODULE and not os.environ.get(paths.ENV_SYSLOG_SOCKET):
        if name not in _LIGHT:
            _LIGHT[name] = SyslogLogger(name, stderr)
        return _LIGHT[name]
    # logging is what the light logger avoids (see the module docstring)
    import logging  # noqa: PLC0415
    import logging.handlers  # noqa: PLC0415
    logger = logging.getLogger(name)
    if name in _CONFIGURED:
        return logger
    _CONFIGURED.add(name)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    address = paths.syslog_socket()
    if os.path.exists(address):
        try:
            handler = logging.handlers.SysLogHandler(address=address)
            handler.setFormatter(logging.Formatter("netoffload: %(message)s"))
            logger.addHandler(handler)
        except (OSError, IOError):
            pass
    if stderr:
        err = logging.StreamHandler(sys.stderr)
        err.setFormatter(logging.Formatter("netoffload: %(levelname)s %(message)s"))
        err.setLevel(logging.WARNING)
        logger.addHandler(err)
    return logger
