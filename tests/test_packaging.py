"""The wheel a non-editable `pip install .` builds carries the package, its migrations and the
web app's files."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> zipfile.ZipFile:
    out = tmp_path_factory.mktemp("wheel")
    done = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", str(out), str(ROOT)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    (path,) = out.glob("claude_server-*.whl")
    return zipfile.ZipFile(path)


def test_the_wheel_ships_the_migrations(wheel: zipfile.ZipFile) -> None:
    names = wheel.namelist()
    shipped = sorted(n.removeprefix("claude_server/") for n in names if n.startswith("claude_server/migrations/"))
    assert shipped == sorted(str(p.relative_to(ROOT)) for p in (ROOT / "migrations").rglob("*.sql"))
    assert any(n.startswith("migrations/postgres/") for n in shipped)
    assert "claude_server/routes/native.py" in names
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert "claude-server = claude_server.cli:main" in wheel.read(entry_points).decode()


def test_the_wheel_ships_the_web_app(wheel: zipfile.ZipFile) -> None:
    """Every static file, vendored licences included, and the page templates are in the wheel,
    byte for byte: an installed server serves the app with no npm and no build step."""
    names = set(wheel.namelist())
    web = ROOT / "claude_server" / "web"
    expected = {
        p.relative_to(ROOT).as_posix(): p for p in web.rglob("*") if p.is_file() and "__pycache__" not in p.parts
    }
    assert set(expected) <= names, sorted(set(expected) - names)
    for name, path in expected.items():
        assert wheel.read(name) == path.read_bytes(), name
    for lib in ("marked", "dompurify", "uplot", "swagger-ui"):
        assert f"claude_server/web/static/vendor/{lib}/LICENSE" in names
    assert "claude_server/web/templates/index.html" in names
