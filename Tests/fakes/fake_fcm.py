#!/usr/bin/env python3
"""A wire-level fake of Google's FCM HTTP v1, OAuth2 token and Instance ID endpoints, for tests.

HTTP/2 over TLS on loopback (asyncio + h2 + ssl), with a throwaway CA written to a temp dir.

    python3 fake_fcm.py --write-service-account /tmp/sa.json[:project] [--service-account other.json] ...
    -> prints "READY <port> <ca_path> <control_port>" on stdout once it listens.

Endpoints (all POST):
  /token                                   OAuth2 JWT-bearer grant: verifies the RS256 assertion with the
                                           service account's public key (iss, aud, scope, iat/exp), answers
                                           {access_token, expires_in, token_type}.
  /v1/projects/{project}/messages:send     checks the bearer token and validates the message as Google does
                                           (exactly one of token/topic/condition, string-only data, topic
                                           rules, sizes, enum and duration formats), Google's error JSON.
  /iid/v1:batchAdd, /iid/v1:batchRemove    Instance ID topic management (access_token_auth: true).

Control channel: newline-delimited JSON over plain TCP on 127.0.0.1:<control_port>; one JSON answer per
line. Ops:
  {"op": "unregister"|"invalid"|"sender_mismatch"|"third_party_auth", "tokens": [...]}   mark tokens
  {"op": "fail", "count": N, "status": 503, "code": "UNAVAILABLE", "retry_after": 1}     next N sends fail
      ("retry_after_date": S sends Retry-After as an HTTP-date S seconds ahead instead)
  {"op": "quota", "count": N, "retry_after": 60, "scope": "device"|"topic"}               next N sends 429
                                     (project quota, or one device's / topic's message rate)
  {"op": "expire_tokens"}            every issued access token becomes invalid (sends get 401)
  {"op": "token_fail", "count": N, "status": 500}                                        token endpoint fails
  {"op": "token_ttl", "seconds": S} / {"op": "token_delay_ms", "ms": M} / {"op": "send_delay_ms", "ms": M}
  {"op": "stats"}                    counters: token_requests, sends, delivered, rejected, iid_calls,
                                     max_concurrent_streams, connections (HTTP/2 connections accepted)
  {"op": "messages", "since": I}     received send bodies (each {"message", "validate_only", "status"})
  {"op": "subscriptions"}            {topic: [tokens]}
  {"op": "reset"}                    forget scripts, marks, records and counters (not keys)

Also importable: FakeFCM(...) and, from fcm_service_account, make_service_account().
"""
import argparse
import asyncio
import base64
import datetime
import email.utils
import ipaddress
import json
import os
import re
import signal
import ssl
import sys
import tempfile
import time
import urllib.parse

import h2.config
import h2.connection
import h2.events
import h2.settings
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding
from cryptography.x509.oid import NameOID

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fcm_service_account import make_service_account  # noqa: E402

SCOPE = "https://www.googleapis.com/auth/firebase.messaging"
TOPIC_RE = re.compile(r"^[a-zA-Z0-9\-_.~%]+$")
TOKEN_RE = re.compile(r"^[A-Za-z0-9_:\-]+$")
DURATION_RE = re.compile(r"^\d+(\.\d{1,9})?s$")
COLOR_RE = re.compile(r"^#[0-9a-fA-F]{6}$")
FCM_ERROR = "type.googleapis.com/google.firebase.fcm.v1.FcmError"
BAD_REQUEST = "type.googleapis.com/google.rpc.BadRequest"
DATA_LIMIT = 4096


def b64url_decode(s):
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


def make_tls(directory):
    """A CA and a server certificate for 127.0.0.1/localhost; returns (ca_path, cert_path, key_path)."""
    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Pushline fake FCM CA")])
    ca = (
        x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.SubjectAlternativeName(
            [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    ca_path = os.path.join(directory, "fake-fcm-ca.pem")
    cert_path = os.path.join(directory, "fake-fcm-cert.pem")
    key_path = os.path.join(directory, "fake-fcm-key.pem")
    with open(ca_path, "wb") as f:
        f.write(ca.public_bytes(serialization.Encoding.PEM))
    with open(cert_path, "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    with open(key_path, "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()))
    return ca_path, cert_path, key_path


def google_error(http, status, message, fcm_code=None, violations=None):
    """Google's JSON error body and HTTP status."""
    details = []
    if fcm_code:
        details.append({"@type": FCM_ERROR, "errorCode": fcm_code})
    if violations:
        details.append({"@type": BAD_REQUEST,
                        "fieldViolations": [{"field": f, "description": d} for f, d in violations]})
    err = {"code": http, "message": message, "status": status}
    if details:
        err["details"] = details
    return http, {"error": err}


def bad(message, field=None, code="INVALID_ARGUMENT"):
    return google_error(400, "INVALID_ARGUMENT", message, code, [(field, message)] if field else None)


class Invalid(Exception):
    def __init__(self, response):
        super().__init__(response[1]["error"]["message"])
        self.response = response


def check_condition(cond):
    """Google's condition grammar: quoted topic 'in topics', &&, ||, !, parentheses, at most 5 topics."""
    toks = re.findall(r"'[^']*'\s*in\s*topics|\"[^\"]*\"\s*in\s*topics|&&|\|\||!|\(|\)|\S+", cond)
    topics = []
    pos = 0

    def term():
        nonlocal pos
        if pos >= len(toks):
            raise ValueError("unexpected end")
        t = toks[pos]
        if t == "!":
            pos += 1
            term()
        elif t == "(":
            pos += 1
            expr()
            if pos >= len(toks) or toks[pos] != ")":
                raise ValueError("expected )")
            pos += 1
        elif t[0] in "'\"" and t.endswith("topics"):
            name = t[1:t.index(t[0], 1)]
            if not TOPIC_RE.match(name):
                raise ValueError("invalid topic name")
            topics.append(name)
            pos += 1
        else:
            raise ValueError("unexpected " + t)

    def expr():
        nonlocal pos
        term()
        while pos < len(toks) and toks[pos] in ("&&", "||"):
            pos += 1
            term()

    expr()
    if pos != len(toks):
        raise ValueError("trailing text")
    if not topics or len(topics) > 5:
        raise ValueError("a condition names 1 to 5 topics")


def string_map(obj, field):
    if not isinstance(obj, dict):
        raise Invalid(bad(f"Invalid value at '{field}' (type.googleapis.com/google.protobuf.Struct)", field))
    for i, (k, v) in enumerate(obj.items()):
        if not isinstance(v, str):
            raise Invalid(bad(f"Invalid value at '{field}[{i}].value' (TYPE_STRING), {json.dumps(v)}",
                              f"{field}[{i}].value"))


def only_keys(obj, allowed, field):
    if not isinstance(obj, dict):
        raise Invalid(bad(f"Invalid value at '{field}': expected an object", field))
    for k in obj:
        if k not in allowed:
            raise Invalid(bad(f"Invalid JSON payload received. Unknown name \"{k}\" at '{field}': Cannot find field.",
                              field))


def validate_message(m):
    """Raises Invalid with Google's answer for a message Google would refuse; returns the target kind."""
    only_keys(m, {"name", "data", "notification", "android", "webpush", "apns", "fcm_options", "token", "topic",
                  "condition"}, "message")
    targets = [k for k in ("token", "topic", "condition") if k in m]
    if len(targets) != 1:
        raise Invalid(bad("Exactly one of token, topic or condition must be specified", "message"))
    kind = targets[0]
    if kind == "token" and (not isinstance(m["token"], str) or not TOKEN_RE.match(m["token"])):
        raise Invalid(bad("The registration token is not a valid FCM registration token", "message.token"))
    if kind == "topic" and (not isinstance(m["topic"], str) or not TOPIC_RE.match(m["topic"])):
        raise Invalid(bad("Invalid topic name", "message.topic"))
    if kind == "condition":
        try:
            check_condition(m["condition"] if isinstance(m["condition"], str) else "")
        except ValueError as e:
            raise Invalid(bad(f"Invalid condition expression: {e}", "message.condition"))
    data = m.get("data", {})
    string_map(data, "message.data")
    for k in data:
        lk = k.lower()
        if lk in ("from", "message_type", "notification") or lk.startswith("google") or lk.startswith("gcm"):
            raise Invalid(bad(f"Invalid data payload key: {k}", "message.data"))
    size = sum(len(k.encode()) + len(v.encode()) for k, v in data.items())
    if size > DATA_LIMIT:
        raise Invalid(bad("Android message is too big", "message"))
    if "notification" in m:
        only_keys(m["notification"], {"title", "body", "image"}, "message.notification")
    a = m.get("android")
    if a is not None:
        only_keys(a, {"collapse_key", "priority", "ttl", "restricted_package_name", "data", "notification",
                      "fcm_options", "direct_boot_ok"}, "message.android")
        if "priority" in a and a["priority"] not in ("NORMAL", "HIGH"):
            raise Invalid(bad(f"Invalid value at 'message.android.priority' "
                              f"(type.googleapis.com/google.firebase.fcm.v1.AndroidMessagePriority), "
                              f"{json.dumps(a['priority'])}", "message.android.priority"))
        if "ttl" in a and (not isinstance(a["ttl"], str) or not DURATION_RE.match(a["ttl"])):
            raise Invalid(bad("Invalid value at 'message.android.ttl' (type.googleapis.com/google.protobuf.Duration)",
                              "message.android.ttl"))
        if "data" in a:
            string_map(a["data"], "message.android.data")
        n = a.get("notification")
        if n is not None:
            only_keys(n, {"title", "body", "icon", "color", "sound", "tag", "click_action", "body_loc_key",
                          "body_loc_args", "title_loc_key", "title_loc_args", "channel_id", "ticker", "sticky",
                          "event_time", "local_only", "notification_priority", "default_sound",
                          "default_vibrate_timings", "default_light_settings", "vibrate_timings", "visibility",
                          "notification_count", "light_settings", "image"}, "message.android.notification")
            if "color" in n and (not isinstance(n["color"], str) or not COLOR_RE.match(n["color"])):
                raise Invalid(bad("Invalid color format; must be #rrggbb", "message.android.notification.color"))
            if "notification_count" in n and not isinstance(n["notification_count"], int):
                raise Invalid(bad("Invalid value at 'message.android.notification.notification_count' (TYPE_INT32)",
                                  "message.android.notification.notification_count"))
    ap = m.get("apns")
    if ap is not None:
        only_keys(ap, {"headers", "payload", "fcm_options", "live_activity_token"}, "message.apns")
        if "headers" in ap:
            string_map(ap["headers"], "message.apns.headers")
        if "payload" in ap and not isinstance(ap["payload"], dict):
            raise Invalid(bad("Invalid value at 'message.apns.payload'", "message.apns.payload"))
    w = m.get("webpush")
    if w is not None:
        only_keys(w, {"headers", "data", "notification", "fcm_options"}, "message.webpush")
        for k in ("headers", "data"):
            if k in w:
                string_map(w[k], f"message.webpush.{k}")
    if "fcm_options" in m:
        only_keys(m["fcm_options"], {"analytics_label"}, "message.fcm_options")
    return kind


class Account:
    def __init__(self, sa):
        self.email = sa["client_email"]
        self.project = sa["project_id"]
        self.token_uri = sa["token_uri"]
        key = serialization.load_pem_private_key(sa["private_key"].encode(), password=None)
        self.public_key = key.public_key()


class FakeFCM:
    def __init__(self, tls_dir, max_streams=1000):
        self.tls_dir = tls_dir
        self.max_streams = max_streams
        self.accounts = {}  # client_email -> Account
        self.port = None
        self.control_port = None
        self.ca_path = None
        self.reset_all()

    def reset_all(self):
        self.tokens = {}  # access token -> (email, expires_at)
        self.marks = {}  # registration token -> "unregister" | "invalid" | "sender_mismatch" | "third_party_auth"
        self.failures = []  # scripted send failures: dicts
        self.token_failures = []
        self.token_ttl = 3600
        self.token_delay_ms = 0
        self.send_delay_ms = 0
        self.messages = []
        self.subscriptions = {}
        self.stats = {"token_requests": 0, "token_refused": 0, "sends": 0, "delivered": 0, "rejected": 0,
                      "unauthenticated": 0, "iid_calls": 0, "max_concurrent_streams": 0, "connections": 0}
        self.counter = 0
        self.open_streams = 0

    def add_account(self, sa):
        acc = Account(sa)
        self.accounts[acc.email] = acc
        return acc

    # ---- token endpoint ----
    async def handle_token(self, headers, body):
        self.stats["token_requests"] += 1
        if self.token_delay_ms:
            await asyncio.sleep(self.token_delay_ms / 1000)
        if self.token_failures:
            f = self.token_failures[0]
            f["count"] -= 1
            if f["count"] <= 0:
                self.token_failures.pop(0)
            return f.get("status", 500), {"error": "internal_failure", "error_description": "scripted failure"}
        form = urllib.parse.parse_qs(body.decode(), keep_blank_values=True)
        if form.get("grant_type") != ["urn:ietf:params:oauth:grant-type:jwt-bearer"]:
            return self.token_refused("unsupported_grant_type", "Invalid grant_type")
        assertion = (form.get("assertion") or [""])[0]
        parts = assertion.split(".")
        if len(parts) != 3:
            return self.token_refused("invalid_grant", "Invalid JWT: malformed")
        try:
            header = json.loads(b64url_decode(parts[0]))
            claims = json.loads(b64url_decode(parts[1]))
            sig = b64url_decode(parts[2])
        except Exception:
            return self.token_refused("invalid_grant", "Invalid JWT: bad base64url or JSON")
        if header.get("alg") != "RS256":
            return self.token_refused("invalid_grant", "Invalid JWT: alg must be RS256")
        acc = self.accounts.get(claims.get("iss"))
        if acc is None:
            return self.token_refused("invalid_grant", "Invalid JWT Signature.")  # Google's answer for unknown iss
        try:
            acc.public_key.verify(sig, (parts[0] + "." + parts[1]).encode(), padding.PKCS1v15(), hashes.SHA256())
        except InvalidSignature:
            return self.token_refused("invalid_grant", "Invalid JWT Signature.")
        now = time.time()
        if claims.get("aud") != acc.token_uri:
            return self.token_refused("invalid_grant", "Invalid JWT: aud is not the token URI")
        if SCOPE not in str(claims.get("scope", "")).split():
            return self.token_refused("invalid_scope", "scope must include firebase.messaging")
        iat, exp = claims.get("iat"), claims.get("exp")
        if not isinstance(iat, int) or not isinstance(exp, int):
            return self.token_refused("invalid_grant", "Invalid JWT: iat and exp are required integers")
        if iat > now + 60 or exp < now or exp - iat > 3600 or exp <= iat:
            return self.token_refused("invalid_grant",
                                      "Invalid JWT: Token must be a short-lived token (60 minutes) and in a "
                                      "reasonable timeframe. Check your iat and exp values in the JWT claim.")
        tok = "ya29.fake-" + base64.urlsafe_b64encode(os.urandom(24)).decode().rstrip("=")
        self.tokens[tok] = (acc.email, now + self.token_ttl)
        return 200, {"access_token": tok, "expires_in": self.token_ttl, "token_type": "Bearer"}

    def token_refused(self, err, desc):
        self.stats["token_refused"] += 1
        return 400, {"error": err, "error_description": desc}

    def bearer_account(self, headers):
        auth = headers.get("authorization", "")
        if not auth.startswith("Bearer "):
            return None
        entry = self.tokens.get(auth[7:])
        if entry is None or entry[1] < time.time():
            return None
        return self.accounts.get(entry[0])

    # ---- send endpoint ----
    async def handle_send(self, project, headers, body):
        self.stats["sends"] += 1
        if self.send_delay_ms:
            await asyncio.sleep(self.send_delay_ms / 1000)
        acc = self.bearer_account(headers)
        if acc is None:
            self.stats["unauthenticated"] += 1
            return google_error(401, "UNAUTHENTICATED",
                                "Request had invalid authentication credentials. Expected OAuth 2 access token, "
                                "login cookie or other valid authentication credential.")
        if acc.project != project:
            return google_error(403, "PERMISSION_DENIED",
                                f"Permission 'cloudmessaging.messages.create' denied on resource "
                                f"'//cloudresourcemanager.googleapis.com/projects/{project}' (or it may not exist).")
        if not headers.get("content-type", "").startswith("application/json"):
            return bad("Invalid content type")
        try:
            req = json.loads(body)
        except Exception:
            return bad("Invalid JSON payload received.")
        record = {"message": req.get("message") if isinstance(req, dict) else None,
                  "validate_only": bool(req.get("validate_only")) if isinstance(req, dict) else False}
        self.messages.append(record)
        res = self.process_send(project, req)
        status = res[0]
        record["status"] = status
        if status == 200 and not record["validate_only"]:
            self.stats["delivered"] += 1
        elif status != 200:
            self.stats["rejected"] += 1
        return res

    def process_send(self, project, req):
        if not isinstance(req, dict) or not isinstance(req.get("message"), dict):
            return bad("Request contains an invalid argument.", "message")
        for k in req:
            if k not in ("message", "validate_only"):
                return bad(f"Invalid JSON payload received. Unknown name \"{k}\": Cannot find field.")
        m = req["message"]
        try:
            kind = validate_message(m)
        except Invalid as e:
            return e.response
        if self.failures:
            f = self.failures[0]
            if not f.get("tokens") or m.get("token") in f["tokens"]:
                f["count"] -= 1
                if f["count"] <= 0:
                    self.failures.pop(0)
                status, body = google_error(f["status"], f["gstatus"], f["message"], f["code"])
                if f.get("retry_after") is not None:
                    return status, body, {"retry-after": str(f["retry_after"])}
                if f.get("retry_after_date") is not None:  # the HTTP-date form, N seconds from now
                    when = email.utils.formatdate(time.time() + f["retry_after_date"], usegmt=True)
                    return status, body, {"retry-after": when}
                return status, body
        if kind == "token":
            mark = self.marks.get(m["token"])
            if mark == "unregister":
                return google_error(404, "NOT_FOUND", "Requested entity was not found.", "UNREGISTERED")
            if mark == "invalid":
                return bad("The registration token is not a valid FCM registration token", "message.token")
            if mark == "sender_mismatch":
                return google_error(403, "PERMISSION_DENIED", "SenderId mismatch", "SENDER_ID_MISMATCH")
            if mark == "third_party_auth":
                return google_error(401, "UNAUTHENTICATED", "Auth error from APNS or Web Push Service",
                                    "THIRD_PARTY_AUTH_ERROR")
        if req.get("validate_only"):
            return 200, {"name": f"projects/{project}/messages/fake_message_id"}
        self.counter += 1
        return 200, {"name": f"projects/{project}/messages/0:{self.counter}%fake{self.counter:08x}"}

    # ---- Instance ID ----
    async def handle_iid(self, add, headers, body):
        self.stats["iid_calls"] += 1
        if headers.get("access_token_auth") != "true" or self.bearer_account(headers) is None:
            return 401, {"error": "Unauthorized"}
        try:
            req = json.loads(body)
        except Exception:
            return 400, {"error": "InvalidJson"}
        to = req.get("to")
        toks = req.get("registration_tokens")
        if not isinstance(to, str) or not to.startswith("/topics/") or not TOPIC_RE.match(to[8:]):
            return 400, {"error": "InvalidTopicName"}
        if not isinstance(toks, list) or not toks or len(toks) > 1000:
            return 400, {"error": "InvalidListOfTokens"}
        topic = to[8:]
        subs = self.subscriptions.setdefault(topic, [])
        results = []
        for t in toks:
            if not isinstance(t, str) or not TOKEN_RE.match(t) or self.marks.get(t) == "invalid":
                results.append({"error": "INVALID_ARGUMENT"})
            elif self.marks.get(t) == "unregister":
                results.append({"error": "NOT_FOUND"})
            else:
                if add and t not in subs:
                    subs.append(t)
                if not add and t in subs:
                    subs.remove(t)
                results.append({})
        return 200, {"results": results}

    # ---- control ----
    def control(self, req):
        op = req.get("op")
        if op in ("unregister", "invalid", "sender_mismatch", "third_party_auth"):
            for t in req.get("tokens", []):
                self.marks[t] = op
        elif op == "clear_marks":
            for t in req.get("tokens", list(self.marks)):
                self.marks.pop(t, None)
        elif op == "fail":
            status = int(req.get("status", 503))
            code = req.get("code", {500: "INTERNAL", 503: "UNAVAILABLE"}.get(status, "UNAVAILABLE"))
            gstatus = {500: "INTERNAL", 503: "UNAVAILABLE", 429: "RESOURCE_EXHAUSTED", 400: "INVALID_ARGUMENT",
                       403: "PERMISSION_DENIED", 404: "NOT_FOUND", 401: "UNAUTHENTICATED"}.get(status, "UNKNOWN")
            self.failures.append({"count": int(req.get("count", 1)), "status": status, "code": code,
                                  "gstatus": gstatus, "message": req.get("message", "scripted failure"),
                                  "retry_after": req.get("retry_after"), "retry_after_date": req.get("retry_after_date"),
                                  "tokens": req.get("tokens")})
        elif op == "quota":
            message = {"device": "Device message rate exceeded.", "topic": "Topic message rate exceeded."}.get(
                req.get("scope"), "Quota exceeded for quota metric 'Send requests' and limit 'Send requests per minute'"
                " of service 'fcm.googleapis.com'")
            self.failures.append({"count": int(req.get("count", 1)), "status": 429, "code": "QUOTA_EXCEEDED",
                                  "gstatus": "RESOURCE_EXHAUSTED", "message": message,
                                  "retry_after": req.get("retry_after"), "tokens": req.get("tokens")})
        elif op == "expire_tokens":
            self.tokens.clear()
        elif op == "token_fail":
            self.token_failures.append({"count": int(req.get("count", 1)), "status": int(req.get("status", 500))})
        elif op == "token_ttl":
            self.token_ttl = int(req["seconds"])
        elif op == "token_delay_ms":
            self.token_delay_ms = int(req["ms"])
        elif op == "send_delay_ms":
            self.send_delay_ms = int(req["ms"])
        elif op == "stats":
            return {"ok": True, **self.stats, "messages": len(self.messages)}
        elif op == "messages":
            return {"ok": True, "messages": self.messages[int(req.get("since", 0)):]}
        elif op == "subscriptions":
            return {"ok": True, "subscriptions": self.subscriptions}
        elif op == "reset":
            keep = self.accounts
            self.reset_all()
            self.accounts = keep
        else:
            return {"ok": False, "error": f"unknown op {op!r}"}
        return {"ok": True}

    async def control_client(self, reader, writer):
        try:
            while True:
                line = await reader.readline()
                if not line:
                    break
                try:
                    resp = self.control(json.loads(line))
                except Exception as e:  # noqa: BLE001 - report to the test
                    resp = {"ok": False, "error": repr(e)}
                writer.write((json.dumps(resp) + "\n").encode())
                await writer.drain()
        finally:
            writer.close()

    # ---- routing ----
    async def route(self, method, path, headers, body):
        if method != "POST":
            return 405, {"error": {"code": 405, "message": "Method not allowed", "status": "UNIMPLEMENTED"}}
        path = path.split("?")[0]
        if path == "/token":
            return await self.handle_token(headers, body)
        m = re.match(r"^/v1/projects/([^/]+)/messages:send$", path)
        if m:
            return await self.handle_send(m.group(1), headers, body)
        if path == "/iid/v1:batchAdd":
            return await self.handle_iid(True, headers, body)
        if path == "/iid/v1:batchRemove":
            return await self.handle_iid(False, headers, body)
        return google_error(404, "NOT_FOUND", f"The requested URL {path} was not found on this server.")

    # ---- HTTP/2 ----
    async def h2_client(self, reader, writer):
        self.stats["connections"] += 1
        conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False, header_encoding="utf-8"))
        conn.local_settings = h2.settings.Settings(
            client=False, initial_values={h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: self.max_streams,
                                          h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 1 << 20})
        conn.initiate_connection()
        conn.increment_flow_control_window(1 << 24)
        writer.write(conn.data_to_send())
        streams = {}
        pending_out = {}  # stream id -> remaining bytes
        tasks = set()

        def flush():
            data = conn.data_to_send()
            if data:
                writer.write(data)

        def push(sid):
            buf = pending_out.get(sid)
            if buf is None:
                return
            while buf:
                window = min(conn.local_flow_control_window(sid), conn.max_outbound_frame_size)
                if window <= 0:
                    pending_out[sid] = buf
                    return
                chunk, buf = buf[:window], buf[window:]
                conn.send_data(sid, chunk, end_stream=not buf)
            pending_out.pop(sid, None)

        async def respond(sid, hdrs, body):
            self.open_streams += 1
            self.stats["max_concurrent_streams"] = max(self.stats["max_concurrent_streams"], self.open_streams)
            try:
                res = await self.route(hdrs.get(":method"), hdrs.get(":path", ""), hdrs, bytes(body))
            except Exception as e:  # noqa: BLE001
                res = google_error(500, "INTERNAL", f"fake crashed: {e!r}", "INTERNAL")
            finally:
                self.open_streams -= 1
            status, obj = res[0], res[1]
            extra = res[2] if len(res) > 2 else {}
            payload = json.dumps(obj).encode()
            out = [(":status", str(status)), ("content-type", "application/json; charset=UTF-8"),
                   ("content-length", str(len(payload)))] + list(extra.items())
            try:
                conn.send_headers(sid, out)
                pending_out[sid] = payload
                push(sid)
                flush()
            except Exception:  # noqa: BLE001 - stream reset by the client
                pass

        try:
            while True:
                data = await reader.read(65536)
                if not data:
                    break
                try:
                    events = conn.receive_data(data)
                except Exception:  # noqa: BLE001 - protocol error: drop the connection
                    break
                for ev in events:
                    if isinstance(ev, h2.events.RequestReceived):
                        streams[ev.stream_id] = (dict(ev.headers), bytearray())
                        if ev.stream_ended:
                            h, b = streams.pop(ev.stream_id)
                            t = asyncio.ensure_future(respond(ev.stream_id, h, b))
                            tasks.add(t)
                            t.add_done_callback(tasks.discard)
                    elif isinstance(ev, h2.events.DataReceived):
                        if ev.stream_id in streams:
                            streams[ev.stream_id][1].extend(ev.data)
                        conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
                        if ev.stream_ended and ev.stream_id in streams:
                            h, b = streams.pop(ev.stream_id)
                            t = asyncio.ensure_future(respond(ev.stream_id, h, b))
                            tasks.add(t)
                            t.add_done_callback(tasks.discard)
                    elif isinstance(ev, h2.events.StreamEnded):
                        if ev.stream_id in streams:
                            h, b = streams.pop(ev.stream_id)
                            t = asyncio.ensure_future(respond(ev.stream_id, h, b))
                            tasks.add(t)
                            t.add_done_callback(tasks.discard)
                    elif isinstance(ev, h2.events.WindowUpdated):
                        for sid in list(pending_out):
                            push(sid)
                    elif isinstance(ev, h2.events.StreamReset):
                        streams.pop(ev.stream_id, None)
                        pending_out.pop(ev.stream_id, None)
                    elif isinstance(ev, h2.events.ConnectionTerminated):
                        break
                flush()
                await writer.drain()
        finally:
            for t in tasks:
                t.cancel()
            writer.close()

    async def start(self, port=0, control_port=0):
        self.ca_path, cert, key = make_tls(self.tls_dir)
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(cert, key)
        ctx.set_alpn_protocols(["h2"])
        self.server = await asyncio.start_server(self.h2_client, "127.0.0.1", port, ssl=ctx, backlog=512)
        self.port = self.server.sockets[0].getsockname()[1]
        self.control_server = await asyncio.start_server(self.control_client, "127.0.0.1", control_port)
        self.control_port = self.control_server.sockets[0].getsockname()[1]

    @property
    def base_url(self):
        return f"https://127.0.0.1:{self.port}"


async def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--control-port", type=int, default=0)
    ap.add_argument("--dir", help="where to write the CA (default: a new temp dir)")
    ap.add_argument("--service-account", action="append", default=[], help="accept this existing service account")
    ap.add_argument("--write-service-account", action="append", default=[], metavar="PATH[:PROJECT]",
                    help="generate a service account whose token_uri points at this fake")
    ap.add_argument("--max-streams", type=int, default=1000)
    ap.add_argument("--exit-on-stdin-eof", action="store_true",
                    help="exit when stdin closes (the test process that started the fake died)")
    args = ap.parse_args()
    fake = FakeFCM(args.dir or tempfile.mkdtemp(prefix="fake-fcm-"), args.max_streams)
    await fake.start(args.port, args.control_port)
    for p in args.service_account:
        with open(p) as f:
            fake.add_account(json.load(f))
    for spec in args.write_service_account:
        path, _, project = spec.partition(":")
        fake.add_account(make_service_account(path, fake.base_url + "/token", project or "pushline-test"))
    print(f"READY {fake.port} {fake.ca_path} {fake.control_port}", flush=True)
    if args.exit_on_stdin_eof:
        loop = asyncio.get_running_loop()

        def stdin_ready():
            if not os.read(0, 4096):
                loop.stop()

        loop.add_reader(0, stdin_ready)
    async with fake.server, fake.control_server:
        await asyncio.gather(fake.server.serve_forever(), fake.control_server.serve_forever())


if __name__ == "__main__":
    # A parent such as Swift's test runner may spawn us with every signal blocked: let SIGTERM/SIGINT work.
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM, signal.SIGINT})
    try:
        asyncio.run(main())
    except (KeyboardInterrupt, RuntimeError):
        pass
