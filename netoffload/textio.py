"""Text in and out of dom0 processes, whatever the locale.

xapi starts a plugin with PATH only, and udev and systemd start the
helpers with little more: no LANG. Python 3.6 (XenServer 8, XCP-ng 8.3)
then decodes argv as ASCII (non-ASCII bytes become lone surrogates) and
gives stdout and stderr the ASCII codec, so a VM named "café" breaks
XML parsing of argv[1], and printing it raises UnicodeEncodeError. Python
3.7+ coerces the C locale to UTF-8, 3.6 does not. Every entry point calls
`utf8_process()` first: argv re-decoded from its bytes as UTF-8, stdout and
stderr writing UTF-8. Text that is not valid UTF-8 survives as backslash
escapes instead of crashing.
"""
import io
import os
import sys


def utf8_argv(argv=None):
    """argv (default sys.argv, changed in place) decoded from its original
    bytes as UTF-8; bytes that are not UTF-8 stay as surrogate escapes."""
    argv = sys.argv if argv is None else argv
    for index, arg in enumerate(argv):
        try:
            raw = os.fsencode(arg)
        except UnicodeEncodeError:
            continue  # not from the OS (already text): leave it
        argv[index] = raw.decode("utf-8", "surrogateescape")
    return argv


def _utf8_stream(stream):
    """stream itself when it already writes UTF-8, else a UTF-8 wrapper
    over the same buffer (the old wrapper is detached, not closed)."""
    encoding = (getattr(stream, "encoding", None) or "").lower()
    if encoding.replace("-", "").replace("_", "") == "utf8" or \
            not hasattr(stream, "buffer"):
        return stream
    stream.flush()
    line_buffering = stream.line_buffering
    return io.TextIOWrapper(stream.detach(), encoding="utf-8",
                            errors="backslashreplace",
                            line_buffering=line_buffering)


def utf8_stdio():
    """sys.stdout and sys.stderr write UTF-8 from now on."""
    sys.stdout = _utf8_stream(sys.stdout)
    sys.stderr = _utf8_stream(sys.stderr)


def utf8_process():
    """Both: call first thing in every entry point."""
    utf8_argv()
    utf8_stdio()
