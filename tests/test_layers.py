"""The folders are the architecture: each layer imports only from below.

    cli  ->  plugin  ->  diagnostics  ->  pool  ->  engine  ->  top level
    cli  ->  agents  ->  pool  ->  engine  ->  top level

Every import of the package's own modules counts, at module level or
inside a function, so a lazy import cannot hide a wrong direction.
"""
import ast
import os

import pytest

from tests.support import layout

PACKAGE = os.path.join(layout.REPO, "netoffload")

# layer -> the layers it may import (besides itself and the top level)
ALLOWED = {
    "engine": set(),
    "pool": {"engine"},
    "agents": {"engine", "pool"},
    "diagnostics": {"engine", "pool"},
    # the plugin reports what the agents recorded (the watcher's to-do, drift)
    "plugin": {"engine", "pool", "diagnostics", "agents"},
    "cli": {"engine", "pool", "diagnostics", "plugin", "agents"},
}
TOP = "top level"


def layer_of(module):
    """'netoffload.pool.keys' -> 'pool'; 'netoffload.errors' -> TOP."""
    if module == "netoffload.__main__":
        return "cli"  # `python -m netoffload` is the CLI
    parts = module.split(".")
    if len(parts) > 2 or (len(parts) == 2 and parts[1] in ALLOWED):
        return parts[1]
    return TOP


def own_imports(path):
    """Every netoffload module the file imports, anywhere in it."""
    with open(path) as handle:
        tree = ast.parse(handle.read(), path)
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names
                         if a.name.split(".")[0] == "netoffload")
        elif isinstance(node, ast.ImportFrom) and node.module and \
                node.module.split(".")[0] == "netoffload":
            for alias in node.names:
                # `from netoffload.pool import keys` imports a module
                candidate = "%s.%s" % (node.module, alias.name)
                sub = os.path.join(layout.REPO, *candidate.split("."))
                found.add(candidate if os.path.exists(sub + ".py")
                          or os.path.isdir(sub) else node.module)
    return found


def modules():
    for folder, _, files in os.walk(PACKAGE):
        for name in sorted(files):
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                rel = os.path.relpath(path, layout.REPO)[:-3]
                module = rel.replace(os.sep, ".")
                if module.endswith(".__init__"):
                    module = module[:-len(".__init__")]
                yield module, path


@pytest.mark.parametrize("module,path", sorted(modules()))
def test_imports_only_from_below(module, path):
    here = layer_of(module)
    allowed = {here, TOP} | (ALLOWED.get(here, set()) if here != TOP
                             else set())
    wrong = sorted(m for m in own_imports(path)
                   if layer_of(m) not in allowed)
    assert not wrong, "%s (%s) may not import %s" % (module, here, wrong)


def test_the_check_sees_a_wrong_direction(tmp_path):
    path = tmp_path / "probe.py"
    path.write_text("def f():\n    from netoffload.pool import keys\n")
    assert own_imports(str(path)) == {"netoffload.pool.keys"}
    assert layer_of("netoffload.pool.keys") not in \
        {"engine", TOP} | ALLOWED["engine"]


def test_every_layer_is_a_folder():
    folders = set(d for d in os.listdir(PACKAGE)
                  if os.path.isdir(os.path.join(PACKAGE, d))
                  and not d.startswith("__"))
    assert folders == set(ALLOWED)
