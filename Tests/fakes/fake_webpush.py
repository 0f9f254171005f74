#!/usr/bin/env python3
"""A fake WebPush push service (RFC 8030) on loopback over HTTP/2 + TLS, for Pushline tests.

It holds the private keys of the subscriptions it hands out, and for every push it
  - checks the headers: TTL (required, integer), Content-Encoding: aes128gcm,
    Urgency (very-low|low|normal|high) and Topic (<= 32 base64url chars) when present;
  - verifies the VAPID authorization (RFC 8292): `vapid t=<JWT>, k=<key>`, JWT header
    {typ: JWT, alg: ES256}, ES256 signature valid for k, aud == this server's origin
    (the origin the client addressed: https://127.0.0.1:<port> or https://localhost:<port>),
    exp in the future and at most 24 h ahead, sub a mailto: or https: URL;
  - decrypts the body per RFC 8291 (aes128gcm, one record) with the subscription's keys;
  - answers 201 (Location: /msg/N), or what the test scripted (404, 410, 413, 429, 5xx...),
    413 for bodies over 4096 bytes, 400/403 with a JSON message when a check fails;
  - records everything for the test: plaintext, headers, claims, status.

Prints `READY <port> <ca_file> <control_port>`. Control (plain HTTP/1.1 JSON on 127.0.0.1:<control_port>):
  POST /subscribe {"count": n}            -> [{"id", "endpoint", "p256dh", "auth"}]   (base64url keys)
  POST /script {"id": sid, "responses": [{"status": 429, "headers": {"retry-after": "1"}, "body": "..."}]}
                                             responses used in order by pushes to sid, then 201 again
  POST /unsubscribe {"id": sid, "status": 410}   every later push to sid answers that status (default 410)
  GET  /received[?id=sid]                  -> [{"id", "ok", "error", "status", "plaintext", "headers", "claims", "size"}]
  POST /reset                              forgets received pushes and scripts
  GET  /stats                              -> {"pushes", "subscriptions"}
"""
import base64
import itertools
import json
import os
import sys
import threading
import time
from collections import deque

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.hmac import HMAC

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import webwns_h2  # noqa: E402


def b64u_decode(s):
    s = s.strip()
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


def b64u(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def hmac_sha256(key, data):
    h = HMAC(key, hashes.SHA256())
    h.update(data)
    return h.finalize()


def hkdf(salt, ikm, info, length):
    prk = hmac_sha256(salt, ikm)
    return hmac_sha256(prk, info + b"\x01")[:length]


def decrypt_aes128gcm(body, priv, auth):
    """RFC 8291 decryption of a full aes128gcm body; returns the plaintext or raises ValueError."""
    if len(body) < 21:
        raise ValueError("body shorter than the aes128gcm header")
    salt, rs, idlen = body[:16], int.from_bytes(body[16:20], "big"), body[20]
    if idlen != 65:
        raise ValueError("keyid must be the 65-byte sender public key, got %d bytes" % idlen)
    keyid = body[21 : 21 + idlen]
    ciphertext = body[21 + idlen :]
    if rs < 18:
        raise ValueError("record size %d too small" % rs)
    if len(ciphertext) > rs:
        raise ValueError("more than one record (ciphertext %d > rs %d)" % (len(ciphertext), rs))
    sender = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), keyid)
    shared = priv.exchange(ec.ECDH(), sender)
    ua_pub = priv.public_key().public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
    ikm = hkdf(auth, shared, b"WebPush: info\x00" + ua_pub + keyid, 32)
    cek = hkdf(salt, ikm, b"Content-Encoding: aes128gcm\x00", 16)
    nonce = hkdf(salt, ikm, b"Content-Encoding: nonce\x00", 12)
    record = AESGCM(cek).decrypt(nonce, ciphertext, None)
    i = len(record) - 1
    while i >= 0 and record[i] == 0:
        i -= 1
    if i < 0 or record[i] != 2:
        raise ValueError("last record must end with the 0x02 delimiter")
    return record[:i]


B64U_CHARS = set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


def verify_vapid(authz, origin, now):
    """Checks an RFC 8292 Authorization header; returns the claims or raises ValueError."""
    if not authz or not authz.lower().startswith("vapid "):
        raise ValueError("Authorization must be 'vapid t=..., k=...'")
    params = {}
    for part in authz[6:].split(","):
        k, _, v = part.strip().partition("=")
        params[k.strip()] = v.strip()
    t, k = params.get("t"), params.get("k")
    if not t or not k:
        raise ValueError("Authorization lacks t= or k=")
    pieces = t.split(".")
    if len(pieces) != 3:
        raise ValueError("JWT must have 3 parts")
    header = json.loads(b64u_decode(pieces[0]))
    claims = json.loads(b64u_decode(pieces[1]))
    if header.get("alg") != "ES256" or header.get("typ") != "JWT":
        raise ValueError("JWT header must be {typ: JWT, alg: ES256}, got %r" % (header,))
    pub = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), b64u_decode(k))
    sig = b64u_decode(pieces[2])
    if len(sig) != 64:
        raise ValueError("ES256 signature must be 64 bytes r||s")
    der = encode_dss_signature(int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:], "big"))
    try:
        pub.verify(der, (pieces[0] + "." + pieces[1]).encode(), ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        raise ValueError("JWT signature does not verify with k")
    if claims.get("aud") != origin:
        raise ValueError("aud %r is not this push service's origin %r" % (claims.get("aud"), origin))
    exp = claims.get("exp")
    if not isinstance(exp, int) or exp <= now or exp > now + 86400 + 60:
        raise ValueError("exp must be an integer in the next 24 h, got %r" % (exp,))
    sub = claims.get("sub")
    if not isinstance(sub, str) or not (sub.startswith("mailto:") or sub.startswith("https:")):
        raise ValueError("sub must be a mailto: or https: URL, got %r" % (sub,))
    return claims, k


class PushService:
    def __init__(self, origin):
        self.origin = origin
        self.lock = threading.Lock()
        self.subs = {}  # id -> {"priv", "auth", "script": deque, "gone": status or None}
        self.received = []
        self.ids = itertools.count(1)
        self.msgs = itertools.count(1)

    # -- control -----------------------------------------------------------------------
    def subscribe(self, q, body):
        out = []
        for _ in range(int(body.get("count", 1))):
            priv = ec.generate_private_key(ec.SECP256R1())
            auth = os.urandom(16)
            with self.lock:
                sid = "s%d-%s" % (next(self.ids), b64u(os.urandom(6)))
                self.subs[sid] = {"priv": priv, "auth": auth, "script": deque(), "gone": None}
            pub = priv.public_key().public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
            out.append({"id": sid, "endpoint": "%s/push/%s" % (self.origin, sid), "p256dh": b64u(pub), "auth": b64u(auth)})
        return out

    def script(self, q, body):
        with self.lock:
            self.subs[body["id"]]["script"].extend(body["responses"])
        return {"ok": True}

    def unsubscribe(self, q, body):
        with self.lock:
            self.subs[body["id"]]["gone"] = int(body.get("status", 410))
        return {"ok": True}

    def get_received(self, q, body):
        with self.lock:
            if "id" in q:
                return [r for r in self.received if r["id"] == q["id"]]
            return list(self.received)

    def reset(self, q, body):
        with self.lock:
            self.received.clear()
            for s in self.subs.values():
                s["script"].clear()
        return {"ok": True}

    def stats(self, q, body):
        with self.lock:
            return {"pushes": len(self.received), "subscriptions": len(self.subs)}

    def routes(self):
        return {
            ("POST", "/subscribe"): self.subscribe,
            ("POST", "/script"): self.script,
            ("POST", "/unsubscribe"): self.unsubscribe,
            ("GET", "/received"): self.get_received,
            ("POST", "/reset"): self.reset,
            ("GET", "/stats"): self.stats,
        }

    # -- push --------------------------------------------------------------------------
    async def app(self, method, path, headers, body):
        rec = {"id": None, "ok": False, "error": None, "status": 0, "plaintext": None, "headers": headers,
               "claims": None, "size": len(body), "time": time.time()}
        status, rh, rb = self.push(method, path, headers, body, rec)
        rec["status"] = status
        with self.lock:
            self.received.append(rec)
        return status, rh, rb

    def push(self, method, path, headers, body, rec):
        def fail(status, msg):
            rec["error"] = msg
            return status, [("content-type", "application/json")], json.dumps({"code": status, "message": msg}).encode()

        if method != "POST" or not path.startswith("/push/"):
            return fail(404, "no such resource %s %s" % (method, path))
        sid = path[len("/push/"):]
        rec["id"] = sid
        with self.lock:
            sub = self.subs.get(sid)
        if sub is None:
            return fail(404, "unknown subscription")
        if sub["gone"]:
            return fail(sub["gone"], "subscription expired or unsubscribed")
        ttl = headers.get("ttl")
        if ttl is None or not ttl.isdigit():
            return fail(400, "TTL header required (non-negative integer)")
        if headers.get("content-encoding") != "aes128gcm":
            return fail(400, "Content-Encoding must be aes128gcm")
        urgency = headers.get("urgency")
        if urgency is not None and urgency not in ("very-low", "low", "normal", "high"):
            return fail(400, "bad Urgency %r" % urgency)
        topic = headers.get("topic")
        if topic is not None and (len(topic) > 32 or not topic or not set(topic) <= B64U_CHARS):
            return fail(400, "bad Topic %r" % topic)
        try:
            origin = "https://" + headers.get(":authority", "")
            claims, _ = verify_vapid(headers.get("authorization"), origin, int(time.time()))
            rec["claims"] = claims
        except (ValueError, KeyError, TypeError) as e:
            return fail(403, "VAPID: %s" % e)
        if len(body) > 4096:
            return fail(413, "payload too large (%d bytes)" % len(body))
        try:
            plain = decrypt_aes128gcm(body, sub["priv"], sub["auth"])
            rec["plaintext"] = plain.decode("utf-8", "replace")
        except Exception as e:
            return fail(400, "cannot decrypt: %r" % (e,))
        rec["ok"] = True
        with self.lock:
            scripted = sub["script"].popleft() if sub["script"] else None
        if scripted:
            st = int(scripted.get("status", 201))
            hs = list((scripted.get("headers") or {}).items())
            b = scripted.get("body", "")
            if st >= 300 and not b:
                b = json.dumps({"code": st, "message": "scripted %d" % st})
            return st, hs, b.encode()
        return 201, [("location", "%s/msg/%d" % (self.origin, next(self.msgs))), ("ttl", ttl)], b""


def main():
    state = {}

    def app_factory(origin):
        state["svc"] = PushService(origin)
        return state["svc"].app

    webwns_h2.serve(app_factory, lambda origin: state["svc"].routes())


if __name__ == "__main__":
    main()
