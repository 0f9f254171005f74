"""`pushline import-dpn` (issue 14) on databases made by the real django-push-notifications 3.3
(pip) with Django's migrations, on SQLite and on PostgreSQL, into either backend: counts per
table, refused rows with reasons, field mapping, and a second run that adds nothing."""
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from harness import binary, create_pg_database

HERE = Path(__file__).resolve().parent


def make_source(kind, tmp_path, pg_cluster):
    if kind == "sqlite":
        where = str(tmp_path / "django.sqlite3")
        uri = where
    else:
        uri = create_pg_database(pg_cluster.host).split("&application_name")[0]
        name = uri.split("/")[3].split("?")[0]
        where = f"dbname={name} host={pg_cluster.host} user=pushline"
    out = subprocess.run([sys.executable, str(HERE / "dpn_make_db.py"), kind, where], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    return uri, json.loads(out.stdout.strip().splitlines()[-1])


def import_dpn(source, target):
    return subprocess.run([binary(), "import-dpn", "--from", source, "--database", target], capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("source_kind", ["sqlite", "postgresql"])
@pytest.mark.parametrize("target_kind", ["sqlite", "postgresql"])
def test_import_from_django_push_notifications(source_kind, target_kind, tmp_path, pg_cluster, start_daemon):
    source, expected = make_source(source_kind, tmp_path, pg_cluster)
    target = str(tmp_path / "registry.db") if target_kind == "sqlite" else create_pg_database(pg_cluster.host)
    p = import_dpn(source, target)
    assert p.returncode == 1, p.stdout + p.stderr  # some rows refused
    for table in ("push_notifications_apnsdevice", "push_notifications_gcmdevice", "push_notifications_webpushdevice",
                  "push_notifications_wnsdevice"):
        e = expected[table]
        assert f"{table}: {e['read']} read, {e['imported']} imported, 0 already present, {e['refused']} refused" in p.stdout, p.stdout
    # Refused rows name the table, the row and why, without the whole token.
    assert re.search(r"refused push_notifications_apnsdevice id \d+: field 'registration_id': an APNs token", p.stdout), p.stdout
    assert re.search(r"refused push_notifications_gcmdevice id \d+: field 'registration_id': an FCM token cannot contain", p.stdout)
    assert re.search(r"refused push_notifications_webpushdevice id \d+: field 'p256dh'", p.stdout), p.stdout
    assert "bad token with spaces" not in p.stdout
    assert "note push_notifications_gcmdevice" in p.stdout and "device_id" in p.stdout

    # Idempotent: a second run adds nothing.
    again = import_dpn(source, target)
    assert "total: 0 imported, 7 already present, 3 refused" in again.stdout, again.stdout

    d = start_daemon(database=target)
    devs = d.call({"cmd": "devices"})["devices"]
    assert len(devs) == 7
    by_token = {x["registration_id"]: x for x in devs}
    alice, bob = str(expected["users"]["alice"]), str(expected["users"]["bob"])
    a = by_token["a" * 64]
    assert (a["platform"], a["app"], a["user"], a["name"], a["active"]) == ("apns", "default", alice, "iPhone", True)
    assert a["device_id"] == "0a1b2c3d-4e5f-6789-abcd-ef0123456789"
    assert a["created_at"] == expected["created_at"]
    b = by_token["b" * 64]
    assert (b["app"], b["user"], b["active"]) == ("shop", bob, False)
    assert by_token["c" * 64]["user"] is None
    assert by_token["fcm-token-1"]["platform"] == "fcm" and by_token["gcm-legacy-token-2"]["platform"] == "fcm"
    w = by_token["https://fcm.googleapis.com/fcm/send/abc123"]
    assert w["platform"] == "webpush" and w["browser"] == "CHROME" and w["user"] == alice
    assert by_token["https://db5p.notify.windows.com/w/?token=abc"]["platform"] == "wns"


def test_import_refuses_a_database_without_the_tables(tmp_path):
    import sqlite3
    empty = tmp_path / "empty.sqlite3"
    sqlite3.connect(empty).execute("CREATE TABLE t (x)").connection.close()
    p = import_dpn(str(empty), str(tmp_path / "r.db"))
    assert p.returncode == 2 and "no django-push-notifications table" in p.stderr, p.stderr
    p = import_dpn(str(tmp_path / "missing.sqlite3"), str(tmp_path / "r.db"))
    assert p.returncode == 2 and "missing.sqlite3" in p.stderr, p.stderr
