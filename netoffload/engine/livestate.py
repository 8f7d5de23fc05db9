"""The record of live state: what each feature was before we first changed it.

`LiveStateStore.apply` records the prior value of every feature it is about
to change (only the first time: a second policy must not overwrite the
original), then applies; features the kernel turned as a dependency are
recorded too. `restore` puts the recorded values back and forgets them.

A guest device's name (vif<domid>.<devid>) is reused once domids restart
after a dom0 reboot, so its record carries an `owner` ("<vm-uuid>/<devid>").
A record owned by someone else is treated as no record: it is replaced on
apply, and never restored onto the new owner's device. A record with no
owner (older format) is adopted by the first owner that names it.

One JSON file, `live-state.json`, in the state directory (default
/var/lib/netoffload, or $NETOFFLOAD_STATE_DIR): directory 0700, file 0600,
written atomically (temp file, fsync, rename, fsync of the directory) under
an exclusive flock, because the udev helper, the watcher and the plugin may
run at the same time.
"""
import errno
import json
import os
import time

from netoffload import paths, statedir
from netoffload.engine import ethtool
from netoffload.engine.features import FEATURES, short_for_kernel_bit, value_or_none
from netoffload.errors import DeviceError
from netoffload.log import get_logger

STATE_FILE = "live-state.json"
LOCK_FILE = "live-state.lock"
FORMAT_VERSION = 1
LOCK_TIMEOUT = 30.0


def atomic_write_json(path, data, mode=0o600):
    """Write JSON so that readers see the old or the new file, never half."""
    statedir.atomic_write(path, json.dumps(data, indent=1, sort_keys=True) + "\n",
                          mode)


def _onoff_map(raw, key_ok):
    if not isinstance(raw, dict):
        return {}
    return dict((k, value_or_none(v)) for k, v in raw.items()
                if key_ok(k) and value_or_none(v) is not None)


class LiveStateStore(object):
    """Per device: `features` {short: value before our first change} and
    `requested` {kernel bit: what was requested before}, so that restore
    also undoes a request the kernel refused (it still shows as
    `[requested ...]`)."""

    def __init__(self, state_dir=None):
        self.state_dir = paths.state_dir(state_dir)
        self.path = os.path.join(self.state_dir, STATE_FILE)

    # -- storage ------------------------------------------------------------
    def _locked(self):
        return statedir.locked(
            os.path.join(self.state_dir, LOCK_FILE), LOCK_TIMEOUT,
            "the live-state record %s is locked by another netoffload "
            "process" % self.path)

    def _load(self):
        try:
            with open(self.path) as handle:
                data = json.load(handle)
        except (IOError, OSError) as err:
            if err.errno == errno.ENOENT:
                return {}
            raise DeviceError("cannot read %s: %s" % (self.path, err.strerror)) from err
        except ValueError as err:
            # Never overwrite a record we cannot read: it may be all that
            # remembers the original state.
            raise DeviceError("the live-state record %s is corrupt (%s); "
                              "move it away to start afresh" % (self.path, err)) from err
        devices = data.get("devices") if isinstance(data, dict) else None
        if not isinstance(devices, dict):
            raise DeviceError("the live-state record %s has no devices map"
                              % self.path)
        result = {}
        for device, record in devices.items():
            if not isinstance(record, dict):
                continue
            result[device] = {
                "features": _onoff_map(record.get("features"),
                                       lambda f: f in FEATURES),
                "requested": _onoff_map(record.get("requested"),
                                        lambda b: isinstance(b, str)),
            }
            owner = record.get("owner")
            if isinstance(owner, str) and owner:
                result[device]["owner"] = owner
        return result

    # Minimal stand-ins for the live-engine helper's check()/set_aside()
    # (CONTRACTS.md B), so apply/revert can call them before that work is
    # merged; the live-engine versions replace these.
    def check(self):
        """DeviceError naming the record and the fix unless it is absent
        or parses. Reads only."""
        self._load()

    def set_aside(self):
        """Move a corrupt record to live-state.json.corrupt-<time>; its
        path, or None when there is none or it parses."""
        if not os.path.lexists(self.path):
            return None
        try:
            self._load()
            return None
        except DeviceError:
            pass
        target = "%s.corrupt-%s" % (self.path, time.strftime(
            "%Y%m%dT%H%M%SZ", time.gmtime()))
        os.rename(self.path, target)
        return target

    def _save(self, devices):
        data = {"version": FORMAT_VERSION,
                "devices": dict((d, r) for d, r in devices.items()
                                if r.get("features"))}
        atomic_write_json(self.path, data)

    @staticmethod
    def _owned(record, owner):
        """The record if it belongs to `owner` (None: anyone), else None."""
        if record is None or owner is None:
            return record
        if record.get("owner", owner) != owner:
            return None
        record["owner"] = owner  # adopt an ownerless (older) record
        return record

    # -- the API ------------------------------------------------------------
    def recorded(self, owners=None):
        """{device: {short: 'on'|'off'}} as it was before our changes.

        owners: {device: owner}; a listed device whose record belongs to
        another owner is left out (it is not this device's past)."""
        if not os.path.exists(self.path):
            return {}
        owners = owners or {}
        with self._locked():
            return dict((d, dict(r["features"]))
                        for d, r in self._load().items() if r["features"]
                        and self._owned(r, owners.get(d)) is not None)

    def owners(self):
        """{device: owner or None} of every record."""
        if not os.path.exists(self.path):
            return {}
        with self._locked():
            return dict((d, r.get("owner")) for d, r in self._load().items())

    def apply(self, device, wanted, owner=None):
        """Record prior values of what will change, then apply `wanted`
        (ethtool.plan_features says what this would do, recording nothing).

        owner: "<vm-uuid>/<devid>" for a guest device; another owner's
        record is replaced."""
        ethtool.check_device(device)
        wanted = ethtool.check_wanted(wanted)
        with self._locked(), ethtool.Reader() as reader:
            devices = self._load()
            record = self._owned(devices.get(device), owner)
            if record is None:
                record = {"features": {}, "requested": {}}
                if owner is not None:
                    record["owner"] = owner
                if devices.pop(device, None) is not None:
                    self._save(devices)  # another owner's past: not ours
            current = reader.read(device)
            to_change, _ = ethtool.plan(current, wanted)
            added = [f for f in to_change if f not in record["features"]]
            if added:
                self._remember(record, current, added)
                devices[device] = record
                self._save(devices)  # before touching the device
            result = ethtool.apply_features(device, wanted, reader=reader)
            forced = [f for f in result.forced if f not in record["features"]]
            if forced:
                self._remember(record, current, forced)
                devices[device] = record
                self._save(devices)
        return result

    @staticmethod
    def _remember(record, current, shorts):
        before = current.as_onoff()
        for short in shorts:
            record["features"][short] = before[short]
        for bit, value in ethtool.requested_bits(current, shorts).items():
            record["requested"].setdefault(bit, value)

    def restore(self, device, features=None, owner=None):
        """Put recorded values back, forget them; ApplyResult.

        owner: as for apply; another owner's record is dropped, not
        restored.

        `features`: restore only these short names (the rest stays
        recorded), e.g. when a policy stops covering them; None = all.
        Requests are restored exactly (recorded kernel bits). A feature
        whose requests are back as recorded counts as restored even if
        the kernel still holds it (a dependency of a feature still wanted,
        e.g. tso while tx stays off): it returns by itself when that one
        is restored. A device with no record is left alone (ran_command
        False). Features that fail to restore stay recorded. DeviceError
        if the device is gone (the record is kept; see forget()).
        """
        ethtool.check_device(device)
        with self._locked():
            devices = self._load()
            record = self._owned(devices.get(device), owner)
            if record is None and devices.pop(device, None) is not None:
                self._save(devices)  # another owner's past: not ours
            chosen = dict((f, v) for f, v in (record or {}).get(
                "features", {}).items() if features is None or f in features)
            if record is None or not chosen:
                return ethtool.ApplyResult(device, {}, {}, {})
            bits = dict((b, v) for b, v in record["requested"].items()
                        if short_for_kernel_bit(b) in chosen)
            result = ethtool.restore_features(device, chosen, bits)
            if features is not None:
                self._accept_held(device, result, bits)
            done = [f for f in chosen
                    if result.features.get(f) != ethtool.FAILED]
            for short in done:
                record["features"].pop(short, None)
            record["requested"] = dict(
                (b, v) for b, v in record["requested"].items()
                if short_for_kernel_bit(b) not in done)
            if record["features"]:
                devices[device] = record
            else:
                devices.pop(device, None)
            self._save(devices)
        get_logger().info("%s: restored %s", device, ", ".join(
            "%s %s" % (f, chosen[f]) for f in sorted(done)))
        return result

    @staticmethod
    def _accept_held(device, result, bits):
        """FAILED -> FORCED where every recorded request is back: the
        kernel holds the feature for another one that stays changed."""
        failed = [f for f, st in result.features.items()
                  if st == ethtool.FAILED]
        if not failed:
            return
        current = ethtool.read_features(device)
        for short in failed:
            mine = dict((b, v) for b, v in bits.items()
                        if short_for_kernel_bit(b) == short)
            now = ethtool.requested_bits(current, [short])
            if mine and all(now.get(b) == v for b, v in mine.items()):
                result.features[short] = ethtool.FORCED
                result.forced[short] = result.after.get(short)

    def forget(self, device):
        """Drop the record of a device (e.g. one that no longer exists)."""
        return bool(self.forget_many([device]))

    def forget_many(self, names):
        """Drop the records of these devices; the ones that had a record."""
        names = set(names)
        if not names or not os.path.exists(self.path):
            return []
        with self._locked():
            devices = self._load()
            gone = sorted(d for d in names if devices.pop(d, None) is not None)
            if gone:
                self._save(devices)
        return gone
