"""The boot unit: refresh the local cache from XAPI, then enforce every device.

Installed as /usr/libexec/netoffload/netoffload-boot and run once per boot
by netoffload-boot.service, after xapi-init-complete.target.

- With XAPI: one local session, one snapshot of the pool, the cache written
  (netoffload.agents.cache_writer), then `enforce.enforce_live` on this host's PIF
  devices and the vif/tap devices of its running VMs.
- Without XAPI (it failed to start, the socket is gone, or it fails a
  call after the login: still starting, or going away mid-snapshot): every
  local device is enforced from the existing cache (netoffload.agents.cached,
  as the udev helper does), and the log says why.
- Before enforcing, the live-state records of vif/tap devices that do not
  exist are forgotten: no guest survives a dom0 boot, and domids restart
  at 1, so such a record would be taken for a new VM's past. (Records of
  guest devices that already exist are kept: a VM xapi started meanwhile
  may have been recorded by the udev helper; their owner tells them apart.)
- `--refresh-only`: write the cache and stop (the RPM scriptlet primes the
  cache this way); XAPI being down is then logged and not an error.

Exit status: 0 all done, 1 something failed (logged), 2 bad usage.
"""
import argparse
import sys

from netoffload import exitcodes
from netoffload.agents import cache, cache_writer, cached
from netoffload.engine import devices, ethtool, livestate
from netoffload.errors import DeviceError, NetoffloadError, NotFound, XapiError
from netoffload.log import get_logger
from netoffload.pool import enforce, xapi


def refresh_cache(session, directory=None):
    """Snapshot the pool and write this host's cache: (records, host_ref,
    data, write error text or None). A cache that cannot be written (disk
    full, a bad state directory) does not stop enforcement from XAPI."""
    client = xapi.Xapi(session)
    host_ref = client.local_host_ref()
    records = client.snapshot()
    data = cache_writer.build(records, host_ref)
    try:
        cache_writer.write(data, directory)
    except DeviceError as err:  # the state directory itself (statedir.ensure)
        return records, host_ref, data, err.message
    except (IOError, OSError) as err:
        return records, host_ref, data, "%s: %s" % (
            getattr(err, "filename", None) or cache.cache_path(directory),
            err.strerror or err)
    return records, host_ref, data, None


def enforce_from_xapi(records, host_ref, directory=None):
    """[enforce.DeviceOutcome] from enforce.enforce_live, in one batch:
    every device's policy applied first with one write of the live-state
    record and one request per device (LiveStateStore.apply_many), then
    enforce_live under the same lock finds them in policy and restores
    what a policy no longer wants. An outcome carries the request that
    changed its device."""
    store = livestate.LiveStateStore(directory)
    with store.batch():
        present = set(ethtool.list_devices())
        applied = store.apply_many(
            (d.device, d.resolution.live_features, d.owner)
            for d in enforce.local_devices(records, host_ref)
            if d.device in present and d.resolution.live_features
            and not d.resolution.error)
        outcomes = enforce.enforce_live(records, host_ref, store)
    for outcome in outcomes:
        first = applied.get(outcome.device)
        if isinstance(first, ethtool.ApplyResult) and first.ran_command \
                and outcome.result is not None \
                and not outcome.result.ran_command:
            outcome.result = first
    return outcomes


def enforce_from_cache(directory=None):
    """Apply the cache to every local device it covers, in one batch (one
    xenstore-read for every domain, one write of the live-state record):
    [(device, ok, line or error)]."""
    # the whole cache, parsed once: for every device of a host that is
    # cheaper than a bucket of the index per device
    return _enforce_from(cache.load(directory), directory)


def _enforce_from(loaded, directory):
    """enforce_from_cache with the cache open."""
    present = ethtool.list_devices()
    guests = dict((d, devices.parse_guest_device(d)) for d in present)
    uuids = cached.vm_uuids_of_domains(
        g[1] for g in guests.values() if g is not None)
    results = []
    targets = []
    for device in present:
        guest = guests[device]
        try:
            if guest is None:
                if loaded.pif(device) == (None, None):
                    continue
                target = cached.target_of(device, loaded)
            else:
                vm_uuid = uuids[guest[1]]
                if isinstance(vm_uuid, NotFound):
                    raise vm_uuid
                target = cached.target_of(device, loaded, vm_uuid)
        except (NotFound, DeviceError) as err:
            results.append((device, False, err.message))
            continue
        if target.wanted is None:
            results.append((device, True, target.left_alone()))
        else:
            targets.append(target)
    applied = livestate.LiveStateStore(directory).apply_many(
        (t.device, t.wanted, t.owner) for t in targets)
    for target in targets:
        result = applied[target.device]
        if isinstance(result, DeviceError):
            results.append((target.device, False, result.message))
        else:
            results.append((target.device, True, target.line(result)))
    return results


def forget_departed_guests(directory=None):
    """Forget the live-state records of vif/tap devices that are gone."""
    store = livestate.LiveStateStore(directory)
    present = set(ethtool.list_devices())
    return store.forget_many(
        d for d in store.owners()
        if devices.parse_guest_device(d) is not None and d not in present)


def _summarise_live(results):
    applied = [r for r in results
               if r.action in (enforce.ACTION_APPLY, enforce.ACTION_RESTORE)]
    changed = [r for r in applied if r.ran_command]
    failed = [r for r in results if r.failed]
    return len(applied), len(changed), failed


def _fall_back_to_cache(log, directory):
    """Enforce every local device from the existing cache: the exit status."""
    try:
        results = enforce_from_cache(directory)
    except cache.CacheUnusable as cache_err:
        log.warning("boot: nothing enforced: %s", cache_err.message)
        return exitcodes.PARTIAL
    failed = [r for r in results if not r[1]]
    for device, _, message in failed:
        log.warning("boot: %s: %s", device, message)
    log.info("boot: enforced %d devices from the cache, %d failed",
             len(results), len(failed))
    return exitcodes.PARTIAL if failed else exitcodes.OK


def _refreshed(log, session, directory):
    """(records, host_ref, cache error or None) after writing the cache;
    XapiError when xapi fails after login (still starting, or going away)."""
    records, host_ref, data, cache_error = refresh_cache(session, directory)
    if cache_error:
        log.error("boot: cache not written (%s); enforcing from XAPI",
                  cache_error)
    else:
        log.info("boot: cache refreshed: %d PIFs, %d VIFs",
                 len(data["pifs"]), len(data["vifs"]))
    return records, host_ref, cache_error


def refresh_only(directory=None):
    """--refresh-only (the RPM scriptlet): write the cache, touch nothing."""
    log = get_logger()
    try:
        session = xapi.open_session()
    except XapiError as err:
        log.warning("boot: xapi unreachable (%s), cache not refreshed",
                    err.message)
        return exitcodes.OK
    try:
        _, _, cache_error = _refreshed(log, session, directory)
    except XapiError as err:
        log.warning("boot: xapi failed after login (%s), cache not refreshed",
                    err.message)
        return exitcodes.OK
    finally:
        xapi.close_session(session)
    return exitcodes.PARTIAL if cache_error else exitcodes.OK


def _prune_departed_guests(log, directory):
    try:
        gone = forget_departed_guests(directory)
    except DeviceError as err:
        log.warning("boot: live-state records not pruned: %s", err.message)
        return
    if gone:
        log.info("boot: forgot the live-state records of %d departed "
                 "guest devices (%s)", len(gone), ", ".join(gone[:10]))


def run(directory=None):
    """The boot pass: refresh the cache and enforce every device from XAPI,
    or from the cache when XAPI cannot be used."""
    log = get_logger()
    _prune_departed_guests(log, directory)
    try:
        session = xapi.open_session()
    except XapiError as err:
        log.warning("boot: xapi unreachable (%s); enforcing from the cache",
                    err.message)
        return _fall_back_to_cache(log, directory)
    try:
        records, host_ref, cache_error = _refreshed(log, session, directory)
        results = enforce_from_xapi(records, host_ref, directory)
    except XapiError as err:
        log.warning("boot: xapi failed after login (%s); enforcing from the "
                    "cache", err.message)
        return _fall_back_to_cache(log, directory)
    finally:
        xapi.close_session(session)
    enforced, changed, failed = _summarise_live(results)
    for entry in failed:
        log.warning("boot: %s: %s", entry.device,
                    "; ".join(entry.errors or ["failed"]))
    log.info("boot: %d devices enforced, %d changed, %d failed",
             enforced, changed, len(failed))
    return exitcodes.PARTIAL if failed or cache_error else exitcodes.OK


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="netoffload-boot",
        description="Refresh the netoffload cache from XAPI and enforce the "
                    "offload policy on every device of this host.")
    parser.add_argument("--refresh-only", action="store_true",
                        help="only write the cache (used by the RPM scriptlet)")
    args = parser.parse_args(argv)
    try:
        return refresh_only() if args.refresh_only else run()
    except NetoffloadError as err:
        get_logger().warning("boot: %s: %s", err.code, err.message)
        return exitcodes.PARTIAL
    except (IOError, OSError) as err:  # the state directory: logged, no traceback
        get_logger().error("boot: %s: %s", getattr(err, "filename", None)
                           or "state directory", err.strerror or err)
        return exitcodes.PARTIAL


if __name__ == "__main__":
    from netoffload import textio
    textio.utf8_process()  # UTF-8 argv and stdio on any dom0 locale
    sys.exit(main())
