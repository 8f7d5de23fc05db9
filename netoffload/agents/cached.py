"""Bring one device into policy from the local cache, without XAPI.

What the udev helper does at bring-up, and what the boot unit does for
every device when XAPI is down. A guest device (vif/tap<domid>.<devid>) is
mapped to its VM through xenstore (/local/domain/<domid>/vm ->
/vm/<vm-uuid>), a PIF device is looked up by name; the cached desired
features are applied through LiveStateStore, so that revert can restore
the device. A device the cache does not list is left alone.

This is on the udev helper's path: keep its imports light (no re; the
runner, for xenstore-read, and the pool's keys only for a guest device;
runner.run_small: no subprocess import).
"""
from netoffload.agents import cache
from netoffload.engine import devices
from netoffload.errors import DeviceError, NotFound

XENSTORE_TIMEOUT = 3.0
XENSTORE_READ = "xenstore-read"


def _xenstore_read(path):
    from netoffload import runner  # noqa: PLC0415 (start-up: module doc)
    done = runner.run_small([XENSTORE_READ, path], timeout=XENSTORE_TIMEOUT)
    if done.returncode != 0:
        raise NotFound("xenstore has no %s (%s)" % (
            path, done.stderr.strip() or "exit %d" % done.returncode))
    return done.stdout.strip()


def vm_uuid_of_domain(domid):
    """The uuid of the VM running as domain domid, from xenstore."""
    return _vm_uuid_from(domid, _xenstore_read("/local/domain/%d/vm" % domid))


def _vm_uuid_from(domid, vm_path):
    """The VM uuid from the value of /local/domain/<domid>/vm."""
    uuid = vm_path[4:] if vm_path.startswith("/vm/") else None
    if uuid is None or not cache.is_uuid(uuid):
        # not the usual /vm/<uuid>: ask that node for its uuid, as vif-real does
        if not vm_path.startswith("/vm/") or ".." in vm_path:
            raise NotFound("domain %d: unexpected vm path %r" % (domid, vm_path[:80]))
        uuid = _xenstore_read(vm_path + "/uuid")
        if not cache.is_uuid(uuid):
            raise NotFound("domain %d: %s/uuid is not a uuid" % (domid, vm_path))
    return uuid.lower()


def _summary(result):
    """'changed tx,sg; unchanged rx; fixed lro' from an ApplyResult."""
    by_status = {}
    for feature, status in sorted(result.features.items()):
        by_status.setdefault(status, []).append(feature)
    return "; ".join("%s %s" % (status, ",".join(names))
                     for status, names in sorted(by_status.items()))


class Target(object):
    """What the cache says for one device: `wanted` (None: no policy, left
    alone), its cache `entry`, the live-state `owner` of a guest device,
    and `what` it is, for the log."""
    __slots__ = ("device", "wanted", "entry", "owner", "what")

    def __init__(self, device, wanted, entry, owner, what):
        self.device = device
        self.wanted = wanted
        self.entry = entry
        self.owner = owner
        self.what = what

    def left_alone(self):
        return "%s: %s: no policy in the cache, left alone" % (self.device,
                                                               self.what)

    def line(self, result):
        """The line to log after `result` (an ApplyResult)."""
        outcome = "applied" if result.ok else "partly applied"
        return "%s: %s: %s %s from %s: %s" % (
            self.device, self.what, outcome,
            self.entry.get("policy") or "explicit keys",
            self.entry.get("source") or "explicit", _summary(result))


def target_of(device, loaded, vm_uuid=None):
    """The Target of device in the LocalCache `loaded`. vm_uuid: the guest
    device's VM when the caller looked it up already (else xenstore).
    NotFound (CacheUnusable among them) when it cannot tell."""
    guest = devices.parse_guest_device(device)
    if not guest:
        wanted, entry = loaded.pif(device)
        return Target(device, wanted, entry, None, "PIF")
    kind, domid, devid = guest
    from netoffload.pool import keys  # noqa: PLC0415 (a PIF needs no pool import)
    if vm_uuid is None:
        vm_uuid = vm_uuid_of_domain(domid)
    wanted, entry = loaded.vif(vm_uuid, devid)
    return Target(device, wanted, entry, keys.owner_key(vm_uuid, devid),
                  "%s of VM %s (%s) device %d" % (
                      kind, vm_uuid, (entry or {}).get("vm", "?"), devid))


def vm_uuids_of_domains(domids):
    """{domid: vm uuid or NotFound} with one xenstore-read for them all
    (the boot pass). xenstore-read prints each value in turn and stops at
    the first path it cannot read: the values before it count, that
    domain is looked up alone, and the batch goes on after it, so a
    missing domain costs one more process, not one per domain."""
    pending = sorted(set(domids))
    result = {}
    if not pending:
        return result
    from netoffload import runner  # noqa: PLC0415 (start-up: module doc)
    while pending:
        done = runner.run([XENSTORE_READ] + ["/local/domain/%d/vm" % d
                                             for d in pending],
                          timeout=XENSTORE_TIMEOUT + len(pending) / 100.0)
        values = done.stdout.splitlines()
        read = len(pending) if done.returncode == 0 else \
            min(len(values), len(pending) - 1)
        for domid, value in zip(pending[:read], values):
            try:
                result[domid] = _vm_uuid_from(domid, value.strip())
            except NotFound as err:
                result[domid] = err
        if read == len(pending):
            break
        failed = pending[read]
        try:  # alone: its own error message
            result[failed] = vm_uuid_of_domain(failed)
        except NotFound as err:
            result[failed] = err
        pending = pending[read + 1:]
    return result


def enforce_device(device, loaded, state_dir=None):
    """Apply the policy that the LocalCache `loaded` holds for device;
    return the line to log. NotFound (CacheUnusable among them) or
    DeviceError when it cannot."""
    target = target_of(device, loaded)
    if target.wanted is None:
        return target.left_alone()
    # imported only once there is work to do: a device without policy
    # costs the udev helper no livestate/ethtool import
    from netoffload.engine import livestate  # noqa: PLC0415
    result = livestate.LiveStateStore(state_dir).apply(
        device, target.wanted, owner=target.owner)
    return target.line(result)


def reenforce(device, state_dir=None):
    """Bring device back into the cached policy at once (after `netoffload
    restore` ended an admin's hold): the line to show. The cache is all it
    reads; without one, or for a device it cannot map, it says why."""
    try:
        with cache.open_lookup(state_dir) as lookup:
            return enforce_device(device, lookup, state_dir)
    except (NotFound, DeviceError) as err:  # CacheUnusable is a NotFound
        return "%s: not re-enforced: %s" % (device, err.message)
