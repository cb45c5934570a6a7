"""Workspace directories: where each session's CLI runs, and the paths into one.

This is the only module that turns a name (``Workspaces``) or a path of the files API
(``Workspace``) into a filesystem path, and it refuses anything that would land outside the
workspace root or the session's workspace.

A path of the files API is checked in two steps. Lexically: a path that is absolute, has a
``..`` part, a NUL byte or a backslash, a name over NAME_MAX_BYTES or a length over PATH_MAX
is a 400 ``invalid_path``. Then through symlinks: what the path resolves to, and the folder it
is in, must lie inside the workspace (a symlink that stays inside is fine), else 403
``outside_workspace``. The folder is then opened from the workspace's own descriptor one
resolved part at a time with ``O_NOFOLLOW``, so a symlink swapped in after the check makes the
open fail instead of leading out; every operation works on names in that descriptor.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import logging
import os
import re
import shutil
import stat
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from claude_server.config_fs import DIR_FLAGS
from claude_server.errors import BadRequest, Forbidden, NotFound

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


# Linux's limits (linux/limits.h): a longer name or path is ENAMETOOLONG. Checked before any
# system call, so that the answer is a 400 naming the problem.
NAME_MAX_BYTES = 255
PATH_MAX_BYTES = 4096


class OutsideWorkspace(Forbidden):
    code = "outside_workspace"


class InvalidPath(BadRequest):
    code = "invalid_path"

    def __init__(self, message: str) -> None:
        super().__init__(message, field="path")


@dataclass(frozen=True)
class Target:
    """Where a path of the files API leads. ``folder`` and ``real`` are resolved (symlinks
    followed) and relative to the workspace; ``name`` is the last part as given, not followed."""

    rel: str  # the path as the API names it, normalised; "" for the workspace itself
    folder: tuple[str, ...]  # the folder the name is in
    name: str  # "" for the workspace itself
    real: tuple[str, ...]  # what the whole path resolves to

    @property
    def real_rel(self) -> str:
        return "/".join((*self.folder, self.name)) if self.name else "/".join(self.folder)


class Workspace:
    """A session's workspace and the checks on every path into it. Its methods make system
    calls: run them in a thread (``workspace_files.FilePool``)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    @functools.cached_property
    def root(self) -> Path:
        """The workspace, resolved once. Its own name must not be a symlink: a tool can replace
        the workspace with a link to ``/``, which would make everything "inside"."""
        if self.path.is_symlink():
            raise OutsideWorkspace(f"The workspace {self.path.name} has been replaced by a symbolic link")
        return Path(os.path.realpath(self.path))

    def open_root(self) -> int:
        """A descriptor of the workspace; 404 ``workspace_missing`` when it is gone."""
        root = self.root
        try:
            return os.open(root, DIR_FLAGS)
        except (FileNotFoundError, NotADirectoryError):
            raise NotFound(f"The workspace {root.name} does not exist", code="workspace_missing") from None
        except OSError as exc:
            if exc.errno != errno.ELOOP:
                raise
            raise OutsideWorkspace(f"The workspace {root.name} has been replaced by a symbolic link") from None

    def resolve(self, rel: str, *, allow_root: bool = True) -> Target:
        """``rel`` (relative, POSIX) checked lexically and through symlinks."""
        parts = _checked_parts(rel)
        if not parts and not allow_root:
            raise InvalidPath("path must name a file in the workspace")
        root = self.root
        normal = "/".join(parts)
        budget = PATH_MAX_BYTES - 1 - len(os.fsencode(root)) - 1
        if len(os.fsencode(normal)) > budget:
            raise InvalidPath(f"path is {len(os.fsencode(normal))} bytes long; at most {budget} in this workspace")
        real = self._inside(root, os.path.realpath(root.joinpath(*parts)), normal)
        if not parts:
            return Target("", (), "", ())
        folder = self._inside(root, os.path.realpath(root.joinpath(*parts[:-1])), normal)
        return Target(normal, folder, parts[-1], real)

    @staticmethod
    def _inside(root: Path, real: str, rel: str) -> tuple[str, ...]:
        path = Path(real)
        if path != root and not path.is_relative_to(root):
            raise OutsideWorkspace(f"{rel} leads outside the workspace")
        return path.relative_to(root).parts

    def folder(self, parts: Sequence[str], *, create: bool = False) -> int:
        """A descriptor of the folder ``parts`` (resolved, relative to the workspace), each part
        opened from the one before without following symlinks; missing parts are made when
        ``create``. FileNotFoundError or NotADirectoryError (a part is a file) otherwise."""
        fd = self.open_root()
        try:
            for i, part in enumerate(parts):
                step = _step(fd, part, "/".join(parts[: i + 1]), create)
                os.close(fd)
                fd = step
        except BaseException:
            os.close(fd)
            raise
        return fd


def _checked_parts(rel: str) -> list[str]:
    if "\x00" in rel:
        raise InvalidPath("path must not contain NUL bytes")
    if "\\" in rel:
        raise InvalidPath("path must use '/' as its separator")
    try:
        os.fsencode(rel)
    except UnicodeEncodeError:
        raise InvalidPath("path is not valid UTF-8") from None
    pure = PurePosixPath(rel)
    if pure.is_absolute():
        raise InvalidPath("path must be relative to the workspace")
    if ".." in pure.parts:
        raise InvalidPath("path must not contain '..'")
    parts = [p for p in pure.parts if p not in ("", ".")]
    for part in parts:
        size = len(os.fsencode(part))
        if size > NAME_MAX_BYTES:
            raise InvalidPath(f"the name {part[:40]}... is {size} bytes long; at most {NAME_MAX_BYTES}")
    return parts


def _step(fd: int, name: str, rel: str, create: bool) -> int:
    """The subfolder ``name`` of the folder ``fd``, not followed if a symlink."""
    try:
        return os.open(name, DIR_FLAGS, dir_fd=fd)
    except FileNotFoundError:
        if not create:
            raise
    except OSError as exc:
        # Linux answers O_NOFOLLOW | O_DIRECTORY on a symlink with ENOTDIR, as for a file: look.
        if exc.errno not in (errno.ENOTDIR, errno.ELOOP):
            raise
        if stat.S_ISLNK(os.stat(name, dir_fd=fd, follow_symlinks=False).st_mode):
            raise OutsideWorkspace(f"{rel} was replaced by a symbolic link while it was being opened") from None
        raise NotADirectoryError(errno.ENOTDIR, "Not a directory", rel) from None
    with contextlib.suppress(FileExistsError):  # made by another writer meanwhile: checked below
        os.mkdir(name, dir_fd=fd)
    return _step(fd, name, rel, create=False)
