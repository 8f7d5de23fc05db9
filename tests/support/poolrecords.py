"""Plain pool records, as PoolRecords holds XAPI's get_all_records.

For logic that reads records and never talks to XAPI (precedence, planning,
the cache); tests that need XAPI itself use tests/support/simpool.py.
"""
from netoffload.pool.records import PoolRecords


def build(pool=None, vm=None, tags=(), network=None, vif=None, host=None,
          pif=None, vm_extra=None):
    """A one-of-each pool as get_all_records returns it (ints as strings)."""
    records = PoolRecords(
        pool={"OpaqueRef:pool": {"uuid": "pool-uuid", "other_config": dict(
            pool or {}), "master": "OpaqueRef:host"}},
        hosts={"OpaqueRef:host": {"uuid": "host-uuid", "name_label": "h1",
                                  "enabled": True, "metrics": "OpaqueRef:hm",
                                  "other_config": dict(host or {})}},
        networks={"OpaqueRef:net": {"uuid": "net-uuid", "name_label": "LAN",
                                    "other_config": dict(network or {})}},
        pifs={"OpaqueRef:pif": {"uuid": "pif-uuid", "device": "eth0",
                                "VLAN": "-1", "host": "OpaqueRef:host",
                                "network": "OpaqueRef:net",
                                "other_config": dict(pif or {})}},
        vms={"OpaqueRef:vm": dict({
            "uuid": "vm-uuid", "name_label": "web 01", "tags": list(tags),
            "is_a_template": False, "is_a_snapshot": False,
            "is_control_domain": False, "power_state": "Running",
            "resident_on": "OpaqueRef:host", "domid": "5",
            "other_config": dict(vm or {})}, **(vm_extra or {}))},
        vifs={"OpaqueRef:vif": {"uuid": "vif-uuid", "device": "0",
                                "VM": "OpaqueRef:vm", "network": "OpaqueRef:net",
                                "other_config": dict(vif or {})}},
        host_metrics={"OpaqueRef:hm": {"live": True}})
    return records
