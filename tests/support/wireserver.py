"""A canned HTTP server on a unix socket, for the lean wires' tests
(netoffload.pool.xapi.HttpWire and the watcher's use of it)."""
import os
import socket
import tempfile
import threading


def serve_replies(replies):
    """A unix socket server answering each request on a connection with the
    next canned reply (bytes); b"": the connection is closed unanswered;
    (bytes,): those bytes, then the connection is closed."""
    path = tempfile.mktemp(prefix="nowire", dir="/tmp")
    server = socket.socket(socket.AF_UNIX)
    server.bind(path)
    server.listen(4)
    requests = []

    def run():
        queue = list(replies)
        while queue:
            conn, _ = server.accept()
            with conn:
                while queue:
                    data = conn.recv(65536)
                    if not data:
                        break
                    requests.append(data)
                    reply = queue.pop(0)
                    if reply == b"":
                        break  # close: the client must reconnect
                    conn.sendall(reply if isinstance(reply, bytes)
                                 else reply[0])
                    if not isinstance(reply, bytes):
                        break
        server.close()
        os.unlink(path)
    thread = threading.Thread(target=run)
    thread.daemon = True
    thread.start()
    return path, requests
