"""LiveStateStore.check and set_aside: a record that does not parse is
named with its fix before anything changes, and never discarded silently."""
import json
import os

import pytest

from netoffload.engine.livestate import STATE_FILE, LiveStateStore
from netoffload.errors import DeviceError

GOOD = {"version": 1, "devices": {"vif1.0": {
    "features": {"tx": "on"}, "requested": {"tx-checksum-ip-generic": "on"}}}}


def _write(state_dir, text):
    path = os.path.join(state_dir, STATE_FILE)
    with open(path, "w") as handle:
        handle.write(text)
    return path


def test_no_record_and_a_good_record_pass(state_dir):
    store = LiveStateStore(state_dir)
    store.check()
    assert os.listdir(state_dir) == []  # check creates nothing, not the lock
    _write(state_dir, json.dumps(GOOD))
    store.check()
    assert store.set_aside() is None  # a good record stays where it is
    assert store.recorded() == {"vif1.0": {"tx": "on"}}


@pytest.mark.parametrize("text", [
    json.dumps(GOOD)[:40],           # truncated after a write
    "",                              # empty
    "\x00\x00\x00",                  # garbage
    b"\xff\xfe{}".decode("latin-1"),  # not UTF-8
    json.dumps({"version": 1}),      # no devices map
    json.dumps([1, 2]),
], ids=["truncated", "empty", "nul", "latin1", "no-devices", "list"])
def test_a_corrupt_record_is_named_with_the_fix_and_kept(state_dir, text):
    path = _write(state_dir, text)
    with open(path, "rb") as handle:
        raw = handle.read()
    store = LiveStateStore(state_dir)
    with pytest.raises(DeviceError) as err:
        store.check()
    message = err.value.message
    assert err.value.code == "NETOFFLOAD_DEVICE_ERROR"
    assert path in message and "corrupt" in message
    assert "netoffload revert ALL" in message and "backup" in message
    # and nothing else discards or overwrites it
    for call in (store.recorded, store.owners, store.held_devices,
                 lambda: store.forget("vif1.0"),
                 lambda: store.apply("nosuchdev0", {"tx": "off"})):
        with pytest.raises(DeviceError):
            call()
    with open(path, "rb") as handle:
        assert handle.read() == raw


def test_set_aside_moves_a_corrupt_record_and_keeps_its_bytes(state_dir):
    path = _write(state_dir, json.dumps(GOOD)[:-7])
    store = LiveStateStore(state_dir)
    aside = store.set_aside()
    assert aside.startswith(path + ".corrupt-")
    assert not os.path.exists(path)
    with open(aside) as handle:
        assert handle.read() == json.dumps(GOOD)[:-7]
    # afresh: check passes, a second set_aside has nothing to move
    store.check()
    assert store.set_aside() is None
    assert store.recorded() == {}
    # a second corrupt record in the same second does not overwrite the first
    _write(state_dir, "{")
    again = store.set_aside()
    assert again != aside and os.path.exists(aside) and os.path.exists(again)


def test_set_aside_of_nothing(state_dir):
    assert LiveStateStore(state_dir).set_aside() is None


def test_an_unreadable_record_names_the_file(state_dir):
    path = _write(state_dir, json.dumps(GOOD))
    os.chmod(path, 0)
    if os.access(path, os.R_OK):  # root reads it anyway: make it a dir
        os.chmod(path, 0o600)
        os.unlink(path)
        os.mkdir(path)
    with pytest.raises(DeviceError) as err:
        LiveStateStore(state_dir).check()
    assert path in err.value.message
