"""check_checksums: read tcpdump's "incorrect" checksums the right way round.

tcpdump flags every packet whose TCP/UDP checksum does not verify. With tx
offload on, outgoing packets are captured before the NIC (or the virtual
peer) fills the checksum in, so they carry only the pseudo-header sum: a
*partial* checksum. On virtual links (veth, a dom0 vif or tap facing a guest)
received packets can carry that partial checksum too, and the kernel rightly
accepts them. So tcpdump alone proves nothing: only packets the kernel
dropped for a bad checksum (TcpInCsumErrors, UdpInCsumErrors, ...) count as
corruption.

Direction: tcpdump -v does not print it for a single interface, so we run
two captures, `-Q out` and `-Q in`, each bounded by the packet cap and the
duration. Each flagged packet is then classified:

- egress_local: outgoing from one of this host's addresses (expected with tx
  offload on);
- egress_forwarded: outgoing but not from here (bridged/forwarded; the
  checksum is still pending for whoever offloads it);
- guest_to_dom0: received on a vif/tap from the guest (netfront leaves the
  checksum blank or partial: expected);
- ingress: received from elsewhere. Unproven by itself; the kernel counters
  decide.

For each flagged packet we also check whether the checksum field holds the
pseudo-header sum (the signature of a pending offload) or something else.
"""
import re
import signal
import socket
import subprocess
import tempfile
import time

from netoffload import runner
from netoffload.diagnostics import counters
from netoffload.engine import ethtool
from netoffload.engine.devices import parse_guest_device, validate_device
from netoffload.errors import BadArgument, DeviceError, NotFound
from netoffload.log import get_logger

MAX_SECONDS = 60
MAX_PACKETS = 10000
DEFAULT_SECONDS = 10
DEFAULT_PACKETS = 200
MAX_EXAMPLES = 5
CAPTURE_FILTER = "tcp or udp"
_GRACE_SECONDS = 3.0

CLASSES = ("egress_local", "egress_forwarded", "guest_to_dom0", "ingress")

# -- parsing tcpdump -nn -vv output --------------------------------------------

# A packet starts with the timestamp at column 0; -v continuation lines are
# indented.
_PACKET_START_RE = re.compile(r"^(?P<time>\d{2}:\d{2}:\d{2}\.\d+) (?P<rest>.*)$")
# IPv4 with -v: the IP header on the first line, transport on the next.
_IP4_RE = re.compile(
    r"^IP \((?P<fields>.*?)\bproto (?P<proto>[A-Za-z0-9-]+) \(\d+\), "
    r"length (?P<length>\d+)(?P<tail>.*)\)$")
# IPv6 (no extension headers): header and transport on one line.
_IP6_RE = re.compile(
    r"^IP6 \((?P<fields>.*?)next-header (?P<proto>[A-Za-z0-9-]+) \(\d+\) "
    r"payload length: (?P<length>\d+)\) (?P<transport>.*)$")
_TRANSPORT_RE = re.compile(
    r"^(?P<src>[0-9A-Fa-f.:]+)\.(?P<sport>\d+) > "
    r"(?P<dst>[0-9A-Fa-f.:]+)\.(?P<dport>\d+): (?P<body>.*)$")
_TCP_CKSUM_RE = re.compile(
    r"(?:^|, )cksum 0x(?P<field>[0-9a-f]{4}) "
    r"\((?:(?P<correct>correct)|incorrect -> 0x(?P<want>[0-9a-f]{4}))\)")
_UDP_BAD_RE = re.compile(
    r"^\[bad udp cksum 0x(?P<field>[0-9a-f]{4}) -> 0x(?P<want>[0-9a-f]{4})!\]")
_UDP_OK_RE = re.compile(r"^\[udp sum ok\]")
_TRUNCATED_RE = re.compile(r"\[\|(?:tcp|udp)\]")
_IP_OPTIONS_RE = re.compile(r"\boptions \(")


def _fold(total):
    while total >> 16:
        total = (total & 0xffff) + (total >> 16)
    return total


def _words(packed):
    return sum((packed[i] << 8) + packed[i + 1] for i in range(0, len(packed), 2))


def pseudo_header_sum(family, src, dst, proto_number, l4_length):
    """The folded pseudo-header sum a pending (partial) checksum holds."""
    inet = socket.AF_INET if family == 4 else socket.AF_INET6
    total = _words(socket.inet_pton(inet, src)) + \
        _words(socket.inet_pton(inet, dst)) + proto_number + \
        (l4_length & 0xffff) + (l4_length >> 16)
    return _fold(total)


def _parse_transport(packet, text):
    match = _TRANSPORT_RE.match(text)
    if not match:
        return False
    packet.update(src=match.group("src"), sport=int(match.group("sport")),
                  dst=match.group("dst"), dport=int(match.group("dport")))
    body = match.group("body")
    if _TRUNCATED_RE.search(body):
        packet["checksum"] = "unverified"
        return True
    if packet["proto"] == "tcp":
        found = _TCP_CKSUM_RE.search(body)
        if found:
            packet["field"] = int(found.group("field"), 16)
            packet["checksum"] = "correct" if found.group("correct") \
                else "incorrect"
    else:
        found = _UDP_BAD_RE.match(body)
        if found:
            packet["field"] = int(found.group("field"), 16)
            packet["checksum"] = "incorrect"
        elif _UDP_OK_RE.match(body):
            packet["checksum"] = "correct"
    return True


def _finish(packet):
    """Decide whether an incorrect checksum is a pending (partial) one."""
    if packet.get("checksum") != "incorrect":
        return packet
    try:
        number = 6 if packet["proto"] == "tcp" else 17
        expected = pseudo_header_sum(packet["family"], packet["src"],
                                     packet["dst"], number, packet["l4_length"])
    except (KeyError, OSError, ValueError):
        return packet
    packet["partial"] = packet["field"] == expected
    return packet


def parse_tcpdump(text):
    """tcpdump -nn -v[v] output -> [packet dict].

    Each packet: time, family (4/6), proto (tcp/udp), src, sport, dst, dport,
    checksum ("correct", "incorrect", "unverified" when truncated or not
    checked), and for incorrect ones field (the checksum field) and partial
    (True when the field holds the pseudo-header sum of a pending offload).
    Lines of other protocols and cut-off packets are skipped.
    """
    packets = []
    current = None
    for line in text.splitlines():
        start = _PACKET_START_RE.match(line)
        if start:
            if current is not None and "src" in current:
                packets.append(_finish(current))
            current = _start_packet(start.group("time"), start.group("rest"))
            if current is not None:
                current["lines"] = [line]
            continue
        if current is None or not line[:1].isspace():
            continue
        current["lines"].append(line)
        if current["family"] == 4 and "src" not in current:
            if not _parse_transport(current, line.strip()):
                current = None
    if current is not None and "src" in current:
        packets.append(_finish(current))
    for packet in packets:
        packet["text"] = "\n".join(packet.pop("lines"))
    return packets


def _start_packet(timestamp, rest):
    match = _IP4_RE.match(rest)
    if match:
        proto = match.group("proto").lower()
        if proto not in ("tcp", "udp"):
            return None
        packet = {"time": timestamp, "family": 4, "proto": proto,
                  "checksum": "unverified"}
        if not _IP_OPTIONS_RE.search(match.group("tail")):
            packet["l4_length"] = int(match.group("length")) - 20
        return packet
    match = _IP6_RE.match(rest)
    if match:
        proto = match.group("proto").lower()
        if proto not in ("tcp", "udp"):
            return None
        packet = {"time": timestamp, "family": 6, "proto": proto,
                  "checksum": "unverified",
                  "l4_length": int(match.group("length"))}
        if not _parse_transport(packet, match.group("transport")):
            return None
        return packet
    return None


# -- classification -----------------------------------------------------------

def classify(packet, direction, device, local_addresses):
    """The class of one flagged packet (see the module docstring)."""
    if direction == "out":
        return "egress_local" if packet["src"] in local_addresses \
            else "egress_forwarded"
    if parse_guest_device(device):
        return "guest_to_dom0"
    return "ingress"


# -- running tcpdump -----------------------------------------------------------

def tcpdump_argv(device, direction, packets):
    return ["tcpdump", "-i", device, "-nn", "-vv", "-l", "-Q", direction,
            "-c", str(packets), CAPTURE_FILTER]


def _explain_failure(device, stderr):
    lines = [line for line in stderr.splitlines() if line.strip()]
    last = lines[-1] if lines else "no error message"
    low = stderr.lower()
    if "permission" in low or "not permitted" in low:
        return DeviceError("tcpdump has no permission to capture on %s: run it "
                           "as root (dom0 root or a pool-admin plugin call)"
                           % device, last)
    if "no such device" in low:
        return NotFound("no network device %s on this host" % device, last)
    return DeviceError("tcpdump failed on %s: %s" % (device, last), last)


def _stop(process):
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)  # tcpdump flushes and exits
        try:
            process.wait(timeout=_GRACE_SECONDS)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def capture(device, seconds, packets, clock=time.monotonic):
    """Run the in and out captures; {direction: (output text, stopped_by)}."""
    validate_device(device)
    outputs = {}
    processes = {}
    files = []
    try:
        for direction in ("out", "in"):
            out_file = tempfile.TemporaryFile(mode="w+")
            err_file = tempfile.TemporaryFile(mode="w+")
            files.extend([out_file, err_file])
            try:
                processes[direction] = (subprocess.Popen(
                    tcpdump_argv(device, direction, packets),
                    stdout=out_file, stderr=err_file,
                    stdin=subprocess.DEVNULL, env=runner.environment(),
                    universal_newlines=True), out_file, err_file)
            except FileNotFoundError as err:
                raise DeviceError("tcpdump is not installed", "tcpdump") from err
            except PermissionError as err:
                raise DeviceError("tcpdump cannot be run (permission denied)",
                                  "tcpdump") from err
        deadline = clock() + seconds
        while clock() < deadline and any(
                p.poll() is None for p, _o, _e in processes.values()):
            time.sleep(0.05)
        for direction, (process, out_file, err_file) in processes.items():
            stopped = "packet cap" if process.poll() is not None else "time"
            _stop(process)
            err_file.seek(0)
            stderr = err_file.read()
            if stopped == "packet cap" and process.returncode != 0:
                raise _explain_failure(device, stderr)
            out_file.seek(0)
            outputs[direction] = (out_file.read(), stopped)
    finally:
        for process, _o, _e in processes.values():
            if process.poll() is None:
                process.kill()
                process.wait()
        for handle in files:
            handle.close()
    return outputs


# -- the check -----------------------------------------------------------------

def _live_offload(device):
    """The device's live offload state, or why it could not be read."""
    try:
        return ethtool.read_features(device).as_onoff()
    except DeviceError as err:
        return {"error": err.message}


def summarise(device, captured, local_addresses):
    """Counts per class and examples from {direction: output text}."""
    counts = dict.fromkeys(CLASSES, 0)
    partial = {"ingress_partial": 0, "ingress_bad": 0}
    seen = {"captured": 0, "flagged": 0, "unverified": 0}
    examples = []
    for direction in ("out", "in"):
        for packet in parse_tcpdump(captured.get(direction, "")):
            seen["captured"] += 1
            if packet["checksum"] == "unverified":
                seen["unverified"] += 1
            if packet["checksum"] != "incorrect":
                continue
            seen["flagged"] += 1
            cls = classify(packet, direction, device, local_addresses)
            counts[cls] += 1
            if cls == "ingress":
                key = "ingress_partial" if packet.get("partial") \
                    else "ingress_bad"
                partial[key] += 1
            if len(examples) < MAX_EXAMPLES:
                examples.append({"direction": direction, "class": cls,
                                 "partial_checksum": packet.get("partial"),
                                 "text": packet["text"]})
    return counts, partial, seen, examples


def verdict(counts, partial, kernel_delta, device_delta, tx_state):
    """(status, plain sentence)."""
    dropped = sum(v for v in kernel_delta.values() if v)
    if dropped:
        named = ", ".join("%s +%d" % (k, v) for k, v in sorted(
            kernel_delta.items()) if v)
        text = ("received packets arrive with bad checksums: the kernel "
                "dropped %d packet(s) for bad checksums during the capture "
                "(%s)" % (dropped, named))
        if partial["ingress_bad"]:
            text += "; %d received packet(s) on this device carried " \
                "checksums that are neither correct nor a pending offload" \
                % partial["ingress_bad"]
        text += (". The fault is on the sending side or the path (a guest's "
                 "tx offload, the NIC, cable or switch), not this host's tx "
                 "offload; for one guest behind a vif the usual fix is its "
                 "VIF policy tx-off.")
        return "corruption", text
    rx_errors = dict((k, v) for k, v in device_delta.items() if v)
    parts = []
    expected_out = counts["egress_local"] + counts["egress_forwarded"]
    if expected_out:
        parts.append("%d flagged packet(s) are outgoing and expected with tx "
                     "offload on%s" % (expected_out, "" if tx_state in (
                         None, "on") else " (tx is %s now)" % tx_state))
    if counts["guest_to_dom0"]:
        parts.append("%d are guest-to-dom0 packets with the blank/partial "
                     "checksum netfront leaves (expected)"
                     % counts["guest_to_dom0"])
    if counts["ingress"]:
        parts.append("%d received packet(s) were flagged but the kernel "
                     "dropped none for bad checksums (%d carried a pending "
                     "offload checksum from a virtual peer): unproven, not "
                     "corruption" % (counts["ingress"], partial["ingress_partial"]))
    if not parts:
        parts.append("no captured packet had a bad checksum")
    text = "no evidence of checksum corruption; " + "; ".join(parts)
    if rx_errors:
        text += ". The device's error counters rose (%s): see counters" % \
            ", ".join("%s +%d" % kv for kv in sorted(rx_errors.items()))
        return "device_errors", text
    return "no_corruption", text + "."


def check_checksums(device, seconds=DEFAULT_SECONDS, packets=DEFAULT_PACKETS):
    """Capture on device for up to `seconds` / `packets` and judge."""
    validate_device(device)
    if not 1 <= seconds <= MAX_SECONDS:
        raise BadArgument("seconds=%s is out of range 1..%d"
                          % (seconds, MAX_SECONDS))
    if not 1 <= packets <= MAX_PACKETS:
        raise BadArgument("packets=%s is out of range 1..%d"
                          % (packets, MAX_PACKETS))
    counters.select_devices(device)  # NotFound before anything runs
    local = counters.local_addresses()
    kernel_before = counters.kernel_checksum_counters()
    link_before = counters.link_stats().get(device, {})
    started = time.time()
    captured = capture(device, seconds, packets)
    elapsed = time.time() - started
    kernel_after = counters.kernel_checksum_counters()
    link_after = counters.link_stats().get(device, {})
    kernel_delta = dict(
        (k, v - kernel_before[k]) for k, v in kernel_after.items()
        if v is not None and kernel_before.get(k) is not None)
    device_delta = dict(
        (k, link_after[k] - link_before.get(k, 0))
        for k in counters.LINK_ERROR_FIELDS if k in link_after)
    counts, partial, seen, examples = summarise(
        device, dict((d, out) for d, (out, _s) in captured.items()), local)
    offload = _live_offload(device)
    status, text = verdict(counts, partial, kernel_delta, device_delta,
                           offload.get("tx"))
    get_logger().info("check_checksums %s: %s", device, status)
    return {
        "device": device,
        "kind": counters.device_kind(device),
        "seconds": seconds,
        "packet_cap": packets,
        "elapsed": round(elapsed, 2),
        "stopped_by": dict((d, s) for d, (_o, s) in captured.items()),
        "packets": seen,
        "classes": counts,
        "ingress_detail": partial,
        "examples": examples,
        "kernel_counters_delta": kernel_delta,
        "device_counters_delta": device_delta,
        "offload": offload,
        "status": status,
        "verdict": text,
    }
