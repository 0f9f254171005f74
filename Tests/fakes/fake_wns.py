#!/usr/bin/env python3
"""A fake Windows Push Notification Service on loopback over HTTP/2 + TLS, for Pushline tests.

Token endpoint  POST /accesstoken.srf   (form: grant_type=client_credentials, client_id, client_secret,
                scope=notify.windows.com) -> {"access_token", "token_type": "bearer", "expires_in"};
                wrong credentials -> 400 {"error": "invalid_client"}.
Channel endpoint POST /w/<channel id>  checks `Authorization: Bearer <a token it issued and not revoked>`
                (else 401 with X-WNS-Error-Description), X-WNS-Type (wns/toast|tile|badge|raw),
                Content-Type (text/xml, application/octet-stream for raw), and for XML types that the body
                is well-formed XML whose root is <toast>/<tile>/<badge>; then answers what the test scripted,
                else 200 with X-WNS-Status: received, X-WNS-Msg-ID, X-WNS-DeviceConnectionStatus: connected.

Prints `READY <port> <ca_file> <control_port>`. Options: --client-id, --client-secret, --token-ttl.
Control (plain HTTP/1.1 JSON on 127.0.0.1:<control_port>):
  POST /channel {"count": n}     -> [{"id", "uri"}]
  POST /script {"id": cid, "responses": [{"status": 200, "wns_status": "dropped", "headers": {...}}]}
  POST /expire {"id": cid, "status": 410}   every later push to cid answers that status
  POST /revoke                   every issued token becomes invalid (next push gets 401)
  GET  /received[?id=cid]        -> [{"id", "ok", "error", "status", "type", "content_type", "headers", "body", "token"}]
  POST /reset                    forgets received pushes and scripts
  GET  /stats                    -> {"token_requests", "tokens_issued", "pushes"}
"""
import argparse
import itertools
import json
import os
import sys
import threading
import time
import xml.etree.ElementTree as ET
from collections import deque
from urllib.parse import parse_qs

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import webwns_h2  # noqa: E402

TYPES = {"wns/toast": "toast", "wns/tile": "tile", "wns/badge": "badge", "wns/raw": "raw"}


class WNS:
    def __init__(self, origin, args):
        self.origin = origin
        self.args = args
        self.lock = threading.Lock()
        self.tokens = set()
        self.token_requests = 0
        self.channels = {}  # id -> {"script": deque, "expired": status or None}
        self.received = []
        self.ids = itertools.count(1)
        self.msgs = itertools.count(1)

    # -- control -----------------------------------------------------------------------
    def channel(self, q, body):
        out = []
        with self.lock:
            for _ in range(int(body.get("count", 1))):
                cid = "c%d-%s" % (next(self.ids), os.urandom(4).hex())
                self.channels[cid] = {"script": deque(), "expired": None}
                out.append({"id": cid, "uri": "%s/w/%s?token=%s" % (self.origin, cid, os.urandom(8).hex())})
        return out

    def script(self, q, body):
        with self.lock:
            self.channels[body["id"]]["script"].extend(body["responses"])
        return {"ok": True}

    def expire(self, q, body):
        with self.lock:
            self.channels[body["id"]]["expired"] = int(body.get("status", 410))
        return {"ok": True}

    def revoke(self, q, body):
        with self.lock:
            self.tokens.clear()
        return {"ok": True}

    def get_received(self, q, body):
        with self.lock:
            return [r for r in self.received if "id" not in q or r["id"] == q["id"]]

    def reset(self, q, body):
        with self.lock:
            self.received.clear()
            for c in self.channels.values():
                c["script"].clear()
        return {"ok": True}

    def stats(self, q, body):
        with self.lock:
            return {"token_requests": self.token_requests, "pushes": len(self.received)}

    def routes(self):
        return {
            ("POST", "/channel"): self.channel,
            ("POST", "/script"): self.script,
            ("POST", "/expire"): self.expire,
            ("POST", "/revoke"): self.revoke,
            ("GET", "/received"): self.get_received,
            ("POST", "/reset"): self.reset,
            ("GET", "/stats"): self.stats,
        }

    # -- HTTP/2 --------------------------------------------------------------------------
    def app(self, method, path, headers, body):
        if method == "POST" and path.split("?")[0] == "/accesstoken.srf":
            return self.token(headers, body)
        rec = {"id": None, "ok": False, "error": None, "status": 0, "type": headers.get("x-wns-type"),
               "content_type": headers.get("content-type"), "headers": headers,
               "body": body.decode("utf-8", "replace"), "token": None}
        status, rh, rb = self.push(method, path, headers, body, rec)
        rec["status"] = status
        with self.lock:
            self.received.append(rec)
        return status, rh, rb

    def token(self, headers, body):
        with self.lock:
            self.token_requests += 1
        if not (headers.get("content-type") or "").startswith("application/x-www-form-urlencoded"):
            return 400, [("content-type", "application/json")], b'{"error":"invalid_request"}'
        form = {k: v[0] for k, v in parse_qs(body.decode(), keep_blank_values=True).items()}
        if form.get("grant_type") != "client_credentials" or form.get("scope") != "notify.windows.com":
            return 400, [("content-type", "application/json")], b'{"error":"invalid_request"}'
        if form.get("client_id") != self.args.client_id or form.get("client_secret") != self.args.client_secret:
            return 400, [("content-type", "application/json")], b'{"error":"invalid_client","error_description":"Invalid client id"}'
        tok = "EgAcAQMAAAAALYAAY" + os.urandom(12).hex()
        with self.lock:
            self.tokens.add(tok)
        out = {"token_type": "bearer", "access_token": tok, "expires_in": self.args.token_ttl}
        return 200, [("content-type", "application/json")], json.dumps(out).encode()

    def push(self, method, path, headers, body, rec):
        def fail(status, desc):
            rec["error"] = desc
            return status, [("x-wns-error-description", desc), ("x-wns-msg-id", "%X" % next(self.msgs))], b""

        p = path.split("?")[0]
        if method != "POST" or not p.startswith("/w/"):
            return fail(404, "no such resource")
        cid = p[3:]
        rec["id"] = cid
        authz = headers.get("authorization", "")
        token = authz[7:] if authz.startswith("Bearer ") else None
        rec["token"] = token
        with self.lock:
            ch = self.channels.get(cid)
            valid = token in self.tokens
        if ch is None:
            return fail(404, "unknown channel")
        if not valid:
            return fail(401, "Token expired or invalid")
        kind = TYPES.get(headers.get("x-wns-type"))
        if kind is None:
            return fail(400, "bad X-WNS-Type %r" % headers.get("x-wns-type"))
        want_ct = "application/octet-stream" if kind == "raw" else "text/xml"
        if headers.get("content-type") != want_ct:
            return fail(400, "Content-Type must be %s for %s" % (want_ct, kind))
        if kind != "raw":
            try:
                root = ET.fromstring(body)
            except ET.ParseError as e:
                return fail(400, "XML not well-formed: %s" % e)
            if root.tag != kind:
                return fail(400, "root element <%s> does not match X-WNS-Type %s" % (root.tag, kind))
        if len(body) > 5000:
            return fail(413, "payload too large")
        if ch["expired"]:
            return fail(ch["expired"], "channel expired")
        rec["ok"] = True
        with self.lock:
            scripted = ch["script"].popleft() if ch["script"] else None
        msg_id = "%016X" % next(self.msgs)
        if scripted:
            st = int(scripted.get("status", 200))
            hs = [("x-wns-msg-id", msg_id)]
            if scripted.get("wns_status"):
                hs.append(("x-wns-status", scripted["wns_status"]))
            if scripted.get("error"):
                hs.append(("x-wns-error-description", scripted["error"]))
            hs += list((scripted.get("headers") or {}).items())
            if st == 401:
                with self.lock:
                    self.tokens.discard(token)
            return st, hs, b""
        return 200, [("x-wns-status", "received"), ("x-wns-msg-id", msg_id), ("x-wns-deviceconnectionstatus", "connected")], b""


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--client-id", default="ms-app://s-1-15-2-fake")
    ap.add_argument("--client-secret", default="fake-secret")
    ap.add_argument("--token-ttl", type=int, default=86400)
    args = ap.parse_args()
    state = {}

    def app_factory(origin):
        state["svc"] = WNS(origin, args)
        return state["svc"].app

    webwns_h2.serve(app_factory, lambda origin: state["svc"].routes())


if __name__ == "__main__":
    main()
