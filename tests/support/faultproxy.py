"""A unix-socket proxy in front of the simulator that fails calls on demand.

Clients (a watcher) connect to `FaultProxy.path` instead of the
simulator's socket; every XML-RPC call is relayed, HTTP/1.1 keep-alive and
all, except those a fault takes:

- `refuse_connections(n)`: the next n connections are closed as soon as
  they are accepted, before a byte is read (the client's call fails with a
  reset / broken pipe / "remote end closed", as with a xapi going down);
- `drop_calls(pattern, n)`: the next n calls whose method name matches the
  regular expression are not relayed: the connection is cut instead;
- `lose_replies(pattern, n)`: the next n matching calls ARE relayed and
  carried out by the simulator, then the connection is cut before the
  reply reaches the client (the nastiest case: the write happened, the
  client cannot know);
- `heal()`: no more faults;
- `stall(seconds)`: stop accepting for that long with a listen queue of
  one, so that further connects of a client with a socket timeout fail
  with EAGAIN (what a small backlog under a burst does).

`faults` counts what each fault did. Nothing about the simulator changes:
it sees ordinary clients.
"""
import re
import socket
import threading
import time

_METHOD = re.compile(rb"<methodName>([^<]*)</methodName>")


def _read_message(sock, buffer):
    """(head, body, rest) of one HTTP message read from sock after the
    bytes already in buffer; None at end of stream."""
    while b"\r\n\r\n" not in buffer:
        chunk = sock.recv(65536)
        if not chunk:
            return None
        buffer += chunk
    head, _, rest = buffer.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    while len(rest) < length:
        chunk = sock.recv(65536)
        if not chunk:
            return None
        rest += chunk
    return head + b"\r\n\r\n", rest[:length], rest[length:]


class FaultProxy(object):
    def __init__(self, path, upstream):
        self.path = path
        self.upstream = upstream
        self.faults = {"refused": 0, "dropped": 0, "lost_replies": 0,
                       "stalled": 0}
        self.calls = 0
        self._lock = threading.Lock()
        self._refuse = 0
        self._drop = []        # [pattern, n]
        self._lose = []
        self._stall_until = 0.0
        self._open = set()
        self._stopping = False
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._listener.bind(path)
        self._listener.listen(1)
        self._thread = threading.Thread(target=self._accept_loop)
        self._thread.daemon = True
        self._thread.start()

    # -- faults ---------------------------------------------------------------------
    def refuse_connections(self, n):
        with self._lock:
            self._refuse += n

    def drop_calls(self, pattern, n):
        with self._lock:
            self._drop.append([re.compile(pattern.encode()), n])

    def lose_replies(self, pattern, n):
        with self._lock:
            self._lose.append([re.compile(pattern.encode()), n])

    def stall(self, seconds):
        with self._lock:
            self._stall_until = time.monotonic() + seconds
            self.faults["stalled"] += 1

    def heal(self):
        """No more faults from now on."""
        with self._lock:
            self._refuse = 0
            self._drop, self._lose = [], []
            self._stall_until = 0.0

    def _take(self, rules, method, what):
        with self._lock:
            for rule in rules:
                if rule[1] > 0 and rule[0].search(method):
                    rule[1] -= 1
                    self.faults[what] += 1
                    return True
        return False

    # -- relaying ---------------------------------------------------------------------
    def _accept_loop(self):
        while not self._stopping:
            with self._lock:
                pause = self._stall_until - time.monotonic()
            if pause > 0:
                time.sleep(min(pause, 0.05))
                continue
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                refuse = self._refuse > 0
                if refuse:
                    self._refuse -= 1
                    self.faults["refused"] += 1
            if refuse:
                conn.close()
                continue
            thread = threading.Thread(target=self._relay, args=(conn,))
            thread.daemon = True
            thread.start()

    def _relay(self, client):
        upstream = None
        with self._lock:
            self._open.add(client)
        try:
            buffer = b""
            while True:
                request = _read_message(client, buffer)
                if request is None:
                    return
                head, body, buffer = request
                found = _METHOD.search(body)
                method = found.group(1) if found else b""
                with self._lock:
                    self.calls += 1
                if self._take(self._drop, method, "dropped"):
                    return
                if upstream is None:
                    upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                    upstream.connect(self.upstream)
                upstream.sendall(head + body)
                reply = _read_message(upstream, b"")
                if reply is None:
                    return
                if self._take(self._lose, method, "lost_replies"):
                    return
                client.sendall(reply[0] + reply[1])
        except OSError:
            return
        finally:
            with self._lock:
                self._open.discard(client)
            for sock in (client, upstream):
                if sock is not None:
                    try:
                        sock.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass
                    sock.close()

    def close(self):
        self._stopping = True
        try:
            self._listener.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._listener.close()
        with self._lock:
            conns = list(self._open)
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self._thread.join(5)
