"""Fixtures of the agent tests (udev helper, boot, watcher)."""
import pytest

from tests.support.dom0 import Dom0
from tests.support.simpool import WATCHER_TEST_OPTIONS, SimPool


@pytest.fixture
def pool():
    """A simulator process (killable, restartable on its database) whose
    watchers run with the short test timeouts."""
    box = SimPool(process=True, watch_options=WATCHER_TEST_OPTIONS)
    try:
        yield box
    finally:
        box.close()


@pytest.fixture
def dom0(netns, tmp_path):
    """A dom0 without XAPI: see tests/support/dom0.py."""
    return Dom0(netns, tmp_path)
