"""netoffload bench: measure before you disable offload.

Standard library only, so the same file runs in dom0 and in Linux guests.

Three tests between a client and a `bench server`:
- tcp_crr: connect, one 1-byte request and response, close (connection rate;
  the server closes first so TIME_WAIT sits on the server and the client
  never runs out of ports);
- tcp_rr: 1-byte transactions on one connection (latency);
- stream: bulk send of 128 KiB blocks, like `iperf3 -c HOST` (same block
  size, plain copying writes, no socket buffer sizing, Nagle left on); the
  receiver counts the bytes and times them from the first byte to EOF, and
  the rate is computed from the receiver's figures, as iperf3 reports it.

Wire protocol: the client's first byte picks the test (C, R, S). For C and
R every further byte is a request answered by one byte; for S the server
reads to EOF and answers with the byte count and the receiver's first-byte
and EOF times in nanoseconds of its own clock (3 x 8 bytes, network order).

Server: one selectors loop accepts; a connection whose request is already
there (the usual case for tcp_crr) is answered and closed right in the
accept loop without touching the selector; tcp_rr and stream connections
get one blocking thread each (no select per transaction or per block).
Clients use blocking sockets with kernel timeouts (SO_RCVTIMEO/SO_SNDTIMEO)
rather than Python timeouts, which would add a poll() to every call.

`compare()` runs the client, applies a policy temporarily to local devices
with the engine, runs it again, and restores every device's prior state
exactly (active features and the kernel's requested bits, through
`ethtool.restore_features`) in a `finally` (SIGTERM is turned into
KeyboardInterrupt so that also covers `kill`). It restores the state read
just before the bench rather than using LiveStateStore, whose record holds
the pre-netoffload state.
"""
import errno
import selectors
import signal
import socket
import struct
import threading
import time

from netoffload.engine import ethtool
from netoffload.engine.devices import validate_device
from netoffload.engine.features import FEATURES
from netoffload.engine.policy import parse_policy
from netoffload.errors import BadArgument, DeviceError

DEFAULT_PORT = 12866
STREAM_BLOCK = 128 * 1024  # iperf3's default TCP block size
RECV_BUFFER = 256 * 1024
TESTS = ("tcp_crr", "tcp_rr", "stream")
MAX_DURATION = 300
MAX_PARALLEL = 64
IO_TIMEOUT = 10
_STREAM_REPORT = struct.Struct("!QQQ")  # bytes, first byte ns, EOF ns
_TIMEVAL = struct.Struct("@ll")
_MODES = {b"C": "tcp_crr", b"R": "tcp_rr", b"S": "stream"}
_ANSWER = b"r"


def _now_ns():
    return int(time.monotonic() * 1e9)


def _kernel_timeouts(sock, send=False):
    """A blocking socket whose calls fail after IO_TIMEOUT seconds: one
    setsockopt instead of Python's settimeout (a poll before every call)."""
    value = _TIMEVAL.pack(IO_TIMEOUT, 0)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, value)
    if send:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, value)


# -- server ------------------------------------------------------------------

class BenchServer(object):
    """Accepts in one selectors loop; see the module docstring."""

    def __init__(self, host="0.0.0.0", port=DEFAULT_PORT):
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.listener = socket.socket(family, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        # Accepted sockets inherit TCP_NODELAY: tcp_rr needs it, and the
        # stream receiver only sends its 24-byte report.
        self.listener.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.listener.bind((host, port))
        self.listener.listen(1024)
        self.listener.setblocking(False)
        self.port = self.listener.getsockname()[1]
        self._selector = selectors.DefaultSelector()
        self._selector.register(self.listener, selectors.EVENT_READ, "accept")
        self._buffer = bytearray(64)
        self._stop = False
        self._thread = None

    def serve_forever(self):
        try:
            while not self._stop:
                for key, _mask in self._selector.select(timeout=0.2):
                    if key.data == "accept":
                        self._accept()
                    else:
                        self._selector.unregister(key.fileobj)
                        self._read(key.fileobj, key.data)
        finally:
            self._close_all()

    def _accept(self):
        # One accept per wakeup: the selector is level-triggered, so more
        # pending connections wake it again at once, and the loop saves a
        # failing accept (and its exception) per connection.
        try:
            sock, _addr = self.listener.accept()
        except (BlockingIOError, InterruptedError):
            return
        except OSError as err:
            if err.errno in (errno.EMFILE, errno.ENFILE, errno.ECONNABORTED):
                return
            raise
        self._read(sock, None)

    def _read(self, sock, mode):
        """Read without blocking (`sock` itself is blocking: MSG_DONTWAIT);
        wait in the selector if the client has not sent enough yet. `mode`
        is None until the test byte has arrived."""
        try:
            size = sock.recv_into(self._buffer, 0, socket.MSG_DONTWAIT)
        except (BlockingIOError, InterruptedError):
            self._selector.register(sock, selectors.EVENT_READ, mode)
            return
        except OSError:
            sock.close()
            return
        if not size:
            sock.close()
            return
        requests = size
        if mode is None:
            mode = _MODES.get(bytes(self._buffer[:1]))
            requests -= 1
            if mode is None:
                sock.close()
                return
        if mode == "tcp_crr":
            if not requests:  # the request byte is still on its way
                self._selector.register(sock, selectors.EVENT_READ, mode)
                return
            try:
                sock.send(_ANSWER * requests)
            except OSError:
                pass
            sock.close()  # the server closes first: see the docstring
            return
        target = _serve_rr if mode == "tcp_rr" else _serve_stream
        worker = threading.Thread(target=target, args=(sock, requests))
        worker.daemon = True
        worker.start()

    def start(self):
        """Serve in a background thread (tests, compare)."""
        self._thread = threading.Thread(target=self.serve_forever,
                                        name="bench-server")
        self._thread.daemon = True
        self._thread.start()
        return self

    def stop(self):
        self._stop = True
        if self._thread is not None:
            self._thread.join(5)

    def _close_all(self):
        for key in list(self._selector.get_map().values()):
            # only sockets are registered; typeshed allows any fd-like object
            key.fileobj.close()  # pyright: ignore[reportAttributeAccessIssue]
        self._selector.close()


def _serve_rr(sock, pending):
    """tcp_rr: answer every request byte, until EOF."""
    buffer = bytearray(64)
    try:
        _kernel_timeouts(sock, send=True)
        if pending:
            sock.sendall(_ANSWER * pending)
        while True:
            size = sock.recv_into(buffer)
            if not size:
                break
            sock.sendall(_ANSWER if size == 1 else _ANSWER * size)
    except OSError:
        pass
    finally:
        sock.close()


def _serve_stream(sock, already):
    """Count bytes to EOF with one big preallocated buffer; report them."""
    buffer = bytearray(RECV_BUFFER)
    recv_into = sock.recv_into
    count = already
    first = _now_ns()
    try:
        _kernel_timeouts(sock, send=True)
        while True:
            size = recv_into(buffer)
            if not size:
                break
            count += size
        sock.sendall(_STREAM_REPORT.pack(count, first, _now_ns()))
    except OSError:
        pass
    finally:
        sock.close()


# -- client ------------------------------------------------------------------

def _connect(address, family, nodelay, send_timeout=False):
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        _kernel_timeouts(sock, send=send_timeout)
        if nodelay:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.connect(address)
    except OSError:
        sock.close()
        raise
    return sock


def _recv_exact(sock, size):
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise DeviceError("bench server closed the connection early")
        data += chunk
    return data


def _crr_worker(address, family, deadline, result):
    count = 0
    monotonic = time.monotonic
    while monotonic() < deadline:
        # One request in one segment; Nagle cannot delay a first write.
        sock = _connect(address, family, nodelay=False)
        try:
            sock.send(b"Cq")
            if not sock.recv(16):
                raise DeviceError("bench server closed the connection early")
            sock.recv(16)  # the server's FIN
        finally:
            sock.close()
        count += 1
    result.append(count)


def _rr_worker(address, family, deadline, result):
    sock = _connect(address, family, nodelay=True)
    count = 0
    monotonic = time.monotonic
    send, recv = sock.send, sock.recv
    try:
        send(b"R")
        while monotonic() < deadline:
            send(b"q")
            if not recv(16):
                raise DeviceError("bench server closed the connection early")
            count += 1
    finally:
        sock.close()
    result.append(count)


def _stream_worker(address, family, deadline, result):
    sock = _connect(address, family, nodelay=False, send_timeout=True)
    block = b"\0" * STREAM_BLOCK
    monotonic = time.monotonic
    sendall = sock.sendall
    try:
        sendall(b"S")
        while monotonic() < deadline:
            sendall(block)
        sock.shutdown(socket.SHUT_WR)
        report = _recv_exact(sock, _STREAM_REPORT.size)
    finally:
        sock.close()
    result.append(_STREAM_REPORT.unpack(report))


_WORKERS = {"tcp_crr": _crr_worker, "tcp_rr": _rr_worker,
            "stream": _stream_worker}


def _resolve(host, port):
    try:
        info = socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as err:
        raise BadArgument("cannot resolve bench host %r: %s" % (host[:64], err)) from err
    family, _type, _proto, _name, address = info[0]
    return family, address


def run_test(test, host, port=DEFAULT_PORT, duration=5.0, parallel=1):
    """One test with `parallel` threads (one connection each at a time);
    a dict of totals and the rate."""
    family, address = _resolve(host, port)
    results, errors = [], []

    def guarded(deadline):
        try:
            _WORKERS[test](address, family, deadline, results)
        except (OSError, DeviceError) as err:
            errors.append(err)

    start = time.monotonic()
    deadline = start + duration
    threads = [threading.Thread(target=guarded, args=(deadline,))
               for _ in range(parallel)]
    for thread in threads:
        thread.daemon = True
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.monotonic() - start
    if errors:
        raise DeviceError("bench %s against %s:%d failed: %s" % (
            test, host, port, errors[0]), str(errors[0]))
    entry = {"seconds": round(elapsed, 3), "parallel": parallel}
    if test == "stream":
        # Receiver side: all bytes over the span from the first stream's
        # first byte to the last stream's EOF (one clock, the server's).
        total = sum(r[0] for r in results)
        span = (max(r[2] for r in results) - min(r[1] for r in results)) / 1e9
        entry["bytes"] = total
        entry["receiver_seconds"] = round(span, 3)
        entry["mbit_per_s"] = round(total * 8 / span / 1e6, 1) if span > 0 \
            else 0.0
    else:
        total = sum(results)
        entry["transactions"] = total
        entry["per_second"] = round(total / elapsed, 1)
        if total:
            entry["mean_latency_us"] = round(
                elapsed * parallel / total * 1e6, 1)
    return entry


def check_bounds(duration, parallel, port=DEFAULT_PORT):
    if not 1 <= duration <= MAX_DURATION:
        raise BadArgument("duration=%s is out of range 1..%d"
                          % (duration, MAX_DURATION))
    if not 1 <= parallel <= MAX_PARALLEL:
        raise BadArgument("parallel=%s is out of range 1..%d"
                          % (parallel, MAX_PARALLEL))
    if not 1 <= port <= 65535:
        raise BadArgument("port=%s is out of range 1..65535" % port)


def run_client(host, port=DEFAULT_PORT, duration=5.0, parallel=1,
               tests=TESTS):
    """Every test in turn, `duration` seconds each."""
    check_bounds(duration, parallel, port)
    for test in tests:
        if test not in TESTS:
            raise BadArgument("unknown bench test %r; valid: %s"
                              % (test, ", ".join(TESTS)))
    return {"host": host, "port": port, "duration": duration,
            "parallel": parallel,
            "tests": dict((test, run_test(test, host, port, duration, parallel))
                          for test in tests)}


def headline(entry):
    """The one number per test that the table and comparisons use."""
    return entry.get("mbit_per_s", entry.get("per_second"))


# TCP_CRR counts connections (connect, one exchange, close): conn/s.
UNITS = {"stream": "Mbit/s", "tcp_crr": "conn/s", "tcp_rr": "trans/s"}


def format_table(result, compare=None):
    lines = ["%-8s %14s %12s" % ("TEST", "RESULT", "UNIT")]
    if compare is not None:
        lines = ["%-8s %14s %14s %8s %s" % ("TEST", "BEFORE", "AFTER",
                                            "CHANGE", "UNIT")]
    for test in TESTS:
        entry = result["tests"].get(test)
        if entry is None:
            continue
        unit = UNITS.get(test, "trans/s")
        if compare is None:
            lines.append("%-8s %14.1f %12s" % (test, headline(entry), unit))
        else:
            after = compare["tests"][test]
            change = compare_change(headline(entry), headline(after))
            lines.append("%-8s %14.1f %14.1f %7s%% %s" % (
                test, headline(entry), headline(after),
                "%+.1f" % change if change is not None else "n/a", unit))
    return "\n".join(lines)


def compare_change(before, after):
    if not before:
        return None
    return round((after - before) * 100.0 / before, 1)


# -- compare -------------------------------------------------------------------

def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt()


def compare(policy_text, devices, host, port=DEFAULT_PORT, duration=5.0,
            parallel=1, tests=TESTS):
    """Bench, apply policy to devices temporarily, bench again, restore."""
    policy = parse_policy(policy_text)
    if policy.is_none or not policy.features:
        raise BadArgument("policy %r changes nothing; nothing to compare"
                          % policy_text)
    if not devices:
        raise BadArgument("name at least one device to apply the policy to")
    for device in devices:
        validate_device(device)
    check_bounds(duration, parallel, port)
    current = dict((d, ethtool.read_features(d)) for d in devices)
    prior = dict((d, state.as_onoff()) for d, state in current.items())
    # The kernel's requested bits too: a restore by short name alone would
    # turn a group's bits all on or all off (see ethtool.restore_features).
    prior_bits = dict((d, ethtool.requested_bits(state, FEATURES))
                      for d, state in current.items())
    before = run_client(host, port, duration, parallel, tests)
    previous_handler = signal.signal(signal.SIGTERM, _raise_interrupt)
    applied, restored = {}, {}
    try:
        for device in devices:
            applied[device] = ethtool.apply_features(
                device, policy.features).to_json()
        after = run_client(host, port, duration, parallel, tests)
    finally:
        # Ctrl-C during the restore must not leave a device half restored.
        blocked = signal.pthread_sigmask(signal.SIG_BLOCK,
                                         [signal.SIGINT, signal.SIGTERM])
        for device in devices:
            try:
                result = ethtool.restore_features(device, prior[device],
                                                  prior_bits[device])
                restored[device] = {"ok": result.ok, "state": result.after}
            except DeviceError as err:
                restored[device] = {"ok": False, "error": err.message}
        signal.signal(signal.SIGTERM, previous_handler)
        signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
    return {
        "policy": policy.text, "devices": list(devices), "prior": prior,
        "prior_requested": prior_bits,
        "applied": applied, "restored": restored,
        "before": before, "after": after,
        "change_percent": dict(
            (test, compare_change(headline(before["tests"][test]),
                                  headline(after["tests"][test])))
            for test in before["tests"]),
    }
