"""`pip install ./clients/python` produces an importable, typed package (no daemon needed)."""

import os
import subprocess
import sys

import pytest

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))


def _can_build_offline() -> bool:
    """setuptools >= 70.1 builds wheels by itself; older ones need the `wheel` package."""
    try:
        import setuptools
    except ImportError:
        return False
    try:
        import wheel  # noqa: F401
        return True
    except ImportError:
        parts = tuple(int(p) for p in setuptools.__version__.split(".")[:2] if p.isdigit())
        return parts >= (70, 1)


def test_pip_install_gives_typed_package(tmp_path):
    target = tmp_path / "site"
    # What a user runs; without build isolation when the local setuptools can build (no download).
    isolation = ["--no-build-isolation"] if _can_build_offline() else []
    r = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", *isolation,
                        "--target", str(target), ROOT], capture_output=True, text=True,
                       env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"})
    if r.returncode != 0 and "No module named pip" in r.stderr:
        pytest.skip("pip is not available")
    assert r.returncode == 0, r.stderr
    assert (target / "pushline" / "py.typed").exists()
    out = subprocess.run([sys.executable, "-c", "import pushline, sys; print(pushline.__file__, pushline.Client)"],
                         capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(target)}, cwd=str(tmp_path))
    assert out.returncode == 0, out.stderr
    assert str(target) in out.stdout
