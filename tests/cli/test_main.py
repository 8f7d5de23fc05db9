"""The CLI frame: exit codes and behaviour common to every verb."""
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
