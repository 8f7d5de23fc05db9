"""Outside tools and interpreters the tests need.

A missing tool skips locally, with the command that installs it; under CI
(CI=true, where tools/bootstrap has run) a skip would hide missing coverage,
so it fails instead, like the `root` marker in tests/conftest.py.
"""
import glob
import importlib
import os
import shutil
import subprocess
import sys

import pytest

# binary -> Debian package providing it (as pack/build.py installs them)
DEBIAN_PACKAGES = {
    "rpmbuild": "rpm", "rpm": "rpm", "rpmsign": "rpm", "rpm2archive": "rpm", "rpmkeys": "rpm",
    "createrepo_c": "createrepo-c", "xorriso": "xorriso",
    "gpg": "gnupg", "gpgconf": "gnupg", "tcpdump": "tcpdump",
}
# importable module -> PyPI distribution (requirements-test.txt)
PYPI_PACKAGES = {"pycdlib": "pycdlib", "XenAPI": "XenAPI", "scapy": "scapy"}


def in_ci():
    return os.environ.get("CI") == "true"


def _missing(what, install):
    message = "%s missing: run tools/bootstrap (or: %s)" % (what, install)
    if in_ci():
        pytest.fail("CI must have every test tool: " + message, pytrace=False)
    pytest.skip(message)


def require_tool(name):
    """The tool's path; skips (locally) or fails (CI) when it is missing."""
    path = shutil.which(name)
    if path is None:
        _missing(name, "apt-get install -y %s" % DEBIAN_PACKAGES.get(name, name))
    return path


def require_module(name):
    """The imported module; skips (locally) or fails (CI) when missing."""
    try:
        return importlib.import_module(name)
    except ImportError:
        _missing("python module %s" % name, ".venv/bin/pip install %s"
                 % PYPI_PACKAGES.get(name, name))


def interpreter(minor):
    """A python3.<minor> binary if this machine has one (pyenv or system),
    else None: dom0 pythons are extra coverage, not a test requirement."""
    found = sorted(glob.glob(os.path.expanduser("~/.pyenv/versions/%s.*/bin/python%s"
                                                % (minor, minor))))
    found += [p for p in ("/usr/bin/python%s" % minor,) if os.path.exists(p)]
    return found[0] if found else None


def run(argv, **kwargs):
    """A build or inspection tool, output as str, bounded at 300 s."""
    return subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          universal_newlines=True, timeout=300, **kwargs)


def check(argv, **kwargs):
    """run(), asserting success; the tool's stdout."""
    proc = run(argv, **kwargs)
    assert proc.returncode == 0, "%s\n%s%s" % (argv, proc.stdout, proc.stderr)
    return proc.stdout


def pack_build():
    """pack/build.py as a module (it is a script in a folder, not a package)."""
    from tests.support import layout
    sys.path.insert(0, os.path.join(layout.REPO, "pack"))
    try:
        import build
    finally:
        sys.path.pop(0)
    return build


def allow_incomplete():
    """The build flag a tree that lacks some release sources needs."""
    build = pack_build()
    return ["--allow-incomplete"] if build.missing_sources(build.ROOT) else []
