"""Fixtures of the plugin tests."""
import pytest

from tests.support.simpool import dom0_pool


@pytest.fixture
def pool():
    """The dom0 pool of tests/support/simpool.py, two hosts."""
    box = dom0_pool()
    try:
        yield box
    finally:
        box.close()
