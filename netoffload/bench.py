"""netoffload bench: measure before you disable offload.

Standard library only, so the same file runs in dom0 and in Linux guests.

Three tests between a client and a `bench server`:
- tcp_crr: connect, one 1-byte request and response, close (connection rate;
  the server closes first so TIME_WAIT sits on the server and the client
  never runs out of ports);
- tcp_rr: 1-byte transactions on one connection (latency);
- stream: bulk send; the receiver counts the bytes (throughput).

Wire protocol: the client's first byte picks the test (C, R, S). For C and
R every further byte is a request answered by one byte; for S the server
reads to EOF and answers with the byte count (8 bytes, network order).

`compare()` runs the client, applies a policy temporarily to local devices
with the engine, runs it again, and restores every device's prior state in
a `finally` (SIGTERM is turned into KeyboardInterrupt so that also covers
`kill`). It restores the exact pre-bench state read with ethtool rather than
using LiveStateStore, whose record holds the pre-netoffload state.
"""
import errno
import selectors
import signal
import socket
import struct
import threading
import time

from netoffload.errors import BadArgument, DeviceError

DEFAULT_PORT = 12866
STREAM_CHUNK = 128 * 1024
RECV_CHUNK = 256 * 1024
TESTS = ("tcp_crr", "tcp_rr", "stream")
MAX_DURATION = 300
MAX_PARALLEL = 64
_COUNT = struct.Struct("!Q")
_MODES = {b"C": "tcp_crr", b"R": "tcp_rr", b"S": "stream"}


# -- server ------------------------------------------------------------------

class _Conn(object):
    __slots__ = ("sock", "mode", "count")

    def __init__(self, sock):
        self.sock = sock
        self.mode = None
        self.count = 0


class BenchServer(object):
    """A single-threaded event-loop server for all three tests."""

    def __init__(self, host="0.0.0.0", port=DEFAULT_PORT):
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.listener = socket.socket(family, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind((host, port))
        self.listener.listen(1024)
        self.listener.setblocking(False)
        self.port = self.listener.getsockname()[1]
        self._selector = selectors.DefaultSelector()
        self._selector.register(self.listener, selectors.EVENT_READ, None)
        self._buffer = bytearray(RECV_CHUNK)
        self._stop = False
        self._thread = None

    def serve_forever(self):
        try:
            while not self._stop:
                for key, _mask in self._selector.select(timeout=0.2):
                    if key.data is None:
                        self._accept()
                    else:
                        self._readable(key.data)
        finally:
            self._close_all()

    def _accept(self):
        while True:
            try:
                sock, _addr = self.listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as err:
                if err.errno in (errno.EMFILE, errno.ENFILE):
                    return
                raise
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._selector.register(sock, selectors.EVENT_READ, _Conn(sock))

    def _drop(self, conn):
        self._selector.unregister(conn.sock)
        conn.sock.close()

    def _readable(self, conn):
        try:
            size = conn.sock.recv_into(self._buffer)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._drop(conn)
            return
        if size == 0:
            self._drop(conn)
            return
        data = memoryview(self._buffer)[:size]
        if conn.mode is None:
            conn.mode = _MODES.get(bytes(data[:1]))
            if conn.mode is None:
                self._drop(conn)
                return
            data = data[1:]
        if conn.mode == "stream":
            # Bulk data: a blocking reader thread per stream costs fewer
            # syscalls than the event loop and releases the GIL in recv.
            conn.count += len(data)
            self._selector.unregister(conn.sock)
            reader = threading.Thread(target=self._stream_reader, args=(conn,))
            reader.daemon = True
            reader.start()
            return
        if not len(data):
            return
        try:
            conn.sock.send(b"r" * len(data))
        except OSError:
            self._drop(conn)
            return
        if conn.mode == "tcp_crr":
            self._drop(conn)  # the server closes first: see the docstring

    @staticmethod
    def _stream_reader(conn):
        buffer = bytearray(RECV_CHUNK)
        sock = conn.sock
        try:
            sock.setblocking(True)
            while True:
                size = sock.recv_into(buffer)
                if not size:
                    break
                conn.count += size
            sock.sendall(_COUNT.pack(conn.count))
        except OSError:
            pass
        finally:
            sock.close()

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
            key.fileobj.close()
        self._selector.close()


# -- client ------------------------------------------------------------------

def _connect(address, family):
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.settimeout(10)
    sock.connect(address)
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
    while time.monotonic() < deadline:
        sock = _connect(address, family)
        try:
            sock.sendall(b"Cq")
            _recv_exact(sock, 1)
            sock.recv(1)  # the server's FIN
        finally:
            sock.close()
        count += 1
    result.append(count)


def _rr_worker(address, family, deadline, result):
    sock = _connect(address, family)
    count = 0
    try:
        sock.sendall(b"R")
        while time.monotonic() < deadline:
            sock.sendall(b"q")
            _recv_exact(sock, 1)
            count += 1
    finally:
        sock.close()
    result.append(count)


def _stream_worker(address, family, deadline, result):
    sock = _connect(address, family)
    payload = memoryview(b"\0" * STREAM_CHUNK)
    try:
        sock.sendall(b"S")
        while time.monotonic() < deadline:
            sock.sendall(payload)
        sock.shutdown(socket.SHUT_WR)
        received = _COUNT.unpack(_recv_exact(sock, _COUNT.size))[0]
    finally:
        sock.close()
    result.append(received)


_WORKERS = {"tcp_crr": _crr_worker, "tcp_rr": _rr_worker,
            "stream": _stream_worker}


def _resolve(host, port):
    try:
        info = socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as err:
        raise BadArgument("cannot resolve bench host %r: %s" % (host[:64], err))
    family, _type, _proto, _name, address = info[0]
    return family, address


def run_test(test, host, port=DEFAULT_PORT, duration=5.0, parallel=1):
    """One test with `parallel` threads; a dict of totals and the rate."""
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
    total = sum(results)
    entry = {"seconds": round(elapsed, 3), "parallel": parallel}
    if test == "stream":
        entry["bytes"] = total
        entry["mbit_per_s"] = round(total * 8 / elapsed / 1e6, 1)
    else:
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


def format_table(result, compare=None):
    lines = ["%-8s %14s %12s" % ("TEST", "RESULT", "UNIT")]
    if compare is not None:
        lines = ["%-8s %14s %14s %8s %s" % ("TEST", "BEFORE", "AFTER",
                                            "CHANGE", "UNIT")]
    for test in TESTS:
        entry = result["tests"].get(test)
        if entry is None:
            continue
        unit = "Mbit/s" if test == "stream" else "trans/s"
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
    from netoffload import ethtool
    from netoffload.devices import validate_device
    from netoffload.policy import parse_policy
    policy = parse_policy(policy_text)
    if policy.is_none or not policy.features:
        raise BadArgument("policy %r changes nothing; nothing to compare"
                          % policy_text)
    if not devices:
        raise BadArgument("name at least one device to apply the policy to")
    for device in devices:
        validate_device(device)
    check_bounds(duration, parallel, port)
    prior = dict((d, ethtool.read_features(d).as_onoff()) for d in devices)
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
                result = ethtool.apply_features(device, prior[device])
                restored[device] = {"ok": result.ok, "state": result.after}
            except DeviceError as err:
                restored[device] = {"ok": False, "error": err.message}
        signal.signal(signal.SIGTERM, previous_handler)
        signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
    return {
        "policy": policy.text, "devices": list(devices), "prior": prior,
        "applied": applied, "restored": restored,
        "before": before, "after": after,
        "change_percent": dict(
            (test, compare_change(headline(before["tests"][test]),
                                  headline(after["tests"][test])))
            for test in before["tests"]),
    }
