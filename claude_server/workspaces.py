"""Workspace directories: where each session's CLI runs.

This is the only module that turns a name into a filesystem path under the workspace root,
and it refuses anything that would land outside it.
"""

from __future__ import annotations

import logging
import shutil
import uuid
from pathlib import Path

log = logging.getLogger(__name__)


class WorkspaceError(ValueError):
    """A path that is not a workspace under the root."""


class Workspaces:
    def __init__(self, root: Path) -> None:
        self.root = root.resolve()

    def ensure_root(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)

    def create(self) -> Path:
        """A new, empty ``session-<uuid4>`` directory."""
        self.ensure_root()
        path = self.root / f"session-{uuid.uuid4()}"
        path.mkdir()
        return path

    def inside_root(self, path: Path) -> bool:
        resolved = path.resolve()
        return resolved != self.root and resolved.is_relative_to(self.root)

    def ensure(self, path: Path) -> Path:
        """Recreate a recorded workspace that has gone missing, so its session can resume."""
        if not path.is_dir():
            log.warning("workspace %s is missing; recreating it empty", path)
            path.mkdir(parents=True, exist_ok=True)
        return path

    def remove(self, path: Path) -> None:
        """Delete a workspace directory and everything in it; refuses paths outside the root."""
        if not self.inside_root(path):
            raise WorkspaceError(f"refusing to remove {path}: not under {self.root}")
        shutil.rmtree(path, ignore_errors=True)
