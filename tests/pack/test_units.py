"""The systemd units pass the real `systemd-analyze verify`.

The installed helpers do not exist here, so each ExecStart path is replaced
by a stand-in executable at the same path under a temp directory; nothing
else in the unit changes.
"""
import configparser
import os
import re
import subprocess

import pytest

from tests.support import layout

REPO = layout.REPO
UNITS = ["netoffload-boot.service", "netoffload-watch.service"]
LIBEXEC = "/usr/libexec/netoffload/"


def _unit_text(name):
    with open(os.path.join(REPO, "init", name)) as handle:
        return handle.read()


def _parsed(name):
    parser = configparser.ConfigParser(strict=True, interpolation=None)
    parser.optionxform = str
    parser.read_string(_unit_text(name))
    return parser


def _verify(tmp_path, name, text):
    """systemd-analyze verify of `text` as unit `name`, helpers stubbed."""
    for helper in set(re.findall(re.escape(LIBEXEC) + r"[\w-]+", text)):
        stub = tmp_path / helper.lstrip("/")
        stub.parent.mkdir(parents=True, exist_ok=True)
        stub.write_text("#!/bin/sh\nexit 0\n")
        stub.chmod(0o755)
        text = text.replace(helper, str(stub))
    unit = tmp_path / name
    unit.write_text(text)
    return subprocess.run(["systemd-analyze", "verify", "--man=no", str(unit)],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          universal_newlines=True, timeout=60, cwd=str(tmp_path))


@pytest.mark.parametrize("name", UNITS)
def test_unit_passes_systemd_analyze_verify(tmp_path, name):
    proc = _verify(tmp_path, name, _unit_text(name))
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, "", "")


def test_verify_would_catch_a_broken_unit(tmp_path):
    broken = _unit_text("netoffload-boot.service").replace(
        "[Service]\n", "[Service]\nRestartt=always\n")
    proc = _verify(tmp_path, "netoffload-boot.service", broken)
    assert "Unknown key" in proc.stderr


def test_both_units_wait_for_xapi_init_complete():
    for name in UNITS:
        unit = _parsed(name)["Unit"]
        assert "xapi-init-complete.target" in unit["After"].split()
        assert unit["Wants"] == "xapi-init-complete.target"
        assert _parsed(name)["Install"]["WantedBy"] == "multi-user.target"


def test_boot_unit_is_a_oneshot_running_the_boot_helper():
    service = _parsed("netoffload-boot.service")["Service"]
    assert service["Type"] == "oneshot"
    assert service["ExecStart"] == LIBEXEC + "netoffload-boot"


def test_watcher_restarts_on_failure_and_logs_to_the_journal():
    service = _parsed("netoffload-watch.service")["Service"]
    assert service["ExecStart"] == LIBEXEC + "netoffload-watch"
    assert service["Restart"] == "on-failure"
    assert service["StandardError"] == "journal"
    assert "netoffload-boot.service" in \
        _parsed("netoffload-watch.service")["Unit"]["After"].split()


@pytest.mark.parametrize("name", UNITS)
def test_every_target_ordered_after_is_also_pulled_in(name):
    """After= a passive target such as network-online.target orders nothing
    unless something pulls it in: each one needs a Wants= (or Requires=)."""
    unit = _parsed(name)["Unit"]
    after = unit.get("After", "").split()
    pulled = unit.get("Wants", "").split() + unit.get("Requires", "").split()
    assert [t for t in after if t.endswith(".target") and t not in pulled] == []
