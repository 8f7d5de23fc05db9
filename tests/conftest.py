"""Shared fixtures: root detection and throw-away network namespaces.

Tests marked `root` skip without root; under CI (CI=true, always root) such
a skip would hide missing coverage, so it is a failure instead.
"""
import os
import shutil
import signal
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from tests.support.netns import NetNS  # noqa: E402

# A run started in the background by a script (no job control) inherits
# SIGINT ignored, and so would every child: tests that press Ctrl-C on a
# demo or a bench server need it delivered. A handler here makes each exec
# start with the default disposition again.
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


def _is_root():
    return os.geteuid() == 0


def pytest_runtest_setup(item):
    if item.get_closest_marker("root") and not _is_root():
        if os.environ.get("CI") == "true":
            pytest.fail("CI must run as root: this test needs network namespaces")
        pytest.skip("needs root for network namespaces")


@pytest.fixture
def netns():
    """A fresh network namespace, deleted even if the test fails."""
    ns = NetNS()
    try:
        yield ns
    finally:
        ns.close()


@pytest.fixture
def state_dir(tmp_path):
    path = tmp_path / "state"
    path.mkdir(mode=0o700)
    return str(path)


@pytest.fixture
def sock_dir():
    """A directory for simulator sockets, deleted afterwards.

    Not tmp_path: its test-named parts hold '_', which XenAPI's UDS
    transport turns into '/'.
    """
    from sim.xapi_sim import socket_dir
    path = socket_dir()
    yield path
    shutil.rmtree(path, ignore_errors=True)
