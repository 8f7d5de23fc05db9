"""Code that runs in dom0 must run on Python 3.6 with the standard library,
XenAPI and XenAPIPlugin only, and importing it must do nothing."""
import ast
import json
import os
import subprocess
import sys

import pytest

from tests.support import layout

ROOT = layout.REPO
VERMIN = os.path.join(os.path.dirname(sys.executable), "vermin")
ALLOWED_THIRD_PARTY = {"XenAPI", "XenAPIPlugin"}

# Python 3.6's standard library, for interpreters before 3.10 (which lack
# sys.stdlib_module_names). Only what a dom0 tool could plausibly import.
STDLIB_FALLBACK = set("""
__future__ abc argparse array ast atexit base64 binascii bisect calendar
codecs collections concurrent configparser contextlib copy csv ctypes
datetime decimal difflib email enum errno fcntl fnmatch functools gc getopt
getpass glob grp gzip hashlib heapq hmac html http importlib inspect io
ipaddress itertools json keyword locale logging math mimetypes multiprocessing
numbers operator optparse os pathlib pickle pkgutil platform posixpath pprint
pwd queue random re resource select selectors shlex shutil signal socket
socketserver sqlite3 ssl stat string struct subprocess sys syslog tarfile
tempfile textwrap threading time timeit traceback types typing unicodedata
unittest urllib uuid warnings weakref xml xmlrpc zipfile zlib
""".split())
STDLIB = set(getattr(sys, "stdlib_module_names", ())) or STDLIB_FALLBACK


def dom0_files():
    """Every Python file that ships to dom0: the package and the plugins
    (extensionless, recognised by their python shebang)."""
    found = []
    for top in ("netoffload", "plugins"):
        for dirpath, dirnames, filenames in os.walk(os.path.join(ROOT, top)):
            dirnames[:] = [d for d in dirnames if d != "__pycache__"]
            for name in sorted(filenames):
                path = os.path.join(dirpath, name)
                if name.endswith(".py") or _python_shebang(path):
                    found.append(path)
    return found


def rendered_entry_points(dest):
    """pack/entry.py.in rendered for every entry point as the spec's %install
    renders it (sed over @PYPRIVATE@ @MODULE@ @FUNCTION@ @PATH@): the
    /usr/bin and /usr/libexec scripts that run in dom0."""
    sys.path.insert(0, os.path.join(ROOT, "pack"))
    try:
        import selftest
    finally:
        sys.path.pop(0)
    with open(os.path.join(ROOT, "pack", "entry.py.in")) as handle:
        template = handle.read()
    rendered = []
    for path, (module, function) in sorted(selftest.ENTRY_POINTS.items()):
        text = template
        for key, value in (("@PYPRIVATE@", selftest.PYPRIVATE), ("@MODULE@", module),
                           ("@FUNCTION@", function), ("@PATH@", path)):
            text = text.replace(key, value)
        assert "@" not in text, "placeholder left in %s" % path
        target = os.path.join(str(dest), os.path.basename(path) + ".py")
        with open(target, "w") as handle:
            handle.write(text)
        rendered.append(target)
    return rendered


def _python_shebang(path):
    try:
        with open(path, "rb") as handle:
            first = handle.readline()
    except (IOError, OSError):
        return False
    return first.startswith(b"#!") and b"python" in first


def run_vermin(paths):
    return subprocess.run(
        [VERMIN, "--target=3.6-", "--no-tips", "--violations",
         "--no-parse-comments"] + paths,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        universal_newlines=True, timeout=120)


def test_dom0_code_runs_on_python_36(tmp_path):
    paths = dom0_files()
    assert any(p.endswith(os.path.join("netoffload", "engine", "ethtool.py"))
               for p in paths)
    entries = rendered_entry_points(tmp_path)
    assert len(entries) == 4
    done = run_vermin(paths + entries)
    assert done.returncode == 0, done.stdout


@pytest.mark.parametrize("snippet,feature", [
    ("import subprocess\nsubprocess.run(['true'], capture_output=True)\n",
     "capture_output"),
    ("from dataclasses import dataclass\n", "dataclasses"),
    ("from __future__ import annotations\n", "annotations"),
    ("import functools\nfunctools.cached_property\n", "cached_property"),
    ("'abc'.removeprefix('a')\n", "removeprefix"),
    ("if (n := 1):\n    pass\n", "named expressions"),
], ids=["capture_output", "dataclasses", "future-annotations",
        "cached_property", "removeprefix", "walrus"])
def test_vermin_check_fails_on_37_features(tmp_path, snippet, feature):
    path = tmp_path / "newer.py"
    path.write_text(snippet)
    done = run_vermin([str(path)])
    assert done.returncode != 0, done.stdout
    assert feature in done.stdout


def imports_of(path):
    with open(path) as handle:
        tree = ast.parse(handle.read(), path)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            yield node.lineno, node.module


def disallowed_imports(path):
    bad = []
    for lineno, module in imports_of(path):
        top = module.split(".")[0]
        if top not in STDLIB and top not in ALLOWED_THIRD_PARTY \
                and top != "netoffload":
            bad.append("%s:%d imports %s" % (os.path.relpath(path, ROOT),
                                             lineno, module))
    return bad


def test_dom0_imports_are_stdlib_xenapi_or_our_own(tmp_path):
    bad = []
    for path in dom0_files() + rendered_entry_points(tmp_path):
        bad.extend(disallowed_imports(path))
    assert bad == []


def test_import_allow_list_catches_third_party(tmp_path):
    path = tmp_path / "bad.py"
    path.write_text("import os\nimport requests\nfrom yaml import safe_load\n"
                    "from netoffload.engine import ethtool\nimport XenAPI\n")
    assert disallowed_imports(str(path)) == [
        "%s:2 imports requests" % os.path.relpath(str(path), ROOT),
        "%s:3 imports yaml" % os.path.relpath(str(path), ROOT)]


_IMPORT_ALL = r"""
import importlib, io, json, os, pkgutil, socket, subprocess, sys, threading
events = []
def refuse(kind):
    def spy(*args, **kwargs):
        events.append(kind)
        raise RuntimeError("%s at import time" % kind)
    return spy
subprocess.Popen.__init__ = refuse("subprocess")
os.system = refuse("os.system")
os.fork = refuse("fork")
socket.socket.__init__ = refuse("socket")
real_stdout = sys.stdout
sys.stdout = io.StringIO()
threads = threading.active_count()
import netoffload
# __main__ is the entry point: running is what it is for.
names = sorted(m.name for m in pkgutil.walk_packages(netoffload.__path__,
                                                       "netoffload.")
               if not m.name.endswith(".__main__"))
errors = {}
for name in names:
    try:
        importlib.import_module(name)
    except Exception as err:
        errors[name] = "%s: %s" % (type(err).__name__, err)
printed = sys.stdout.getvalue()
sys.stdout = real_stdout
print(json.dumps({"modules": names, "events": events, "errors": errors,
                  "printed": printed,
                  "threads": threading.active_count() - threads}))
"""


def test_importing_every_module_has_no_side_effects(tmp_path):
    work = tmp_path / "cwd"
    state = tmp_path / "state"
    work.mkdir()
    env = dict(os.environ, PYTHONPATH=ROOT, PYTHONDONTWRITEBYTECODE="1",
               NETOFFLOAD_STATE_DIR=str(state), HOME=str(work))
    done = subprocess.run([sys.executable, "-c", _IMPORT_ALL], cwd=str(work),
                          env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, universal_newlines=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert "netoffload.engine.ethtool" in report["modules"]
    assert "netoffload.engine.livestate" in report["modules"]
    assert report["errors"] == {}
    assert report["events"] == []
    assert report["printed"] == ""
    assert report["threads"] == 0
    assert done.stderr == ""
    assert os.listdir(str(work)) == []
    assert not state.exists()


def _python36():
    import shutil
    for candidate in (shutil.which("python3.6"),
                      "/root/.pyenv/versions/3.6.15/bin/python3.6",
                      "/usr/bin/python3.6"):
        if candidate and os.path.exists(candidate):
            probe = subprocess.run([candidate, "-c", "import sys; print(sys.version_info[:2])"],
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                   universal_newlines=True, timeout=30)
            if probe.returncode == 0 and probe.stdout.strip() == "(3, 6)":
                return candidate
    return None


_ENGINE_ON_36 = r"""
import json, sys
from netoffload.engine import ethtool
from netoffload.engine import livestate
from netoffload.engine import policy
before = ethtool.read_features("dut")
store = livestate.LiveStateStore()
applied = store.apply("dut", policy.parse_policy("all-off").features)
restored = store.restore("dut")
print(json.dumps({"version": list(sys.version_info[:2]),
                  "source": before.source, "applied": applied.features,
                  "restored_ok": restored.ok,
                  "same": ethtool.read_features("dut").features == before.features}))
"""


@pytest.mark.root
def test_engine_runs_on_real_python36(netns, state_dir):
    python36 = _python36()
    if python36 is None:
        pytest.skip("no Python 3.6 interpreter on this machine")
    netns.add_veth("dut", "dutpeer")
    done = netns.run([python36, "-c", _ENGINE_ON_36], check=False,
                     env=dict(os.environ, PYTHONPATH=ROOT,
                              PYTHONDONTWRITEBYTECODE="1",
                              NETOFFLOAD_STATE_DIR=state_dir))
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["version"] == [3, 6]
    assert report["source"] == "ioctl"
    assert report["applied"]["tx"] == "changed"
    assert report["restored_ok"] and report["same"]
