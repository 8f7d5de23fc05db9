"""Target selection: which VIFs and PIFs a target names.

`select(records, spec, host_ref, pool_wide)` -> `Selection` for a `Target`
`ALL | vm= | tag= | network= | pif=`; `NotFound` / `Ambiguous` otherwise.

Selection is exact:
- `pif=eth0` names the untagged PIF with device eth0 only; a VLAN PIF
  carries its tagged PIF's device (xapi_vlan.ml), so it is named
  `pif=eth0.100` (device.VLAN), whatever its kernel device is called
  (under openvswitch a VLAN is a fake bridge, not eth0.100);
- a VIF on an SR-IOV network has no dom0 device (a VF is passed to the
  guest) and xapi applies no ethtool key to it: it is not selected, and
  is listed in `Selection.skipped` with the reason; so is the SR-IOV
  logical PIF, which carries its NIC's device name (VLAN -1) but is no
  device of its own (the NIC is the physical PIF);
- a `tag=` that no VM carries and no policy names, a `network=` that no
  network has, is NotFound: a typo never reads as "nothing to do".
"""
import re
from collections import namedtuple

from netoffload.errors import Ambiguous, NotFound
from netoffload.pool import keys
from netoffload.pool.records import (
    as_int,
    eligible_vifs,
    is_eligible_vm,
    is_sriov_logical_pif,
    is_sriov_vif,
    sriov_networks,
)

# Target kinds: target=ALL and the argument names of the others.
TARGET_ALL = "all"
TARGET_VM = "vm"
TARGET_TAG = "tag"
TARGET_NETWORK = "network"
TARGET_PIF = "pif"

# What a plugin call names: kind is one of TARGET_*, value the argument's.
Target = namedtuple("Target", "kind value")

# Why a VIF in reach of a target is not selected.
SKIPPED_SRIOV = "sr-iov"

# `pif=<device>.<VLAN>`: 802.1Q tags are 0..4094 (xapi refuses others).
_VLAN_FORM = re.compile(r"^(.+)\.([0-9]{1,4})$")
MAX_VLAN = 4094


class SkippedObject(namedtuple("SkippedObject", "cls ref uuid label reason")):
    """An object in reach of a target that is left out, and why."""
    __slots__ = ()

    def to_json(self):
        return {"class": self.cls, "uuid": self.uuid, "label": self.label,
                "reason": self.reason}


class Selection(object):
    """The objects a target names: VIF refs, PIF refs, and what it was."""

    def __init__(self, kind, value, vifs=(), pifs=(), object_ref=None,
                 skipped=()):
        self.kind = kind          # one of TARGET_*
        self.value = value
        self.vifs = list(vifs)
        self.pifs = list(pifs)
        self.object_ref = object_ref  # the VM or network ref, if one
        self.skipped = list(skipped)  # [SkippedObject], not in vifs

    @property
    def refs(self):
        return self.vifs + self.pifs

    @property
    def skipped_refs(self):
        return [s.ref for s in self.skipped]

    def to_json(self):
        result = {"kind": self.kind, "value": self.value,
                  "vifs": len(self.vifs), "pifs": len(self.pifs)}
        if self.skipped:
            result["skipped"] = [s.to_json() for s in self.skipped]
        return result


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


def _split(refs, skipped_if, skipped_object):
    kept, skipped = [], []
    for ref in refs:
        if skipped_if(ref):
            skipped.append(skipped_object(ref))
        else:
            kept.append(ref)
    return kept, skipped


def split_sriov(records, vif_refs):
    """(VIF refs with a dom0 device, [SkippedObject] on SR-IOV networks)."""
    sriov = sriov_networks(records)
    return _split(vif_refs, lambda ref: is_sriov_vif(records, ref, sriov),
                  lambda ref: SkippedObject(
                      "VIF", ref, records.vifs[ref].get("uuid", ""),
                      records.vif_label(ref), SKIPPED_SRIOV))


def split_sriov_pifs(records, pif_refs):
    """(PIF refs, [SkippedObject] SR-IOV logical PIFs)."""
    return _split(pif_refs,
                  lambda ref: is_sriov_logical_pif(records.pifs[ref]),
                  lambda ref: SkippedObject(
                      "PIF", ref, records.pifs[ref].get("uuid", ""),
                      records.pif_label(ref), SKIPPED_SRIOV))


def tagged_vifs(records, tag):
    """VIF refs of the eligible VMs carrying `tag` (SR-IOV ones included)."""
    tagged = set(ref for ref, vm in records.vms.items()
                 if is_eligible_vm(vm) and tag in (vm.get("tags") or []))
    return [v for v in eligible_vifs(records)
            if records.vifs[v].get("VM") in tagged]


def network_vifs(records, net_ref):
    """VIF refs of eligible VMs on a network (SR-IOV ones included)."""
    return [v for v in eligible_vifs(records)
            if records.vifs[v].get("network") == net_ref]


def tag_is_known(records, tag):
    """Does an eligible VM carry `tag`, or a pool policy name it?"""
    if keys.tag_key(tag) in records.pool_other_config:
        return True
    return any(is_eligible_vm(vm) and tag in (vm.get("tags") or [])
               for vm in records.vms.values())


def parse_pif_name(value):
    """`eth0` -> ("eth0", -1); `eth0.100` -> ("eth0", 100): the device
    and VLAN a pif= value names."""
    match = _VLAN_FORM.match(value)
    if match and int(match.group(2)) <= MAX_VLAN:
        return match.group(1), int(match.group(2))
    return value, -1


def pifs_named(records, value, host_ref=None, pool_wide=False):
    """PIF refs a pif= value names, on host_ref (or every host when
    pool_wide): the untagged PIF for `eth0`, the VLAN PIF for `eth0.100`."""
    device, vlan = parse_pif_name(value)
    return split_sriov_pifs(records, sorted(
        ref for ref, pif in records.pifs.items()
        if pif.get("device") == device and as_int(pif.get("VLAN")) == vlan
        and (pool_wide or pif.get("host") == host_ref)))[0]


def select(records, spec, host_ref=None, pool_wide=False):
    """Selection for a target spec (kind, value), e.g. a `Target`.

    pif=DEV names the PIFs with that device on this host, or on every host
    when pool_wide.
    """
    kind, value = spec
    if kind == TARGET_ALL:
        vifs, skipped = split_sriov(records, eligible_vifs(records))
        pifs, logical = split_sriov_pifs(records, sorted(records.pifs))
        return Selection(kind, value, vifs, pifs, skipped=skipped + logical)
    if kind == TARGET_VM:
        vm_ref = find_by_name_or_uuid(records.vms, value, "VM",
                                      is_eligible_vm)
        vifs, skipped = split_sriov(records, records.vifs_of_vm(vm_ref))
        return Selection(kind, value, vifs, object_ref=vm_ref,
                         skipped=skipped)
    if kind == TARGET_TAG:
        if not tag_is_known(records, value):
            raise NotFound("no VM carries the tag %r and no policy names it"
                           % value, value)
        vifs, skipped = split_sriov(records, tagged_vifs(records, value))
        return Selection(kind, value, vifs, skipped=skipped)
    if kind == TARGET_NETWORK:
        net_ref = find_by_name_or_uuid(records.networks, value, "network")
        vifs, skipped = split_sriov(records, network_vifs(records, net_ref))
        return Selection(kind, value, vifs, object_ref=net_ref,
                         skipped=skipped)
    if kind == TARGET_PIF:
        pifs = pifs_named(records, value, host_ref, pool_wide)
        if not pifs:
            device, vlan = parse_pif_name(value)
            what = "VLAN %d on device %r" % (vlan, device) if vlan >= 0 \
                else "untagged PIF with device %r" % device
            raise NotFound("no %s%s (a VLAN PIF is named DEVICE.VLAN, "
                           "e.g. eth0.100)" % (
                               what, "" if pool_wide else " on this host"),
                           value)
        return Selection(kind, value, pifs=pifs)
    raise NotFound("unknown target kind %r" % kind)
