#!/usr/bin/env python3
"""A fake APNs for Pushline's tests: real HTTP/2 over TLS on loopback.

It verifies what Apple verifies and answers with Apple's status codes and
`{"reason": ...}` bodies:

* token auth: `authorization: bearer <jwt>`; ES256 signature against the
  configured key(s) (`--key TEAM:KEYID:PATH`, PATH a .p8 or a public key PEM,
  or `--gen-key TEAM:KEYID` to create a .p8 in the work dir), `kid`/`iss`,
  `iat` not older than one hour (ExpiredProviderToken) nor in the future;
  token updates per team more often than `--min-token-refresh-s` (default
  1200) get 429 TooManyProviderTokenUpdates;
* per connection, as Apple's engineers describe it: a connection remembers the
  token it last accepted and when it last carried it; a different
  token on that connection less than `--conn-token-window-s` (default 1200)
  later gets 429 TooManyProviderTokenUpdates, again and again, until the
  connection has not carried its old token for that long;
* certificate auth (`--cert-mode`): a client certificate signed by the fake's
  client CA is required; the fake writes `client.pem` (certificate + key,
  encrypted with `--client-key-password` if given) into its work dir;
* method, path `/3/device/<hex token>`, apns-topic (+ suffix per push type),
  apns-push-type, apns-priority, apns-expiration, apns-collapse-id,
  apns-id, payload JSON and size (4096, 5120 for voip).

On start it prints one line: `READY <port> <ca_path> <admin_port> <workdir>`.

The admin port speaks plain HTTP/1.1 on loopback:

* `GET /state`, `GET /received` (every request: headers, parsed payload,
  answer; `arrived`: when its last frame came, `time`: when it was answered), `POST /clear`;
* `POST /control` with a JSON object of any of:
  `{"unregister": [{"token": T, "timestamp": ms, "reason": "Unregistered"}]}`,
  `{"fail": [{"token": T or "*", "status": 503, "reason": "ServiceUnavailable", "count": 2}]}` (count -1: forever),
  `{"clear_fail": true}` (drops every fail rule: an outage ends),
  `{"delay_ms": 200}`, `{"slow": [{"token": T, "delay_ms": 1500}]}` (that device's answers only), `{"drop_after": 3, "drop_times": 1}` (abort a connection once it got N requests),
  `{"goaway_after": 5, "goaway_times": 1}` (GOAWAY after N streams on a connection),
  `{"max_streams": 1}` (SETTINGS_MAX_CONCURRENT_STREAMS now and for new connections),
  `{"expire_jwt": JWT}` / `{"expire_current": true}`, `{"min_token_refresh_s": 0}`, `{"reset": true}`,
  `{"conn_token_window_s": 1200}`, `{"conn_saw_other_token": true}` (every open connection
  behaves as if it had just carried another token: the next token on it gets 429).

`GET /state` includes `conn_token_updates`, `conn_rejected_updates` and `connection_log`
({id: {"opened": t, "closed": t or null, "tokens": [[kid, iat, last 8 chars of the JWT], ...]}}).
"""

import argparse
import asyncio
import base64
import datetime
import ipaddress
import json
import os
import re
import signal
import ssl
import sys
import tempfile
import time
import uuid

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings
from h2.settings import SettingCodes
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from cryptography.x509.oid import NameOID

PUSH_TYPES = {"alert", "background", "voip", "complication", "fileprovider", "mdm", "location",
              "liveactivity", "pushtotalk", "widgets"}
SUFFIX = {"voip": ".voip", "complication": ".complication", "fileprovider": ".pushkit.fileprovider",
          "liveactivity": ".push-type.liveactivity", "pushtotalk": ".voip-ptt", "location": ".location-query",
          "widgets": ".push-type.widgets"}
UUID_RE = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
TOKEN_RE = re.compile(r"^[0-9a-fA-F]{64,200}$")


def b64url_decode(s):
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


# --- certificates ---------------------------------------------------------------------------

def _name(cn):
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def make_ca(cn):
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(_name(cn)).issuer_name(_name(cn))
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1)).not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                         content_commitment=False, key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
            .sign(key, hashes.SHA256()))
    return key, cert


def make_leaf(ca_key, ca_cert, cn, server):
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    b = (x509.CertificateBuilder().subject_name(_name(cn)).issuer_name(ca_cert.subject)
         .public_key(key.public_key()).serial_number(x509.random_serial_number())
         .not_valid_before(now - datetime.timedelta(hours=1)).not_valid_after(now + datetime.timedelta(days=2))
         .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True))
    if server:
        b = b.add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                         x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                            critical=False)
        b = b.add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
    else:
        b = b.add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
    return key, b.sign(ca_key, hashes.SHA256())


def pem_cert(c):
    return c.public_bytes(serialization.Encoding.PEM)


def pem_key(k, password=None):
    enc = (serialization.BestAvailableEncryption(password.encode()) if password
           else serialization.NoEncryption())
    return k.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, enc)


# --- state ----------------------------------------------------------------------------------

class State:
    def __init__(self, args):
        self.args = args
        self.keys = {}  # kid -> (team, public key)
        self.topics = list(args.topic or [])
        self.cert_mode = args.cert_mode
        self.min_refresh = args.min_token_refresh_s
        self.conn_window = args.conn_token_window_s
        self.initial_max_streams = args.max_streams
        self.conns = set()
        self.reset()

    def reset(self):
        self.received = []
        self.fail_rules = []
        self.unregistered = {}
        self.delay_ms = 0
        self.slow = {}  # device token -> delay in ms
        self.drop_after = None
        self.drop_times = 0
        self.goaway_after = None
        self.goaway_times = 0
        self.max_streams = self.initial_max_streams
        self.expired_jwts = set()
        self.teams = {}  # team -> {"jwt", "iat", "changed_at", "updates", "rejected_updates", "jwts"}
        self.connections_total = 0
        self.goaways_sent = 0
        self.drops = 0
        self.protocol_errors = []
        self.max_active_streams = 0
        self.conn_token_updates = 0
        self.conn_rejected_updates = 0
        self.connection_log = {}  # conn id -> {"opened", "closed", "tokens"}

    def control(self, c):
        if c.get("reset"):
            self.reset()
        for u in c.get("unregister", []):
            self.unregistered[u["token"]] = (u.get("timestamp", int(time.time() * 1000)), u.get("reason", "Unregistered"))
        if c.get("clear_fail"):
            self.fail_rules = []
        for f in c.get("fail", []):
            self.fail_rules.append({"token": f.get("token", "*"), "status": int(f.get("status", 503)),
                                    "reason": f.get("reason", "ServiceUnavailable"), "count": int(f.get("count", 1)),
                                    "retry_after": f.get("retry_after")})
        if "delay_ms" in c:
            self.delay_ms = int(c["delay_ms"])
        for x in c.get("slow", []):
            self.slow[x["token"]] = int(x["delay_ms"])
        if "drop_after" in c:
            self.drop_after = c["drop_after"]
            self.drop_times = int(c.get("drop_times", 1))
        if "goaway_after" in c:
            self.goaway_after = c["goaway_after"]
            self.goaway_times = int(c.get("goaway_times", 1))
        if c.get("reset_stats"):
            self.max_active_streams = 0
        if "max_streams" in c:
            self.max_streams = int(c["max_streams"])
            for p in list(self.conns):
                p.set_max_streams(self.max_streams)
        if "expire_jwt" in c:
            self.expired_jwts.add(c["expire_jwt"])
        if c.get("expire_current"):
            for t in self.teams.values():
                self.expired_jwts.add(t["jwt"])
        if "min_token_refresh_s" in c:
            self.min_refresh = float(c["min_token_refresh_s"])
        if "conn_token_window_s" in c:
            self.conn_window = float(c["conn_token_window_s"])
        if c.get("conn_saw_other_token"):
            for p in self.conns:
                p.token, p.token_seen = ("OTHER", 0), time.time()

    def summary(self):
        return {
            "connections_total": self.connections_total,
            "connections_open": len(self.conns),
            "streams_pending": sum(p.pending for p in self.conns),
            "requests": len(self.received),
            "goaways_sent": self.goaways_sent,
            "drops": self.drops,
            "protocol_errors": self.protocol_errors,
            "max_active_streams": self.max_active_streams,
            "max_streams": self.max_streams,
            "conn_token_updates": self.conn_token_updates,
            "conn_rejected_updates": self.conn_rejected_updates,
            "connection_log": self.connection_log,
            "teams": {k: {"updates": v["updates"], "rejected_updates": v["rejected_updates"], "jwts": v["jwts"],
                          "iat": v["iat"]} for k, v in self.teams.items()},
        }

    # --- verification, in Apple's order ---

    def check_jwt(self, auth, conn=None):
        """Returns None if the provider token is fine, else (status, reason). `conn`: the H2Protocol."""
        if not auth or not auth.lower().startswith("bearer "):
            return 403, "MissingProviderToken"
        jwt = auth[7:].strip()
        parts = jwt.split(".")
        if len(parts) != 3:
            return 403, "InvalidProviderToken"
        try:
            header = json.loads(b64url_decode(parts[0]))
            claims = json.loads(b64url_decode(parts[1]))
            sig = b64url_decode(parts[2])
        except Exception:
            return 403, "InvalidProviderToken"
        if header.get("alg") != "ES256" or header.get("kid") not in self.keys:
            return 403, "InvalidProviderToken"
        team, pub = self.keys[header["kid"]]
        if claims.get("iss") != team:
            return 403, "InvalidProviderToken"
        if len(sig) != 64:
            return 403, "InvalidProviderToken"
        der = encode_dss_signature(int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:], "big"))
        try:
            pub.verify(der, (parts[0] + "." + parts[1]).encode(), ec.ECDSA(hashes.SHA256()))
        except InvalidSignature:
            return 403, "InvalidProviderToken"
        iat = claims.get("iat")
        now = time.time()
        if not isinstance(iat, int) or iat > now + 60:
            return 403, "InvalidProviderToken"
        if now - iat > 3600 or jwt in self.expired_jwts:
            return 403, "ExpiredProviderToken"
        if conn is not None:
            ident = jwt  # two tokens signed in the same second differ too
            if conn.token is not None and conn.token != ident:
                if now - conn.token_seen < self.conn_window:
                    self.conn_rejected_updates += 1
                    return 429, "TooManyProviderTokenUpdates"
                self.conn_token_updates += 1
            if conn.token != ident:
                conn.token = ident
                log = self.connection_log.get(conn.id)
                if log is not None:
                    log["tokens"].append([header["kid"], iat, jwt[-8:]])
            conn.token_seen = now
        t = self.teams.get(team)
        if t is None:
            self.teams[team] = {"jwt": jwt, "iat": iat, "changed_at": now, "updates": 0, "rejected_updates": 0,
                                "jwts": [jwt]}
        elif t["jwt"] != jwt:
            if jwt in t["jwts"]:
                return None  # an older token still in use (requests in flight), still valid
            current_dead = t["jwt"] in self.expired_jwts or now - t["iat"] > 3600
            if current_dead or now - t["changed_at"] >= self.min_refresh:
                t.update(jwt=jwt, iat=iat, changed_at=now, updates=t["updates"] + 1)
                t["jwts"].append(jwt)
            else:
                t["rejected_updates"] += 1
                return 429, "TooManyProviderTokenUpdates"
        return None

    def answer(self, method, path, headers, body, conn=None):
        """Returns (status, reason or None, extra body fields, response headers) for one request."""
        if method != "POST":
            return 405, "MethodNotAllowed", {}, []
        if not path.startswith("/3/device/"):
            return 404, "BadPath", {}, []
        token = path[len("/3/device/"):]
        if not token:
            return 400, "MissingDeviceToken", {}, []
        if not TOKEN_RE.match(token):
            return 400, "BadDeviceToken", {}, []
        names = [k for k, _ in headers]
        if len(names) != len(set(names)):
            return 400, "DuplicateHeaders", {}, []
        h = dict(headers)
        if not self.cert_mode:
            r = self.check_jwt(h.get("authorization"), conn)
            if r:
                return r[0], r[1], {}, []
        push_type = h.get("apns-push-type", "alert")
        if push_type not in PUSH_TYPES:
            return 400, "InvalidPushType", {}, []
        topic = h.get("apns-topic")
        if topic is None:
            if not self.cert_mode:
                return 400, "MissingTopic", {}, []
            topic = (self.topics[0] if self.topics else "") + SUFFIX.get(push_type, "")
        suffix = SUFFIX.get(push_type, "")
        if suffix:
            if not topic.endswith(suffix):
                return 400, "BadTopic", {}, []
            base = topic[:-len(suffix)]
        else:
            base = topic
        if self.topics and base not in self.topics:
            return 400, "DeviceTokenNotForTopic", {}, []
        prio = h.get("apns-priority", "10")
        if prio not in ("10", "5", "1") or (push_type == "background" and prio == "10"):
            return 400, "BadPriority", {}, []
        exp = h.get("apns-expiration")
        if exp is not None and not exp.isdigit():
            return 400, "BadExpirationDate", {}, []
        cid = h.get("apns-collapse-id")
        if cid is not None and len(cid.encode()) > 64:
            return 400, "BadCollapseId", {}, []
        aid = h.get("apns-id")
        if aid is not None and not UUID_RE.match(aid):
            return 400, "BadMessageId", {}, []
        limit = 5120 if push_type == "voip" else 4096
        if len(body) > limit:
            return 413, "PayloadTooLarge", {}, []
        if not body:
            return 400, "PayloadEmpty", {}, []
        try:
            payload = json.loads(body)
            if not isinstance(payload, dict):
                raise ValueError
        except ValueError:
            return 400, "BadPayload", {}, []
        for rule in self.fail_rules:
            if rule["count"] != 0 and rule["token"] in ("*", token):
                if rule["count"] > 0:
                    rule["count"] -= 1
                extra_h = [("retry-after", str(rule["retry_after"]))] if rule["retry_after"] is not None else []
                return rule["status"], rule["reason"], {}, extra_h
        if token in self.unregistered:
            ts, reason = self.unregistered[token]
            return 410, reason, {"timestamp": ts}, []
        return 200, None, {}, []


# --- HTTP/2 server --------------------------------------------------------------------------

class H2Protocol(asyncio.Protocol):
    next_id = 0

    def __init__(self, state):
        self.state = state
        H2Protocol.next_id += 1
        self.id = H2Protocol.next_id
        self.streams = {}
        self.stream_count = 0
        self.closed = False
        self.goaway_last = None
        self.pending = 0
        self.token = None  # the provider token (JWT) this connection last accepted
        self.token_seen = 0.0  # when it last carried it

    def connection_made(self, transport):
        self.transport = transport
        self.state.connections_total += 1
        self.state.connection_log[self.id] = {"opened": time.time(), "closed": None, "tokens": []}
        self.state.conns.add(self)
        cfg = h2.config.H2Configuration(client_side=False, header_encoding="utf-8", validate_inbound_headers=False)
        self.conn = h2.connection.H2Connection(config=cfg)
        # Enforce nothing before the client has seen our SETTINGS (it may open streams at once, as with
        # Apple); the configured limit is announced right away and enforced once acknowledged.
        self.conn.local_settings = h2.settings.Settings(
            client=False, initial_values={SettingCodes.MAX_CONCURRENT_STREAMS: 1 << 20,
                                          SettingCodes.MAX_HEADER_LIST_SIZE: 65536})
        self.conn.initiate_connection()
        self.conn.update_settings({SettingCodes.MAX_CONCURRENT_STREAMS: self.state.max_streams})
        self.flush()

    def set_max_streams(self, n):
        if self.closed:
            return
        try:
            self.conn.update_settings({SettingCodes.MAX_CONCURRENT_STREAMS: n})
            self.flush()
        except Exception:
            pass

    def flush(self):
        if not self.closed:
            data = self.conn.data_to_send()
            if data:
                self.transport.write(data)

    def connection_lost(self, exc):
        self.closed = True
        self.state.conns.discard(self)
        log = self.state.connection_log.get(self.id)
        if log is not None:
            log["closed"] = time.time()

    def data_received(self, data):
        if self.closed:
            return
        try:
            events = self.conn.receive_data(data)
        except h2.exceptions.ProtocolError as e:
            self.state.protocol_errors.append(f"{type(e).__name__}: {e}")
            self.flush()
            self.transport.close()
            return
        for ev in events:
            if isinstance(ev, h2.events.RequestReceived):
                self.streams[ev.stream_id] = {"headers": ev.headers, "body": bytearray()}
                active = len(self.streams) + self.pending
                self.state.max_active_streams = max(self.state.max_active_streams, active)
            elif isinstance(ev, h2.events.DataReceived):
                s = self.streams.get(ev.stream_id)
                if s is not None:
                    s["body"] += ev.data
                self.conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
            elif isinstance(ev, h2.events.StreamEnded):
                s = self.streams.pop(ev.stream_id, None)
                if s is not None:
                    self.stream_ended(ev.stream_id, s)
                    if self.closed:
                        return
            elif isinstance(ev, h2.events.StreamReset):
                self.streams.pop(ev.stream_id, None)
            elif isinstance(ev, h2.events.ConnectionTerminated):
                self.transport.close()
        self.flush()

    def stream_ended(self, sid, s):
        st = self.state
        s["arrived"] = time.time()
        if self.goaway_last is not None and sid > self.goaway_last:
            return  # after our GOAWAY: not processed, the client must retry elsewhere
        self.stream_count += 1
        if st.drop_after is not None and st.drop_times > 0 and self.stream_count >= st.drop_after:
            st.drop_times -= 1
            st.drops += 1
            self.closed = True
            self.state.conns.discard(self)
            self.transport.abort()
            return
        self.pending += 1
        asyncio.get_running_loop().create_task(self.respond(sid, s))
        if (st.goaway_after is not None and st.goaway_times > 0 and self.goaway_last is None
                and self.stream_count >= st.goaway_after):
            st.goaway_times -= 1
            st.goaways_sent += 1
            self.goaway_last = sid
            self.conn.close_connection(error_code=0, last_stream_id=sid)
            self.flush()

    async def respond(self, sid, s):
        st = self.state
        pseudo = {k: v for k, v in s["headers"] if k.startswith(":")}
        headers = [(k, v) for k, v in s["headers"] if not k.startswith(":")]
        body = bytes(s["body"])
        delay_ms = st.slow.get(pseudo.get(":path", "").rsplit("/", 1)[-1], st.delay_ms)
        if delay_ms:
            await asyncio.sleep(delay_ms / 1000)
        status, reason, extra, extra_h = st.answer(pseudo.get(":method"), pseudo.get(":path", ""), headers, body, self)
        h = dict(headers)
        apns_id = h.get("apns-id") if h.get("apns-id") and UUID_RE.match(h.get("apns-id")) else str(uuid.uuid4()).upper()
        try:
            payload = json.loads(body) if body else None
        except ValueError:
            payload = None
        st.received.append({
            "conn": self.id, "stream": sid, "method": pseudo.get(":method"), "path": pseudo.get(":path"),
            "token": pseudo.get(":path", "").rsplit("/", 1)[-1], "headers": h, "payload": payload,
            "size": len(body), "status": status, "reason": reason, "apns_id": apns_id, "time": time.time(),
            "arrived": s.get("arrived"),
        })
        self.pending -= 1
        if self.closed:
            return
        rh = [(":status", str(status)), ("apns-id", apns_id)] + extra_h
        out = b""
        if reason:
            d = {"reason": reason}
            d.update(extra)
            out = json.dumps(d).encode()
            rh.append(("content-type", "application/json"))
        rh.append(("content-length", str(len(out))))
        try:
            self.conn.send_headers(sid, rh, end_stream=not out)
            if out:
                self.conn.send_data(sid, out, end_stream=True)
            self.flush()
        except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError):
            pass
        if self.goaway_last is not None and self.pending == 0:
            self.closed = True
            self.state.conns.discard(self)
            self.transport.close()


# --- admin HTTP/1.1 -------------------------------------------------------------------------

async def admin_handler(state, reader, writer):
    try:
        while True:
            line = await reader.readline()
            if not line:
                break
            method, target, _ = line.decode().split(" ", 2)
            length = 0
            while True:
                hl = await reader.readline()
                if hl in (b"\r\n", b"\n", b""):
                    break
                k, _, v = hl.decode().partition(":")
                if k.strip().lower() == "content-length":
                    length = int(v.strip())
            body = await reader.readexactly(length) if length else b""
            code, out = 200, {"ok": True}
            if method == "GET" and target == "/state":
                out = state.summary()
            elif method == "GET" and target == "/received":
                out = state.received
            elif method == "POST" and target == "/clear":
                state.received = []
            elif method == "POST" and target == "/control":
                try:
                    state.control(json.loads(body or b"{}"))
                except Exception as e:  # noqa: BLE001 - report the bad control message
                    code, out = 400, {"ok": False, "error": str(e)}
            else:
                code, out = 404, {"ok": False, "error": "unknown admin path"}
            data = json.dumps(out).encode()
            writer.write(b"HTTP/1.1 %d X\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"
                         b"Connection: close\r\n\r\n" % (code, len(data)))
            writer.write(data)
            await writer.drain()
            break
    except (ConnectionError, ValueError, asyncio.IncompleteReadError):
        pass
    finally:
        writer.close()


async def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--admin-port", type=int, default=0)
    ap.add_argument("--workdir")
    ap.add_argument("--key", action="append", default=[], help="TEAM:KEYID:PATH (.p8 or public key PEM)")
    ap.add_argument("--gen-key", action="append", default=[], help="TEAM:KEYID: write <workdir>/AuthKey_KEYID.p8")
    ap.add_argument("--topic", action="append", help="accepted bundle id (repeatable); default: any")
    ap.add_argument("--cert-mode", action="store_true", help="certificate auth: require a client certificate")
    ap.add_argument("--client-key-password", help="encrypt the generated client key with this passphrase")
    ap.add_argument("--min-token-refresh-s", type=float, default=1200)
    ap.add_argument("--conn-token-window-s", type=float, default=1200,
                    help="per connection: a different token this soon after the last one carried gets 429")
    ap.add_argument("--max-streams", type=int, default=1000)
    args = ap.parse_args()
    # A parent may have spawned us with signals blocked (Foundation's Process does): unblock them so
    # SIGTERM/SIGINT stop the fake.
    signal.pthread_sigmask(signal.SIG_UNBLOCK, set(signal.Signals))

    workdir = args.workdir or tempfile.mkdtemp(prefix="fake_apns_")
    os.makedirs(workdir, exist_ok=True)
    state = State(args)

    for spec in args.key:
        team, kid, path = spec.split(":", 2)
        data = open(path, "rb").read()
        if b"PRIVATE KEY" in data:
            pub = serialization.load_pem_private_key(data, password=None).public_key()
        else:
            pub = serialization.load_pem_public_key(data)
        state.keys[kid] = (team, pub)
    for spec in args.gen_key:
        team, kid = spec.split(":", 1)
        k = ec.generate_private_key(ec.SECP256R1())
        with open(os.path.join(workdir, f"AuthKey_{kid}.p8"), "wb") as f:
            f.write(pem_key(k))
        state.keys[kid] = (team, k.public_key())

    ca_key, ca_cert = make_ca("Pushline fake APNs CA")
    srv_key, srv_cert = make_leaf(ca_key, ca_cert, "localhost", server=True)
    ca_path = os.path.join(workdir, "ca.pem")
    with open(ca_path, "wb") as f:
        f.write(pem_cert(ca_cert))
    with open(os.path.join(workdir, "server.pem"), "wb") as f:
        f.write(pem_cert(srv_cert) + pem_key(srv_key))

    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(os.path.join(workdir, "server.pem"))
    ctx.set_alpn_protocols(["h2"])
    if args.cert_mode:
        cca_key, cca_cert = make_ca("Pushline fake APNs client CA")
        cl_key, cl_cert = make_leaf(cca_key, cca_cert, (args.topic or ["com.example.app"])[0], server=False)
        with open(os.path.join(workdir, "client_ca.pem"), "wb") as f:
            f.write(pem_cert(cca_cert))
        with open(os.path.join(workdir, "client.pem"), "wb") as f:
            f.write(pem_cert(cl_cert) + pem_key(cl_key, args.client_key_password))
        ctx.load_verify_locations(os.path.join(workdir, "client_ca.pem"))
        ctx.verify_mode = ssl.CERT_REQUIRED

    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: H2Protocol(state), "127.0.0.1", args.port, ssl=ctx, backlog=1024)
    admin = await asyncio.start_server(lambda r, w: admin_handler(state, r, w), "127.0.0.1", args.admin_port)
    port = server.sockets[0].getsockname()[1]
    aport = admin.sockets[0].getsockname()[1]
    print(f"READY {port} {ca_path} {aport} {workdir}", flush=True)
    async with server, admin:
        await asyncio.gather(server.serve_forever(), admin.serve_forever())


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        sys.exit(0)
