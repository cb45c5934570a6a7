"""Workspace directories: where each session's CLI runs.

This is the only module that turns a name into a filesystem path under the workspace root,
and it refuses anything that would land outside it.
"""

from __future__ import annotations

import contextlib
import logging
import re
import shutil
import uuid
from pathlib import Path

log = logging.getLogger(__name__)


# A named workspace: letters, digits, '.', '_' and '-', starting with a letter or digit.
# Names starting with "session-" are the server's own (one per session) and not shareable.
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
SESSION_PREFIX = "session-"


class WorkspaceError(ValueError):
    """A path that is not a workspace under the root."""


def check_name(name: str) -> str:
    """``name`` if it may name a shared workspace; ValueError saying why otherwise."""
    if not NAME_RE.fullmatch(name):
        raise ValueError("must match [A-Za-z0-9][A-Za-z0-9._-]{0,63}")
    if name.startswith(SESSION_PREFIX):
        raise ValueError(f"names starting with {SESSION_PREFIX!r} are reserved for the server's own workspaces")
    return name


class Workspaces:
    def __init__(self, root: Path) -> None:
        self.root = root.resolve()

    def ensure_root(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)

    def create(self) -> Path:
        """A new, empty ``session-<uuid4>`` directory."""
        self.ensure_root()
        path = self.root / f"{SESSION_PREFIX}{uuid.uuid4()}"
        path.mkdir()
        return path

    def named(self, name: str) -> tuple[Path, bool]:
        """The shared workspace ``<root>/<name>/`` and whether it was just created."""
        self.ensure_root()
        path = self.root / check_name(name)
        try:
            path.mkdir()
        except FileExistsError:
            if path.is_symlink() or not path.is_dir():
                raise WorkspaceError(f"{path} exists and is not a directory") from None
            return path, False
        return path, True

    def is_session_dir(self, path: Path) -> bool:
        """One of the server's own per-session directories under the root."""
        return path.parent == self.root and path.name.startswith(SESSION_PREFIX)

    def inside_root(self, path: Path) -> bool:
        resolved = path.resolve()
        return resolved != self.root and resolved.is_relative_to(self.root)

    def ensure(self, path: Path) -> Path:
        """Recreate a recorded workspace that has gone missing, so its session can resume."""
        if not path.is_dir():
            log.warning("workspace %s is missing; recreating it empty", path)
            path.mkdir(parents=True, exist_ok=True)
        return path

    def discard(self, path: Path) -> None:
        """Undo a workspace a turn created but no session came to use: a session directory
        goes with its contents; a named one only while it is still empty."""
        if self.is_session_dir(path):
            self.remove(path)
        else:
            with contextlib.suppress(OSError):
                path.rmdir()

    def remove(self, path: Path) -> None:
        """Delete a workspace directory and everything in it; refuses paths outside the root."""
        if not self.inside_root(path):
            raise WorkspaceError(f"refusing to remove {path}: not under {self.root}")
        shutil.rmtree(path, ignore_errors=True)
