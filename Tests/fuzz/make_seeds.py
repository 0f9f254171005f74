#!/usr/bin/env python3
"""Writes the committed seed corpus (Tests/fuzz/corpus/<target>/seed-*). Run once; libFuzzer
grows its own corpus from these in the scratch directory (see Tests/fuzz/fuzz.sh)."""
import base64, json, os, sys

from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives import serialization

root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus")

def write(target, items):
    d = os.path.join(root, target)
    os.makedirs(d, exist_ok=True)
    for i, b in enumerate(items):
        if isinstance(b, str):
            b = b.encode()
        with open(os.path.join(d, "seed-%02d" % i), "wb") as f:
            f.write(b)

apns_token = "a" * 64
notifications = [
    {"message": "Hello"},
    {"message": {"title": "T", "body": "B", "loc_key": "K", "loc_args": ["a"]}, "badge": 3, "sound": "default"},
    {"message": "x", "extra": {"k": 1, "n": {"m": [1, 2]}}, "thread_id": "t", "category": "c", "mutable_content": True},
    {"content_available": True, "priority": 5, "push_type": "background"},
    {"message": "x", "time_to_live": 3600, "collapse_id": "c1", "priority": "high", "topic": "com.example.app"},
    {"message": "x", "expiration": 1790000000, "apns_id": "123e4567-e89b-12d3-a456-426614174000", "interruption_level": "time-sensitive", "relevance_score": 0.5},
    {"event": "update", "content_state": {"score": 1}, "timestamp": 1790000000, "stale_date": 1790003600, "dismissal_date": 1790007200},
    {"message": "x", "apns": {"headers": {"apns-priority": 5, "apns-collapse-id": "c"}, "payload": {"aps": {"sound": "s"}, "k": 2}}},
    {"message": "x", "badges": {apns_token: 4}, "url_args": ["a", "b"], "target_content_id": "t", "filter_criterion": "f"},
    {"message": "x", "sound": {"critical": 1, "name": "default", "volume": 0.5}},
    {"message": "x", "title": "t", "data": {"a": "b"}, "android": {"priority": "high", "ttl": "60s"}, "fcm_options": {"analytics_label": "l"}},
    {"message": "x", "use_fcm_notifications": False, "icon": "i", "color": "#ff0000", "tag": "t", "click_action": "c", "channel_id": "ch"},
    {"message": "x", "title_loc_key": "k", "title_loc_args": ["1"], "body_loc_key": "b", "body_loc_args": ["2"], "image": "https://e/i.png"},
    {"message": "x", "dry_run": True, "webpush": {"headers": {"Urgency": "low"}}},
    {"payload": {"any": "json"}, "urgency": "very-low", "webpush_topic": "topic-1"},
    {"payload": "raw text", "time_to_live": 0},
    {"message": "x", "url": "https://example.com", "icon": "i"},
    {"message": "x", "wns_type": "tile"},
    {"wns_type": "badge", "badge": 7},
    {"wns_type": "raw", "wns_payload": "raw body", "wns": {"X-WNS-Tag": "t", "cache_policy": "cache"}},
    {"wns_type": "toast", "wns_payload": "<toast><visual><binding template=\"ToastGeneric\"><text>a</text></binding></visual></toast>"},
    {"message": "a<b>&\"c'", "title": "</text><x>", "extra": {"k": "v"}, "sound": "ms-winsoundevent:Notification.Mail"},
]
ns = [json.dumps(n, separators=(",", ":")) for n in notifications]
for t in ("apns", "fcm", "wns"):
    write(t, ns)

key = ec.generate_private_key(ec.SECP256R1())
pub = key.public_key().public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
b64u = lambda b: base64.urlsafe_b64encode(b).decode().rstrip("=")
webpush = [b"\x00" + n.encode() for n in ns] + [
    b"\x01" + (b64u(pub) + "\n" + b64u(b"0123456789abcdef")).encode(),
    b"\x03" + (base64.b64encode(pub).decode() + "\n" + base64.b64encode(b"0123456789abcdef").decode()).encode(),
    b"\x01" + (b64u(b"\x04" + b"\x00" * 64) + "\n" + b64u(b"0123456789abcdef")).encode(),
]
write("webpush", webpush)

requests = [
    {"cmd": "ping", "id": 1},
    {"cmd": "register", "platform": "apns", "registration_id": apns_token, "user": "u1", "name": "phone", "app": "default"},
    {"cmd": "register", "devices": [{"platform": "fcm", "registration_id": "f" * 40, "user": 7},
                                    {"platform": "webpush", "registration_id": "https://push.example.com/x", "p256dh": b64u(pub), "auth": b64u(b"0123456789abcdef"), "browser": "firefox"},
                                    {"platform": "wns", "registration_id": "https://wns.example.com/c", "device_id": "123e4567-e89b-12d3-a456-426614174000"}]},
    {"cmd": "unregister", "registration_ids": ["x" * 20, "y" * 20], "platform": "fcm"},
    {"cmd": "unregister", "device": 5},
    {"cmd": "devices", "app": "default", "platform": "apns", "user": "u", "active": True, "after": 10, "limit": 50},
    {"cmd": "update", "device": 3, "name": None, "user": "u2", "active": False},
    {"cmd": "prune", "inactive_before": "2026-11-01T00:00:00Z"},
    {"cmd": "prune", "inactive_before": 1790000000},
    {"cmd": "stats"},
    {"cmd": "send", "ids": [1, 2, 3], "message": "hi", "badge": 1},
    {"cmd": "send", "registration_ids": [apns_token], "platform": "apns", "message": {"title": "t", "body": "b"}},
    {"cmd": "send", "users": ["u1", 2], "app": "default", "platform": "fcm", "message": "x", "data": {"a": "b"}},
    {"cmd": "send", "filter": {"app": "default", "platform": "webpush", "user": "u"}, "message": "x"},
    {"cmd": "bulk", "messages": [{"ids": [1], "message": "a"}, {"registration_ids": ["t" * 20], "platform": "wns", "message": "b"}]},
    {"cmd": "topic", "topic": "/topics/news", "message": "x"},
    {"cmd": "topic", "condition": "'a' in topics && ('b' in topics || 'c' in topics)", "message": "x"},
    {"cmd": "subscribe", "topic": "news", "registration_ids": ["f" * 40], "platform": "fcm"},
    {"cmd": "unsubscribe", "topic": "news", "users": ["u"]},
    {"cmd": "topics", "ids": [1]},
    {"cmd": "nope", "x": 1},
]
rs = [json.dumps(r, separators=(",", ":")) for r in requests]
write("request", rs)
write("json", rs + ns + [
    "[1,-0,0.5,1e308,-1.5e-300,9223372036854775807,-9223372036854775808,18446744073709551616]",
    '"esc \\" \\\\ \\/ \\b \\f \\n \\r \\t \\u00e9 \\ud83d\\ude00"',
    '{"a":{"b":{"c":[[[{}]]]}},"a":2}', " true ", "null", '{"":""}',
])
# framing: byte 0 = line limit (mod 48), bytes 1-2 = how reads are cut and where the server pauses.
write("framing", [
    b"\x20\x12\x34" + b'{"cmd":"ping","id":1}\n{"cmd":"stats"}\n',
    b"\x08\x00\x01" + b"short\nthis line is too long\nok\n\r\n\n",
    b"\x05\xff\xff" + b"aaaaaaaaaaaa" + b"\nb\n" + b"c" * 30,
    b"\x00\x10\x01" + b"\n\n\nx\n",
    b"\x2f\x77\x01" + (b"0123456789" * 5 + b"\n") * 3,
])
