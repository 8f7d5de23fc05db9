"""Review findings, each through the simulator's host.call_plugin and real
namespaced devices (the Pool of tests/test_plugin.py)."""
import json

import pytest

from tests.test_plugin import Pool, live

pytestmark = pytest.mark.root


@pytest.fixture
def pool():
    box = Pool()
    try:
        yield box
    finally:
        box.close()


# -- 1: scope=local honours dry_run and confirm ---------------------------------

def test_local_scope_dry_run_changes_nothing(pool):
    pool.call("set_policy", level="vm", vm="bsd", policy="all-off")
    before = pool.state()
    result = pool.call("apply", vm="bsd", dry_run="true", scope="local")
    assert pool.state() == before
    assert result["dry_run"] is True
    [vif] = result["devices"]
    assert (vif["device"], vif["action"]) == ("vif6.0", "plan")
    assert vif["features"]["tx"] == "would-change"


def test_local_scope_revert_dry_run_changes_nothing(pool):
    pool.call("apply", vm="bsd", policy="all-off")
    before = pool.state()
    result = pool.call("revert", vm="bsd", dry_run="true", scope="local")
    assert pool.state() == before
    [vif] = result["devices"]
    assert (vif["action"], vif["restore"]["tx"]) == ("plan", "on")


@pytest.mark.parametrize("fn", ["apply", "revert"])
def test_local_scope_all_needs_confirm(pool, fn):
    pool.call("set_policy", level="pool", kind="vif", policy="all-off")
    pool.call("set_policy", level="pool", kind="pif", policy="all-off")
    if fn == "revert":
        pool.call("apply", target="ALL", confirm="yes")
    before = pool.state()
    details = pool.fail(fn, target="ALL", scope="local")
    assert details[0] == "NETOFFLOAD_CONFIRM_REQUIRED"
    assert pool.state() == before
    done = pool.call(fn, target="ALL", scope="local", confirm="yes")
    assert done["summary"]["devices_failed"] == []
    assert pool.state() != before
