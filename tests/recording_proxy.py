"""A loopback HTTP proxy that records every request it passes to a real server.

It stands in front of `vllm serve` so a test can see, from outside the engine, which
requests the server was asked for, across the server's restarts. One request per
connection (it asks the server to close after answering); when the server is down the
client's connection is dropped; when the client hangs up, so does the proxy, so a
SIGTERMed server that waits for its connections to close can exit.
"""

from __future__ import annotations

import json
import selectors
import socket
import threading
import time


class RecordingProxy:
    def __init__(self, upstream_port: int):
        self.upstream_port = upstream_port
        self.requests: list[tuple[float, dict]] = []  # (arrival, body) of each request passed on
        self.listener = socket.create_server(("127.0.0.1", 0), backlog=256)
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}/v1"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn: socket.socket):
        with conn:
            head, body = _read_request(conn)
            if head is None:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
            except OSError:
                return  # the server is down: the client sees its connection dropped
            with upstream:
                lines = [line for line in head.split(b"\r\n") if not line.lower().startswith(b"connection:")]
                upstream.sendall(b"\r\n".join(lines + [b"Connection: close", b"", b""]) + body)
                if body:
                    self.requests.append((time.monotonic(), json.loads(body)))
                _pipe(upstream, conn)

    def close(self):
        self.listener.close()


def _read_request(conn: socket.socket) -> tuple[bytes | None, bytes]:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            return None, b""
        data += chunk
    head, body = data.split(b"\r\n\r\n", 1)
    length = next(
        (int(line.split(b":", 1)[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")), 0
    )
    while len(body) < length:
        chunk = conn.recv(65536)
        if not chunk:
            return None, b""
        body += chunk
    return head, body


def _pipe(upstream: socket.socket, client: socket.socket) -> None:
    """Server bytes to the client until either side hangs up."""
    with selectors.DefaultSelector() as selector:
        selector.register(upstream, selectors.EVENT_READ)
        selector.register(client, selectors.EVENT_READ)
        while True:
            for key, _ in selector.select():
                try:
                    data = key.fileobj.recv(65536)
                except OSError:
                    return
                if not data:
                    return
                if key.fileobj is upstream:
                    try:
                        client.sendall(data)
                    except OSError:
                        return
