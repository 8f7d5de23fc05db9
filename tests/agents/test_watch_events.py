"""The watcher's pure core: event batches in, decisions out. No session, no
simulator: the records are plain dicts and the events are what event.from
returns."""
import pytest

from netoffload.agents import watch_events
from netoffload.agents.watch_events import apply_events
from netoffload.pool.records import PoolRecords

POOL = "OpaqueRef:pool"
HERE = "OpaqueRef:host-here"
THERE = "OpaqueRef:host-there"


def _vm(name, **fields):
    record = {"uuid": name + "-uuid", "name_label": name, "other_config": {},
              "tags": [], "is_a_template": False, "is_a_snapshot": False,
              "is_control_domain": False, "power_state": "Halted",
              "resident_on": "OpaqueRef:NULL", "domid": "-1"}
    record.update(fields)
    return record


def _vif(vm, network, device="0", **fields):
    record = {"uuid": "vif-%s-%s" % (vm, device), "device": device, "VM": vm,
              "network": network, "other_config": {},
              "currently_attached": False}
    record.update(fields)
    return record


def _pif(host, device="eth0"):
    return {"uuid": "pif-%s-%s" % (host, device), "device": device,
            "VLAN": "-1", "host": host, "network": "OpaqueRef:net-a",
            "other_config": {}, "bond_master_of": [], "bond_slave_of": "OpaqueRef:NULL"}


@pytest.fixture
def records():
    """Two hosts (this one the master), two networks, web (running here,
    two VIFs), db (halted, one VIF on the other network), a template."""
    return PoolRecords(
        pool={POOL: {"uuid": "pool-uuid", "name_label": "", "master": HERE,
                     "other_config": {"netoffload-vif": "all-off"}}},
        hosts={HERE: {"uuid": "h1", "name_label": "xs1", "enabled": True,
                      "other_config": {}},
               THERE: {"uuid": "h2", "name_label": "xs2", "enabled": True,
                       "other_config": {}}},
        networks={"OpaqueRef:net-a": {"uuid": "na", "name_label": "a",
                                      "other_config": {}},
                  "OpaqueRef:net-b": {"uuid": "nb", "name_label": "b",
                                      "other_config": {}}},
        pifs={"OpaqueRef:pif-here": _pif(HERE),
              "OpaqueRef:pif-there": _pif(THERE)},
        vms={"OpaqueRef:web": _vm("web", power_state="Running",
                                  resident_on=HERE, domid="3"),
             "OpaqueRef:db": _vm("db"),
             "OpaqueRef:tpl": _vm("tpl", is_a_template=True)},
        vifs={"OpaqueRef:web-0": _vif("OpaqueRef:web", "OpaqueRef:net-a", "0"),
              "OpaqueRef:web-1": _vif("OpaqueRef:web", "OpaqueRef:net-a", "1"),
              "OpaqueRef:db-0": _vif("OpaqueRef:db", "OpaqueRef:net-b", "0"),
              "OpaqueRef:tpl-0": _vif("OpaqueRef:tpl", "OpaqueRef:net-a", "0")})


def mod(cls, ref, record, **changes):
    snapshot = dict(record)
    snapshot.update(changes)
    return {"class": cls, "operation": "mod", "ref": ref, "snapshot": snapshot}


def decisions(batch):
    return (sorted(batch.affected), sorted(batch.live),
            None if batch.dirty is None else sorted(batch.dirty),
            batch.took_over)


def test_a_new_vif_is_affected_and_its_snapshot_trimmed(records):
    snapshot = dict(_vif("OpaqueRef:db", "OpaqueRef:net-b", "1"),
                    MAC="aa:bb", qos_algorithm_params={"kbps": "1"})
    batch = apply_events(records, [{"class": "VIF", "operation": "add",
                                    "ref": "OpaqueRef:db-1",
                                    "snapshot": snapshot}], HERE, True)
    assert decisions(batch) == (["OpaqueRef:db-1"], [], ["OpaqueRef:db-1"], False)
    assert records.vifs["OpaqueRef:db-1"] == _vif("OpaqueRef:db",
                                                  "OpaqueRef:net-b", "1")


def test_a_vif_event_that_changes_nothing_the_policy_reads_only_refreshes_its_entry(
        records):
    ref = "OpaqueRef:web-0"
    batch = apply_events(records, [mod("vif", ref, records.vifs[ref],
                                       MAC="aa:bb")], HERE, True)
    assert decisions(batch) == ([], [], [ref], False)


def test_a_vif_whose_own_keys_change_is_affected(records):
    ref = "OpaqueRef:web-0"
    batch = apply_events(records, [mod("vif", ref, records.vifs[ref],
                                       other_config={"ethtool-tx": "on"})],
                         HERE, True)
    assert decisions(batch) == ([ref], [], [ref], False)
    assert records.vifs[ref]["other_config"] == {"ethtool-tx": "on"}


def test_plugging_a_vif_asks_for_live_enforcement_only(records):
    ref = "OpaqueRef:web-1"
    batch = apply_events(records, [mod("vif", ref, records.vifs[ref],
                                       currently_attached=True)], HERE, True)
    assert decisions(batch) == ([], [ref], [ref], False)


def test_a_deleted_vif_leaves_the_snapshot_and_its_cache_entry(records):
    ref = "OpaqueRef:db-0"
    batch = apply_events(records, [{"class": "vif", "operation": "del",
                                    "ref": ref, "snapshot": None}], HERE, True)
    assert decisions(batch) == ([], [], [ref], False)
    assert ref not in records.vifs


@pytest.mark.parametrize("changes", [
    {"other_config": {"netoffload-vif": "tx-off"}},
    {"tags": ["bsd"]},
    {"is_a_snapshot": True},
], ids=["policy key", "tags", "eligibility"])
def test_a_vm_policy_change_affects_all_its_vifs_and_no_other(records, changes):
    batch = apply_events(records, [mod("vm", "OpaqueRef:web",
                                       records.vms["OpaqueRef:web"], **changes)],
                         HERE, True)
    both = ["OpaqueRef:web-0", "OpaqueRef:web-1"]
    assert decisions(batch) == (both, [], both, False)


def test_a_vm_that_starts_asks_for_live_enforcement_of_its_vifs(records):
    batch = apply_events(records, [mod("vm", "OpaqueRef:db",
                                       records.vms["OpaqueRef:db"],
                                       power_state="Running", resident_on=HERE,
                                       domid="7")], HERE, True)
    assert decisions(batch) == ([], ["OpaqueRef:db-0"], [], False)


def test_a_renamed_vm_refreshes_its_cache_entries_only(records):
    batch = apply_events(records, [mod("vm", "OpaqueRef:web",
                                       records.vms["OpaqueRef:web"],
                                       name_label="web 2")], HERE, True)
    assert decisions(batch) == (
        [], [], ["OpaqueRef:web-0", "OpaqueRef:web-1"], False)


def test_a_network_policy_affects_the_vifs_on_it(records):
    net = "OpaqueRef:net-b"
    batch = apply_events(records, [mod("network", net, records.networks[net],
                                       other_config={"netoffload-vif": "tx-off"})],
                         HERE, True)
    assert decisions(batch) == (
        ["OpaqueRef:db-0"], [], ["OpaqueRef:db-0"], False)


def test_a_host_pif_policy_affects_that_hosts_pifs(records):
    batch = apply_events(records, [mod("host", THERE, records.hosts[THERE],
                                       other_config={"netoffload-pif": "tx-off"})],
                         HERE, True)
    assert decisions(batch) == (
        ["OpaqueRef:pif-there"], [], ["OpaqueRef:pif-there"], False)


def test_a_pool_policy_change_affects_everything(records):
    batch = apply_events(records, [mod("pool", POOL, records.pool[POOL],
                                       other_config={"netoffload-vif": "tx-off"})],
                         HERE, True)
    assert sorted(batch.affected) == sorted(set(records.vifs) | set(records.pifs))
    assert (batch.live, batch.dirty, batch.took_over) == (set(), None, False)


def test_a_pool_key_that_is_not_ours_changes_nothing(records):
    config = dict(records.pool[POOL]["other_config"], memory_ratio="0.5")
    batch = apply_events(records, [mod("pool", POOL, records.pool[POOL],
                                       other_config=config)], HERE, True)
    assert decisions(batch) == ([], [], [], False)


@pytest.mark.parametrize("key, value", [
    ("netoffload-lease", '{"expires":1.0,"holder":"watch@h","op":"0a1b2c3d4e5f"}'),
    ("netoffload-op:0a1b2c3d4e5f", '{"holder":"watch@h"}'),
    ("netoffload-lease-break:0a1b2c3d4e5f.1", "12.5"),
])
def test_the_writers_protocol_keys_on_the_pool_replan_nothing(records, key,
                                                               value):
    """Every write takes, renews or gives back the lease (the watcher's own
    too): replanning and re-resolving the whole pool for each made the
    latency seconds under load. A real policy key beside it still counts."""
    config = dict(records.pool[POOL]["other_config"], **{key: value})
    batch = apply_events(records, [mod("pool", POOL, records.pool[POOL],
                                       other_config=config)], HERE, True)
    assert decisions(batch) == ([], [], [], False)
    config = dict(config, **{"netoffload-vif": "tx-off"})
    batch = apply_events(records, [mod("pool", POOL, records.pool[POOL],
                                       other_config=config)], HERE, True)
    assert sorted(batch.affected) == sorted(set(records.vifs) | set(records.pifs))


def test_becoming_the_master_takes_over_everything(records):
    promotion = mod("pool", POOL, records.pool[POOL], master=THERE)
    batch = apply_events(records, [promotion], THERE, False)
    assert batch.took_over is True
    assert sorted(batch.affected) == sorted(set(records.vifs) | set(records.pifs))
    assert batch.dirty is None
    # the host that was master already: a pool event without our keys changing
    staying = apply_events(records, [mod("pool", POOL, records.pool[POOL])],
                           THERE, True)
    assert decisions(staying) == ([], [], [], False)


def test_classes_the_pack_does_not_read_are_ignored(records):
    batch = apply_events(records, [{"class": "SR", "operation": "mod",
                                    "ref": "OpaqueRef:sr", "snapshot": {}}],
                         HERE, True)
    assert decisions(batch) == ([], [], [], False)


def test_events_of_one_batch_apply_in_order(records):
    """An add then a mod of the same VIF in one batch: the mod is compared
    with the added record, and the last snapshot is what stays."""
    added = _vif("OpaqueRef:db", "OpaqueRef:net-b", "2")
    events = [{"class": "vif", "operation": "add", "ref": "OpaqueRef:db-2",
               "snapshot": added},
              mod("vif", "OpaqueRef:db-2", added, currently_attached=True)]
    batch = apply_events(records, events, HERE, True)
    assert decisions(batch) == (["OpaqueRef:db-2"], ["OpaqueRef:db-2"],
                                ["OpaqueRef:db-2"], False)
    assert records.vifs["OpaqueRef:db-2"]["currently_attached"] is True


def test_eligible_excludes_template_vifs(records):
    assert [ref for ref in sorted(set(records.vifs) | set(records.pifs))
            if watch_events.eligible(records, ref)] == [
        "OpaqueRef:db-0", "OpaqueRef:pif-here", "OpaqueRef:pif-there",
        "OpaqueRef:web-0", "OpaqueRef:web-1"]


def test_local_targets_are_this_hosts_pifs_and_the_vifs_of_vms_running_here(
        records):
    everything = set(records.vifs) | set(records.pifs)
    assert sorted(watch_events.local_targets(records, HERE, everything)) == [
        "OpaqueRef:pif-here", "OpaqueRef:web-0", "OpaqueRef:web-1"]
    assert sorted(watch_events.local_targets(records, THERE, everything)) == [
        "OpaqueRef:pif-there"]


def test_shows_tells_whether_the_snapshot_holds_our_writes(records):
    ref = "OpaqueRef:web-0"
    records.vifs[ref]["other_config"] = {"ethtool-tx": "off",
                                         "netoffload-managed": "tx"}
    assert watch_events.shows(records, ref, [("ethtool-tx", "off")])
    assert not watch_events.shows(records, ref, [("ethtool-tx", "off"),
                                                 ("ethtool-sg", "off")])
    assert not watch_events.shows(records, "OpaqueRef:gone", [])
    # a key written twice (a book: intent, then final or removed): its last
    assert watch_events.shows(records, ref, [
        ("netoffload-book.2", "intent"), ("netoffload-managed", "x"),
        ("ethtool-tx", "off"), ("netoffload-managed", "tx"),
        ("netoffload-book.2", None)])
    assert not watch_events.shows(records, ref, [
        ("netoffload-managed", "tx"), ("netoffload-managed", "x")])


def test_trim_keeps_the_fields_read_and_interns_strings():
    snapshot = {"uuid": "u", "device": "0", "VM": "OpaqueRef:" + "v" * 3,
                "network": "n", "other_config": None, "MAC": "aa:bb",
                "currently_attached": True}
    trimmed = watch_events.trim("vif", snapshot)
    assert trimmed == {"uuid": "u", "device": "0", "VM": "OpaqueRef:vvv",
                       "network": "n", "other_config": {},
                       "currently_attached": True}
    assert trimmed["VM"] is watch_events.intern("OpaqueRef:" + "vvv")


# -- our own writes' events (echoes) -------------------------------------------------
BEFORE = {"ethtool-tx": "true", "note": "x"}
AFTER = {"ethtool-tx": "off", "ethtool-sg": "off", "note": "x",
         "netoffload-book": "{}"}


def test_our_own_writes_plan_nothing_again_until_all_show(records):
    ref = "OpaqueRef:web-0"
    records.vifs[ref]["other_config"] = dict(BEFORE)
    echoes = {ref: (dict(BEFORE), dict(AFTER))}
    halfway = {"ethtool-tx": "off", "note": "x", "netoffload-book": "{}"}
    batch = apply_events(records, [mod("vif", ref, records.vifs[ref],
                                       other_config=halfway)], HERE, True,
                         echoes)
    # the cache entry is refreshed, nothing is planned, the echo stays
    assert decisions(batch) == ([], [], [ref], False) and ref in echoes
    batch = apply_events(records, [mod("vif", ref, records.vifs[ref],
                                       other_config=dict(AFTER))], HERE, True,
                         echoes)
    assert decisions(batch) == ([], [], [ref], False) and ref not in echoes
    assert records.vifs[ref]["other_config"] == AFTER


@pytest.mark.parametrize("change", [
    {"other_config": dict(BEFORE, **{"ethtool-tx": "on"})},  # a third value
    {"other_config": dict(AFTER, **{"ethtool-gso": "off"})},  # a new key
    {"other_config": {"ethtool-tx": "off", "ethtool-sg": "off",
                      "netoffload-book": "{}"}},  # note removed: not ours
    {"network": "OpaqueRef:net-b"},  # moved
])
def test_someone_elses_change_in_between_is_planned(records, change):
    ref = "OpaqueRef:web-0"
    records.vifs[ref]["other_config"] = dict(BEFORE)
    echoes = {ref: (dict(BEFORE), dict(AFTER))}
    batch = apply_events(records, [mod("vif", ref, records.vifs[ref],
                                       **change)], HERE, True, echoes)
    assert ref in batch.affected and ref not in echoes


def test_is_echo_holds_for_every_mix_of_before_and_after():
    old = _vif("OpaqueRef:web", "OpaqueRef:net-a")
    keys = sorted(set(BEFORE) | set(AFTER))
    for mask in range(2 ** len(keys)):
        config = {}
        for i, key in enumerate(keys):
            value = (AFTER if mask >> i & 1 else BEFORE).get(key)
            if value is not None:
                config[key] = value
        assert watch_events.is_echo(old, dict(old, other_config=config),
                                    (BEFORE, AFTER))


# -- what the trimmed records must still tell -----------------------------------------
def test_trim_keeps_what_precedence_and_sr_iov_read_on_a_pif():
    """An admin's `properties:gro` is an explicit PIF setting, and an SR-IOV
    logical PIF marks its network's VIFs as deviceless: trimming must keep
    both, or the watcher would write ethtool-gro over the property and keys
    on VFs."""
    snapshot = dict(_pif(HERE), properties={"gro": "off"},
                    sriov_logical_PIF_of=["OpaqueRef:sriov"], MAC="aa")
    trimmed = watch_events.trim("pif", snapshot)
    assert trimmed["properties"] == {"gro": "off"}
    assert trimmed["sriov_logical_PIF_of"] == ["OpaqueRef:sriov"]
    assert "MAC" not in trimmed


def test_the_trimmed_property_decides_gro_against_a_pool_policy(records):
    from netoffload.pool.precedence import resolve_pif
    records.pool_other_config["netoffload-pif"] = "tx=off,gro=on"
    ref = "OpaqueRef:pif-here"
    records.pifs[ref] = watch_events.trim("pif", dict(
        _pif(HERE), properties={"gro": "off"}))
    resolution = resolve_pif(records, ref)
    assert resolution.sources["gro"] == "property"
    assert resolution.features["gro"] == "off"
    assert resolution.features["tx"] == "off"


def test_vifs_on_an_sr_iov_network_and_its_logical_pif_are_not_eligible(
        records):
    """A VF is passed to the guest: no dom0 device, no keys xapi applies."""
    records.pifs["OpaqueRef:pif-vf"] = dict(
        _pif(HERE), uuid="pif-vf", network="OpaqueRef:net-b",
        sriov_logical_PIF_of=["OpaqueRef:sriov"])
    assert not watch_events.eligible(records, "OpaqueRef:pif-vf")
    assert watch_events.eligible(records, "OpaqueRef:pif-here")
    on_b = [r for r, v in records.vifs.items()
            if v["network"] == "OpaqueRef:net-b"]
    on_a = [r for r, v in records.vifs.items()
            if v["network"] == "OpaqueRef:net-a"]
    assert on_b and on_a
    assert not any(watch_events.eligible(records, r) for r in on_b)
    assert all(watch_events.eligible(records, r) for r in on_a
               if records.vms[records.vifs[r]["VM"]]["uuid"] != "tpl-uuid")


# -- the snapshot's compact records -----------------------------------------------
def test_a_record_reads_as_the_dict_it_was_made_from():
    fields = {"uuid": "u", "device": "0", "VM": "OpaqueRef:v",
              "network": "n", "other_config": {"k": "v"}}
    record = watch_events.trim("vif", dict(fields, MAC="aa"))
    assert record == fields and fields == record and not record != fields
    assert record != dict(fields, device="1")
    assert dict(record) == fields and record.copy() == fields
    assert sorted(record) == sorted(fields) == sorted(record.keys())
    assert sorted(record.items()) == sorted(fields.items())
    assert len(record) == 5 and bool(record)
    assert record["VM"] == "OpaqueRef:v" and record.get("VM") == "OpaqueRef:v"
    # a field the snapshot lacked is absent, as in the dict
    assert "currently_attached" not in record and "MAC" not in record
    assert record.get("currently_attached", 7) == 7 and record.get("MAC") is None
    with pytest.raises(KeyError):
        record["currently_attached"]
    assert record.get("keys") is None and "items" not in record
    assert dict(record, other_config={}) == dict(fields, other_config={})
    assert not watch_events.trim("vif", {"MAC": "aa"})


def test_records_and_their_maps_are_read_only_and_equal_maps_shared():
    one = watch_events.trim("vif", {"uuid": "1", "other_config": {"a": "b"}})
    two = watch_events.trim("vif", {"uuid": "2", "other_config": {"a": "b"}})
    assert one["other_config"] is two["other_config"]
    with pytest.raises(TypeError):
        one["other_config"]["a"] = "c"
    for change in (lambda c: c.update(a="c"), lambda c: c.pop("a"),
                   lambda c: c.setdefault("x", "y"), lambda c: c.clear(),
                   lambda c: c.__delitem__("a")):
        with pytest.raises(TypeError):
            change(one["other_config"])
    assert two["other_config"] == {"a": "b"}
    with pytest.raises(TypeError):
        one.uuid = "3"
    copy = dict(one["other_config"])
    copy["a"] = "c"  # a copy is the reader's own
    assert type(copy) is dict and one["other_config"] == {"a": "b"}
    assert watch_events.trim("vif", {"other_config": None})["other_config"] \
        is watch_events.trim("vif", {"other_config": {}})["other_config"]


def test_the_shared_maps_are_bounded(monkeypatch):
    monkeypatch.setattr(watch_events, "_CONFIGS", {})
    monkeypatch.setattr(watch_events, "CONFIGS_MAX", 4)
    kept = [watch_events.share_config({"n": str(i)}) for i in range(10)]
    assert len(watch_events._CONFIGS) <= 4
    assert [dict(c) for c in kept] == [{"n": str(i)} for i in range(10)]
    assert watch_events.share_config({"n": "9"}) is kept[9]


def test_records_survive_copy_and_pickle():
    import copy
    import pickle
    record = watch_events.trim("vm", {"uuid": "u", "tags": ["a"],
                                      "other_config": {"k": "v"}})
    for again in (copy.deepcopy(record), pickle.loads(pickle.dumps(record))):
        assert again == record and type(again) is type(record)


@pytest.mark.parametrize("params", [
    ("OpaqueRef:s", ["pool", "vif"], "token&<>", 30.0),
    ("s", {"k": "v&", "n": [1, True, 2.5, -3]}, ""),
    ("root", "", "1.0", "netoffload"),
    ("\u00e9t\u00e9", 1e20, 0.1, False),
])
def test_a_call_is_written_as_xmlrpc_client_writes_it(params):
    import xmlrpc.client
    assert watch_events.dumps_call("VIF.add_to_other_config", params) == \
        xmlrpc.client.dumps(params, "VIF.add_to_other_config").encode("utf-8")


def test_a_call_with_what_xmlrpc_cannot_carry_is_refused():
    for bad in ((None,), (2 ** 40,), ({1: "a"},), (object(),)):
        with pytest.raises((TypeError, OverflowError)):
            watch_events.dumps_call("x.y", bad)
