"""The watcher plans one VIF of each group that shares every planning
input (watch.Watcher._needing_plans); the rest of a group whose plan
writes nothing is not planned. No session: a snapshot of trimmed records."""
from netoffload.agents import watch, watch_events
from netoffload.pool import keys, planning
from netoffload.pool.records import PoolRecords

POOL = "OpaqueRef:pool"
NET = "OpaqueRef:net"
SIX = ("rx", "tx", "sg", "tso", "ufo", "gso")
IN_POLICY = dict([("ethtool-" + f, "off") for f in SIX] + [
    (keys.KEY_BOOK, keys.Book(
        dict((f, keys.Entry(None, "off", None)) for f in SIX),
        op="0123456789abcdef", gen=1).to_text())])


def _records(vifs_by_vm):
    """vifs_by_vm: {vm name: (tags, vm other_config, [vif other_config])}."""
    trim = watch_events.trim
    vms, vifs = {}, {}
    for name, (tags, vm_config, configs) in sorted(vifs_by_vm.items()):
        vm_ref = "OpaqueRef:vm-" + name
        vms[vm_ref] = trim("vm", {
            "uuid": "00000000-0000-0000-0000-%012d" % len(vms),
            "name_label": name, "other_config": vm_config, "tags": tags,
            "is_a_template": False, "is_a_snapshot": False,
            "is_control_domain": False, "power_state": "Halted",
            "resident_on": "OpaqueRef:NULL", "domid": "-1"})
        for dev, config in enumerate(configs):
            vifs["OpaqueRef:vif-%s-%d" % (name, dev)] = trim("vif", {
                "uuid": "vif-%s-%d" % (name, dev), "device": str(dev),
                "VM": vm_ref, "network": NET, "other_config": config,
                "currently_attached": False})
    return PoolRecords(
        pool={POOL: trim("pool", {"uuid": "p", "name_label": "", "master":
                                  "OpaqueRef:h", "other_config": {
                                      "netoffload-vif": "all-off"}})},
        hosts={}, networks={NET: trim("network", {
            "uuid": "n", "name_label": "n", "other_config": {}})},
        pifs={}, vms=vms, vifs=vifs)


def test_only_what_may_write_is_planned_and_nothing_is_missed(tmp_path):
    records = _records({
        "a": ([], {}, [IN_POLICY] * 5),
        "b": ([], {}, [IN_POLICY, {}, {}]),            # two fresh VIFs
        "c": (["web"], {}, [IN_POLICY, IN_POLICY]),     # tags: a group apart
        "d": ([], {"netoffload-vif": "none"}, [IN_POLICY] * 2),
    })
    watcher = watch.Watcher(state_dir=str(tmp_path))
    watcher.records = records
    refs = sorted(records.vifs)
    planned, quiet = watcher._needing_plans(refs)
    assert sorted(planned + quiet) == refs
    # what planning every VIF would write, exactly
    writes = dict((p.ref, p.writes) for p in planning.plan_db(records, refs))
    assert all(not writes[ref] for ref in quiet)
    assert set(ref for ref in refs if writes[ref]) <= set(planned)
    # the fresh VIFs and the opted-out VM's (its plan gives keys back)
    assert {"OpaqueRef:vif-b-1", "OpaqueRef:vif-b-2"} <= set(planned)
    assert set(r for r in refs if r.startswith("OpaqueRef:vif-d-")) <= \
        set(planned)
    assert {"OpaqueRef:vif-a-0", "OpaqueRef:vif-c-1"} <= set(quiet)


class _Log(object):
    """The watcher's logger, recording what it is given."""

    def __init__(self):
        self.lines = []

    def __getattr__(self, level):
        return lambda text, *args: self.lines.append(
            (level, text % args if args else text))


def test_a_broken_policy_over_whole_groups_is_still_warned_once(tmp_path):
    """docs/policy.md: the watcher logs one warning per broken key. Over
    groups of VIFs sharing every map (a full sync of a pool past
    PLAN_SLICE VIFs) only one VIF of a group is planned, and its plan
    writes nothing under a broken policy: the warning is still given."""
    count = watch.PLAN_SLICE + 10
    records = _records(dict(
        ("vm%03d" % n, ([], {"netoffload-vif": "tx=of"}, [{}, {}]))
        for n in range(count // 2 + 1)))
    watcher = watch.Watcher(state_dir=str(tmp_path))
    watcher.records, watcher.host_ref = records, "OpaqueRef:h"
    watcher.log = _Log()
    refs = set(records.vifs)
    assert len(refs) >= watch.PLAN_SLICE and watcher.is_master
    watcher._reconcile(refs)
    warned = [text for level, text in watcher.log.lines
              if level == "warning" and "invalid policy" in text]
    assert len(warned) == 1 and "'tx=of'" in warned[0], watcher.log.lines
    watcher._reconcile(refs)  # one per broken key, not one per pass
    assert len([text for _, text in watcher.log.lines
                if "invalid policy" in text]) == 1
