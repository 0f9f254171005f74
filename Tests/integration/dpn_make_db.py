"""Makes a django-push-notifications 3.3 database with Django's own migrations, and fills it with
devices through the package's models (run as a script: one Django setup per process).

    python3 dpn_make_db.py sqlite /tmp/x/db.sqlite3
    python3 dpn_make_db.py postgresql "dbname=x host=/tmp/sock user=pushline"

Prints a JSON object: the expected outcome per table."""
import base64
import datetime
import json
import os
import sys
import tempfile

kind, where = sys.argv[1], sys.argv[2]
settings_dir = tempfile.mkdtemp(prefix="dpn-settings-")
if kind == "sqlite":
    db = {"ENGINE": "django.db.backends.sqlite3", "NAME": where}
else:
    opts = dict(p.split("=", 1) for p in where.split())
    db = {"ENGINE": "django.db.backends.postgresql", "NAME": opts["dbname"], "HOST": opts["host"], "USER": opts["user"]}
with open(os.path.join(settings_dir, "dpn_settings.py"), "w") as f:
    f.write(f"""
SECRET_KEY = "test"
USE_TZ = True
INSTALLED_APPS = ["django.contrib.contenttypes", "django.contrib.auth", "push_notifications"]
DATABASES = {{"default": {db!r}}}
DEFAULT_AUTO_FIELD = "django.db.models.AutoField"
PUSH_NOTIFICATIONS_SETTINGS = {{}}
""")
sys.path.insert(0, settings_dir)
os.environ["DJANGO_SETTINGS_MODULE"] = "dpn_settings"

import django  # noqa: E402

django.setup()
from django.core.management import call_command  # noqa: E402

call_command("migrate", verbosity=0)

from cryptography.hazmat.primitives.asymmetric import ec  # noqa: E402
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat  # noqa: E402
from django.contrib.auth.models import User  # noqa: E402
from push_notifications.models import APNSDevice, GCMDevice, WebPushDevice, WNSDevice  # noqa: E402


def b64(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


alice = User.objects.create(username="alice")
bob = User.objects.create(username="bob")
when = datetime.datetime(2021, 3, 4, 5, 6, 7, 123000, tzinfo=datetime.timezone.utc)

APNSDevice.objects.create(registration_id="a" * 64, user=alice, name="iPhone", device_id="0A1B2C3D-4E5F-6789-ABCD-EF0123456789")
APNSDevice.objects.create(registration_id="b" * 64, user=bob, application_id="shop", active=False)
APNSDevice.objects.create(registration_id="c" * 64)
APNSDevice.objects.create(registration_id="not-a-hex-token")  # refused
GCMDevice.objects.create(registration_id="fcm-token-1", user=alice, cloud_message_type="FCM", device_id=0x1234ABCD)
GCMDevice.objects.create(registration_id="gcm-legacy-token-2", user=bob, cloud_message_type="GCM")
GCMDevice.objects.create(registration_id="bad token with spaces")  # refused
key = ec.generate_private_key(ec.SECP256R1()).public_key().public_bytes(Encoding.X962, PublicFormat.UncompressedPoint)
WebPushDevice.objects.create(registration_id="https://fcm.googleapis.com/fcm/send/abc123", p256dh=b64(key), auth=b64(os.urandom(16)),
                             browser="CHROME", user=alice)
WebPushDevice.objects.create(registration_id="https://updates.push.services.mozilla.com/wpush/v2/x", p256dh="short", auth="x",
                             browser="FIREFOX")  # refused: bad keys
WNSDevice.objects.create(registration_id="https://db5p.notify.windows.com/w/?token=abc", user=bob)
for m in (APNSDevice, GCMDevice, WebPushDevice, WNSDevice):
    m.objects.update(date_created=when)

print(json.dumps({
    "push_notifications_apnsdevice": {"read": 4, "imported": 3, "refused": 1},
    "push_notifications_gcmdevice": {"read": 3, "imported": 2, "refused": 1},
    "push_notifications_webpushdevice": {"read": 2, "imported": 1, "refused": 1},
    "push_notifications_wnsdevice": {"read": 1, "imported": 1, "refused": 0},
    "users": {"alice": alice.id, "bob": bob.id},
    "created_at": "2021-03-04T05:06:07.123Z",
}))
