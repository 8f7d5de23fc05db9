"""The `netoffload` command in dom0: argument parsing and exit codes only.

Each group of verbs lives in a module of this package that exposes
`register(subparsers)`; a verb's handler takes the parsed args and returns
an exit code. Exit codes: 0 ok, 1 partial failure or device/XAPI
error, 2 bad usage. With --json, stdout holds exactly one JSON document,
errors included (output.py).
"""
import os
import sys
import traceback

from netoffload import __version__, errors, exitcodes
from netoffload.cli import diagnostics, local, output, perftest, pool

COMMAND_MODULES = (
    local,        # show, set, restore (ethtool engine)
    pool,         # status, policy, apply, revert, report (plugin)
    diagnostics,  # check-checksums, counters, doctor
    perftest,     # bench server/client/--compare
)

EPILOG = output.examples(
    "netoffload policy get",
    "netoffload status --pool",
    "netoffload policy set pool vif tx-off",
    "netoffload apply ALL --pool --dry-run",
    "netoffload apply ALL --pool --yes",
    "netoffload report",
    "netoffload revert ALL --pool --yes",
) + """

exit codes: 0 ok; 1 partial (a device, object or host failed, or status
found a non-compliant device); 2 usage (bad argument, unknown or ambiguous
name, ALL not confirmed). `netoffload COMMAND --help` tells more; see
netoffload(8)."""


def build_parser():
    parser = output.Parser(
        prog="netoffload",
        description="Keep NIC offload settings (rx tx sg tso ufo gso gro lro) "
        "of PIFs, VIFs and emulated NICs in line with a pool-wide policy.",
        epilog=EPILOG)
    parser.add_argument("--version", action="version",
                        version="netoffload %s" % __version__)
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in COMMAND_MODULES:
        module.register(subparsers)
    return parser


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    as_json = output.wants_json(argv)
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        handler = getattr(args, "handler", None)
        if handler is None:
            parser.print_help(sys.stderr)
            return exitcodes.USAGE
        code = handler(args)
        sys.stdout.flush()  # a closed pipe shows up here, not at exit
        return code
    except errors.NetoffloadError as err:
        if as_json:
            output.emit_json(output.error_document(err))
        else:
            if isinstance(err, output.ParserError):
                sys.stderr.write(err.usage)
            sys.stderr.write(output.error_text(err))
        return err.exit_code
    except KeyboardInterrupt:
        sys.stderr.write("netoffload: interrupted\n")
        return 130
    except BrokenPipeError:
        # `netoffload status | head`: the reader left; say nothing more.
        _silence_stdout()
        return exitcodes.OK
    except Exception as exc:  # --json: still one JSON document
        if not as_json:
            raise
        err = output.unexpected_error(exc)
        output.emit_json(output.error_document(err))
        traceback.print_exc()
        return err.exit_code


def _silence_stdout():
    """Point stdout at /dev/null so the interpreter's final flush is quiet."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):
        pass


if __name__ == "__main__":
    from netoffload import textio
    textio.utf8_process()  # UTF-8 argv and stdio on any dom0 locale
    sys.exit(main())
