"""`pip install ./clients/python` produces an importable, typed package (no daemon needed)."""

import os
import subprocess
import sys

import pytest

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))


def test_pip_install_gives_typed_package(tmp_path):
    target = tmp_path / "site"
    # Exactly what a user runs (pip fetches the build backend, setuptools, from PyPI).
    r = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(target), ROOT], capture_output=True, text=True,
                       env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"})
    if r.returncode != 0 and "No module named pip" in r.stderr:
        pytest.skip("pip is not available")
    assert r.returncode == 0, r.stderr
    assert (target / "pushline" / "py.typed").exists()
    out = subprocess.run([sys.executable, "-c", "import pushline, sys; print(pushline.__file__, pushline.Client)"],
                         capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(target)}, cwd=str(tmp_path))
    assert out.returncode == 0, out.stderr
    assert str(target) in out.stdout
