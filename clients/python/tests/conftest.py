"""Fixtures: a real `pushline serve` on a temporary socket (see clients/testsupport/daemon.py)."""

import os
import shutil
import sys
import tempfile

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "src"))
sys.path.insert(0, os.path.join(HERE, "..", "..", "testsupport"))  # daemon.py, apns.py

from daemon import Daemon  # noqa: E402

import pushline  # noqa: E402


@pytest.fixture
def workdir():
    # Short paths: a Unix socket path must stay under 108 bytes.
    d = tempfile.mkdtemp(prefix="plpy-", dir="/tmp")
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def daemon(workdir):
    d = Daemon(workdir).start()
    yield d
    d.stop()


@pytest.fixture
def client(daemon):
    with pushline.Client(daemon.socket, timeout=10) as c:
        yield c


def apns_token(n: int) -> str:
    """A valid, distinct APNs token (64 hex characters)."""
    return f"{n:064x}"
