"""Fixtures: a real `pushline serve` on a temporary socket (see clients/testsupport/daemon.py)."""

import os
import shutil
import subprocess
import sys
import tempfile

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "testsupport"))  # daemon.py, apns.py

from daemon import Daemon, raw_request  # noqa: E402

SCRIPT = os.path.join(HERE, "..", "pushline-send")


@pytest.fixture
def workdir():
    d = tempfile.mkdtemp(prefix="plsh-", dir="/tmp")
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def daemon(workdir):
    d = Daemon(workdir).start()
    yield d
    d.stop()


class Runner:
    """Runs pushline-send with the daemon's socket in the environment."""

    def __init__(self, daemon):
        self.daemon = daemon
        self.env = daemon.env()

    def __call__(self, *args, stdin=None, env=None):
        e = dict(self.env)
        e.update(env or {})
        return subprocess.run(["sh", SCRIPT, *args], input=stdin, capture_output=True, text=True, env=e, timeout=60)

    def request(self, req):
        return raw_request(self.daemon.socket, req)


@pytest.fixture
def run(daemon):
    return Runner(daemon)
