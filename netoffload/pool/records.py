"""The pool database as one call sees it, and the questions asked of it.

`PoolRecords` holds the dicts ref -> record exactly as XenAPI's
`get_all_records` returns them. The functions here answer record-level
questions: which VMs are real guests, where a VM runs, a PIF's kernel
device (which depends on this host's network backend).
"""
import collections

from netoffload import paths

# The XAPI classes the pack reads, in PoolRecords' constructor order:
# `name` as XenAPI spells it (VM.get_all_records), `event` as event.from
# names it (lower case), `table` the PoolRecords attribute holding it.
XapiClass = collections.namedtuple("XapiClass", "name event table")
CLASSES = (
    XapiClass("pool", "pool", "pool"),
    XapiClass("host", "host", "hosts"),
    XapiClass("network", "network", "networks"),
    XapiClass("PIF", "pif", "pifs"),
    XapiClass("VM", "vm", "vms"),
    XapiClass("VIF", "vif", "vifs"),
)
BY_NAME = dict((c.name, c) for c in CLASSES)
BY_EVENT = dict((c.event, c) for c in CLASSES)


def as_int(value, default=-1):
    """xapi sends int fields as strings ("-1"); accept both."""
    try:
        return int(str(value), 10)
    except (TypeError, ValueError):
        return default


class PoolRecords(object):
    """All records of one pool snapshot, with lookups."""

    def __init__(self, pool, hosts, networks, pifs, vms, vifs,
                 host_metrics=None):
        self.pool = pool or {}
        self.hosts = hosts or {}
        self.networks = networks or {}
        self.pifs = pifs or {}
        self.vms = vms or {}
        self.vifs = vifs or {}
        # None: unknown (no host_metrics class); treat every host as live.
        self.host_metrics = host_metrics
        # None: the whole pool; a host ref: a local snapshot of that host
        # (context.local_snapshot), which knows no other host's devices.
        self.local_to = None

    # -- the pool ----------------------------------------------------------------
    @property
    def pool_ref(self):
        return next(iter(sorted(self.pool)), None)

    @property
    def pool_record(self):
        ref = self.pool_ref
        return self.pool[ref] if ref else {}

    @property
    def pool_other_config(self):
        return self.pool_record.get("other_config") or {}

    def copy(self):
        """A copy deep enough to edit other_config maps in place."""
        def dup(table):
            return dict((ref, dict(rec, other_config=dict(
                rec.get("other_config") or {}))) for ref, rec in table.items())
        copied = PoolRecords(dup(self.pool), dup(self.hosts),
                             dup(self.networks), dup(self.pifs),
                             dup(self.vms), dup(self.vifs), self.host_metrics)
        copied.local_to = self.local_to
        return copied

    def table(self, cls):
        """The table of a class named as XenAPI does ("VIF") or as
        event.from does ("vif")."""
        found = BY_NAME.get(cls) or BY_EVENT[cls]
        return getattr(self, found.table)

    # -- lookups -----------------------------------------------------------------
    def host_is_live(self, host_ref):
        """host_metrics.live only: a disabled host (maintenance mode) still
        runs VMs and answers host.call_plugin (xapi's forwarding does not
        look at `enabled`)."""
        host = self.hosts.get(host_ref) or {}
        if self.host_metrics is None:
            return True
        metrics = self.host_metrics.get(host.get("metrics"))
        return bool(metrics and metrics.get("live"))

    def host_by_uuid(self, uuid):
        for ref, rec in self.hosts.items():
            if rec.get("uuid") == uuid:
                return ref
        return None

    def vifs_of_vm(self, vm_ref):
        return sorted((ref for ref, rec in self.vifs.items()
                       if rec.get("VM") == vm_ref),
                      key=lambda r: as_int(self.vifs[r].get("device"), 0))

    def pifs_of_host(self, host_ref):
        return sorted((ref for ref, rec in self.pifs.items()
                       if rec.get("host") == host_ref),
                      key=lambda r: (self.pifs[r].get("device", ""),
                                     as_int(self.pifs[r].get("VLAN"))))

    def vif_label(self, vif_ref):
        vif = self.vifs.get(vif_ref) or {}
        vm = self.vms.get(vif.get("VM")) or {}
        return "%s/vif%s" % (vm.get("name_label", "?"), vif.get("device", "?"))

    def pif_label(self, pif_ref):
        pif = self.pifs.get(pif_ref) or {}
        host = self.hosts.get(pif.get("host")) or {}
        return "%s/%s" % (host.get("name_label", "?"),
                          pif_device(pif, missing="?"))


BACKEND_OVS = "openvswitch"


BACKEND_BRIDGE = "bridge"


def network_backend(path=None):
    """This host's network backend from /etc/xensource/network.conf (env
    NETOFFLOAD_NETWORK_CONF overrides the path): BACKEND_OVS or
    BACKEND_BRIDGE. Every XenServer / XCP-ng install writes that file; when
    it is absent, unreadable or says something else we assume the bridge
    backend, which names today's devices (eth0.100, bond0): a wrong guess
    then only names a device that does not exist, never skips a real one."""
    path = paths.network_conf(path)
    try:
        with open(path) as handle:
            text = handle.read(256).strip().lower()
    except (IOError, OSError, UnicodeDecodeError):
        return BACKEND_BRIDGE
    return BACKEND_OVS if text in ("openvswitch", "vswitch") else BACKEND_BRIDGE


def pif_device(pif, missing="", backend=BACKEND_BRIDGE):
    """The kernel device of a PIF record: eth0, bond0, or eth0.100 for a VLAN.

    Under Open vSwitch a VLAN PIF is a fake bridge and a bond has no bond0
    netdev (xapi's networkd makes those devices with the bridge backend
    only): None for them; their offload lives on the member/parent NICs."""
    device = pif.get("device", missing) or missing
    vlan = as_int(pif.get("VLAN"))
    if backend == BACKEND_OVS and (vlan >= 0 or pif.get("bond_master_of")):
        return None
    return "%s.%d" % (device, vlan) if vlan >= 0 else device


def pif_carriers(records, pif_ref):
    """The devices that carry a PIF with no kernel device of its own
    (openvswitch): a VLAN's parent device, a bond's member NICs."""
    pif = records.pifs.get(pif_ref) or {}
    bonds = set(pif.get("bond_master_of") or ())
    if bonds:
        return sorted(p.get("device", "?") for p in records.pifs.values()
                      if p.get("host") == pif.get("host")
                      and p.get("bond_slave_of") in bonds)
    return [pif.get("device", "?")]


def is_sriov_logical_pif(pif):
    """An SR-IOV logical PIF: it carries its NIC's device name but is no
    kernel device of its own."""
    return bool(pif.get("sriov_logical_PIF_of"))


def is_sriov_vif(records, vif_ref, sriov=None):
    """A VIF on an SR-IOV network: a VF passed to the guest, with no dom0
    device. `sriov`: sriov_networks(records), when the caller asks for
    many VIFs."""
    network = (records.vifs.get(vif_ref) or {}).get("network")
    if sriov is not None:
        return network in sriov
    return any(is_sriov_logical_pif(pif) for pif in records.pifs.values()
               if pif.get("network") == network)


def sriov_networks(records):
    """Refs of SR-IOV networks: a PIF of theirs is an SR-IOV logical PIF
    (non-empty `sriov_logical_PIF_of`, as xapi's network_sriov helpers
    tell). A VIF on one is a VF passed to the guest: no dom0 device, and
    xapi applies no ethtool key to it."""
    return set(pif.get("network") for pif in records.pifs.values()
               if is_sriov_logical_pif(pif))


def is_eligible_vm(vm):
    return not (vm.get("is_a_template") or vm.get("is_a_snapshot")
                or vm.get("is_control_domain"))


def runs_on(vm, host_ref):
    """True if vm is running (or paused) on host_ref: its devices are there."""
    return vm.get("resident_on") == host_ref and \
        vm.get("power_state") in ("Running", "Paused")


def eligible_vms(records):
    """Refs of real guests: no templates, snapshots or control domains."""
    return sorted(ref for ref, vm in records.vms.items() if is_eligible_vm(vm))


def eligible_vifs(records):
    """Refs of VIFs that belong to eligible VMs (halted or running)."""
    vms = set(eligible_vms(records))
    return sorted(ref for ref, vif in records.vifs.items()
                  if vif.get("VM") in vms)
