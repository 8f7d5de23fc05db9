"""The slice of XAPI's datamodel that the simulator models.

Field names, classes, read/write status and relations follow xapi's
datamodel (ocaml/idl/datamodel*.ml). Only the fields the project touches (and
a few that real records always carry) are modelled.

Field types decide the wire form: xapi sends int fields as XML-RPC strings
("-1"), floats as doubles, booleans as booleans, refs as strings.
"""

NULL_REF = "OpaqueRef:NULL"

# type codes
STR, INT, BOOL, FLOAT, REF, REFS, STRS, MAP, ENUM, DATETIME = (
    "str", "int", "bool", "float", "ref", "refs", "strs", "map", "enum",
    "datetime")
EPOCH = "19700101T00:00:00Z"  # xapi's Date.epoch, as it prints dates


def _f(kind, default, rw=False, target=None, choices=None):
    return {"kind": kind, "default": default, "rw": rw, "target": target,
            "choices": choices}


_COMMON_NAMED = {
    "name_label": _f(STR, "", rw=True),
    "name_description": _f(STR, "", rw=True),
}
# what a PIF and a VIF both have: a device on a network
_COMMON_NIC = {
    "uuid": _f(STR, ""),
    "device": _f(STR, ""),
    "network": _f(REF, NULL_REF, target="network"),
    "MAC": _f(STR, ""),
    "MTU": _f(INT, 1500),
    "other_config": _f(MAP, {}, rw=True),
}

CLASSES = {
    "pool": dict(_COMMON_NAMED, **{
        "uuid": _f(STR, ""),
        "master": _f(REF, NULL_REF, target="host"),
        "default_SR": _f(REF, NULL_REF, target="SR"),
        "ha_enabled": _f(BOOL, False),
        "other_config": _f(MAP, {}, rw=True),
        "tags": _f(STRS, [], rw=True),
    }),
    "host": dict(_COMMON_NAMED, **{
        "uuid": _f(STR, ""),
        "hostname": _f(STR, "", rw=True),
        "address": _f(STR, "", rw=True),
        "enabled": _f(BOOL, True),
        "PIFs": _f(REFS, [], target="PIF"),
        "resident_VMs": _f(REFS, [], target="VM"),
        "metrics": _f(REF, NULL_REF, target="host_metrics"),
        "API_version_major": _f(INT, 2),
        "API_version_minor": _f(INT, 21),
        "API_version_vendor": _f(STR, "XenServer"),
        "software_version": _f(MAP, {}),
        "other_config": _f(MAP, {}, rw=True),
        "tags": _f(STRS, [], rw=True),
    }),
    "host_metrics": {
        "uuid": _f(STR, ""),
        "live": _f(BOOL, True),
        "memory_total": _f(INT, 68719476736),
        "memory_free": _f(INT, 34359738368),
        "other_config": _f(MAP, {}, rw=True),
    },
    "network": dict(_COMMON_NAMED, **{
        "uuid": _f(STR, ""),
        "bridge": _f(STR, ""),
        "MTU": _f(INT, 1500, rw=True),
        "managed": _f(BOOL, True),
        "PIFs": _f(REFS, [], target="PIF"),
        "VIFs": _f(REFS, [], target="VIF"),
        "other_config": _f(MAP, {}, rw=True),
        "tags": _f(STRS, [], rw=True),
    }),
    "PIF": dict(_COMMON_NIC, **{
        "host": _f(REF, NULL_REF, target="host"),
        "VLAN": _f(INT, -1),
        "physical": _f(BOOL, True),
        "currently_attached": _f(BOOL, True),
        "management": _f(BOOL, False),
        "bond_master_of": _f(REFS, [], target="Bond"),
        "bond_slave_of": _f(REF, NULL_REF, target="Bond"),
        "VLAN_master_of": _f(REF, NULL_REF, target="VLAN"),
        "VLAN_slave_of": _f(REFS, [], target="VLAN"),
        "ip_configuration_mode": _f(ENUM, "None"),
        "IP": _f(STR, ""),
        "managed": _f(BOOL, True),
        # DynamicRO: changed only by PIF.set_property (no add_to_/set_).
        "properties": _f(MAP, {}),
        "sriov_physical_PIF_of": _f(REFS, [], target="network_sriov"),
        "sriov_logical_PIF_of": _f(REFS, [], target="network_sriov"),
    }),
    # ocaml/idl/datamodel.ml module VLAN; created by VLAN.create
    # (ocaml/xapi/xapi_vlan.ml).
    "VLAN": {
        "uuid": _f(STR, ""),
        "tagged_PIF": _f(REF, NULL_REF, target="PIF"),
        "untagged_PIF": _f(REF, NULL_REF, target="PIF"),
        "tag": _f(INT, -1),
        "other_config": _f(MAP, {}, rw=True),
    },
    # ocaml/idl/datamodel.ml module Network_sriov; created by
    # network_sriov.create (ocaml/xapi/xapi_network_sriov.ml).
    "network_sriov": {
        "uuid": _f(STR, ""),
        "physical_PIF": _f(REF, NULL_REF, target="PIF"),
        "logical_PIF": _f(REF, NULL_REF, target="PIF"),
        "requires_reboot": _f(BOOL, False),
        "configuration_mode": _f(ENUM, "unknown",
                                 choices=("sysfs", "modprobe", "manual",
                                          "unknown")),
    },
    "VM": dict(_COMMON_NAMED, **{
        "uuid": _f(STR, ""),
        "power_state": _f(ENUM, "Halted",
                          choices=("Halted", "Paused", "Running", "Suspended")),
        "is_a_template": _f(BOOL, False, rw=True),
        "is_default_template": _f(BOOL, False),
        "is_a_snapshot": _f(BOOL, False),
        "is_control_domain": _f(BOOL, False),
        "resident_on": _f(REF, NULL_REF, target="host"),
        "affinity": _f(REF, NULL_REF, target="host", rw=True),
        "domid": _f(INT, -1),
        "VIFs": _f(REFS, [], target="VIF"),
        "other_config": _f(MAP, {}, rw=True),
        "xenstore_data": _f(MAP, {}, rw=True),
        "platform": _f(MAP, {}, rw=True),
        "blocked_operations": _f(MAP, {}, rw=True),
        "tags": _f(STRS, [], rw=True),
        "HVM_boot_policy": _f(STR, "", rw=True),
        "PV_bootloader": _f(STR, "", rw=True),
        "memory_static_max": _f(INT, 1073741824),
        "VCPUs_max": _f(INT, 1),
        "user_version": _f(INT, 1, rw=True),
    }),
    "VIF": dict(_COMMON_NIC, **{
        "VM": _f(REF, NULL_REF, target="VM"),
        "MAC_autogenerated": _f(BOOL, False),
        "currently_attached": _f(BOOL, False),
        "status_code": _f(INT, 0),
        "status_detail": _f(STR, ""),
        "runtime_properties": _f(MAP, {}),
        "qos_algorithm_type": _f(STR, "", rw=True),
        "qos_algorithm_params": _f(MAP, {}, rw=True),
        "locking_mode": _f(ENUM, "network_default",
                           choices=("network_default", "locked", "unlocked",
                                    "disabled")),
    }),
    # ocaml/idl/datamodel.ml module Task; made by every Async.<class>.<call>
    # (ocaml/xapi/server_helpers.ml, taskHelper.ml). Not persisted.
    "task": dict(_COMMON_NAMED, **{
        "uuid": _f(STR, ""),
        "allowed_operations": _f(STRS, []),
        "current_operations": _f(MAP, {}),
        "created": _f(DATETIME, EPOCH),
        "finished": _f(DATETIME, EPOCH),
        "status": _f(ENUM, "pending",
                     choices=("pending", "success", "failure", "cancelling",
                              "cancelled")),
        "session": _f(REF, NULL_REF, target="session"),
        "resident_on": _f(REF, NULL_REF, target="host"),
        "progress": _f(FLOAT, 0.0),
        "type": _f(STR, "<none/>"),
        "result": _f(STR, ""),
        "error_info": _f(STRS, []),
        "other_config": _f(MAP, {}, rw=True),
        "subtask_of": _f(REF, NULL_REF, target="task"),
        "subtasks": _f(REFS, [], target="task"),
        "backtrace": _f(STR, "()"),
    }),
    "session": {
        "uuid": _f(STR, ""),
        "this_host": _f(REF, NULL_REF, target="host"),
        "this_user": _f(REF, NULL_REF, target="user"),
        "last_active": _f(STR, ""),
        "pool": _f(BOOL, False),
        "is_local_superuser": _f(BOOL, True),
        "auth_user_name": _f(STR, ""),
        "originator": _f(STR, ""),
        "other_config": _f(MAP, {}, rw=True),
    },
}

# Tables whose changes xapi reports through event.from (gen_events=true).
EVENT_CLASSES = ("pool", "host", "host_metrics", "network", "PIF", "VM", "VIF",
                 "VLAN", "network_sriov", "task")

# Rows that live in memory only: xapi forgets sessions and tasks at start.
TRANSIENT_CLASSES = ("session", "task")

# Classes whose get_all/get_all_records xapi exposes (ocaml/idl/datamodel.ml
# expose_get_all_messages_for): sessions have none.
GET_ALL_CLASSES = tuple(c for c in CLASSES if c != "session")

# Classes with a get_by_name_label call.
NAMED_CLASSES = tuple(c for c in CLASSES if "name_label" in CLASSES[c])

# One-to-many relations kept in step by the database, as xapi does:
# (child class, child ref field, parent class, parent set field).
RELATIONS = (
    ("VIF", "VM", "VM", "VIFs"),
    ("VIF", "network", "network", "VIFs"),
    ("PIF", "host", "host", "PIFs"),
    ("PIF", "network", "network", "PIFs"),
    ("VM", "resident_on", "host", "resident_VMs"),
    ("VLAN", "tagged_PIF", "PIF", "VLAN_slave_of"),
    ("network_sriov", "physical_PIF", "PIF", "sriov_physical_PIF_of"),
    ("network_sriov", "logical_PIF", "PIF", "sriov_logical_PIF_of"),
)

# PIF.properties: the names and values PIF.set_property accepts, and what a
# physical PIF (or bond master) starts with (ocaml/xapi/xapi_pif.ml).
PIF_PROPERTY_VALUES = {"gro": ("on", "off")}
PIF_DEFAULT_PROPERTIES = {"gro": "on"}
# The dummy MAC of VLAN and SR-IOV logical PIFs (xapi_vlan.ml,
# xapi_network_sriov.ml).
DUMMY_MAC = "fe:ff:ff:ff:ff:ff"

# Set fields that are derived from RELATIONS and never written directly.
DERIVED = frozenset((parent, field) for _, _, parent, field in RELATIONS)


def default_record(cls):
    """A fresh record of cls with every field at its default (copied)."""
    rec = {}
    for name, spec in CLASSES[cls].items():
        value = spec["default"]
        if isinstance(value, (dict, list)):
            value = type(value)(value)
        rec[name] = value
    return rec


def table_of_event_class(name):
    """'vm' -> 'VM': xapi matches event subscriptions case-insensitively."""
    lowered = name.lower()
    for cls in CLASSES:
        if cls.lower() == lowered:
            return cls
    return None
