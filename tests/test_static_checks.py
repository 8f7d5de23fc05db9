"""The linter and the type checker, configured in pyproject.toml, find
nothing; and the settings do what they claim (the rules are on, the checker
reads Python 3.6). vermin's 3.6 check is in test_dom0_compat.py."""
import glob
import inspect
import json
import os
import subprocess
import sys

import pytest
import XenAPI

from tests.support import layout

pytestmark = pytest.mark.static

ROOT = layout.REPO
BIN = os.path.dirname(sys.executable)
RUFF = os.path.join(BIN, "ruff")
PYRIGHT = os.path.join(BIN, "basedpyright")
XENAPI_STUB = os.path.join(ROOT, "typings", "XenAPI.pyi")


def _run(argv, input_text=None):
    return subprocess.run(argv, cwd=ROOT, input=input_text,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          universal_newlines=True, timeout=300)


def _pyright(*args):
    done = _run([PYRIGHT, "--project", "pyproject.toml", "--outputjson"]
                + list(args))
    report = json.loads(done.stdout)
    found = ["%s:%d: %s" % (os.path.relpath(d["file"], ROOT),
                            d["range"]["start"]["line"] + 1, d["message"])
             for d in report["generalDiagnostics"]]
    return report["summary"], found


def test_ruff_finds_nothing():
    done = _run([RUFF, "check", "--no-cache", "--output-format", "concise"])
    assert done.returncode == 0, done.stdout + done.stderr


def test_ruff_rules_catch_what_the_project_forbids():
    # checked as if it were a dom0 module, under the project's settings
    snippet = ("from netoffload.engine import features as F\n\n\n"
               "def read():\n"
               "    import json\n"
               "    try:\n"
               "        return json.loads(F.ON)\n"
               "    except ValueError:\n"
               "        raise OSError('bad')\n")
    done = _run([RUFF, "check", "--no-cache", "--output-format", "concise",
                 "--stdin-filename", "netoffload/engine/scratch.py", "-"],
                input_text=snippet)
    codes = sorted(set(line.split()[1] for line in done.stdout.splitlines()
                       if line.startswith("netoffload/engine/scratch.py:")))
    assert codes == ["B904", "N812", "PLC0415"], done.stdout + done.stderr


def test_type_checker_finds_nothing_in_the_dom0_code():
    summary, found = _pyright()
    assert found == [], "\n".join(found)
    dom0_files = glob.glob(os.path.join(ROOT, "netoffload", "**", "*.py"),
                           recursive=True) + ["plugins/netoffload"]
    assert summary["filesAnalyzed"] == len(dom0_files)


def test_type_checker_reads_python_36(tmp_path):
    newer = tmp_path / "newer.py"
    newer.write_text("def count(table: dict[str, int]) -> int:\n"
                     "    return (n := len(table))\n")
    _, found = _pyright(str(newer))
    assert len(found) == 2, found
    assert "Subscript for class \"dict\" will generate runtime exception" \
        in found[0]
    assert "requires Python 3.8" in found[1]


def _stub_names():
    names = {}
    with open(XENAPI_STUB) as handle:
        for line in handle:
            for keyword in ("class ", "def "):
                if line.startswith(keyword):
                    name = line[len(keyword):].split("(")[0].split(":")[0]
                    names[name] = line.strip()
    return names


def test_xenapi_stub_names_what_the_real_module_has():
    names = _stub_names()
    assert sorted(names) == ["Failure", "Session", "UDSTransport",
                             "xapi_local"]
    for name in names:
        assert hasattr(XenAPI, name), name
    assert list(inspect.signature(XenAPI.Session.__init__).parameters) == [
        "self", "uri", "transport", "encoding", "verbose", "allow_none",
        "ignore_ssl"]
    assert list(inspect.signature(XenAPI.Failure.__init__).parameters) == [
        "self", "details"]
    assert list(inspect.signature(XenAPI.xapi_local).parameters) == []
