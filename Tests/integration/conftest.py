import itertools
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "fakes"))

from harness import Daemon  # noqa: E402

_counter = itertools.count()
CLUSTER = str(Path(__file__).resolve().parents[1] / "pg" / "cluster.sh")


@pytest.fixture
def start_daemon(tmp_path_factory):
    """Factory: start_daemon(config=None, extra_args=None, env=None, database=None) -> Daemon; all stopped
    at teardown. `database` overrides the harness's (a fresh SQLite file, or a fresh PostgreSQL
    database when PUSHLINE_TEST_BACKEND=postgres).

    Sockets live in a short temp dir (Unix socket paths are limited to 107 bytes).
    """
    started = []

    def start(config=None, extra_args=None, env=None, wait=True, database=None):
        workdir = tmp_path_factory.mktemp(f"d{next(_counter)}")
        d = Daemon.start(workdir, config=config, extra_args=extra_args, env=env, wait=wait, database=database)
        started.append(d)
        return d

    yield start
    for d in started:
        try:
            d.stop()
        except Exception:
            d.kill()


@pytest.fixture
def daemon(start_daemon):
    """A daemon on the embedded default config (no provider credentials)."""
    return start_daemon()


@pytest.fixture(scope="session")
def pg_cluster():
    """A throwaway PostgreSQL cluster of the session's own (Tests/pg/cluster.sh; Unix socket only), which
    tests may halt and resume: host (socket dir), ctl("halt"|"resume"), psql(uri, sql)."""
    d = tempfile.mkdtemp(prefix="pushline-pgit.")
    os.chmod(d, 0o755)
    sock = subprocess.run([CLUSTER, "start", d], check=True, capture_output=True, text=True, timeout=120).stdout.strip()

    class C:
        host = sock
        dir = d

        @staticmethod
        def ctl(cmd):
            subprocess.run([CLUSTER, cmd, d], check=True, capture_output=True, timeout=120)

        @staticmethod
        def psql(db, sql):
            uri = db.split("&application_name")[0]
            return subprocess.run(["psql", "-X", "-At", uri, "-c", sql], check=True, capture_output=True, text=True,
                                  timeout=60).stdout.strip()

    yield C
    subprocess.run([CLUSTER, "stop", d], capture_output=True, timeout=120)
