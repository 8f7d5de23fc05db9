"""The `netoffload` command in dom0: argument parsing and exit codes only.

Each group of verbs lives in a module of this package that exposes
`register(subparsers)`; a verb's handler takes the parsed args and returns
an exit code. Exit codes: 0 ok, 1 partial failure or device/XAPI
error, 2 bad usage.
"""
import argparse
import os
import sys

from netoffload import __version__, errors, exitcodes
from netoffload.cli import diagnostics, local, perftest, pool

COMMAND_MODULES = (
    local,        # show, set, restore (ethtool engine)
    pool,         # status, policy, apply, revert (plugin)
    diagnostics,  # check-checksums, counters, doctor
    perftest,     # bench server/client/--compare
)


def build_parser():
    parser = argparse.ArgumentParser(
        prog="netoffload",
        description="Keep NIC offload settings in line with a pool-wide policy.")
    parser.add_argument("--version", action="version",
                        version="netoffload %s" % __version__)
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in COMMAND_MODULES:
        module.register(subparsers)
    return parser


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    handler = getattr(args, "handler", None)
    if handler is None:
        parser.print_help(sys.stderr)
        return exitcodes.USAGE
    try:
        code = handler(args)
        sys.stdout.flush()  # a closed pipe shows up here, not at exit
        return code
    except errors.NetoffloadError as err:
        sys.stderr.write("netoffload: %s: %s\n" % (err.code, err.message))
        for param in err.params:
            sys.stderr.write("  %s\n" % param)
        return err.exit_code
    except KeyboardInterrupt:
        sys.stderr.write("netoffload: interrupted\n")
        return 130
    except BrokenPipeError:
        # `netoffload status | head`: the reader left; say nothing more.
        _silence_stdout()
        return exitcodes.OK


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
