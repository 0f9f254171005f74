"""Runs the example against a real daemon: `python manage.py test` (needs Django,
the pushline package, and a built `pushline` binary; see README.md)."""

import json
import os
import shutil
import sys
import tempfile

from django.contrib.auth.models import User
from django.test import TestCase, override_settings

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "..", "clients", "testsupport"))
from daemon import Daemon  # noqa: E402

from .push import client  # noqa: E402

TOKEN = "4f1c" * 16
TOKEN2 = "5a2d" * 16


class ExampleTest(TestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.dir = tempfile.mkdtemp(prefix="pldj-", dir="/tmp")
        cls.daemon = Daemon(cls.dir).start()
        cls.settings = override_settings(PUSHLINE_SOCKET=cls.daemon.socket)
        cls.settings.enable()
        client.cache_clear()

    @classmethod
    def tearDownClass(cls):
        client().close()
        client.cache_clear()
        cls.settings.disable()
        cls.daemon.stop()
        shutil.rmtree(cls.dir, ignore_errors=True)
        super().tearDownClass()

    def setUp(self):
        self.user = User.objects.create_user("ann", password="pw")
        self.client.force_login(self.user)

    def post(self, url, body):
        return self.client.post(url, data=json.dumps(body), content_type="application/json")

    def test_register_ship_and_errors(self):
        r = self.post("/devices/", {"platform": "apns", "registration_id": TOKEN, "name": "Ann's iPhone"})
        self.assertEqual(r.status_code, 201, r.content)
        device = r.json()["device"]
        self.assertEqual(device["user"], str(self.user.pk))
        # Same token again: the existing device, not an error.
        r = self.post("/devices/", {"platform": "apns", "registration_id": TOKEN})
        self.assertEqual((r.status_code, r.json()["device"]["id"]), (200, device["id"]))
        # Bad token: 400 naming the field.
        r = self.post("/devices/", {"platform": "apns", "registration_id": "nothex"})
        self.assertEqual((r.status_code, r.json()["field"]), (400, "registration_id"))
        # The event fires; the daemon has no APNs credentials, so nothing is pushed, the view still works.
        with self.assertLogs("notifications.handlers", "WARNING"):
            r = self.post("/orders/981/ship/", {})
        self.assertEqual(r.status_code, 200)
        self.assertIsNone(r.json()["push"])

    def test_a_token_registered_by_another_user_is_reassigned(self):
        # Ann registers her phone; the phone then changes hands and Bob registers the same token.
        r = self.post("/devices/", {"platform": "apns", "registration_id": TOKEN2, "name": "Ann's iPhone",
                                    "device_id": "6f1c1a64-7b2e-4b8e-9c3e-1d2f3a4b5c6d"})
        self.assertEqual(r.status_code, 201, r.content)
        ann_device = r.json()["device"]
        bob = User.objects.create_user("bob", password="pw")
        self.client.force_login(bob)
        r = self.post("/devices/", {"platform": "apns", "registration_id": TOKEN2, "name": "Bob's phone"})
        self.assertEqual(r.status_code, 200, r.content)
        got = r.json()["device"]
        # Same registry row, now Bob's; nothing of Ann's comes back.
        self.assertEqual(got["id"], ann_device["id"])
        self.assertEqual((got["user"], got["name"], got["device_id"]), (str(bob.pk), "Bob's phone", None))
        self.assertNotIn("Ann", r.content.decode())
        # Ann's notifications no longer reach the phone Bob holds.
        pl = client()
        self.assertEqual(pl.devices(user=str(self.user.pk), registration_id=TOKEN2)["devices"], [])
        self.assertEqual([d["id"] for d in pl.devices(user=str(bob.pk))["devices"]], [ann_device["id"]])
        # Bob registering again without a name keeps his own name.
        r = self.post("/devices/", {"platform": "apns", "registration_id": TOKEN2})
        self.assertEqual(r.json()["device"]["name"], "Bob's phone")


class RunnableByHandTest(TestCase):
    """The README's steps: the admin (and its login page) work, and a session from that
    login registers a device."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.dir = tempfile.mkdtemp(prefix="pldj-", dir="/tmp")
        cls.daemon = Daemon(cls.dir).start()
        cls.settings = override_settings(PUSHLINE_SOCKET=cls.daemon.socket)
        cls.settings.enable()
        client.cache_clear()

    @classmethod
    def tearDownClass(cls):
        client().close()
        client.cache_clear()
        cls.settings.disable()
        cls.daemon.stop()
        shutil.rmtree(cls.dir, ignore_errors=True)
        super().tearDownClass()

    def test_admin_login_then_register(self):
        from django.core.management import call_command
        call_command("check", fail_level="WARNING")
        User.objects.create_superuser("admin", "admin@example.com", "pw")
        page = self.client.get("/devices/")  # not logged in: sent to the login page
        self.assertEqual(page.status_code, 302)
        self.assertTrue(page["Location"].startswith("/admin/login/"), page["Location"])
        self.assertEqual(self.client.get("/admin/login/").status_code, 200)
        r = self.client.post("/admin/login/", {"username": "admin", "password": "pw", "next": "/admin/"})
        self.assertEqual((r.status_code, r["Location"]), (302, "/admin/"))
        self.assertEqual(self.client.get("/admin/").status_code, 200)
        r = self.client.post("/devices/", data=json.dumps({"platform": "fcm", "registration_id": "dXy-token"}),
                             content_type="application/json")
        self.assertEqual(r.status_code, 201, r.content)
