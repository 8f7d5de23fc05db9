"""The record of live state: what each feature was before we first changed it.

`LiveStateStore.apply` records the prior value of every feature it is about
to change (only the first time: a second policy must not overwrite the
original), then applies. Features the kernel turned as a dependency are
not recorded: their requests did not change, so they come back with the
feature they depend on (a record of them would look like a restore still
owed). `restore` puts the recorded requests back and forgets them.

A guest device's name (vif<domid>.<devid>) is reused once domids restart
after a dom0 reboot, so its record carries an `owner` ("<vm-uuid>/<devid>").
A record owned by someone else is treated as no record: it is replaced on
apply, and never restored onto the new owner's device. A record with no
owner (older format) is adopted by the first owner that names it.

A device an admin changed with `netoffload set` is *held*: its record
carries `held` {"by": "set", "wanted", "features", "requested", "added",
"since"}, the state from just before the first `set` (so `release`, what
`netoffload restore DEV` runs, undoes exactly what `set` did and nothing
of the policy's), and which features `set` was the first to record in the
device's own record (those go with the hold). The watcher leaves held
devices alone (`held_devices()`).

One JSON file, `live-state.json`, in the state directory (default
/var/lib/netoffload, or $NETOFFLOAD_STATE_DIR): directory 0700, file 0600,
written atomically (temp file, fsync, rename, fsync of the directory) under
an exclusive flock, because the udev helper, the watcher and the plugin may
run at the same time. A record that does not parse is never overwritten
nor dropped: `check()` says so before a caller changes anything, and
`set_aside()` moves it to live-state.json.corrupt-<time> for a revert that
must go on without it.
"""
import errno
import os
import time

from netoffload import paths, statedir
from netoffload.engine import ethtool, jsonlite
from netoffload.engine.features import FEATURES, short_for_kernel_bit, value_or_none
from netoffload.errors import DeviceError
from netoffload.log import get_logger

STATE_FILE = "live-state.json"
LOCK_FILE = "live-state.lock"
FORMAT_VERSION = 1
LOCK_TIMEOUT = 30.0
CORRUPT_SUFFIX = ".corrupt-"
HOLD_SET = "set"  # the holder: `netoffload set`


def atomic_write_json(path, data, mode=0o600):
    """Write JSON so that readers see the old or the new file, never half
    (the text json.dumps(sort_keys=True, separators=(",", ":")) gives:
    compact, by json's C encoder without the json import, through
    jsonlite; a few microseconds where an indented record took the udev
    helper a pure Python encoding on every bring-up).

    The file is fsynced before the rename (never an empty record after a
    power loss), the directory is not: the live state it describes does
    not survive a reboot either, so a rename lost with it (the previous
    record back) costs nothing, while the fsync would cost every udev
    bring-up milliseconds.

    DeviceError naming the file (a full disk with its own message)."""
    text = jsonlite.dumps_compact(data)
    try:
        statedir.atomic_write(path, text + "\n", mode, sync_dir=False)
    except (IOError, OSError) as err:
        raise statedir.write_error(path, err) from err


def corrupt_message(path, why):
    """What a caller is told about a live-state record that does not parse."""
    return ("the live-state record %s is corrupt (%s). netoffload will not "
            "overwrite it: it is what remembers how the devices were before "
            "netoffload changed them. To fix: restore it from a backup; or "
            "run `netoffload revert ALL`, which sets it aside as %s%s<time> "
            "(kept for you to read) and restores the database and every "
            "device it still can" % (path, why, os.path.basename(path),
                                     CORRUPT_SUFFIX))


def _hold_from(raw):
    """A held sub-record as loaded, or None."""
    if not isinstance(raw, dict):
        return None
    wanted = _onoff_map(raw.get("wanted"), lambda f: f in FEATURES)
    added = raw.get("added")
    since = raw.get("since")
    return {
        "by": raw.get("by") if isinstance(raw.get("by"), str) else HOLD_SET,
        "wanted": wanted,
        "features": _onoff_map(raw.get("features"), lambda f: f in FEATURES),
        "requested": _onoff_map(raw.get("requested"),
                                lambda b: isinstance(b, str)),
        "added": sorted(f for f in added if f in FEATURES)
        if isinstance(added, list) else [],
        "since": since if isinstance(since, (int, float)) else None,
        "boot": raw.get("boot") if isinstance(raw.get("boot"), str) else None,
    }


def _holds_now(record):
    """Is the record's hold of this boot? A hold keeps the kernel state
    `set` made, which a reboot does not keep: the udev helper and the boot
    pass put the device back into policy, and the hold ends with the boot
    it was made in. (A hold without a boot id, older, is taken as this
    boot's.)"""
    held = record.get("held")
    if not held:
        return False
    boot = held.get("boot")
    return not boot or boot == paths.boot_id()


_CANONICAL = {"on": "on", "off": "off"}


def _onoff_map(raw, key_ok):
    """{key: 'on'|'off'} of the entries of raw whose key passes key_ok and
    whose value value_or_none takes. Every record is read whole on every
    bring-up, so what we wrote ourselves ('on'/'off') goes the short way."""
    if not isinstance(raw, dict):
        return {}
    result = {}
    canonical = _CANONICAL.get
    for key, value in raw.items():
        norm = canonical(value) if value.__class__ is str else None
        if norm is None:
            norm = value_or_none(value)
        if norm is not None and key_ok(key):
            result[key] = norm
    return result


class _Held(object):
    """The lock inside a batch: already held."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


class _Batch(object):
    """LiveStateStore.batch(): the lock taken once, the record kept."""

    def __init__(self, store):
        self.store = store
        self._lock = store._locked()

    def __enter__(self):
        if self.store._in_batch:
            raise RuntimeError("batches do not nest")
        self._lock.__enter__()
        self.store._in_batch = True
        self.store._batch = None
        return self.store

    def __exit__(self, *exc):
        self.store._in_batch = False
        self.store._batch = None
        return self._lock.__exit__(*exc)


def _new_record(owner):
    """A device's record before anything is remembered in it."""
    record = {"features": {}, "requested": {}}
    if owner is not None:
        record["owner"] = owner
    return record


class LiveStateStore(object):
    """Per device: `features` {short: value before our first change} and
    `requested` {kernel bit: what was requested before}, so that restore
    also undoes a request the kernel refused (it still shows as
    `[requested ...]`)."""

    def __init__(self, state_dir=None):
        self.state_dir = paths.state_dir(state_dir)
        self.path = os.path.join(self.state_dir, STATE_FILE)
        self._in_batch = False
        self._batch = None  # the record held in memory by batch()

    # -- storage ------------------------------------------------------------
    def _locked(self):
        if self._in_batch:
            return _Held()  # batch() holds the lock already
        return statedir.locked(
            os.path.join(self.state_dir, LOCK_FILE), LOCK_TIMEOUT,
            "the live-state record %s is locked by another netoffload "
            "process" % self.path)

    def batch(self):
        """`with store.batch():` many calls under one lock, the record read
        once and kept in memory (every change is still written before its
        device changes). The boot pass enforces every device this way."""
        return _Batch(self)

    def _load(self):
        if not self._in_batch:
            return self._read()
        if self._batch is None:
            self._batch = self._read()
        return self._batch

    def _read(self):
        try:
            with open(self.path, "rb") as handle:
                data = jsonlite.loads(handle.read().decode("utf-8"))
        except (IOError, OSError) as err:
            if err.errno == errno.ENOENT:
                return {}
            raise DeviceError("cannot read the live-state record %s: %s: "
                              "check its owner and mode (root, 0600)"
                              % (self.path, err.strerror), self.path) from err
        except ValueError as err:  # UnicodeDecodeError is one too
            # Never overwrite a record we cannot read: it may be all that
            # remembers the original state.
            raise DeviceError(corrupt_message(self.path, err),
                              self.path) from err
        devices = data.get("devices") if isinstance(data, dict) else None
        if not isinstance(devices, dict):
            raise DeviceError(corrupt_message(self.path, "no devices map"),
                              self.path)
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
            held = _hold_from(record.get("held"))
            if held is not None:
                result[device]["held"] = held
        return result

    def _save(self, devices):
        data = {"version": FORMAT_VERSION,
                "devices": dict((d, r) for d, r in devices.items()
                                if r.get("features") or r.get("held"))}
        try:
            atomic_write_json(self.path, data)
        except BaseException:
            self._batch = None  # in a batch: memory and file may differ
            raise

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
    def check(self):
        """DeviceError (naming live-state.json and the fix) unless the
        record is absent or parses. Reads only: no lock, nothing created
        (the record is replaced by rename, so a read sees a whole file)."""
        self._load()

    def set_aside(self):
        """Move a corrupt record to live-state.json.corrupt-<time> and
        return that path; None when there is no record or it parses (then
        nothing moves). What it remembered is kept there for the admin."""
        if not os.path.lexists(self.path):
            return None
        with self._locked():
            try:
                self._load()
                return None
            except DeviceError:
                if not os.path.lexists(self.path):
                    return None
            stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
            target = self.path + CORRUPT_SUFFIX + stamp
            serial = 1
            while os.path.lexists(target):
                serial += 1
                target = "%s%s%s.%d" % (self.path, CORRUPT_SUFFIX, stamp,
                                        serial)
            try:
                os.rename(self.path, target)
                statedir.fsync_dir(self.state_dir)
            except OSError as err:
                raise DeviceError("cannot set the corrupt live-state record "
                                  "%s aside: %s" % (self.path, err.strerror),
                                  self.path) from err
        get_logger().warning("the corrupt live-state record %s was set "
                             "aside as %s", self.path, target)
        return target

    def held_devices(self):
        """The devices an admin holds with `netoffload set` (until
        `netoffload restore`, or the next boot): the watcher and apply
        leave them alone."""
        if not os.path.exists(self.path):
            return set()
        return set(d for d, r in self._load().items() if _holds_now(r))

    def holds(self, owners=None):
        """{device: {"by", "wanted", "since"}} of every held device.

        owners: {device: owner}, as for recorded(): a listed device whose
        record belongs to another owner is not held (its hold was another
        VM's, on a name that came back with domids reused)."""
        if not os.path.exists(self.path):
            return {}
        owners = owners or {}
        return dict((d, {"by": r["held"]["by"],
                         "wanted": dict(r["held"]["wanted"]),
                         "since": r["held"]["since"]})
                    for d, r in self._load().items() if _holds_now(r)
                    and self._owned(r, owners.get(d)) is not None)

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
                record = _new_record(owner)
                if devices.pop(device, None) is not None:
                    self._save(devices)  # another owner's past: not ours
            current = reader.read(device)
            to_change, _ = ethtool.plan(current, wanted)
            added = [f for f in to_change if f not in record["features"]]
            if added:
                self._remember(record, current, added)
                devices[device] = record
                self._save(devices)  # before touching the device
            return ethtool.apply_features(device, wanted, reader=reader)

    def hold(self, device, wanted, owner=None):
        """`netoffload set`: apply `wanted` and hold the device (the
        watcher leaves it alone) until `release`.

        Two records: the device's own (what it was before netoffload
        first changed it, for revert) gains what it lacks, as apply does;
        the hold gets what each feature was just before the first `set`,
        so that release undoes exactly what `set` did."""
        ethtool.check_device(device)
        wanted = ethtool.check_wanted(wanted)
        with self._locked(), ethtool.Reader() as reader:
            devices = self._load()
            record = self._owned(devices.get(device), owner)
            if record is None:
                record = _new_record(owner)
            held = record.get("held") if _holds_now(record) else None
            if held is None:  # (a past boot's hold is replaced)
                held = record["held"] = {
                    "by": HOLD_SET, "wanted": {}, "features": {},
                    "requested": {}, "added": [], "since": time.time(),
                    "boot": paths.boot_id()}
            held["wanted"].update(wanted)
            current = reader.read(device)
            to_change, _ = ethtool.plan(current, wanted)
            self._remember_both(record, current, to_change)
            devices[device] = record
            self._save(devices)  # the hold, and priors before any change
            return ethtool.apply_features(device, wanted, reader=reader)

    def _remember_both(self, record, current, shorts):
        held = record["held"]
        added = [f for f in shorts if f not in record["features"]]
        self._remember(record, current, added)
        held["added"] = sorted(set(held["added"]) | set(added))
        self._remember(held, current,
                       [f for f in shorts if f not in held["features"]])

    def release(self, device):
        """`netoffload restore DEV`: undo what `set` did (the state from
        just before the first `set`, requests included) and end the hold.

        ApplyResult, or None when the device is not held (nothing
        changes). A feature that fails to go back stays held. The caller
        brings the device back into policy (the hold was all that kept it
        out)."""
        ethtool.check_device(device)
        with self._locked():
            devices = self._load()
            record = devices.get(device) or {}
            held = record.get("held")
            if held is None:
                return None
            if not _holds_now(record):  # a past boot's: nothing to undo
                del record["held"]
                self._save(devices)
                return None
            chosen = dict(held["features"])
            if chosen:
                result = ethtool.restore_features(device, chosen,
                                                  held["requested"])
            else:
                result = ethtool.ApplyResult(device, {}, {}, {})
            done = [f for f in chosen
                    if result.features.get(f) != ethtool.FAILED]
            for short in done:
                held["features"].pop(short, None)
            held["requested"] = dict(
                (b, v) for b, v in held["requested"].items()
                if short_for_kernel_bit(b) not in done)
            # what only `set` had recorded is back as it was: not the
            # policy's past any more
            for short in [f for f in held["added"] if f in done]:
                record["features"].pop(short, None)
                record["requested"] = dict(
                    (b, v) for b, v in record["requested"].items()
                    if short_for_kernel_bit(b) != short)
            held["added"] = [f for f in held["added"] if f not in done]
            if not held["features"]:
                del record["held"]
            if record["features"] or record.get("held"):
                devices[device] = record
            else:
                devices.pop(device, None)
            self._save(devices)
        get_logger().info("%s: released the hold of netoffload set%s",
                          device, "" if "held" not in record else
                          " (partly: %s stay held)"
                          % ", ".join(sorted(held["features"])))
        return result

    def apply_many(self, items):
        """apply() for many devices at once: [(device, wanted, owner)] ->
        {device: ApplyResult or DeviceError}.

        One lock, one read of the record and one write of it (every prior
        recorded before any device changes), then one request per device:
        the boot pass enforces a thousand devices this way instead of
        rewriting the record a thousand times. Bad input raises before
        anything (BadArgument); a device that fails is reported, the
        others still run."""
        checked = [(ethtool.check_device(d), ethtool.check_wanted(w), o)
                   for d, w, o in items]
        results = {}
        planned = []
        with self._locked(), ethtool.Reader() as reader:
            devices = self._load()
            changed = False
            for device, wanted, owner in checked:
                try:
                    current = reader.read(device)
                except DeviceError as err:
                    results[device] = err
                    continue
                record = self._owned(devices.get(device), owner)
                if record is None:
                    record = _new_record(owner)
                    changed = devices.pop(device, None) is not None or changed
                plan = ethtool.plan(current, wanted)
                added = [f for f in plan[0] if f not in record["features"]]
                if added:
                    self._remember(record, current, added)
                    devices[device] = record
                    changed = True
                planned.append((device, wanted, current, plan))
            if changed:
                self._save(devices)  # before touching any device
            for device, wanted, current, plan in planned:
                try:
                    results[device] = ethtool.apply_features(
                        device, wanted, reader=reader, current=current,
                        planned=plan)
                except DeviceError as err:
                    results[device] = err
        return results

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
        whose requests are back as recorded counts as restored (forced)
        even if the kernel still holds it (a dependency of a feature still
        wanted, e.g. tso while tx stays off): it returns by itself when
        that one is restored. A device with no record is left alone (ran_command
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
            done = [f for f in chosen
                    if result.features.get(f) != ethtool.FAILED]
            for short in done:
                record["features"].pop(short, None)
            record["requested"] = dict(
                (b, v) for b, v in record["requested"].items()
                if short_for_kernel_bit(b) not in done)
            if features is None:
                # back to before netoffload: before any `set` too
                record.pop("held", None)
            if record["features"] or record.get("held"):
                devices[device] = record
            else:
                devices.pop(device, None)
            self._save(devices)
        get_logger().info("%s: restored %s", device, ", ".join(
            "%s %s" % (f, chosen[f]) for f in sorted(done)))
        return result

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
