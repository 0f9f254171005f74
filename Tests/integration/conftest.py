import itertools
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "fakes"))

from harness import Daemon  # noqa: E402

_counter = itertools.count()


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
