"""Target selection: which VIFs and PIFs a target names.

`select(records, spec, host_ref, pool_wide)` -> `Selection` for a `Target`
`ALL | vm= | tag= | network= | pif=`; `NotFound` / `Ambiguous` otherwise.
"""
from collections import namedtuple

from netoffload.errors import Ambiguous, NotFound
from netoffload.pool.records import eligible_vifs, is_eligible_vm

# Target kinds: target=ALL and the argument names of the others.
TARGET_ALL = "all"
TARGET_VM = "vm"
TARGET_TAG = "tag"
TARGET_NETWORK = "network"
TARGET_PIF = "pif"

# What a plugin call names: kind is one of TARGET_*, value the argument's.
Target = namedtuple("Target", "kind value")


class Selection(object):
    """The objects a target names: VIF refs, PIF refs, and what it was."""

    def __init__(self, kind, value, vifs=(), pifs=(), object_ref=None):
        self.kind = kind          # one of TARGET_*
        self.value = value
        self.vifs = list(vifs)
        self.pifs = list(pifs)
        self.object_ref = object_ref  # the VM or network ref, if one

    @property
    def refs(self):
        return self.vifs + self.pifs

    def to_json(self):
        return {"kind": self.kind, "value": self.value,
                "vifs": len(self.vifs), "pifs": len(self.pifs)}


def find_by_name_or_uuid(table, value, what, eligible=None):
    """The ref whose uuid or name_label is `value`; NotFound / Ambiguous."""
    candidates = [ref for ref, rec in table.items()
                  if eligible is None or eligible(rec)]
    for ref in candidates:
        if table[ref].get("uuid") == value:
            return ref
    matches = sorted((ref for ref in candidates
                      if table[ref].get("name_label") == value),
                     key=lambda r: table[r].get("uuid", ""))
    if not matches:
        raise NotFound("no %s has the name-label or uuid %r" % (what, value),
                       value)
    if len(matches) > 1:
        raise Ambiguous("%d %ss are named %r; use a uuid" % (
            len(matches), what, value), *[table[r].get("uuid") for r in matches])
    return matches[0]


def select(records, spec, host_ref=None, pool_wide=False):
    """Selection for a target spec (kind, value), e.g. a `Target`.

    pif=DEV names the PIFs with that device on this host, or on every host
    when pool_wide.
    """
    kind, value = spec
    vifs = eligible_vifs(records)
    if kind == TARGET_ALL:
        return Selection(kind, value, vifs, sorted(records.pifs))
    if kind == TARGET_VM:
        vm_ref = find_by_name_or_uuid(records.vms, value, "VM",
                                      is_eligible_vm)
        return Selection(kind, value, records.vifs_of_vm(vm_ref),
                         object_ref=vm_ref)
    if kind == TARGET_TAG:
        tagged = set(ref for ref, vm in records.vms.items()
                     if is_eligible_vm(vm) and value in (vm.get("tags") or []))
        return Selection(kind, value, [v for v in vifs
                                       if records.vifs[v].get("VM") in tagged])
    if kind == TARGET_NETWORK:
        net_ref = find_by_name_or_uuid(records.networks, value, "network")
        return Selection(kind, value, [v for v in vifs if records.vifs[v].get(
            "network") == net_ref], object_ref=net_ref)
    if kind == TARGET_PIF:
        pifs = sorted(ref for ref, pif in records.pifs.items()
                      if pif.get("device") == value
                      and (pool_wide or pif.get("host") == host_ref))
        if not pifs:
            raise NotFound("no PIF with device %r%s" % (
                value, "" if pool_wide else " on this host"), value)
        return Selection(kind, value, pifs=pifs)
    raise NotFound("unknown target kind %r" % kind)
