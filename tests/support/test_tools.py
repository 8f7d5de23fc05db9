"""tests/support/tools.py: a missing tool skips locally, fails under CI."""
import subprocess
import sys

import pytest

from tests.support import tools

MISSING_TOOL = "netoffload-no-such-tool"
MISSING_MODULE = "netoffload_no_such_module"


@pytest.mark.parametrize("require,name,install", [
    (tools.require_tool, MISSING_TOOL, "apt-get install -y %s" % MISSING_TOOL),
    (tools.require_module, MISSING_MODULE, ".venv/bin/pip install %s" % MISSING_MODULE),
], ids=["tool", "module"])
@pytest.mark.parametrize("ci,outcome", [
    ("true", pytest.fail.Exception),
    ("", pytest.skip.Exception),
], ids=["ci-fails", "local-skips"])
def test_missing_requirement(monkeypatch, require, name, install, ci, outcome):
    monkeypatch.setenv("CI", ci)
    # Catch both, or a wrong skip would make this test skip, not fail.
    with pytest.raises((pytest.fail.Exception, pytest.skip.Exception)) as raised:
        require(name)
    assert type(raised.value) is outcome
    assert raised.value.msg.endswith(
        "%s missing: run tools/bootstrap (or: %s)" % (
            name if require is tools.require_tool else "python module " + name,
            install))


def test_present_requirements_are_returned(monkeypatch):
    monkeypatch.setenv("CI", "true")
    assert tools.require_tool("sh").endswith("/sh")
    assert tools.require_module("json") is sys.modules["json"]


@pytest.mark.parametrize("minor", ["3.6", "3.12"])
def test_interpreter_is_that_python(minor):
    found = tools.interpreter(minor)
    if found is None:
        pytest.skip("no python%s on this machine" % minor)
    done = subprocess.run([found, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                          stdout=subprocess.PIPE, universal_newlines=True, timeout=30)
    assert done.stdout.strip() == minor


def test_interpreter_is_none_when_absent():
    assert tools.interpreter("2.1") is None
