"""Error and checksum counters: per device and per network stack.

Everything here reads the *current network namespace*: link statistics and
addresses come over rtnetlink (sysfs would show the namespace sysfs was
mounted in), the protocol counters from /proc/thread-self/net. In dom0 that
is simply the host; in tests it is the namespace the test entered.
"""
import os
import re
import socket
import struct
import time

from netoffload import runner
from netoffload.engine.devices import parse_guest_device, validate_device
from netoffload.errors import DeviceError, NotFound

# -- rtnetlink -----------------------------------------------------------

_NETLINK_ROUTE = 0
_NLMSG_ERROR = 2
_NLMSG_DONE = 3
_NLM_F_REQUEST = 0x1
_NLM_F_DUMP = 0x300
_RTM_NEWLINK = 16
_RTM_GETLINK = 18
_RTM_NEWADDR = 20
_RTM_GETADDR = 22
_IFLA_IFNAME = 3
_IFLA_STATS = 7
_IFLA_STATS64 = 23
_IFA_ADDRESS = 1
_IFA_LOCAL = 2
_NLMSG_HDR = struct.Struct("=LHHLL")
_IFINFOMSG = struct.Struct("=BxHiII")
_IFADDRMSG = struct.Struct("=BBBBI")
_RTATTR = struct.Struct("=HH")

# struct rtnl_link_stats64 (and the 32-bit rtnl_link_stats), in kernel order.
LINK_STAT_FIELDS = (
    "rx_packets", "tx_packets", "rx_bytes", "tx_bytes", "rx_errors",
    "tx_errors", "rx_dropped", "tx_dropped", "multicast", "collisions",
    "rx_length_errors", "rx_over_errors", "rx_crc_errors", "rx_frame_errors",
    "rx_fifo_errors", "rx_missed_errors", "tx_aborted_errors",
    "tx_carrier_errors", "tx_fifo_errors", "tx_heartbeat_errors",
    "tx_window_errors", "rx_compressed", "tx_compressed", "rx_nohandler")
# The ones that mean something went wrong (the rest are traffic volume).
LINK_ERROR_FIELDS = (
    "rx_errors", "tx_errors", "rx_dropped", "tx_dropped", "rx_crc_errors",
    "rx_frame_errors", "rx_length_errors", "rx_over_errors", "rx_fifo_errors",
    "rx_missed_errors", "tx_carrier_errors", "tx_fifo_errors",
    "tx_aborted_errors")


def _align(n):
    return (n + 3) & ~3


def _attributes(data, offset):
    """Yield (type, payload) of the rtattrs in data[offset:]."""
    while offset + _RTATTR.size <= len(data):
        length, kind = _RTATTR.unpack_from(data, offset)
        if length < _RTATTR.size:
            break
        yield kind & 0x3fff, data[offset + _RTATTR.size:offset + length]
        offset += _align(length)


def _dump(msg_type, body):
    """One rtnetlink dump request; returns [(type, payload bytes)]."""
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, _NETLINK_ROUTE)
    try:
        sock.settimeout(5.0)
        sock.bind((0, 0))
        seq = int(time.time()) & 0x7fffffff
        header = _NLMSG_HDR.pack(_NLMSG_HDR.size + len(body), msg_type,
                                 _NLM_F_REQUEST | _NLM_F_DUMP, seq, 0)
        sock.send(header + body)
        messages = []
        while True:
            data = sock.recv(1 << 16)
            offset = 0
            while offset + _NLMSG_HDR.size <= len(data):
                length, kind, _flags, msg_seq, _pid = _NLMSG_HDR.unpack_from(
                    data, offset)
                if length < _NLMSG_HDR.size:
                    return messages
                payload = data[offset + _NLMSG_HDR.size:offset + length]
                offset += _align(length)
                if msg_seq != seq:
                    continue
                if kind == _NLMSG_DONE:
                    return messages
                if kind == _NLMSG_ERROR:
                    errno = -struct.unpack_from("=i", payload)[0]
                    raise DeviceError("rtnetlink dump failed: %s"
                                      % os.strerror(errno))
                messages.append((kind, payload))
    except (OSError, socket.timeout) as err:
        raise DeviceError("cannot read link statistics over rtnetlink: %s"
                          % err) from err
    finally:
        sock.close()


def link_stats():
    """{device: {stat: int}} for every link in this network namespace."""
    result = {}
    body = _IFINFOMSG.pack(socket.AF_UNSPEC, 0, 0, 0, 0)
    for kind, payload in _dump(_RTM_GETLINK, body):
        if kind != _RTM_NEWLINK:
            continue
        name, stats64, stats32 = None, None, None
        for attr, value in _attributes(payload, _IFINFOMSG.size):
            if attr == _IFLA_IFNAME:
                name = value.split(b"\0", 1)[0].decode("utf-8", "replace")
            elif attr == _IFLA_STATS64:
                stats64 = value
            elif attr == _IFLA_STATS:
                stats32 = value
        if name is None:
            continue
        if stats64 is not None:
            count = min(len(stats64) // 8, len(LINK_STAT_FIELDS))
            values = struct.unpack_from("=%dQ" % count, stats64)
        elif stats32 is not None:
            count = min(len(stats32) // 4, len(LINK_STAT_FIELDS))
            values = struct.unpack_from("=%dI" % count, stats32)
        else:
            values = ()
        result[name] = dict(zip(LINK_STAT_FIELDS, values))
    return result


def local_addresses():
    """Every IPv4/IPv6 address configured in this network namespace."""
    addresses = set()
    body = _IFADDRMSG.pack(socket.AF_UNSPEC, 0, 0, 0, 0)
    for kind, payload in _dump(_RTM_GETADDR, body):
        if kind != _RTM_NEWADDR:
            continue
        family = struct.unpack_from("=B", payload)[0]
        for attr, value in _attributes(payload, _IFADDRMSG.size):
            if attr in (_IFA_ADDRESS, _IFA_LOCAL) and family in (
                    socket.AF_INET, socket.AF_INET6):
                addresses.add(socket.inet_ntop(family, value))
    return addresses


# -- protocol counters (/proc/net/snmp, snmp6, netstat) ---------------------

# Our name -> (file, table, column). Tcp covers IPv4 and IPv6.
KERNEL_CSUM_COUNTERS = (
    ("TcpInCsumErrors", "snmp", "Tcp", "InCsumErrors"),
    ("UdpInCsumErrors", "snmp", "Udp", "InCsumErrors"),
    ("Udp6InCsumErrors", "snmp6", None, "Udp6InCsumErrors"),
    ("IpExtInCsumErrors", "netstat", "IpExt", "InCsumErrors"),
)


def _proc_net(name):
    # thread-self: correct even if another thread has entered a namespace.
    for base in ("/proc/thread-self/net", "/proc/self/net"):
        path = os.path.join(base, name)
        if os.path.exists(path):
            with open(path) as handle:
                return handle.read()
    return ""


def parse_proc_table(text):
    """The `Tcp: names` / `Tcp: values` line pairs -> {table: {name: int}}."""
    tables = {}
    headers = {}
    for line in text.splitlines():
        table, sep, rest = line.partition(":")
        if not sep:
            continue
        fields = rest.split()
        if table not in headers:
            headers[table] = fields
            continue
        names = headers.pop(table)
        values = {}
        for name, value in zip(names, fields):
            try:
                values[name] = int(value)
            except ValueError:
                continue
        tables[table] = values
    return tables


def parse_snmp6(text):
    """`Name value` lines -> {name: int}."""
    values = {}
    for line in text.splitlines():
        fields = line.split()
        if len(fields) == 2 and fields[1].lstrip("-").isdigit():
            values[fields[0]] = int(fields[1])
    return values


def kernel_checksum_counters():
    """{counter: int or None}: the stack's checksum-drop counters.

    None means this kernel has no such counter.
    """
    sources = {
        "snmp": parse_proc_table(_proc_net("snmp")),
        "netstat": parse_proc_table(_proc_net("netstat")),
        "snmp6": parse_snmp6(_proc_net("snmp6")),
    }
    result = {}
    for ours, source, table, column in KERNEL_CSUM_COUNTERS:
        data = sources[source]
        if table is not None:
            data = data.get(table, {})
        result[ours] = data.get(column)
    return result


# -- ethtool -S ---------------------------------------------------------------

_ETHTOOL_STAT_RE = re.compile(r"^\s+(?P<name>[^:]+?):\s+(?P<value>-?\d+)\s*$")
# Driver statistics worth showing: errors, drops, CRC and checksum fix-ups.
_INTERESTING_STAT_RE = re.compile(
    r"(err|drop|discard|crc|csum|checksum|fcs|miss|fifo|overrun|fixup|"
    r"frag_overflow)", re.IGNORECASE)


def parse_ethtool_stats(text):
    """`ethtool -S` output -> {name: int} (the `name: value` lines)."""
    stats = {}
    for line in text.splitlines():
        match = _ETHTOOL_STAT_RE.match(line)
        if match:
            stats[match.group("name")] = int(match.group("value"))
    return stats


def driver_stats(device):
    """Interesting `ethtool -S` counters; {} if the driver has none."""
    validate_device(device)
    result = runner.run(["ethtool", "-S", device], timeout=10)
    if result.returncode != 0:
        return {}
    return dict((name, value)
                for name, value in parse_ethtool_stats(result.stdout).items()
                if _INTERESTING_STAT_RE.search(name))


# -- the counters report ------------------------------------------------------

PV_DISCARDS_NOTE = (
    "PV 'discards' counted by the Windows PV network driver in a guest are "
    "frames that failed the guest's MAC filter (flooded broadcast and "
    "multicast for other hosts). They are harmless and have nothing to do "
    "with offload; they do not appear in dom0 counters.")
NAMESPACE_NOTE = (
    "Checksum drop counters (TcpInCsumErrors, UdpInCsumErrors, "
    "Udp6InCsumErrors, IpExtInCsumErrors) count packets the kernel dropped "
    "for a bad checksum, for the whole host network stack, not per device; "
    "they are the authority on corruption, not tcpdump.")


def device_kind(device):
    guest = parse_guest_device(device)
    return guest[0] if guest else "host"


def _snapshot(devices):
    links = link_stats()
    snap = {}
    for device in devices:
        snap[device] = {
            "link": dict((k, v) for k, v in links.get(device, {}).items()
                         if k in LINK_ERROR_FIELDS),
            "driver": driver_stats(device),
        }
    return snap, kernel_checksum_counters()


def _delta(after, before):
    return dict((name, value - before[name]) for name, value in after.items()
                if isinstance(value, int) and isinstance(before.get(name), int))


def select_devices(device=None):
    """[device] checked to exist, or every device but lo."""
    names = sorted(link_stats())
    if device is not None:
        validate_device(device)
        if device not in names:
            raise NotFound("no network device %s on this host" % device,
                           device)
        return [device]
    return [name for name in names if name != "lo"]


def counters(device=None, seconds=0, sleep=time.sleep):
    """Per-device error counters and the kernel's checksum-drop counters.

    With seconds > 0, also the change over that window.
    """
    devices = select_devices(device)
    before, kernel_before = _snapshot(devices)
    report = {"device": device, "seconds": seconds, "devices": [],
              "kernel": {}, "notes": [PV_DISCARDS_NOTE, NAMESPACE_NOTE]}
    after, kernel_after = before, kernel_before
    if seconds > 0:
        sleep(seconds)
        after, kernel_after = _snapshot(devices)
    for name in devices:
        entry = {"device": name, "kind": device_kind(name),
                 "link": after[name]["link"], "driver": after[name]["driver"]}
        nonzero = [k for k, v in entry["link"].items() if v] + \
            [k for k, v in entry["driver"].items() if v]
        if seconds > 0:
            delta = _delta(after[name]["link"], before[name]["link"])
            delta.update(_delta(after[name]["driver"], before[name]["driver"]))
            entry["delta"] = dict((k, v) for k, v in delta.items() if v)
            entry["rising"] = sorted(entry["delta"])
        entry["nonzero"] = sorted(nonzero)
        report["devices"].append(entry)
    for name, value in kernel_after.items():
        item = {"value": value}
        if seconds > 0 and value is not None \
                and kernel_before.get(name) is not None:
            item["delta"] = value - kernel_before[name]
        report["kernel"][name] = item
    return report
