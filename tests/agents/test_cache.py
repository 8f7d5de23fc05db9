"""The local cache: content built from pool records, atomic 0600 writes,
strict reading."""
import json
import os
import stat

import pytest

from netoffload import statedir
from netoffload.agents import cache, cache_writer
from netoffload.pool import keys
from netoffload.pool.precedence import resolve_pif, resolve_vif
from netoffload.pool.records import PoolRecords, eligible_vifs

HOST_A = "OpaqueRef:host-a"
HOST_B = "OpaqueRef:host-b"
VM_UUID = "0f0f0f0f-1111-2222-3333-444444444444"
BSD_UUID = "0b5d0b5d-1111-2222-3333-444444444444"
OPT_OUT_UUID = "00000000-aaaa-bbbb-cccc-dddddddddddd"
ALL_OFF = dict((f, "off") for f in ("rx", "tx", "sg", "tso", "ufo", "gso",
                                    "gro", "lro"))


def _vm(uuid, name, other_config=None, tags=(), **extra):
    record = {"uuid": uuid, "name_label": name, "other_config": other_config or {},
              "tags": list(tags), "is_a_template": False, "is_a_snapshot": False,
              "is_control_domain": False, "power_state": "Running"}
    record.update(extra)
    return record


def _records():
    """Two hosts; pool policy all-off for VIFs and tx-off for PIFs."""
    pool = {"OpaqueRef:pool": {"uuid": "pool-uuid", "master": HOST_A,
                               "other_config": {"netoffload-vif": "all-off",
                                                "netoffload-pif": "tx-off",
                                                "netoffload-tag:bsd": "tx-off"}}}
    hosts = {HOST_A: {"uuid": "host-a-uuid", "name_label": "xs1",
                      "other_config": {}},
             HOST_B: {"uuid": "host-b-uuid", "name_label": "xs2",
                      "other_config": {"netoffload-pif": "none"}}}
    networks = {"OpaqueRef:net": {"uuid": "net-uuid", "other_config": {}}}
    pifs = {"OpaqueRef:pif-a0": {"device": "eth0", "VLAN": "-1", "host": HOST_A,
                                 "other_config": {}},
            "OpaqueRef:pif-a1": {"device": "eth1", "VLAN": "-1", "host": HOST_A,
                                 "other_config": {"ethtool-tx": "on"}},
            "OpaqueRef:pif-a0v": {"device": "eth0", "VLAN": "100", "host": HOST_A,
                                  "other_config": {}},
            "OpaqueRef:pif-b0": {"device": "eth0", "VLAN": "-1", "host": HOST_B,
                                 "other_config": {}}}
    vms = {"OpaqueRef:vm": _vm(VM_UUID, "web 01", resident_on=HOST_B),
           "OpaqueRef:bsd": _vm(BSD_UUID, "fw", tags=["bsd"]),
           "OpaqueRef:optout": _vm(OPT_OUT_UUID, "db",
                                   other_config={"netoffload-vif": "none"}),
           "OpaqueRef:tmpl": _vm("99999999-1111-2222-3333-444444444444", "tmpl",
                                 is_a_template=True)}
    vifs = {"OpaqueRef:vif0": {"VM": "OpaqueRef:vm", "device": "0",
                               "network": "OpaqueRef:net", "other_config": {}},
            "OpaqueRef:vif1": {"VM": "OpaqueRef:vm", "device": "1",
                               "network": "OpaqueRef:net",
                               "other_config": {"ethtool-gso": "false"}},
            "OpaqueRef:bsd0": {"VM": "OpaqueRef:bsd", "device": "0",
                               "network": "OpaqueRef:net", "other_config": {}},
            "OpaqueRef:opt0": {"VM": "OpaqueRef:optout", "device": "0",
                               "network": "OpaqueRef:net", "other_config": {}},
            "OpaqueRef:tmpl0": {"VM": "OpaqueRef:tmpl", "device": "0",
                                "network": "OpaqueRef:net", "other_config": {}}}
    return PoolRecords(pool, hosts, networks, pifs, vms, vifs)


# -- building ------------------------------------------------------------------


def test_refreshing_many_vifs_that_share_maps_gives_each_its_own_entry():
    """CacheEntries.refresh resolves VIFs whose policy inputs are the very
    same maps once (the watcher's snapshot shares equal maps): every entry
    must still be what resolving that VIF alone gives (build)."""
    records = _records()
    shared_vm = {}          # one map object held by several VMs
    explicit = {"ethtool-gso": "false"}
    records.vms["OpaqueRef:vm"]["other_config"] = shared_vm
    records.vms["OpaqueRef:bsd"]["other_config"] = shared_vm  # tags differ
    records.vms["OpaqueRef:vm2"] = _vm("22222222-1111-2222-3333-444444444444",
                                       "web 02", other_config=shared_vm,
                                       tags=["bsd", "other"])
    records.vms["OpaqueRef:vm3"] = _vm("33333333-1111-2222-3333-444444444444",
                                       "web 03", other_config={
                                           "netoffload-vif": "tso-off"})
    records.networks["OpaqueRef:net2"] = {"uuid": "net2-uuid", "other_config": {
        "netoffload-vif": "gso-off"}}
    empty = {}
    for n, (vm, net, config) in enumerate([
            ("vm", "net", empty), ("vm", "net", explicit), ("bsd", "net", empty),
            ("bsd", "net", explicit), ("vm2", "net", empty), ("vm2", "net2", empty),
            ("vm3", "net", empty), ("vm3", "net2", explicit), ("optout", "net", empty),
            ("vm", "net2", empty)]):
        records.vifs["OpaqueRef:s%d" % n] = {
            "VM": "OpaqueRef:" + vm, "device": str(10 + n),
            "network": "OpaqueRef:" + net, "other_config": config}
    entries = cache_writer.CacheEntries(HOST_A)
    entries.refresh(records)
    got = entries.encoded(records).sections["vifs"]
    expected = dict((key, cache_writer.encode_entry(entry)) for key, entry in
                    cache_writer.build(records, HOST_A)["vifs"].items())
    assert got == expected
    features = dict((key, json.loads(text)["features"])
                    for key, text in got.items())
    assert len(set(json.dumps(f, sort_keys=True) for f in features.values())) >= 3



def test_build_lists_this_hosts_pifs_and_every_vif_in_the_pool():
    data = cache_writer.build(_records(), HOST_A, generated_at="2024-01-01T00:00:00Z")
    assert data["format"] == cache.FORMAT
    assert data["host"] == {"uuid": "host-a-uuid", "name": "xs1"}
    assert data["policy"]["pool"] == {"vif": "all-off", "pif": "tx-off",
                                      "tags": {"bsd": "tx-off"}}
    assert sorted(data["pifs"]) == ["eth0", "eth0.100"]
    assert data["pifs"]["eth0"]["features"] == {"tx": "off"}
    assert data["pifs"]["eth0"]["source"] == "pool"
    # the VM is resident on host B but may start here later: listed anyway
    assert sorted(data["vifs"]) == [BSD_UUID + "/0", VM_UUID + "/0",
                                    VM_UUID + "/1"]
    assert data["vifs"][VM_UUID + "/0"] == {
        "features": ALL_OFF, "source": "pool", "policy": "all-off",
        "sources": dict((f, "pool") for f in ALL_OFF), "vm": "web 01"}
    assert data["vifs"][BSD_UUID + "/0"]["features"] == {"tx": "off"}
    assert data["vifs"][BSD_UUID + "/0"]["source"] == "tag:bsd"


def test_build_lists_policy_features_only_never_explicit_keys():
    """Like enforce.enforce_live: explicit keys are xapi's business at plug,
    so the cache (what udev and boot-without-xapi apply) leaves them out."""
    data = cache_writer.build(_records(), HOST_A)
    # eth1's only policy feature (tx) is explicit: nothing left to apply
    assert "eth1" not in data["pifs"]
    vif1 = data["vifs"][VM_UUID + "/1"]
    assert vif1["features"] == dict((f, v) for f, v in ALL_OFF.items()
                                    if f != "gso")
    assert "gso" not in vif1["sources"]
    assert OPT_OUT_UUID + "/0" not in data["vifs"]


def _opted_out_with_explicit_keys(pool_policy):
    """The reviewer's repro: a VM with netoffload-vif=none whose VIF holds
    ethtool-gro=off and ethtool-tx=true; a PIF with an explicit key."""
    records = _records()
    records.pool["OpaqueRef:pool"]["other_config"] = dict(pool_policy)
    records.vifs["OpaqueRef:opt0"]["other_config"] = {
        "ethtool-gro": "off", "ethtool-tx": "true"}
    return records


@pytest.mark.parametrize("pool_policy", [
    {"netoffload-vif": "all-off", "netoffload-pif": "tx-off"}, {}],
    ids=["pool-policy", "no-policy"])
def test_cache_entries_are_what_enforce_live_applies(pool_policy):
    records = _opted_out_with_explicit_keys(pool_policy)
    data = cache_writer.build(records, HOST_A)
    assert OPT_OUT_UUID + "/0" not in data["vifs"]
    for vif_ref in eligible_vifs(records):
        vif = records.vifs[vif_ref]
        key = keys.owner_key(records.vms[vif["VM"]]["uuid"], vif["device"])
        live = resolve_vif(records, vif_ref).live_features
        assert data["vifs"].get(key, {}).get("features", {}) == live, key
    for pif_ref in records.pifs_of_host(HOST_A):
        device = cache_writer.pif_device_name(records.pifs[pif_ref])
        live = resolve_pif(records, pif_ref).live_features
        assert data["pifs"].get(device, {}).get("features", {}) == live, device
    if not pool_policy:
        assert (data["pifs"], data["vifs"]) == ({}, {})


def test_build_for_a_host_whose_pif_policy_is_none_lists_no_pifs():
    data = cache_writer.build(_records(), HOST_B)
    assert data["pifs"] == {}
    assert data["policy"]["host"] == {"pif": "none"}
    assert len(data["vifs"]) == 3


# -- writing -------------------------------------------------------------------

def _sample(pifs=None, vifs=None, generated_at="2024-01-01T00:00:00Z"):
    return {"format": cache.FORMAT, "generated_at": generated_at,
            "host": {"uuid": "h", "name": "xs1"}, "policy": {},
            "pifs": pifs if pifs is not None else {
                "eth0": {"features": {"tx": "off"}, "source": "pool"}},
            "vifs": vifs if vifs is not None else {
                VM_UUID + "/0": {"features": ALL_OFF, "source": "pool",
                                 "vm": "web 01"}}}


def test_write_is_root_only_and_leaves_no_temp_files(tmp_path):
    directory = str(tmp_path / "state")
    assert cache_writer.write(_sample(), directory) is True
    assert stat.S_IMODE(os.stat(directory).st_mode) == 0o700
    path = cache.cache_path(directory)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert sorted(os.listdir(directory)) == ["cache.index", "cache.json", "pif"]
    with open(path) as handle:
        assert json.load(handle) == _sample()


def test_write_with_same_content_keeps_the_file(tmp_path):
    directory = str(tmp_path)
    cache_writer.write(_sample(), directory)
    before = os.stat(cache.cache_path(directory))
    assert cache_writer.write(_sample(generated_at="2030-01-01T00:00:00Z"),
                       directory) is False
    after = os.stat(cache.cache_path(directory))
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    assert cache.load(directory).generated_at == "2024-01-01T00:00:00Z"


def test_failed_write_keeps_the_old_cache(tmp_path, mocker):
    directory = str(tmp_path)
    cache_writer.write(_sample(), directory)
    mocker.patch("netoffload.agents.cache_writer.os.rename", autospec=True,
                 side_effect=OSError(28, "No space left on device"))
    with pytest.raises(OSError):
        cache_writer.write(_sample(pifs={}), directory)
    assert cache.load(directory).data == _sample()
    assert sorted(os.listdir(directory)) == ["cache.index", "cache.json", "pif"]


def test_pif_markers_follow_the_cache(tmp_path):
    directory = str(tmp_path)
    cache_writer.write(_sample(pifs={"eth0": {"features": {"tx": "off"}},
                              "bond0": {"features": {"tx": "off"}}}), directory)
    assert sorted(os.listdir(os.path.join(directory, "pif"))) == ["bond0", "eth0"]
    cache_writer.write(_sample(pifs={"eth1": {"features": {"tx": "off"}},
                              "../evil": {"features": {"tx": "off"}}}), directory)
    assert os.listdir(os.path.join(directory, "pif")) == ["eth1"]
    assert not os.path.exists(os.path.join(str(tmp_path.parent), "evil"))


def test_a_writer_overtaken_between_cache_and_index_leaves_no_wrong_index(
        tmp_path, monkeypatch):
    """Writer A renames its cache.json, writer B then writes both files, and
    A stamps its index: that index must not pass for B's cache.json."""
    directory = str(tmp_path)
    older = _sample(pifs={"eth0": {"features": {"tx": "off"}}})
    newer = _sample(pifs={"eth0": {"features": {"tx": "on"}}})
    real = statedir.atomic_write
    overtaken = []

    def writer_b_completes_in_between(path, chunks, *args):
        result = real(path, chunks, *args)
        if path.endswith(cache.CACHE_FILE) and not overtaken:
            overtaken.append(path)
            cache_writer.write(newer, directory)
        return result
    monkeypatch.setattr(statedir, "atomic_write", writer_b_completes_in_between)
    cache_writer.write(older, directory)
    monkeypatch.setattr(statedir, "atomic_write", real)
    assert overtaken
    assert cache.load(directory).pif("eth0")[0] == {"tx": "on"}
    assert cache.open_lookup(directory).pif("eth0")[0] == {"tx": "on"}


def test_pif_markers_tolerate_another_writer(tmp_path, mocker):
    """Between our listing and our create/unlink another writer made eth0's
    marker and removed gone0's: neither is an error."""
    directory = str(tmp_path)
    cache_writer.write(_sample(pifs={"eth0": {"features": {"tx": "off"}}}), directory)
    mocker.patch("netoffload.agents.cache_writer.os.listdir", autospec=True,
                 return_value=["gone0"])
    cache_writer.sync_pif_markers(["eth0"], directory)
    mocker.stopall()
    assert os.listdir(os.path.join(directory, "pif")) == ["eth0"]


# -- reading -------------------------------------------------------------------

@pytest.mark.parametrize("content, message", [
    (None, "cannot be read"),
    ("", "corrupt"),
    ('{"format": 1, "pifs": {}, "vifs": ', "corrupt"),
    ("[]", "unknown format"),
    ('{"format": 2, "pifs": {}, "vifs": {}}', "unknown format"),
    ('{"format": 1, "pifs": {}}', "no vifs section"),
    ('{"format": 1, "pifs": [], "vifs": {}}', "no pifs section"),
], ids=["missing", "empty", "truncated", "not-an-object", "future-format",
        "no-vifs", "pifs-not-a-map"])
def test_unusable_caches_are_refused(tmp_path, content, message):
    if content is not None:
        (tmp_path / "cache.json").write_text(content)
    with pytest.raises(cache.CacheUnusable) as info:
        cache.load(str(tmp_path))
    assert message in info.value.message


READERS = [("cache.json", cache.load), ("index", cache.open_lookup)]


@pytest.mark.parametrize("reader", [r[1] for r in READERS],
                         ids=[r[0] for r in READERS])
def test_lookups(tmp_path, reader):
    cache_writer.write(_sample(), str(tmp_path))
    loaded = reader(str(tmp_path))
    assert loaded.host_uuid == "h"
    assert loaded.pif("eth0")[0] == {"tx": "off"}
    assert loaded.pif("eth9") == (None, None)
    features, entry = loaded.vif(VM_UUID.upper(), 0)
    assert features == ALL_OFF and entry["vm"] == "web 01"
    assert loaded.vif(VM_UUID, "1") == (None, None)
    assert loaded.vif("not-a-uuid", "0") == (None, None)
    assert loaded.vif(VM_UUID, "0; rm") == (None, None)


@pytest.mark.parametrize("features", [
    {"tx": "maybe"}, {"txx": "off"}, {}, "off", None,
], ids=["bad-value", "bad-feature", "empty", "not-a-map", "null"])
@pytest.mark.parametrize("reader", [r[1] for r in READERS],
                         ids=[r[0] for r in READERS])
def test_a_corrupt_entry_is_refused_on_lookup(tmp_path, features, reader):
    cache_writer.write(_sample(pifs={"eth0": {"features": features}}), str(tmp_path))
    loaded = reader(str(tmp_path))
    with pytest.raises(cache.CacheUnusable):
        loaded.pif("eth0")
    assert loaded.vif(VM_UUID, 0)[0] == ALL_OFF


# -- the index the udev helper reads -------------------------------------------

def test_encoded_text_is_the_plain_json_encoding():
    data = _sample(pifs={"eth0": {"features": {"tx": "off"}},
                         'we"ird\n': {"features": {"tx": "off"}}})
    encoded = cache_writer.Encoded.from_data(data)
    assert encoded.text() == json.dumps(data, sort_keys=True,
                                        separators=(",", ":")) + "\n"
    assert json.loads(encoded.text()) == data
    assert 'we"ird' not in encoded.index_text([1, 2, 3])


def test_the_index_is_used_when_it_belongs_to_cache_json(tmp_path):
    cache_writer.write(_sample(), str(tmp_path))
    loaded = cache.open_lookup(str(tmp_path))
    assert isinstance(loaded, cache.IndexedCache)
    assert loaded.generated_at == "2024-01-01T00:00:00Z"


def _hand_edit(directory):
    data = _sample(vifs={})
    with open(cache.cache_path(directory), "w") as handle:
        json.dump(data, handle)


def _index_removed(directory):
    os.unlink(os.path.join(directory, cache.INDEX_FILE))


def _index_garbled(directory):
    with open(os.path.join(directory, cache.INDEX_FILE), "w") as handle:
        handle.write("netoffload-cache-index 1 {\n")


@pytest.mark.parametrize("change, vif_listed", [
    (_hand_edit, False), (_index_removed, True), (_index_garbled, True),
], ids=["cache-json-edited", "index-missing", "index-garbled"])
def test_a_stale_or_broken_index_falls_back_to_cache_json(tmp_path, change,
                                                         vif_listed):
    directory = str(tmp_path)
    cache_writer.write(_sample(), directory)
    change(directory)
    loaded = cache.open_lookup(directory)
    assert not isinstance(loaded, cache.IndexedCache)
    assert (loaded.vif(VM_UUID, 0)[0] is not None) == vif_listed


@pytest.mark.parametrize("change", [_index_removed, _index_garbled],
                         ids=["index-missing", "index-garbled"])
def test_an_unchanged_write_repairs_the_index(tmp_path, change):
    directory = str(tmp_path)
    cache_writer.write(_sample(), directory)
    change(directory)
    assert cache_writer.write(_sample(), directory) is False
    assert isinstance(cache.open_lookup(directory), cache.IndexedCache)


def test_a_corrupt_cache_json_is_refused_even_with_an_index(tmp_path):
    directory = str(tmp_path)
    cache_writer.write(_sample(), directory)
    with open(cache.cache_path(directory), "w") as handle:
        handle.write('{"format": 1, "pifs": ')
    with pytest.raises(cache.CacheUnusable) as info:
        cache.open_lookup(directory)
    assert "corrupt" in info.value.message


def test_the_bucketed_index_finds_every_entry_of_a_big_cache(tmp_path):
    directory = str(tmp_path)
    uuids = ["%08x-0000-4000-8000-%012x" % (i, i) for i in range(3000)]
    data = _sample(vifs=dict(("%s/%d" % (u, i % 3), {"features": {"tx": "off"},
                                                     "vm": "vm%d" % i})
                             for i, u in enumerate(uuids)),
                   pifs=dict(("eth%d" % i, {"features": {"gro": "off"}})
                             for i in range(50)))
    cache_writer.write(data, directory)
    with cache.open_lookup(directory) as loaded:
        assert isinstance(loaded, cache.IndexedCache)
        assert loaded._buckets >= 3050 // 4
        for i, u in enumerate(uuids):
            assert loaded.vif(u, i % 3) == ({"tx": "off"}, {
                "features": {"tx": "off"}, "vm": "vm%d" % i})
            assert loaded.vif(u, (i % 3) + 1) == (None, None)
        for i in range(50):
            assert loaded.pif("eth%d" % i)[0] == {"gro": "off"}
        assert loaded.pif("eth50") == (None, None)
    with open(os.path.join(directory, cache.INDEX_FILE), "rb") as handle:
        size = len(handle.read())
    assert size > 200000  # the lookups above read a few buckets, not this


def test_a_bad_bucket_table_is_a_corrupt_cache(tmp_path):
    directory = str(tmp_path)
    cache_writer.write(_sample(), directory)
    index = os.path.join(directory, cache.INDEX_FILE)
    with open(index, "rb") as handle:
        lines = handle.read().split(b"\n")
    lines[1] = b"x" * len(lines[1])
    with open(index, "wb") as handle:
        handle.write(b"\n".join(lines))
    # same size and inode-independent stamp: the index still belongs
    with cache.open_lookup(directory) as loaded:
        assert isinstance(loaded, cache.IndexedCache)
        with pytest.raises(cache.CacheUnusable):
            loaded.pif("eth0")


def _index_by_the_format(encoded, cache_stamp):
    """cache.index as netoffload.agents.cache describes it, built the plain
    way: a line per entry with a plain key, lines in crc32 buckets (key
    order inside a bucket), a table of byte offsets."""
    import binascii
    import re as _re
    lines = ["%s %s %s\n" % (prefix, key, encoded.sections[name][key])
             for name, prefix in (("pifs", "pif"), ("vifs", "vif"))
             for key in sorted(encoded.sections[name])
             if _re.match(r"^[A-Za-z0-9_.:@/-]+\Z", key)]
    buckets = 1
    while buckets * 4 < len(lines):
        buckets *= 2
    grouped = [[] for _ in range(buckets)]
    for line in lines:
        name = " ".join(line.split(" ", 2)[:2])
        grouped[binascii.crc32(name.encode()) % buckets].append(line)
    head = cache.INDEX_MAGIC + cache_writer.encode_entry(dict(
        encoded.header, cache=cache_stamp, buckets=buckets)) + "\n"
    offsets = [len(head) + (buckets + 1) * cache.OFFSET_WIDTH + 1]
    for group in grouped:
        offsets.append(offsets[-1] + sum(len(line) for line in group))
    return head + "".join("%010d" % o for o in offsets) + "\n" + \
        "".join("".join(group) for group in grouped)


@pytest.mark.parametrize("count", [0, 1, 5, 2047, 2049, 9000])
def test_cache_files_are_the_format_built_the_plain_way(count):
    """cache.json and cache.index are built in C loops over slices of
    entries: the text is still json.dumps's, and the index the format's."""
    import random
    import uuid as uuidlib
    rng = random.Random(count)
    vifs = dict(("%s/%d" % (uuidlib.UUID(int=rng.getrandbits(128)), n % 7),
                 {"features": {"tx": "off"}, "vm": "v%d" % (n % 5)})
                for n in range(count))
    vifs['we"ird/0'] = vifs["caf\u00e9/1"] = {"features": {"rx": "off"}}
    data = {"format": 1, "generated_at": "x", "host": {"uuid": "u"},
            "policy": {}, "pifs": {"eth0": {"features": {}}, "bad key": {}},
            "vifs": vifs}
    encoded = cache_writer.Encoded.from_data(data)
    assert encoded.text() == json.dumps(data, sort_keys=True,
                                        separators=(",", ":")) + "\n"
    assert encoded.index_text([1, 2, 3]) == _index_by_the_format(encoded,
                                                                 [1, 2, 3])


def test_a_paced_write_writes_the_same_files_and_pauses_between_pieces(
        tmp_path, mocker):
    """write(pause=...) (the watcher's cache thread) sleeps after each piece
    of cache.json and cache.index, so a busy process's other threads run
    between them; the files are those of an unpaced write."""
    vifs = dict(("%08d-1111-2222-3333-444444444444/0" % n,
                 {"features": {"tx": "off"}}) for n in range(3000))
    data = {"format": 1, "generated_at": "x", "host": {"uuid": "u"},
            "policy": {}, "pifs": {}, "vifs": vifs}
    plain, paced = tmp_path / "plain", tmp_path / "paced"
    cache_writer.write(data, str(plain))
    sleep = mocker.patch("netoffload.agents.cache_writer.time.sleep")
    cache_writer.write(data, str(paced), pause=0.001)
    # cache.json: 3000 entries in pieces of CHUNK_ENTRIES; the index too
    assert sleep.call_count >= 2 * (3000 // cache_writer.CHUNK_ENTRIES)
    assert all(call.args == (0.001,) for call in sleep.call_args_list)
    assert (paced / "cache.json").read_text() == (plain / "cache.json").read_text()
    index = [(d / "cache.index").read_text().split("\n", 1) for d in (plain, paced)]
    # the first line names the cache.json it belongs to (inode, mtime)
    assert index[0][1] == index[1][1]
