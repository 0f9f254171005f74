"""Settings of the Pushline example project (a minimal Django 4.2+ project)."""

import os
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "example-only-not-secret")
DEBUG = True
ALLOWED_HOSTS = ["*"]

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "notifications",
]
MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]
ROOT_URLCONF = "shop.urls"
TEMPLATES = [{
    "BACKEND": "django.template.backends.django.DjangoTemplates",
    "DIRS": [],
    "APP_DIRS": True,
    "OPTIONS": {"context_processors": [
        "django.template.context_processors.request",
        "django.contrib.auth.context_processors.auth",
        "django.contrib.messages.context_processors.messages",
    ]},
}]
STATIC_URL = "static/"
# Log in through the admin's login page (python manage.py createsuperuser first).
LOGIN_URL = "/admin/login/"
LOGIN_REDIRECT_URL = "/admin/"
DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": BASE_DIR / "db.sqlite3"}}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
USE_TZ = True

# --- Pushline ---------------------------------------------------------------
# The daemon's Unix socket (`socket` in pushline.json). The web server's user must be
# allowed to open it (the daemon's `socket_mode`, default 0660, and its group).
PUSHLINE_SOCKET = os.environ.get("PUSHLINE_SOCKET", "/run/pushline/pushline.sock")
# Seconds to wait for each request (longer than the daemon's own 30 s provider deadline).
PUSHLINE_TIMEOUT = 75.0
# The app name in the daemon's config ("default" unless you run several apps).
PUSHLINE_APP = "default"
