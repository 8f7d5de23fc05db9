"""CLI: netoffload bench server | client HOST | --compare POLICY DEV... --host HOST.

Measure before disabling offload: connection rate (TCP_CRR), transaction
rate (TCP_RR) and stream throughput between two endpoints. `bench server`
runs on the far end (a guest or another host; the module is stdlib-only, so
`python3 -m netoffload bench server` works wherever the package is copied).
"""
import json
import sys

from netoffload import exitcodes
from netoffload.cli.output import add_json, examples
from netoffload.diagnostics import perftest
from netoffload.errors import BadArgument


def _print(result, table, as_json):
    if as_json:
        sys.stdout.write(json.dumps(result, indent=2, sort_keys=True) + "\n")
    else:
        sys.stdout.write(table + "\n")


def _tests(opts):
    return tuple(opts.tests.split(",")) if opts.tests else perftest.TESTS


def _handler(opts):
    if opts.compare:
        if opts.verb is not None:
            raise BadArgument("--compare runs its own client; do not combine "
                              "it with %s" % opts.verb)
        if len(opts.compare) < 2 or not opts.host:
            raise BadArgument("usage: bench --compare POLICY DEV [DEV ...] "
                              "--host HOST (a host running `bench server`, "
                              "reached through DEV)")
        result = perftest.compare(opts.compare[0], opts.compare[1:], opts.host,
                               opts.port, opts.duration, opts.parallel,
                               _tests(opts))
        table = perftest.format_table(result["before"], result["after"])
        table = "policy %s on %s (restored afterwards: %s)\n%s" % (
            result["policy"], ", ".join(result["devices"]),
            "yes" if all(r.get("ok") for r in result["restored"].values())
            else "NO, see --json", table)
        _print(result, table, opts.json)
        restored = all(r.get("ok") for r in result["restored"].values())
        return exitcodes.OK if restored else exitcodes.PARTIAL
    if opts.verb == "server":
        perftest.check_bounds(1, 1, opts.port)
        server = perftest.BenchServer(opts.bind, opts.port)
        sys.stderr.write("netoffload bench server listening on %s:%d\n"
                         % (opts.bind, server.port))
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            pass
        return exitcodes.OK
    if opts.verb == "client":
        result = perftest.run_client(opts.client_host, opts.port, opts.duration,
                                  opts.parallel, _tests(opts))
        _print(result, perftest.format_table(result), opts.json)
        return exitcodes.OK
    raise BadArgument("usage: bench server | bench client HOST | "
                      "bench --compare POLICY DEV ... --host HOST")


def _common(parser):
    parser.add_argument("--port", type=int, default=perftest.DEFAULT_PORT,
                        help="TCP port of the bench server (default %d)"
                        % perftest.DEFAULT_PORT)
    parser.add_argument("--duration", type=float, default=5.0,
                        help="seconds per test (default 5)")
    parser.add_argument("--parallel", type=int, default=1,
                        help="concurrent connections (default 1)")
    parser.add_argument("--tests", default=None,
                        help="comma list of %s" % ",".join(perftest.TESTS))
    add_json(parser)


def register(subparsers):
    parser = subparsers.add_parser(
        "bench", help="measure connection rate, transaction rate and "
        "throughput (before/after an offload change)",
        description="Measure connection rate (TCP_CRR, conn/s), transaction "
        "rate (TCP_RR, trans/s) and stream throughput (Mbit/s) against a "
        "`netoffload bench server`; --compare runs the tests, applies POLICY "
        "to DEVs, runs them again and restores the devices exactly.",
        epilog=examples("netoffload bench server",
                        "netoffload bench client 192.0.2.10 --duration 2",
                        "netoffload bench --compare all-off eth0 --host "
                        "192.0.2.10 --duration 2"))
    _common(parser)
    parser.add_argument("--compare", nargs="+", metavar="POLICY DEV",
                        help="bench, apply POLICY to DEV(s) temporarily, bench "
                        "again, restore")
    parser.add_argument("--host", help="the bench server for --compare")
    verbs = parser.add_subparsers(dest="verb", metavar="VERB",
                                  help="server or client (or --compare)")
    server = verbs.add_parser("server", help="serve bench clients",
                              description="Serve bench clients until Ctrl-C.")
    server.add_argument("--port", type=int, default=perftest.DEFAULT_PORT,
                        help="TCP port (default %d)" % perftest.DEFAULT_PORT)
    server.add_argument("--bind", default="0.0.0.0",
                        help="address to listen on (default 0.0.0.0)")
    client = verbs.add_parser("client", help="run the tests against HOST",
                              description="Run the tests against a bench "
                              "server on HOST.")
    client.add_argument("client_host", metavar="HOST",
                        help="address of the bench server")
    _common(client)
    parser.set_defaults(handler=_handler, verb=None)
