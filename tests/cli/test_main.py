"""The CLI frame: exit codes and behaviour common to every verb."""
import json
import os
import subprocess
import sys

import pytest

from netoffload import cli, errors, exitcodes
from tests.support import layout

ROOT = layout.REPO


def _run(argv, **kw):
    return subprocess.run([sys.executable, "-m", "netoffload"] + argv,
                          cwd=ROOT, stdout=kw.pop("stdout", subprocess.PIPE),
                          stderr=subprocess.PIPE, universal_newlines=True,
                          timeout=60, **kw)


def test_no_verb_is_usage_error():
    proc = _run([])
    assert proc.returncode == exitcodes.USAGE
    assert "COMMAND" in proc.stderr


def test_every_verb_group_registers_a_verb():
    parser = cli.build_parser()
    verbs = set(parser._subparsers._group_actions[0].choices)
    assert {"show", "set", "restore", "status", "policy", "apply", "revert",
            "check-checksums", "counters", "doctor", "bench"} <= verbs


@pytest.mark.parametrize("exc,code", [
    (errors.BadArgument("bad"), exitcodes.USAGE),
    (errors.NotFound("nf"), exitcodes.USAGE),
    (errors.Ambiguous("amb", "u1", "u2"), exitcodes.USAGE),
    (errors.ConfirmRequired("confirm"), exitcodes.USAGE),
    (errors.Busy("busy"), exitcodes.PARTIAL),
    (errors.DeviceError("dev"), exitcodes.PARTIAL),
    (errors.XapiError("xapi"), exitcodes.PARTIAL),
], ids=lambda v: type(v).__name__ if isinstance(v, Exception) else str(v))
def test_errors_map_to_exit_codes_and_name_their_code(mocker, capsys, exc, code):
    parser = cli.build_parser()
    args = parser.parse_args(["show"])
    mocker.patch.object(cli, "build_parser", autospec=True).return_value = \
        mocker.Mock(parse_args=lambda argv: mocker.Mock(
            handler=mocker.Mock(side_effect=exc)))
    assert args.handler is not None
    assert cli.main(["show"]) == code
    err = capsys.readouterr().err
    assert exc.code in err and exc.message in err
    for param in exc.params:
        assert param in err


@pytest.mark.root
def test_closed_stdout_pipe_exits_quietly():
    """`netoffload show | head -0`: no traceback when the reader is gone."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        proc = _run(["show", "--json", "lo"], stdout=write_end)
    finally:
        os.close(write_end)
    assert "Traceback" not in proc.stderr, proc.stderr
    assert "BrokenPipe" not in proc.stderr
    assert proc.returncode == 0


@pytest.mark.parametrize("exc,code", [
    (errors.NotFound("no VM has the name-label or uuid 'x'", "x"),
     exitcodes.USAGE),
    (errors.DeviceError("disk full"), exitcodes.PARTIAL),
    (OSError(28, "No space left on device"), exitcodes.PARTIAL),
    (RuntimeError("a bug"), exitcodes.PARTIAL),
], ids=["usage", "device", "oserror", "bug"])
def test_json_mode_prints_one_error_document_whatever_happens(
        mocker, capsys, exc, code):
    mocker.patch.object(cli, "build_parser", autospec=True).return_value = \
        mocker.Mock(parse_args=lambda argv: mocker.Mock(
            handler=mocker.Mock(side_effect=exc)))
    assert cli.main(["status", "--json"]) == code
    out = capsys.readouterr().out
    doc = json.loads(out)  # exactly one document
    assert set(doc) == {"error"}
    assert doc["error"]["code"].startswith("NETOFFLOAD_")
    assert set(doc["error"]) == {"code", "message", "params"}


def test_not_found_text_does_not_repeat_the_name(mocker, capsys):
    exc = errors.NotFound("no VM has the name-label or uuid 'web'", "web")
    mocker.patch.object(cli, "build_parser", autospec=True).return_value = \
        mocker.Mock(parse_args=lambda argv: mocker.Mock(
            handler=mocker.Mock(side_effect=exc)))
    cli.main(["status"])
    assert capsys.readouterr().err == \
        "netoffload: NETOFFLOAD_NOT_FOUND: no VM has the name-label or uuid " \
        "'web'\n"


def test_policy_alone_shows_the_policy_verbs():
    proc = _run(["policy"])
    assert proc.returncode == exitcodes.USAGE
    assert "get" in proc.stderr and "set" in proc.stderr
    assert "every policy key in the pool" in proc.stderr
    assert "netoffload policy set pool vif tx-off" in proc.stderr  # example


@pytest.mark.parametrize("verb", ["status", "apply", "revert", "report",
                                  "policy", "show", "doctor", "bench"])
def test_every_verb_has_a_description_option_help_and_examples(verb):
    proc = _run([verb, "--help"])
    assert proc.returncode == 0
    help_text = proc.stdout
    assert "examples:" in help_text
    sub = [c for a in cli.build_parser()._actions
           if hasattr(a, "choices") and isinstance(a.choices, dict)
           for n, c in a.choices.items() if n == verb][0]
    assert sub.description
    for action in sub._actions:
        assert action.help, "%s %s" % (verb, action.option_strings)
    assert max(len(line) for line in help_text.splitlines()) <= 100


def test_bench_labels_connection_rate_conn_per_s():
    from netoffload.diagnostics import perftest
    result = {"tests": {"tcp_crr": {"per_second": 6039.0},
                        "tcp_rr": {"per_second": 11607.0},
                        "stream": {"mbit_per_s": 11101.0}}}
    rows = dict((line.split()[0], line.split()[-1])
                for line in perftest.format_table(result).splitlines()[1:])
    assert rows == {"tcp_crr": "conn/s", "tcp_rr": "trans/s",
                    "stream": "Mbit/s"}
