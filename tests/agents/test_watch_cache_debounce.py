"""The watcher's cache upkeep without a session: when the rebuild is due,
what a flush writes, and that a failed write is retried."""
import os

import pytest

from netoffload.agents import cache, watch
from netoffload.agents.watch import CACHE_MAX_LAG, DebouncedCache, Watcher
from netoffload.pool.records import PoolRecords

HOST = "OpaqueRef:host"
VM_UUID = "0f0f0f0f-1111-2222-3333-444444444444"


def _records(pool_policy="tx-off"):
    return PoolRecords(
        pool={"OpaqueRef:pool": {"master": HOST, "other_config": {
            "netoffload-vif": pool_policy}}},
        hosts={HOST: {"uuid": "h", "name_label": "xs1", "other_config": {}}},
        networks={"OpaqueRef:net": {"other_config": {}}},
        pifs={},
        vms={"OpaqueRef:vm": {"uuid": VM_UUID, "name_label": "web",
                              "other_config": {}, "tags": []}},
        vifs={"OpaqueRef:vif": {"device": "0", "VM": "OpaqueRef:vm",
                                "network": "OpaqueRef:net",
                                "other_config": {}}})


def test_each_batch_pushes_the_rebuild_back_up_to_the_max_lag():
    upkeep = DebouncedCache("/nonexistent", debounce=0.5)
    assert upkeep.wait_limit(100.0, 30.0) == 30.0  # nothing pending
    assert not upkeep.is_due(100.0)
    upkeep.postpone(100.0)
    assert upkeep.wait_limit(100.0, 30.0) == 0.5
    for now in (100.4, 100.8, 101.2):
        upkeep.postpone(now)
        assert not upkeep.is_due(now + 0.49)
    assert upkeep.is_due(101.7)
    # events every 0.4 s: the rebuild still comes CACHE_MAX_LAG after the first
    now = 101.2
    while now < 100.0 + CACHE_MAX_LAG:
        now += 0.4
        upkeep.postpone(now)
    assert upkeep.due == 100.0 + CACHE_MAX_LAG
    assert upkeep.wait_limit(200.0, 30.0) == 0.0


def test_flush_writes_only_what_changed(tmp_path):
    upkeep = DebouncedCache(str(tmp_path), debounce=0.5)
    records = _records()
    assert upkeep.flush(records) is None  # before the first sync
    upkeep.restart(HOST)
    flushed = upkeep.flush(records)
    assert (flushed.written, flushed.counts) == (True, {"pifs": 0, "vifs": 1})
    assert cache.load(str(tmp_path)).vif(VM_UUID, 0)[0] == {"tx": "off"}
    assert upkeep.flush(records) is None  # nothing marked, nothing changed
    records.pool["OpaqueRef:pool"]["other_config"]["netoffload-vif"] = "sg=off"
    upkeep.mark(["OpaqueRef:vif"])
    assert upkeep.flush(records).written is True
    assert cache.load(str(tmp_path)).vif(VM_UUID, 0)[0] == {"sg": "off"}


def test_a_failed_write_is_written_at_the_next_flush(tmp_path, mocker):
    upkeep = DebouncedCache(str(tmp_path), debounce=0.5)
    upkeep.restart(HOST)
    upkeep.postpone(100.0)
    mocker.patch("netoffload.agents.cache_writer.statedir.atomic_write",
                 autospec=True, side_effect=OSError(28, "No space left on device"))
    with pytest.raises(OSError):
        upkeep.flush(_records())
    assert not upkeep.is_due(1000.0)  # the next batch makes it due again
    mocker.stopall()
    assert not os.path.exists(cache.cache_path(str(tmp_path)))
    assert upkeep.flush(_records()).written is True
    assert cache.load(str(tmp_path)).vif(VM_UUID, 0)[0] == {"tx": "off"}


@pytest.mark.parametrize("blocked", ["cache.json", "pif"])
def test_the_watcher_logs_a_cache_it_cannot_write_and_goes_on(tmp_path, blocked):
    # cache.json a directory: OSError from the write; a file named pif:
    # DeviceError from making the PIF marker directory
    state = tmp_path / "state"
    state.mkdir()
    if blocked == "pif":
        (state / "pif").write_text("")
    else:
        (state / "cache.json").mkdir()
    watcher = Watcher(state_dir=str(state))
    watcher.records, watcher.host_ref = _records(), HOST
    watcher._cache.restart(HOST)
    logged = []
    watcher.log = type("Log", (), {
        "warning": lambda self, *a: logged.append(a[0] % a[1:]),
        "info": lambda self, *a: None})()
    watcher._flush_cache(wait=True)  # must not raise
    assert len(logged) == 1 and logged[0].startswith("watch: cannot write the cache")


def test_the_malloc_settings_fall_back_where_there_is_no_glibc_or_ctypes(
        monkeypatch):
    """mallopt and malloc_trim through ctypes are glibc's: without them
    (musl: no libc.so.6, a libc without the functions, a Python built
    without ctypes) the watcher runs on with the allocator's defaults."""
    import ctypes
    import sys

    calls = []

    class Libc(object):
        def mallopt(self, param, value):
            calls.append((param, value))
            return 1

        def malloc_trim(self, pad):
            calls.append(("trim", pad))
            return 1

    monkeypatch.setattr(ctypes, "CDLL", lambda name: Libc())
    watch.limit_malloc_arenas()
    watch.release_memory(collect=False)
    assert calls == [(watch.M_ARENA_MAX, watch.MALLOC_ARENAS),
                     (watch.M_MMAP_THRESHOLD, watch.MMAP_THRESHOLD),
                     (watch.M_TRIM_THRESHOLD, watch.TRIM_THRESHOLD),
                     ("trim", 0)]

    def no_libc(name):
        raise OSError("%s: cannot open shared object file" % name)
    for cdll in (no_libc, lambda name: object()):  # no libc; no functions
        monkeypatch.setattr(ctypes, "CDLL", cdll)
        watch.limit_malloc_arenas()
        watch.release_memory(collect=False)
    monkeypatch.setitem(sys.modules, "ctypes", None)  # no ctypes at all
    watch.limit_malloc_arenas()
    watch.release_memory()


def test_the_snapshot_is_left_out_of_collections_and_back_in_at_a_resync(
        monkeypatch):
    """tune_gc: full collections seldom (a big pool's snapshot scanned
    every few seconds stopped every thread for 20-70 ms); freeze_heap
    after a sync puts what lives then out of every collection, thaw_heap
    before a resync puts it back; on a Python without gc.freeze (3.6)
    both do nothing."""
    import gc
    saved = gc.get_threshold()
    try:
        watch.tune_gc()
        assert gc.get_threshold() == saved[:2] + (watch.GC_FULL_AFTER,)
    finally:
        gc.set_threshold(*saved)
    if hasattr(gc, "freeze"):
        keep = [[i] for i in range(1000)]  # a snapshot's worth of objects
        try:
            watch.freeze_heap()
            assert gc.get_freeze_count() >= len(keep)
            watch.thaw_heap()
            assert gc.get_freeze_count() == 0
        finally:
            gc.unfreeze()
    for name in ("freeze", "unfreeze"):
        monkeypatch.delattr(gc, name, raising=False)
    watch.freeze_heap()
    watch.thaw_heap()
