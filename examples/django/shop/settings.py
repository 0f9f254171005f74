"""Settings of the Pushline example project (a minimal Django 4.2+ project)."""

import os
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "example-only-not-secret")
DEBUG = True
ALLOWED_HOSTS = ["*"]

INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "notifications",
]
MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
]
ROOT_URLCONF = "shop.urls"
DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": BASE_DIR / "db.sqlite3"}}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
USE_TZ = True

# --- Pushline ---------------------------------------------------------------
# The daemon's Unix socket (`socket` in pushline.json). The web server's user must be
# allowed to open it (the daemon's `socket_mode`, default 0660, and its group).
PUSHLINE_SOCKET = os.environ.get("PUSHLINE_SOCKET", "/run/pushline/pushline.sock")
# Seconds to wait for the daemon (connecting and each request).
PUSHLINE_TIMEOUT = 5.0
# The app name in the daemon's config ("default" unless you run several apps).
PUSHLINE_APP = "default"
