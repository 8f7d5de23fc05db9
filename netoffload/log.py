"""Logging for dom0: syslog with tag `netoffload`, plus stderr.

Never stdout: the plugin's stdout carries its XML-RPC response only.
"""
import logging
import logging.handlers
import os
import sys

_CONFIGURED = set()


def get_logger(name="netoffload", stderr=True):
    """The project logger, configured once, on first use (not at import)."""
    logger = logging.getLogger(name)
    if name in _CONFIGURED:
        return logger
    _CONFIGURED.add(name)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    if os.path.exists("/dev/log"):
        try:
            handler = logging.handlers.SysLogHandler(address="/dev/log")
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
