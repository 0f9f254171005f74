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
