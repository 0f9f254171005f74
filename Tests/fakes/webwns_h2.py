"""Shared plumbing of the WebPush and WNS fakes: an HTTP/2 + TLS server on loopback
(self-signed certificate, ALPN h2) that hands each complete request to an app
function, and a plain HTTP/1.1 control server (JSON in, JSON out) for tests.

    app(method, path, headers: dict[str, str], body: bytes) -> (status, [(name, value)], bytes)

Header names are lowercase; `:authority` is kept (the host[:port] the client addressed). `serve(app, control, name)` prints

    READY <port> <ca_file> <control_port>

on stdout once both servers listen, then runs until killed.
"""
import asyncio
import json
import os
import signal
import ssl
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings


# The transport sink's self-signed localhost certificate (it runs from this folder too).
from h2sink import make_cert  # noqa: E402


class H2Protocol(asyncio.Protocol):
    """One HTTP/2 connection; each finished request goes to `app` (sync or async)."""

    def __init__(self, app):
        self.app = app
        self.conn = h2.connection.H2Connection(config=h2.config.H2Configuration(client_side=False, header_encoding="utf-8"))
        self.conn.local_settings = h2.settings.Settings(
            client=False, initial_values={h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: 1000}
        )
        self.streams = {}
        self.transport = None

    def connection_made(self, transport):
        self.transport = transport
        self.conn.initiate_connection()
        self.flush()

    def flush(self):
        data = self.conn.data_to_send()
        if data and self.transport and not self.transport.is_closing():
            self.transport.write(data)

    def data_received(self, data):
        try:
            events = self.conn.receive_data(data)
        except h2.exceptions.ProtocolError:
            self.flush()
            self.transport.close()
            return
        for ev in events:
            if isinstance(ev, h2.events.RequestReceived):
                self.streams[ev.stream_id] = {"headers": ev.headers, "body": bytearray()}
            elif isinstance(ev, h2.events.DataReceived):
                s = self.streams.get(ev.stream_id)
                if s is not None:
                    s["body"] += ev.data
                self.conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
            elif isinstance(ev, h2.events.StreamEnded):
                s = self.streams.pop(ev.stream_id, None)
                if s is not None:
                    asyncio.ensure_future(self.answer(ev.stream_id, s))
            elif isinstance(ev, h2.events.StreamReset):
                self.streams.pop(ev.stream_id, None)
        self.flush()

    async def answer(self, sid, s):
        headers = {}
        for k, v in s["headers"]:
            headers[k.lower()] = v if k.lower() not in headers else headers[k.lower()] + ", " + v
        method = headers.pop(":method", "")
        path = headers.pop(":path", "")
        headers.pop(":scheme", None)  # `:authority` stays: the origin the client addressed
        try:
            r = self.app(method, path, headers, bytes(s["body"]))
            if asyncio.iscoroutine(r):
                r = await r
            status, rheaders, body = r
        except Exception as e:  # a bug in the fake: answer 500 and say why
            status, rheaders, body = 500, [("content-type", "text/plain")], ("fake error: %r" % (e,)).encode()
            print("fake error:", repr(e), file=sys.stderr, flush=True)
        if self.transport is None or self.transport.is_closing():
            return
        try:
            hs = [(":status", str(status))] + [(k.lower(), str(v)) for k, v in rheaders]
            hs.append(("content-length", str(len(body))))
            self.conn.send_headers(sid, hs, end_stream=not body)
            if body:
                self.conn.send_data(sid, body, end_stream=True)
        except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError, h2.exceptions.FlowControlError):
            pass
        self.flush()

    def connection_lost(self, exc):
        self.transport = None


class Control:
    """Routes for the plain HTTP/1.1 control server: {(method, path): fn(query: dict, body: obj) -> obj}."""

    def __init__(self, routes):
        self.routes = routes

    def start(self):
        routes = self.routes

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def handle_one(self, method):
                u = urlsplit(self.path)
                q = {k: v[0] for k, v in parse_qs(u.query).items()}
                n = int(self.headers.get("content-length") or 0)
                raw = self.rfile.read(n) if n else b""
                try:
                    body = json.loads(raw) if raw else {}
                    fn = routes.get((method, u.path))
                    if fn is None:
                        code, out = 404, {"error": "no route %s %s" % (method, u.path)}
                    else:
                        code, out = 200, fn(q, body)
                except Exception as e:
                    code, out = 400, {"error": repr(e)}
                data = json.dumps(out).encode()
                self.send_response(code)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                self.handle_one("GET")

            def do_POST(self):
                self.handle_one("POST")

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, daemon=True).start()
        return server.server_address[1]


def serve(app_factory, control_factory, port=0):
    """Starts both servers: `app_factory(origin)` -> app, `control_factory(origin)` -> routes.
    Prints READY <port> <ca_file> <control_port> and serves forever."""
    # A parent that blocks signals (a Swift test process) passes its mask on: unblock them so
    # SIGTERM works, and exit by ourselves when the parent goes away.
    signal.pthread_sigmask(signal.SIG_UNBLOCK, signal.valid_signals())
    parent = os.getppid()

    def watch_parent():
        while True:
            time.sleep(0.5)
            if os.getppid() != parent:
                os._exit(0)

    threading.Thread(target=watch_parent, daemon=True).start()
    tmp = tempfile.mkdtemp(prefix="pushline-fake-")
    cert, key, _, _ = make_cert(tmp)
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)
    ctx.set_alpn_protocols(["h2"])

    async def main():
        loop = asyncio.get_running_loop()
        holder = {}
        server = await loop.create_server(lambda: H2Protocol(holder["app"]), "127.0.0.1", port, ssl=ctx)
        p = server.sockets[0].getsockname()[1]
        origin = "https://127.0.0.1:%d" % p
        holder["app"] = app_factory(origin)
        cport = Control(control_factory(origin)).start()
        print("READY %d %s %d" % (p, cert, cport), flush=True)
        async with server:
            await server.serve_forever()

    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass
