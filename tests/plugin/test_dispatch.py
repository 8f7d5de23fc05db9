"""The plugin's table imports each function's module only when called."""
import json
import subprocess
import sys

from netoffload.plugin import diagnostics, dispatch, functions
from tests.support import layout


def test_every_function_is_in_the_table_once():
    names = set(functions.FUNCTIONS) | set(diagnostics.PLUGIN_FUNCTIONS)
    assert set(dispatch.MODULES) == names
    assert not set(functions.FUNCTIONS) & set(diagnostics.PLUGIN_FUNCTIONS)
    for name in names:
        assert dispatch.load(name) in (functions.FUNCTIONS.get(name),
                                       diagnostics.PLUGIN_FUNCTIONS.get(name))


def _modules_after(call):
    code = (
        "import json, sys\n"
        "from netoffload.plugin import dispatch\n"
        "before = set(sys.modules)\n"
        "%s\n"
        "print(json.dumps({'before': sorted(before), "
        "'after': sorted(sys.modules)}))\n" % call)
    out = subprocess.run([sys.executable, "-I", "-c", code], cwd=layout.REPO,
                         stdout=subprocess.PIPE, universal_newlines=True,
                         timeout=60, check=True).stdout
    return json.loads(out)


def test_version_imports_neither_diagnostics_nor_itself_before_the_call():
    seen = _modules_after("result = dispatch.FUNCTIONS['version'](None, {})")
    assert "netoffload.plugin.functions" not in seen["before"]
    assert "netoffload.plugin.diagnostics" not in seen["before"]
    assert "netoffload.plugin.functions" in seen["after"]
    assert not [m for m in seen["after"] if m.startswith(
        ("netoffload.diagnostics", "netoffload.plugin.diagnostics"))]


def test_a_diagnostics_function_imports_its_module_when_called():
    seen = _modules_after(
        "from netoffload.errors import NetoffloadError\n"
        "try:\n"
        "    dispatch.load('counters')(None, {'nosuch': 'x'})\n"
        "except NetoffloadError:\n"
        "    pass")
    assert "netoffload.plugin.diagnostics" in seen["after"]
    assert "netoffload.plugin.functions" not in seen["after"]
