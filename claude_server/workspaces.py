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
# Named workspaces of a key live under <root>/_keys/<key id>/: no name can start with "_",
# so no name, of any key or of none, reaches into another key's folder.
KEYS_DIR = "_keys"


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

    def new_path(self) -> Path:
        """Where a new session's own workspace goes: ``<root>/session-<uuid4>`` (not made yet)."""
        return self.root / f"{SESSION_PREFIX}{uuid.uuid4()}"

    def named_path(self, owner: str | None, name: str) -> Path:
        """Where the shared workspace ``name`` of ``owner`` (a key id; None without keys) is."""
        check_name(name)
        if owner is None:
            return self.root / name
        if not NAME_RE.fullmatch(owner):
            raise WorkspaceError(f"key id {owner!r} cannot name a folder")
        return self.root / KEYS_DIR / owner / name

    def check_usable(self, path: Path) -> None:
        """WorkspaceError when ``path`` exists and is not a plain directory."""
        if path.is_symlink() or (path.exists() and not path.is_dir()):
            raise WorkspaceError(f"workspace {path.name!r} exists and is not a directory")

    def prepare(self, path: Path) -> bool:
        """Make the workspace ready for the CLI; whether it had to be created. A recorded
        workspace that has gone missing is recreated, so that its session can resume."""
        if path.is_dir() and not path.is_symlink():
            return False
        self.check_usable(path)
        if not self.inside_root(path):
            raise WorkspaceError(f"refusing to create {path}: not under {self.root}")
        path.mkdir(parents=True, exist_ok=True)
        return True

    def is_session_dir(self, path: Path) -> bool:
        """One of the server's own per-session directories under the root."""
        return path.parent == self.root and path.name.startswith(SESSION_PREFIX)

    def inside_root(self, path: Path) -> bool:
        resolved = path.resolve()
        return resolved != self.root and resolved.is_relative_to(self.root)

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
