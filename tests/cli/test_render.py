"""The CLI's human output from plugin JSON (no xapi): the "why" of each
device from the provenance fields of docs/policy.md, profile names, no
Python reprs, 100 columns at most. The fixtures follow the contract
exactly; entries from an older plugin (no provenance fields) still render."""
import io
import json
import os

import pytest

from netoffload.cli import render
from tests.support import layout

FIXTURE = os.path.join(layout.FIXTURES, "cli", "status_provenance.json")


def _status():
    with open(FIXTURE) as handle:
        return json.load(handle)


def _render(devices):
    out = io.StringIO()
    render.print_devices(devices, out)
    return out.getvalue()


def test_why_cell_names_every_source():
    devices = dict((d["device"], d) for d in _status()["devices"])
    assert render.why(devices["vif3.0"]) == "explicit(tx) pool(sg)"
    assert render.why(devices["vif2.0"]) == "tag:pfsense"
    assert render.why(devices["eth0"]) == "property"
    assert render.why(devices["vif5.0"]) == "INVALID (vm)"
    assert render.why({"device": "vif9.0", "policy": "none", "level": "vm",
                       "desired": {}, "explicit": {}, "sources": {}}) == \
        "opt-out (vm)"
    assert render.why({"device": "eth1", "policy": None, "level": None,
                       "desired": {}, "explicit": {}}) == "-"


def test_status_table_says_why_and_what_was_shadowed():
    text = _render(_status()["devices"])
    lines = text.splitlines()
    assert lines[0].split() == ["DEVICE", "KIND", "VM", "DESIRED", "WHY",
                                "STATE"]
    row = dict((line.split()[0], line) for line in lines[1:5])
    # the explicit tx=on joins the policy's sg=off in DESIRED
    assert "tx=on,sg=off" in row["vif3.0"]
    assert "all-off" in row["vif2.0"] and "differs: tx DRIFT" in row["vif2.0"]
    assert "INVALID policy" in row["vif5.0"]
    # the PIF property is no ethtool- key, yet it is what the PIF should have
    assert row["eth0"].split()[2:5] == ["-", "gro=off", "property"]
    assert "vif3.0: tx=on is explicit: changed by someone after netoffload " \
        "wrote it; beats the pool policy tx=off,sg=off" in " ".join(
            text.split())
    assert "vif3.0: shadowed: network tx-off (a higher level decides " \
        "every feature it names)" in text
    assert "vif2.0: shadowed: pool tx-off" in text
    assert "eth0: gro=off is property: PIF property gro=off" in text
    assert "vif2.0: DRIFT since 2025-12-02 00:00:00 UTC: live tx=on" in text
    assert "vif5.0: INVALID policy at vm, treated as none" in text


def test_no_python_reprs_and_at_most_100_columns():
    text = _render(_status()["devices"])
    assert "None" not in text and "{'" not in text and "[]" not in text
    assert max(len(line) for line in text.splitlines()) <= render.MAX_WIDTH
    # the long VM name is cut, not the table widened
    assert "a very long virtual" in text and ".." in text


def test_an_older_plugin_without_provenance_still_says_why():
    old = {"device": "vif3.0", "kind": "vif", "compliant": True,
           "vm": {"name_label": "db 01 (prod)", "uuid": "u"},
           "desired": {}, "explicit": {"tx": "on"}, "ignored_by_xapi": [],
           "policy": "tx-off", "level": "pool", "differs": []}
    assert render.why(old) == "explicit"
    text = _render([old])
    assert "tx=on" in text
    assert "beats the pool policy tx-off" in " ".join(text.split())


@pytest.mark.parametrize("features,shown", [
    ({}, "-"),
    (dict((f, "off") for f in ("rx", "tx", "sg", "tso", "ufo", "gso", "gro",
                               "lro")), "all-off"),
    ({"tx": "off"}, "tx-off"),
    ({"sg": "off", "tx": "on"}, "tx=on,sg=off"),
])
def test_features_as_profile_names(features, shown):
    assert render.features_text(features) == shown


def test_policy_changes_never_print_none():
    out = io.StringIO()
    render.print_policy_changes([{"class": "pool", "name": "", "uuid": "p",
                                  "key": "netoffload-vif", "previous": None,
                                  "policy": "tx-off"}], out)
    assert out.getvalue() == "policy pool p netoffload-vif: (none set) -> " \
        "tx-off\n"


def test_result_summary_in_words_over_every_host():
    result = {"host": {"name_label": "h1", "uuid": "1"}, "dry_run": False,
              "objects": [], "policy": [], "devices": [],
              "summary": {"objects": {"changed": 2}, "devices": 1,
                          "devices_changed": 1, "devices_failed": []},
              "hosts": [
                  {"uuid": "1", "name_label": "h1", "ok": True, "result": {
                      "devices": [], "summary": {"devices": 1,
                                                 "devices_changed": 1,
                                                 "devices_failed": []}}},
                  {"uuid": "2", "name_label": "h2", "ok": True, "result": {
                      "devices": [], "summary": {"devices": 3,
                                                 "devices_changed": 2,
                                                 "devices_failed": ["x"]}}},
                  {"uuid": "3", "name_label": "h3", "ok": False,
                   "error": ["HOST_OFFLINE", "the host is not live"]}]}
    out = io.StringIO()
    render.print_result(result, out)
    text = out.getvalue()
    assert "summary: {" not in text and "{" not in text
    assert text.splitlines()[-1] == "done: objects: 2 changed; devices: 4, 3 " \
        "changed, 1 failed; hosts: 3, unreachable: h3"
    assert "host h3: UNREACHABLE HOST_OFFLINE the host is not live" in text


def test_explicit_settings_of_one_origin_share_a_line():
    dev = {"device": "vif1.0", "kind": "vif", "compliant": True,
           "desired": {"tx": "off"}, "explicit": {"rx": "off", "sg": "off"},
           "policy": "tx-off", "level": "pool",
           "sources": {"tx": "pool", "rx": "explicit", "sg": "explicit"},
           "overrides": [
               {"feature": "sg", "value": "off", "source": "explicit",
                "why": "ethtool-sg=off set before netoffload"},
               {"feature": "rx", "value": "off", "source": "explicit",
                "why": "ethtool-sg=off set before netoffload"}]}
    notes = render.why_notes(dev)
    assert notes == ["vif1.0: rx,sg=off are explicit: ethtool-sg=off set "
                     "before netoffload; beats the pool policy tx-off"]
    assert render.off_text(["tx"]) == "tx-off"
    assert render.off_text(["sg", "rx", "gso"]) == "rx,sg,gso"


def test_notes_of_several_devices_share_a_line():
    shadow = {"kind": "vif", "compliant": True, "desired": {"tx": "off"},
              "explicit": {}, "policy": "all-off", "level": "tag:bsd",
              "sources": {"tx": "tag:bsd"},
              "shadowed": [{"level": "network", "policy": "sg=off"},
                           {"level": "pool", "policy": "tx-off"}]}
    text = _render([dict(shadow, device="vif2.0"), dict(shadow, device="tap2.0",
                                                         kind="tap")])
    assert "vif2.0, tap2.0: shadowed: network sg=off, pool tx-off (a higher " \
        "level decides every feature they name)" in " ".join(text.split())
    assert text.count("shadowed") == 1


def test_an_explicit_key_no_policy_names_is_explained():
    dev = {"device": "vif3.0", "kind": "vif", "compliant": True,
           "desired": {"sg": "off"}, "explicit": {"tx": "on"},
           "policy": "sg=off", "level": "network",
           "sources": {"tx": "explicit", "sg": "network"}, "overrides": []}
    assert render.why(dev) == "explicit(tx) network(sg)"
    assert render.why_notes(dev) == [
        "vif3.0: tx=on explicit: set outside netoffload, and no policy here "
        "names it"]


def test_report_table_csv_and_notes_from_contract_fields():
    """print_report / print_report_csv over a report whose VIFs carry the
    provenance fields, drift and an invalid policy (docs/policy.md)."""
    from netoffload.cli import pool as cli_pool
    report = {
        "host": {"name_label": "host1", "uuid": "h1"},
        "vifs": [
            {"vm": "archive", "vm_uuid": "a", "power_state": "Halted",
             "host": None, "vif": "vif0", "vif_uuid": "va", "network": "LAN",
             "devices": [], "off": ["tx"], "desired": {"tx": "off"},
             "explicit": {}, "sources": {"tx": "pool"}, "contributing": ["pool"],
             "shadowed": [], "overrides": [], "policy": "tx-off",
             "level": "pool", "drift": None},
            {"vm": "web01", "vm_uuid": "w", "power_state": "Running",
             "host": "host1", "vif": "vif0", "vif_uuid": "vw", "network": "LAN",
             "devices": ["vif1.0"], "off": ["sg", "tx"],
             "desired": {"tx": "off"}, "explicit": {"sg": "off"},
             "sources": {"tx": "pool", "sg": "explicit"},
             "contributing": ["pool"], "shadowed": [],
             "overrides": [{"feature": "sg", "value": "off",
                            "source": "explicit",
                            "why": "ethtool-sg=off set before netoffload"}],
             "policy": "tx-off", "level": "pool",
             "drift": {"features": {"tx": "on"}, "since": 1764633600.0,
                       "device": "vif1.0"}}],
        "invalid_policies": [{"level": "tag", "kind": "vif", "uuid": "p",
                              "name": "bsd", "key": "netoffload-tag:bsd",
                              "policy": "tx=of", "valid": False,
                              "error": "invalid value 'of'"}],
        "hosts_unreachable": [],
        "summary": {"vifs_off": 2, "vms_off": 2, "explicit": 1, "drift": 1,
                    "invalid": 1}}
    out = io.StringIO()
    cli_pool.print_report(report, out)
    text = out.getvalue()
    lines = text.splitlines()
    assert lines[0].split() == ["VM", "POWER", "HOST", "VIF", "OFF", "WHY"]
    assert lines[1].split() == ["archive", "Halted", "-", "vif0", "tx-off",
                                "pool"]
    assert lines[2].split() == ["web01", "Running", "host1", "vif0", "tx,sg",
                                "explicit(sg)", "pool(tx)"]
    joined = " ".join(text.split())
    assert "web01/vif0: sg=off is explicit: ethtool-sg=off set before " \
        "netoffload; beats the pool policy tx-off" in joined
    assert "web01/vif0: DRIFT since 2025-12-02 00:00:00 UTC: live tx=on" in joined
    assert "INVALID policy netoffload-tag:bsd on tag bsd: invalid value 'of'; " \
        "treated as none" in joined
    assert lines[-1] == "2 VIF(s) of 2 VM(s) with offload off; 1 with an " \
        "explicit key; 1 drifting; 1 invalid policies"
    out = io.StringIO()
    cli_pool.print_report_csv(report, out)
    rows = out.getvalue().splitlines()
    assert rows[0] == ",".join(cli_pool.REPORT_COLUMNS)
    assert rows[2] == "web01,Running,host1,vif0,LAN,vif1.0,\"tx,sg\"," \
        "explicit(sg) pool(tx),sg=off,tx-off,pool,tx=on"


def test_drift_of_a_held_device_says_it_is_left_alone():
    dev = {"device": "eth1", "kind": "pif", "compliant": False,
           "desired": {"gro": "off"}, "explicit": {}, "policy": "gro=off",
           "level": "host", "sources": {"gro": "host"},
           "drift": {"features": {"gro": "on"}, "since": 1764633600.0,
                     "held": True}}
    [note] = render.why_notes(dev)
    assert note == "eth1: DRIFT since 2025-12-02 00:00:00 UTC: live gro=on " \
        "differs from the policy (held by `netoffload set`: left alone until " \
        "`netoffload restore`)"


def test_a_held_device_is_shown_as_left_alone_and_counted():
    held = {"device": "eth1", "kind": "pif", "action": "held",
            "held": {"by": "set", "wanted": {"tx": "on"}, "since": 1.0}}
    result = {"host": {"name_label": "h1", "uuid": "1"}, "dry_run": False,
              "objects": [], "policy": [], "devices": [held],
              "summary": {"objects": {}, "devices": 1, "devices_changed": 0,
                          "devices_failed": [], "devices_held": ["eth1"]}}
    out = io.StringIO()
    render.print_result(result, out)
    text = out.getvalue()
    assert "HELD: left alone" in text
    assert "eth1: held by netoffload set (tx=on), left alone; `netoffload " \
        "restore eth1` ends the hold and brings it into policy" in " ".join(
            text.split())
    assert text.splitlines()[-1] == "done: objects: none; devices: 1, 0 " \
        "changed, 0 failed, 1 held by netoffload set (left alone)"
