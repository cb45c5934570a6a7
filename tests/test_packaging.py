"""The wheel a non-editable `pip install .` builds carries the package and its migrations."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_the_wheel_ships_the_migrations(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", str(tmp_path), str(ROOT)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    (wheel,) = tmp_path.glob("claude_server-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    shipped = sorted(n.removeprefix("claude_server/") for n in names if n.startswith("claude_server/migrations/"))
    assert shipped == sorted(str(p.relative_to(ROOT)) for p in (ROOT / "migrations").rglob("*.sql"))
    assert any(n.startswith("migrations/postgres/") for n in shipped)
    assert "claude_server/routes/native.py" in names
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert "claude-server = claude_server.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()
