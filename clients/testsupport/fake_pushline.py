#!/usr/bin/env python3
"""A throwaway stand-in for `pushline serve` / `pushline call`, for developing the
clients before the real daemon existed. NOT used by the test suites unless you
point PUSHLINE_BIN at it explicitly; the suites run against the real daemon.

It follows protocol.md for the registry commands only (in memory), and answers
send/bulk/topic with provider_not_configured (the embedded default).
"""

import json
import os
import re
import signal
import socket
import sys
import threading
import time

MAX_LINE = 1 << 20
DEVICES = {}
NEXT = [1]
LOCK = threading.Lock()
KEYS = {"platform", "registration_id", "app", "name", "user", "device_id", "active", "p256dh", "auth", "browser"}


class Err(Exception):
    def __init__(self, code, message, **details):
        self.code, self.message, self.details = code, message, details


def now():
    return time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime())


def validate(d, prefix):
    for k in d:
        if k not in KEYS:
            raise Err("invalid_argument", f"unknown argument '{prefix}{k}'", field=prefix + k)
    p = d.get("platform")
    if p not in ("apns", "fcm", "webpush", "wns"):
        raise Err("invalid_argument", f"field '{prefix}platform': expected apns, fcm, webpush or wns", field=prefix + "platform")
    t = d.get("registration_id")
    if not isinstance(t, str) or not t:
        raise Err("invalid_argument", f"field '{prefix}registration_id' is required", field=prefix + "registration_id")
    if p == "apns" and not (re.fullmatch(r"[0-9a-fA-F]+", t) and 64 <= len(t) <= 200 and len(t) % 2 == 0):
        raise Err("invalid_argument", f"field '{prefix}registration_id': an APNs token is 64-200 hex characters", field=prefix + "registration_id")
    if p == "fcm" and re.search(r"\s", t):
        raise Err("invalid_argument", f"field '{prefix}registration_id': an FCM token contains no whitespace", field=prefix + "registration_id")
    dev = {"platform": p, "app": d.get("app", "default"), "registration_id": t.lower() if p == "apns" else t,
           "name": d.get("name"), "user": None if d.get("user") is None else str(d["user"]),
           "device_id": d.get("device_id"), "active": d.get("active", True)}
    return dev


def find(app, platform, token):
    for dev in DEVICES.values():
        if (dev["app"], dev["platform"], dev["registration_id"]) == (app, platform, token):
            return dev
    return None


def check_keys(req, allowed):
    for k in req:
        if k not in allowed and k not in ("id", "cmd"):
            raise Err("invalid_argument", f"unknown argument '{k}'", field=k)


def resolve(req):
    if "ids" in req:
        return [DEVICES.get(i) for i in req["ids"]]
    if "users" in req:
        return [d for d in DEVICES.values() if d["user"] in req["users"] and d["active"]]
    if "registration_ids" in req:
        return [find(req.get("app", "default"), req.get("platform"), t) for t in req["registration_ids"]]
    if "filter" in req:
        f = req["filter"]
        return [d for d in DEVICES.values() if all(d.get(k) == v for k, v in f.items())]
    raise Err("invalid_argument", "give one target: ids, registration_ids, users or filter", field="ids")


def handle(req):
    cmd = req.get("cmd")
    if cmd == "ping":
        return {"version": "0.0.0-fake", "protocol": os.environ.get("FAKE_PROTOCOL", "1.0")}
    if cmd == "register":
        with LOCK:
            if "devices" in req:
                check_keys(req, {"devices"})
                devs = [validate(d, f"devices[{i}].") for i, d in enumerate(req["devices"])]
            else:
                devs = [validate({k: v for k, v in req.items() if k not in ("id", "cmd")}, "")]
            for i, d in enumerate(devs):
                if find(d["app"], d["platform"], d["registration_id"]):
                    f = f"devices[{i}].registration_id" if "devices" in req else "registration_id"
                    raise Err("duplicate_registration", f"device {d['registration_id'][:8]}... is already registered", field=f)
            for d in devs:
                d["id"] = NEXT[0]
                NEXT[0] += 1
                d["created_at"] = d["updated_at"] = now()
                DEVICES[d["id"]] = d
            if "devices" in req:
                return {"created": len(devs), "updated": 0, "devices": devs}
            return {"created": True, "updated": False, "device": devs[0]}
    if cmd == "devices":
        check_keys(req, {"app", "platform", "user", "active", "registration_id", "ids", "limit", "after"})
        limit = req.get("limit", 100)
        if not isinstance(limit, int) or not 1 <= limit <= 1000:
            raise Err("invalid_argument", "field 'limit': 1 to 1000", field="limit")
        out = [d for i, d in sorted(DEVICES.items()) if i > (req.get("after") or 0)
               and all(d.get(k) == req[k] for k in ("app", "platform", "user", "active", "registration_id") if k in req)
               and ("ids" not in req or i in req["ids"])]
        page = out[:limit]
        return {"devices": page, "next": page[-1]["id"] if len(out) > limit else None}
    if cmd == "unregister":
        check_keys(req, {"device", "ids", "registration_id", "registration_ids", "platform", "app"})
        ids = req.get("ids") or ([req["device"]] if "device" in req else [])
        deleted, nf = 0, []
        for i in ids:
            if DEVICES.pop(i, None):
                deleted += 1
            else:
                nf.append(i)
        return {"deleted": deleted, "not_found": nf}
    if cmd == "update":
        check_keys(req, {"device", "registration_id", "platform", "app", "name", "user", "device_id", "active"})
        dev = DEVICES.get(req.get("device"))
        if dev is None:
            raise Err("not_found", f"no device {req.get('device')}")
        for k in ("name", "user", "device_id", "active"):
            if k in req:
                dev[k] = req[k]
        return {"device": dev}
    if cmd == "stats":
        return {"devices": {"total": len(DEVICES)}, "uptime_s": 1.0, "connections": 1, "pending": 0}
    if cmd == "prune":
        return {"deleted": 0}
    if cmd in ("send", "bulk", "topic"):
        if cmd != "topic":
            devs = [d for d in resolve(req) if d]
            p = devs[0]["platform"] if devs else req.get("platform", "apns")
        else:
            p = "fcm"
        raise Err("provider_not_configured", f"app 'default' has no {p} credentials", app="default", platform=p)
    raise Err("unknown_command", f"unknown command '{cmd}'")


def serve_conn(conn):
    buf = b""
    f = conn
    while True:
        try:
            data = f.recv(65536)
        except OSError:
            return
        if not data:
            conn.close()
            return
        buf += data
        while b"\n" in buf:
            line, buf = buf.split(b"\n", 1)
            if not line.strip():
                continue
            if len(line) > MAX_LINE:
                resp = {"id": None, "ok": False, "error": {"code": "line_too_long", "message": "too long", "limit": MAX_LINE}}
            else:
                try:
                    req = json.loads(line)
                    if not isinstance(req, dict):
                        raise ValueError
                except ValueError:
                    resp = {"id": None, "ok": False, "error": {"code": "bad_json", "message": "not a JSON object"}}
                else:
                    try:
                        resp = {"id": req.get("id"), "ok": True, **handle(req)}
                    except Err as e:
                        resp = {"id": req.get("id"), "ok": False, "error": {"code": e.code, "message": e.message, **e.details}}
            try:
                conn.sendall(json.dumps(resp, separators=(",", ":")).encode() + b"\n")
            except OSError:
                return


def arg(name, default=None):
    if name in sys.argv:
        return sys.argv[sys.argv.index(name) + 1]
    return default


def main():
    sock_path = arg("--socket", os.environ.get("PUSHLINE_SOCKET", "./var/pushline.sock"))
    if sys.argv[1] == "serve":
        if os.path.exists(sock_path):
            os.unlink(sock_path)
        srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        srv.bind(sock_path)
        srv.listen(256)
        signal.signal(signal.SIGTERM, lambda *a: (os.unlink(sock_path), os._exit(0)))
        print("level=info msg=READY socket=" + sock_path, file=sys.stderr, flush=True)
        while True:
            c, _ = srv.accept()
            threading.Thread(target=serve_conn, args=(c,), daemon=True).start()
    elif sys.argv[1] == "call":
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            s.connect(sock_path)
        except OSError as e:
            print(f"pushline call: cannot connect to {sock_path}: {e}", file=sys.stderr)
            sys.exit(2)
        lines = [l for l in sys.stdin.buffer.read().split(b"\n") if l.strip()]
        s.sendall(b"".join(l + b"\n" for l in lines))
        buf, bad = b"", False
        for _ in lines:
            while b"\n" not in buf:
                buf += s.recv(65536)
            line, buf = buf.split(b"\n", 1)
            sys.stdout.buffer.write(line + b"\n")
            bad = bad or not json.loads(line).get("ok")
        sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
