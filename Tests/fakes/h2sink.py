#!/usr/bin/env python3
"""A loopback HTTP/2 + TLS test server for the Pushline transport tests.

Generates a self-signed certificate (CN/SAN localhost + 127.0.0.1) into a temp dir,
listens on 127.0.0.1, and prints one line on stdout once ready:

    READY <port> <ca_file_path>

Paths:
  /stats            JSON {"connections", "streams", "max_active", "goaways", "drops", "refused", "open"}
                    (the /stats stream itself is not counted in streams/max_active; "open":
                    the numbers of the connections still open, the first connection being 1)
  /echo...          JSON {"method", "path", "headers": [[name, value], ...], "body", "client_cn",
                    "conn" (the connection's number)}
  anything else     body '{}'

Query parameters override the command line per request: delay_ms=N, status=N.
Every response carries the header `x-reply: abc`.

Options:
  --status N         response status (default 200)
  --delay-ms N       delay before each response
  --goaway-after N   per connection: after N streams, send GOAWAY(last_stream_id = Nth stream);
                     later streams are never answered (unprocessed), the connection is closed
                     once the first N are answered
  --goaway-linger    with --goaway-after: keep the connection open after the first N are
                     answered (RFC 9113 6.8 lets the sender close it later, or never: the client
                     must stop using it on its own)
  --drop-after N     per connection: abort the TCP connection when the Nth stream arrives
  --require-client-cert PASSWORD
                     demand a client certificate signed by the sink's CA; writes one to
                     <dir of ca_file>/client.pem (certificate + key encrypted with PASSWORD)
  --max-streams N    SETTINGS_MAX_CONCURRENT_STREAMS (default 1000); streams over it are refused
                     with RST_STREAM REFUSED_STREAM
  --no-body          answer like APNs' success: one HEADERS frame with END_STREAM (`:status`,
                     `apns-id`: the request's, else a new UUID; no content-length, no DATA)
  --rst-after-response
                     answer each request as soon as its HEADERS arrive, then reset the stream with
                     RST_STREAM(NO_ERROR), as nginx does for `return 200;` (RFC 9113 section 8.1).
                     The sink advertises a stream window of 0 (SETTINGS_INITIAL_WINDOW_SIZE), so the
                     client cannot have sent any of the body when the complete answer arrives.
                     The answer is always HEADERS-only, as with --no-body (with a body after it,
                     libcurl 7.88 would keep polling for window room the stream never gets)
  --answer-before-body {length,nolength}
                     answer each request as soon as its HEADERS arrive with one HEADERS frame with
                     END_STREAM (`length`: with `content-length: 0`; `nolength`: without, as APNs),
                     and only then give its stream a window (WINDOW_UPDATE) so the client can send
                     the body: the stream ends when the client's DATA with END_STREAM arrives. No
                     RST_STREAM, and nothing else is sent on the connection (the stream window starts
                     at 0, as with --rst-after-response)
  --rst-before-headers
                     the first time a request arrives (same apns-id, else same path and body),
                     reset its stream with RST_STREAM(NO_ERROR) before any response header (the
                     request was never answered); answer it normally when it comes again
"""
import argparse
import asyncio
import atexit
import collections
import datetime
import ipaddress
import json
import os
import shutil
import signal
import ssl
import stat
import sys
import tempfile
import uuid
from urllib.parse import parse_qs, urlsplit

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.settings
from hyperframe.frame import GoAwayFrame


class Stats:
    connections = 0
    streams = 0
    max_active = 0
    goaways = 0
    drops = 0
    refused = 0
    early = 0  # answered before the body, then RST_STREAM(NO_ERROR) (--rst-after-response)
    unanswered = 0  # reset before any response header (--rst-before-headers)
    attempts = {}  # request key -> times received (--rst-before-headers)
    open = set()


def make_cert(directory):
    """Writes a self-signed cert+key for localhost/127.0.0.1; returns (cert_path, key_path)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path = os.path.join(directory, "cert.pem")
    key_path = os.path.join(directory, "key.pem")
    with open(cert_path, "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    with open(key_path, "wb") as f:
        f.write(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
    return cert_path, key_path, cert, key


def make_client_cert(directory, ca_cert, ca_key, password):
    """Writes client.pem (certificate + key encrypted with `password`) signed by the sink's CA."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "pushline-test-client")]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .sign(ca_key, hashes.SHA256())
    )
    path = os.path.join(directory, "client.pem")
    with open(path, "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
        f.write(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.BestAvailableEncryption(password.encode()),
            )
        )
    return path


class H2Sink(asyncio.Protocol):
    def __init__(self, args):
        self.args = args
        self.transport = None
        self.conn = h2.connection.H2Connection(
            config=h2.config.H2Configuration(client_side=False, header_encoding="utf-8")
        )
        self.conn.local_settings = h2.settings.Settings(
            client=False,
            initial_values={
                h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: args.max_streams,
                h2.settings.SettingCodes.MAX_HEADER_LIST_SIZE: 65536,
            },
        )
        self.requests = {}  # stream_id -> dict(headers, body, counted)
        self.seen = 0  # streams received on this connection
        self.active = 0  # counted streams not yet answered
        self.goaway_sid = None  # last_stream_id sent in GOAWAY
        self.closed = False
        self.pending_out = {}  # stream_id -> response bytes waiting for flow-control window

    # -- asyncio.Protocol ------------------------------------------------------------
    def connection_made(self, transport):
        Stats.connections += 1
        self.number = Stats.connections
        Stats.open.add(self.number)
        self.transport = transport
        self.conn.initiate_connection()
        if self.args.rst_after_response or self.args.answer_before_body:
            # A second SETTINGS: h2 applies it once the client acknowledges it, so a body sent
            # before the client saw it is still accepted (no FLOW_CONTROL_ERROR).
            self.conn.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 0})
        # SETTINGS told the client --max-streams; h2 itself would kill the whole connection on a
        # stream over the limit (a client may open some before it sees our SETTINGS). Like real
        # servers, refuse such streams one by one instead (RST_STREAM REFUSED_STREAM, in on_request).
        self.conn.local_settings._settings[h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS] = (
            collections.deque([1 << 30])
        )
        self.flush()

    def connection_lost(self, exc):
        self.closed = True
        Stats.open.discard(getattr(self, "number", None))

    def data_received(self, data):
        if self.closed:
            return
        try:
            events = self.conn.receive_data(data)
        except h2.exceptions.ProtocolError:
            self.flush()
            self.transport.close()
            self.closed = True
            return
        for ev in events:
            if isinstance(ev, h2.events.RequestReceived):
                self.on_request(ev)
            elif isinstance(ev, h2.events.DataReceived):
                req = self.requests.get(ev.stream_id)
                if req is not None:
                    req["body"] += ev.data
                self.conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
            elif isinstance(ev, h2.events.StreamEnded):
                self.on_end(ev.stream_id)
            elif isinstance(ev, h2.events.WindowUpdated):
                for sid in list(self.pending_out):
                    self.push(sid)
            elif isinstance(ev, h2.events.StreamReset):
                req = self.requests.pop(ev.stream_id, None)
                if req is not None and req["counted"]:
                    self.active -= 1
            elif isinstance(ev, h2.events.ConnectionTerminated):
                self.flush()
                self.transport.close()
                self.closed = True
                return
            if self.closed:
                return
        self.flush()

    # -- HTTP/2 ----------------------------------------------------------------------
    def flush(self):
        if not self.closed:
            out = self.conn.data_to_send()
            if out:
                self.transport.write(out)

    def on_request(self, ev):
        headers = [(k, v) for k, v in ev.headers]
        path = dict(headers).get(":path", "/")
        if self.goaway_sid is not None and ev.stream_id > self.goaway_sid:
            return  # after our GOAWAY: never processed
        counted = not path.startswith("/stats")
        if counted and self.active >= self.args.max_streams:
            Stats.refused += 1
            self.conn.reset_stream(ev.stream_id, error_code=h2.errors.ErrorCodes.REFUSED_STREAM)
            return
        self.requests[ev.stream_id] = {"headers": headers, "body": b"", "counted": counted}
        if not counted:
            return
        Stats.streams += 1
        self.seen += 1
        self.active += 1
        Stats.max_active = max(Stats.max_active, self.active)
        if self.args.drop_after and self.seen >= self.args.drop_after:
            Stats.drops += 1
            self.closed = True
            self.transport.abort()
            return
        if self.args.goaway_after and self.seen == self.args.goaway_after:
            Stats.goaways += 1
            self.goaway_sid = ev.stream_id
            frame = GoAwayFrame(0)
            frame.last_stream_id = ev.stream_id
            frame.error_code = 0
            self.flush()
            self.transport.write(frame.serialize())
            asyncio.get_running_loop().call_later(10, self.close_now)
        if self.args.rst_after_response and not ev.stream_ended:
            # The complete answer before any of the body (the client has no window to send it),
            # then RST_STREAM(NO_ERROR): "abort transmission of a request without error".
            Stats.early += 1
            self.respond(stream_id=ev.stream_id, status=self.args.status, body=b"", headers_only=True)
            try:
                self.conn.reset_stream(ev.stream_id, error_code=h2.errors.ErrorCodes.NO_ERROR)
            except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError):
                pass

        if self.args.answer_before_body and not ev.stream_ended:
            # The complete answer first, then room for the body: the client's END_STREAM closes it.
            Stats.early += 1
            req = self.requests.pop(ev.stream_id)
            self.active -= 1
            h = dict(req["headers"])
            apns_id = h.get("apns-id") or str(uuid.uuid4()).upper()
            extra = [("content-length", "0")] if self.args.answer_before_body == "length" else []
            self.conn.send_headers(
                ev.stream_id, [(":status", str(self.args.status)), ("apns-id", apns_id)] + extra, end_stream=True)
            try:
                self.conn.increment_flow_control_window(65535, ev.stream_id)
            except h2.exceptions.StreamClosedError:
                pass  # The body came with the headers (sent before the client saw our SETTINGS).
            self.flush()

    def on_end(self, stream_id):
        req = self.requests.get(stream_id)
        if req is None:
            return
        headers = dict(req["headers"])
        parts = urlsplit(headers.get(":path", "/"))
        query = parse_qs(parts.query)
        status = int(query.get("status", [self.args.status])[0])
        delay_ms = int(query.get("delay_ms", [self.args.delay_ms])[0])
        if parts.path.startswith("/stats"):
            body = json.dumps(
                {
                    "connections": Stats.connections,
                    "streams": Stats.streams,
                    "max_active": Stats.max_active,
                    "goaways": Stats.goaways,
                    "drops": Stats.drops,
                    "refused": Stats.refused,
                    "early": Stats.early,
                    "unanswered": Stats.unanswered,
                    "attempts": sorted(Stats.attempts.values()),
                    "open": sorted(Stats.open),
                }
            ).encode()
            status, delay_ms = 200, 0
        elif parts.path.startswith("/echo"):
            body = json.dumps(
                {
                    "method": headers.get(":method"),
                    "path": headers.get(":path"),
                    "headers": [[k, v] for k, v in req["headers"] if not k.startswith(":")],
                    "body": req["body"].decode("latin-1"),
                    "client_cn": self.client_cn(),
                    "conn": self.number,
                }
            ).encode()
        else:
            body = b"" if self.args.no_body else b"{}"
            if self.args.rst_before_headers:
                key = headers.get("apns-id") or (headers.get(":path", "") + "\0" + req["body"].decode("latin-1"))
                Stats.attempts[key] = Stats.attempts.get(key, 0) + 1
                if Stats.attempts[key] == 1:
                    # Never answered: reset before any response header.
                    Stats.unanswered += 1
                    self.requests.pop(stream_id, None)
                    if req["counted"]:
                        self.active -= 1
                    self.conn.reset_stream(stream_id, error_code=h2.errors.ErrorCodes.NO_ERROR)
                    return
        if delay_ms > 0:
            asyncio.get_running_loop().call_later(
                delay_ms / 1000.0, self.respond, stream_id, status, body
            )
        else:
            self.respond(stream_id, status, body)

    def push(self, stream_id):
        """Sends as much of a response body as frame size and flow-control windows allow."""
        buf = self.pending_out.get(stream_id)
        if buf is None:
            return
        try:
            while True:
                room = min(self.conn.local_flow_control_window(stream_id), self.conn.max_outbound_frame_size)
                if buf and room <= 0:
                    self.pending_out[stream_id] = buf
                    return
                chunk, buf = buf[:room], buf[room:]
                self.conn.send_data(stream_id, chunk, end_stream=not buf)
                if not buf:
                    break
        except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError):
            pass
        self.pending_out.pop(stream_id, None)

    def respond(self, stream_id, status, body, headers_only=False):
        req = self.requests.pop(stream_id, None)
        if self.closed or req is None:
            return
        if req["counted"]:
            self.active -= 1
        try:
            if (self.args.no_body or headers_only) and not body:
                # APNs' success: HEADERS with END_STREAM, no content-length, no DATA frame.
                h = dict(req["headers"])
                apns_id = h.get("apns-id") or str(uuid.uuid4()).upper()
                self.conn.send_headers(
                    stream_id, [(":status", str(status)), ("apns-id", apns_id), ("x-reply", "abc")], end_stream=True
                )
                self.flush()
                return
            self.conn.send_headers(
                stream_id,
                [
                    (":status", str(status)),
                    ("content-type", "application/json"),
                    ("content-length", str(len(body))),
                    ("x-reply", "abc"),
                ],
            )
            self.pending_out[stream_id] = body
            self.push(stream_id)
        except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError):
            self.pending_out.pop(stream_id, None)
        self.flush()
        if self.goaway_sid is not None and not self.args.goaway_linger and not any(
            sid <= self.goaway_sid for sid in self.requests
        ):
            self.close_now()

    def client_cn(self):
        cert = self.transport.get_extra_info("peercert") if self.transport else None
        for rdn in (cert or {}).get("subject", ()):
            for k, v in rdn:
                if k == "commonName":
                    return v
        return None

    def close_now(self):
        if not self.closed:
            self.closed = True
            self.transport.close()


async def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--status", type=int, default=200)
    ap.add_argument("--delay-ms", type=int, default=0)
    ap.add_argument("--goaway-after", type=int, default=0)
    ap.add_argument("--goaway-linger", action="store_true")
    ap.add_argument("--drop-after", type=int, default=0)
    ap.add_argument("--max-streams", type=int, default=1000)
    ap.add_argument("--require-client-cert", metavar="PASSWORD", default="")
    ap.add_argument("--no-body", action="store_true")
    ap.add_argument("--rst-after-response", action="store_true")
    ap.add_argument("--answer-before-body", choices=["length", "nolength"])
    ap.add_argument("--rst-before-headers", action="store_true")
    args = ap.parse_args()

    tmp = tempfile.mkdtemp(prefix="h2sink-")
    atexit.register(shutil.rmtree, tmp, True)
    cert, key, ca_cert, ca_key = make_cert(tmp)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    if args.require_client_cert:
        make_client_cert(tmp, ca_cert, ca_key, args.require_client_cert)
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.load_verify_locations(cert)
    ctx.set_alpn_protocols(["h2"])
    ctx.options |= ssl.OP_NO_COMPRESSION

    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: H2Sink(args), "127.0.0.1", args.port, ssl=ctx, backlog=512)
    port = server.sockets[0].getsockname()[1]
    print(f"READY {port} {cert}", flush=True)

    # Exit when stdin closes (the test process died) so no sink outlives its test.
    def on_stdin():
        try:
            data = os.read(0, 4096)
        except OSError:
            data = b""
        if not data:
            loop.stop()

    # SIGTERM/SIGINT: stop cleanly so atexit removes the temp dir.
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, loop.stop)
    try:
        if stat.S_ISFIFO(os.fstat(0).st_mode):
            loop.add_reader(0, on_stdin)
    except (OSError, ValueError, PermissionError):
        pass
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except (KeyboardInterrupt, RuntimeError):
        pass
    sys.exit(0)
