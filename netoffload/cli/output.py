"""What every verb shares: --json, errors, progress, help texts.

With --json, stdout holds exactly one JSON document whatever happens: the
result, or `{"error": {"code", "message", "params"}}` (plus `plan` for a
refused ALL). Progress lines go to stderr, and only on a terminal.
"""
import argparse
import json
import sys

from netoffload import errors

JSON_HELP = "print one JSON document on stdout (errors too) instead of text"


class ParserError(errors.BadArgument):
    """argparse's complaint about the command line (exit 2), with the usage
    of the (sub)command it is about."""

    def __init__(self, message, usage):
        errors.BadArgument.__init__(self, message)
        self.usage = usage


class HelpFormatter(argparse.HelpFormatter):
    """Descriptions are wrapped; a text with line breaks (the examples
    epilogs) is kept as written."""

    def _fill_text(self, text, width, indent):
        if "\n" in text:
            return "".join(indent + line for line in text.splitlines(True))
        return argparse.HelpFormatter._fill_text(self, text, width, indent)


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors reach main() as ParserError, so that
    --json can print them as JSON; help keeps the epilog's line breaks."""

    def __init__(self, *args, **kw):
        kw.setdefault("formatter_class", HelpFormatter)
        argparse.ArgumentParser.__init__(self, *args, **kw)

    def error(self, message):
        raise ParserError(message, self.format_usage())


class Refused(errors.ConfirmRequired):
    """A change that was not confirmed; with --json, its plan goes into the
    error document."""

    def __init__(self, message, plan):
        errors.ConfirmRequired.__init__(self, message)
        self.json_extra = {"plan": plan}


def show_group_help(ns):
    """The handler of a verb group given alone (`netoffload policy`): its
    help on stderr, exit 2."""
    ns.group_parser.print_help(sys.stderr)
    return errors.UsageError.exit_code


def add_json(parser):
    parser.add_argument("--json", action="store_true", help=JSON_HELP)


def examples(*lines):
    """An epilog of example command lines."""
    return "examples:\n" + "\n".join("  " + line for line in lines)


def wants_json(argv):
    """--json given (before a `--`)?"""
    for word in argv:
        if word == "--":
            return False
        if word == "--json":
            return True
    return False


def emit_json(doc, out=None):
    (out or sys.stdout).write(json.dumps(doc, indent=2, sort_keys=True) + "\n")


def error_document(err):
    doc = {"error": {"code": err.code, "message": err.message,
                     "params": list(err.params)}}
    doc.update(getattr(err, "json_extra", None) or {})
    return doc


def error_text(err):
    """The error for people: one line, then only the params it does not
    already say (an ambiguous name's uuids, a plan's summary)."""
    lines = ["netoffload: %s: %s" % (err.code, err.message)]
    extra = [p for p in err.params if p and p not in err.message]
    if err.code == errors.AMBIGUOUS and extra:
        lines.append("  matching uuids: %s" % ", ".join(extra))
    else:
        lines.extend("  %s" % p for p in extra)
    return "\n".join(lines) + "\n"


def unexpected_error(exc):
    """Any other exception as the NetoffloadError the plugin would map it
    to (OS errors: DEVICE_ERROR; anything else: XAPI_ERROR)."""
    if isinstance(exc, (OSError, IOError)):
        return errors.DeviceError("operating system error: %s: %s" % (
            type(exc).__name__, exc))
    return errors.XapiError("internal error: %s: %s" % (type(exc).__name__,
                                                        exc))


def progress(line):
    """A progress line on stderr when it is a terminal."""
    try:
        if sys.stderr.isatty():
            sys.stderr.write("netoffload: %s\n" % line)
            sys.stderr.flush()
    except (OSError, ValueError):
        pass
