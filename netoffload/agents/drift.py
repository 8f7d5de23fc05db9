"""Drift: a governed device whose live features no longer match its policy.

Someone ran `ethtool -K` on a device the policy governs, or a driver reset
put its defaults back. The watcher notices (ethtool netlink notifications
where the kernel sends them, 5.6+; else a cheap periodic ioctl read) and
re-enforces the device, except a device an admin holds with `netoffload
set` (until `restore`). Devices that stay drifted (held, or the kernel
refused) are recorded with the time their drift was first seen in
`drift.json` in the state directory, which `status` and `doctor` read:

    read_drift(state_dir) -> {device: DriftEntry(features, since, held)}

`features` holds the live value of each feature that differs from the
policy, `since` the unix time the drift was first seen.

This module holds the pure core (`find_drift`, `next_record`), the record
and the netlink monitor (`FeatureMonitor`, stdlib socket only).
"""
import collections
import errno
import json
import os
import select
import socket
import struct

from netoffload import paths, statedir

DRIFT_FILE = "drift.json"
FORMAT_VERSION = 1


class DriftEntry(collections.namedtuple("DriftEntry", "features since held")):
    """A device's drift: {feature: live value} that differ from the policy,
    the unix time first seen, whether an admin holds the device."""
    __slots__ = ()

    def to_json(self):
        """The status JSON of docs/policy.md (`held` besides)."""
        return {"features": dict(self.features), "since": self.since,
                "held": self.held}


# find_drift's answer: drifted {device: {feature: live value}} (held ones
# included), and which of them to re-enforce (not held), sorted.
Drift = collections.namedtuple("Drift", "drifted reenforce held")


def differing(desired, live):
    """{feature: live value} of the desired features the device has that
    differ and can change. `live` is an ethtool Features (None: gone)."""
    if live is None:
        return {}
    now = live.as_onoff()
    return dict((f, now[f]) for f, v in desired.items()
                if live.present(f) and not live.features[f].fixed
                and now.get(f) != v)


def find_drift(desired, live, held=()):
    """desired {device: {feature: on|off}} (governed devices only), live
    {device: Features or None}, held: device names an admin holds.

    Pure: which devices drifted, and which of them the watcher puts back.
    A device absent from `live` or gone (None) has no drift."""
    held = set(held)
    drifted = {}
    for device, wanted in desired.items():
        if not wanted:
            continue
        found = differing(wanted, live.get(device))
        if found:
            drifted[device] = found
    return Drift(drifted, sorted(d for d in drifted if d not in held),
                 sorted(d for d in drifted if d in held))


def next_record(record, drifted, checked, held, now):
    """The drift record after a check. record {device: DriftEntry};
    drifted {device: features} still drifted after any re-enforcement;
    checked: the devices looked at (others keep their entries, except
    that a full check passes every local governed device); held: held
    device names. A device keeps its first-seen time while it stays
    drifted."""
    result = dict((d, e) for d, e in record.items() if d not in checked)
    for device, features in drifted.items():
        old = record.get(device)
        result[device] = DriftEntry(dict(features),
                                    old.since if old else now,
                                    device in held)
    return result


def drift_path(state_dir=None):
    return os.path.join(paths.state_dir(state_dir), DRIFT_FILE)


def _entries(data):
    devices = data.get("devices") if isinstance(data, dict) else None
    if not isinstance(devices, dict):
        return {}
    result = {}
    for device, raw in devices.items():
        if not isinstance(raw, dict) or not isinstance(raw.get("features"), dict):
            continue
        try:
            result[str(device)] = DriftEntry(
                dict((str(f), str(v)) for f, v in raw["features"].items()),
                float(raw.get("since", 0.0)), bool(raw.get("held", False)))
        except (TypeError, ValueError):
            continue
    return result


def read_drift(state_dir=None):
    """{device: DriftEntry} as the watcher last recorded it; {} when there
    is no record or it does not parse (the watcher rewrites it at its next
    check)."""
    try:
        with open(drift_path(state_dir)) as handle:
            return _entries(json.load(handle))
    except (IOError, OSError, ValueError):
        return {}


def write_drift(record, state_dir=None):
    """Write the record atomically (0600)."""
    path = drift_path(state_dir)
    statedir.ensure(os.path.dirname(path))
    data = {"version": FORMAT_VERSION, "devices": dict(
        (d, e.to_json()) for d, e in record.items())}
    statedir.atomic_write(path, json.dumps(data, indent=1, sort_keys=True)
                          + "\n")


# -- ethtool netlink notifications -------------------------------------------------
NETLINK_GENERIC = 16
SOL_NETLINK = 270
NETLINK_ADD_MEMBERSHIP = 1
GENL_ID_CTRL = 0x10
CTRL_CMD_GETFAMILY = 3
CTRL_ATTR_FAMILY_ID = 1
CTRL_ATTR_FAMILY_NAME = 2
CTRL_ATTR_MCAST_GROUPS = 7
CTRL_ATTR_MCAST_GRP_NAME = 1
CTRL_ATTR_MCAST_GRP_ID = 2
NLM_F_REQUEST = 1
NLMSG_ERROR = 2
NLMSG_DONE = 3
NLA_TYPE_MASK = 0x3fff  # without NLA_F_NESTED / NLA_F_NET_BYTEORDER
ETHTOOL_GENL_NAME = "ethtool"
ETHTOOL_MCGRP_MONITOR_NAME = "monitor"
ETHTOOL_MSG_FEATURES_NTF = 13   # kernel -> user message of include/uapi/linux/ethtool_netlink.h
ETHTOOL_A_FEATURES_HEADER = 1
ETHTOOL_A_HEADER_DEV_NAME = 2
_NLMSGHDR = struct.Struct("=IHHII")
_GENLMSGHDR = struct.Struct("=BBH")
_NLATTR = struct.Struct("=HH")


def _attrs(data):
    """[(type, payload)] of a run of netlink attributes."""
    result = []
    while len(data) >= _NLATTR.size:
        length, kind = _NLATTR.unpack_from(data)
        if length < _NLATTR.size:
            break
        result.append((kind & NLA_TYPE_MASK, data[_NLATTR.size:length]))
        data = data[(length + 3) & ~3:]
    return result


def _messages(data):
    """[(type, payload)] of the netlink messages in one datagram."""
    result = []
    while len(data) >= _NLMSGHDR.size:
        length, kind = _NLMSGHDR.unpack_from(data)[:2]
        if length < _NLMSGHDR.size or length > len(data):
            break
        result.append((kind, data[_NLMSGHDR.size:length]))
        data = data[(length + 3) & ~3:]
    return result


def _cstring(payload):
    return payload.split(b"\0", 1)[0].decode("ascii", "replace")


def resolve_family(sock, name, group):
    """(family id, multicast group id) of a generic netlink family, by
    CTRL_CMD_GETFAMILY; OSError if the kernel has no such family/group."""
    raw = name.encode("ascii") + b"\0"
    attr = _NLATTR.pack(_NLATTR.size + len(raw), CTRL_ATTR_FAMILY_NAME) + raw
    attr += b"\0" * (-len(attr) % 4)
    body = _GENLMSGHDR.pack(CTRL_CMD_GETFAMILY, 1, 0) + attr
    sock.send(_NLMSGHDR.pack(_NLMSGHDR.size + len(body), GENL_ID_CTRL,
                             NLM_F_REQUEST, 1, 0) + body)
    family = group_id = None
    for kind, payload in _messages(sock.recv(65536)):
        if kind == NLMSG_ERROR:
            code = -struct.unpack_from("=i", payload)[0]
            raise OSError(code or errno.ENOENT, "no generic netlink family %s"
                          % name)
        if kind != GENL_ID_CTRL:
            continue
        for attr_type, value in _attrs(payload[_GENLMSGHDR.size:]):
            if attr_type == CTRL_ATTR_FAMILY_ID:
                family = struct.unpack_from("=H", value)[0]
            elif attr_type == CTRL_ATTR_MCAST_GROUPS:
                for _index, grp in _attrs(value):
                    fields = dict(_attrs(grp))
                    if _cstring(fields.get(CTRL_ATTR_MCAST_GRP_NAME, b"")) \
                            == group and CTRL_ATTR_MCAST_GRP_ID in fields:
                        group_id = struct.unpack_from(
                            "=I", fields[CTRL_ATTR_MCAST_GRP_ID])[0]
    if family is None or group_id is None:
        raise OSError(errno.ENOENT, "no %s group in generic netlink family %s"
                      % (group, name))
    return family, group_id


def feature_changes(data, family):
    """Device names of the ETHTOOL_MSG_FEATURES_NTF in one datagram."""
    names = set()
    for kind, payload in _messages(data):
        if kind != family or len(payload) < _GENLMSGHDR.size:
            continue
        if _GENLMSGHDR.unpack_from(payload)[0] != ETHTOOL_MSG_FEATURES_NTF:
            continue
        for attr_type, value in _attrs(payload[_GENLMSGHDR.size:]):
            if attr_type == ETHTOOL_A_FEATURES_HEADER:
                for field, fvalue in _attrs(value):
                    if field == ETHTOOL_A_HEADER_DEV_NAME:
                        names.add(_cstring(fvalue))
    return names


class FeatureMonitor(object):
    """Feature-change notifications of this network namespace's devices.

    `FeatureMonitor.open()` -> a monitor, or None when the kernel sends
    none (no ethtool netlink family: before 5.6, or not built in).
    `wait(timeout)` -> the set of device names whose features changed, or
    None when notifications were lost (the socket's queue overflowed):
    then every device must be checked.
    """

    def __init__(self, sock, family):
        self.sock = sock
        self.family = family

    @classmethod
    def open(cls):
        try:
            sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW,
                                 NETLINK_GENERIC)
        except (OSError, AttributeError):
            return None
        try:
            sock.bind((0, 0))
            sock.settimeout(5.0)
            family, group = resolve_family(sock, ETHTOOL_GENL_NAME,
                                           ETHTOOL_MCGRP_MONITOR_NAME)
            sock.setsockopt(SOL_NETLINK, NETLINK_ADD_MEMBERSHIP, group)
            sock.setblocking(False)
        except (OSError, struct.error):
            sock.close()
            return None
        return cls(sock, family)

    def wait(self, timeout):
        """Names changed within `timeout` seconds (set() when none), all
        the notifications queued by then included; None if some were
        lost."""
        names = set()
        ready, _, _ = select.select([self.sock], [], [], max(0.0, timeout))
        while ready:
            try:
                data = self.sock.recv(65536)
            except BlockingIOError:
                break
            except OSError as err:
                if err.errno == errno.ENOBUFS:
                    return None
                raise
            names.update(feature_changes(data, self.family))
        return names

    def close(self):
        self.sock.close()
