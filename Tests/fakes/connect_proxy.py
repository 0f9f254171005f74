#!/usr/bin/env python3
"""A small HTTP CONNECT proxy for Pushline's tests (what an outbound corporate proxy does).

Only CONNECT is served: `CONNECT host:port HTTP/1.1`, optionally with Basic
`Proxy-Authorization` checked against `user:password` (407 otherwise), then bytes
are relayed both ways. Only loopback targets are allowed (403 otherwise). It records
every tunnel: target, the user it authenticated, bytes relayed.

    proxy = ConnectProxy(auth=("pl", "s3cret")).start()
    proxy.port, proxy.tunnels        # [{"target": "localhost:4431", "user": "pl", ...}]
    proxy.stop()

Run as a script it prints `READY <port>` and serves until killed.
"""
from __future__ import annotations

import base64
import socket
import socketserver
import sys
import threading
from typing import Optional


class ConnectProxy:
    def __init__(self, auth: Optional[tuple[str, str]] = None):
        self.auth = auth
        self.tunnels: list[dict] = []
        self.refused: list[dict] = []
        self.lock = threading.Lock()
        proxy = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self):
                proxy._handle(self.request)

        class Server(socketserver.ThreadingTCPServer):
            daemon_threads = True
            allow_reuse_address = True

        self.server = Server(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]

    def start(self) -> "ConnectProxy":
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _handle(self, client: socket.socket) -> None:
        client.settimeout(30)
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = client.recv(4096)
            if not chunk or len(head) > 65536:
                return
            head += chunk
        head, rest = head.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split()
        headers = {}
        for l in lines[1:]:
            k, _, v = l.partition(":")
            headers[k.strip().lower()] = v.strip()
        if len(parts) != 3 or parts[0] != "CONNECT":
            client.sendall(b"HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 0\r\n\r\n")
            return
        target = parts[1]
        user = None
        if self.auth:
            got = headers.get("proxy-authorization", "")
            want = "Basic " + base64.b64encode(f"{self.auth[0]}:{self.auth[1]}".encode()).decode()
            if got != want:
                with self.lock:
                    self.refused.append({"target": target, "reason": "auth"})
                client.sendall(b'HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic realm="test"\r\n'
                               b"Content-Length: 0\r\n\r\n")
                return
            user = self.auth[0]
        host, _, port = target.rpartition(":")
        if host.strip("[]") not in ("localhost", "127.0.0.1", "::1"):
            with self.lock:
                self.refused.append({"target": target, "reason": "not loopback"})
            client.sendall(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")
            return
        try:
            upstream = socket.create_connection((host.strip("[]"), int(port)), timeout=10)
        except OSError:
            client.sendall(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n")
            return
        entry = {"target": target, "user": user, "up": 0, "down": 0}
        with self.lock:
            self.tunnels.append(entry)
        client.sendall(b"HTTP/1.1 200 Connection Established\r\n\r\n")
        if rest:
            upstream.sendall(rest)
        client.settimeout(None)
        upstream.settimeout(None)

        def pump(src, dst, key):
            try:
                while True:
                    data = src.recv(65536)
                    if not data:
                        break
                    dst.sendall(data)
                    entry[key] += len(data)
            except OSError:
                pass
            finally:
                try:
                    dst.shutdown(socket.SHUT_WR)
                except OSError:
                    pass

        t = threading.Thread(target=pump, args=(upstream, client, "down"), daemon=True)
        t.start()
        pump(client, upstream, "up")
        t.join()
        upstream.close()


if __name__ == "__main__":
    auth = tuple(sys.argv[1].split(":", 1)) if len(sys.argv) > 1 else None
    p = ConnectProxy(auth=auth).start()
    print(f"READY {p.port}", flush=True)
    threading.Event().wait()
