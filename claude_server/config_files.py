"""Where the Claude configuration files the server manages live, and how they are read and written.

::

    <config dir>/agents/<name>.md          subagents (frontmatter: name, description)
    <config dir>/skills/<name>/SKILL.md    skills (frontmatter: name, description) and their other files
    <config dir>/rules/<name>.md           rules, sent to the model along with CLAUDE.md
    <config dir>/CLAUDE.md                 instructions for every session
    <config dir>/settings.json             the CLI's user settings
    <config dir>/mcp-servers/<name>.json   one MCP server each, as ``{"mcpServers": {"<name>": {...}}}``

Claude Code does not look into ``mcp-servers/`` by itself: each file is in the shape
``--mcp-config`` takes, and a turn gets one ``--mcp-config=<file>`` per server it enables.
Keeping the secrets an MCP server may need (``env``, ``headers``) in files keeps them out of
the CLI's argv (readable in /proc by every local user) and out of the recorded turn options.

What a file may contain (names, frontmatter, MCP servers, ETags) is
``claude_server.config_content``. Safety here:

- Writes go to a temporary file in the same folder, then ``os.replace``: a reader (the CLI
  starting a turn) sees the old file or the new one, never half of one.
- Check-and-write (``If-Match``) runs under an exclusive ``flock`` on the configuration
  directory, so two writers, in this process or in another server sharing the directory,
  cannot both pass the same check.

No aiohttp here. The functions block (small files, local disk): the routes call them in a
worker thread, except ``choose``, a few stat calls made for every turn.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

from claude_server.claude.command import TurnOptions
from claude_server.config_content import (
    AGENTS,
    MCP_SERVERS,
    NAME_RE,
    SKILL_FILE,
    SKILLS,
    UNCONDITIONAL,
    Entry,
    Kind,
    Preconditions,
    check_name,
    check_size,
    skill_file_path,
)
from claude_server.errors import BadRequest, NotFound

MAX_MCP_SERVERS = 64

# The agents the pinned CLI (2.1.330) lists in its init line with an empty configuration
# directory. ``--agent`` with a name it does not know prints "not found" and streams nothing,
# so a request may only name these or a configured agent.
BUILTIN_AGENTS = ("claude", "Explore", "general-purpose", "Plan", "statusline-setup")


def _iso(timestamp: float) -> str:
    # The same format as the database's timestamps (store.now_iso).
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


# ---- what a turn uses -------------------------------------------------------------------------


@dataclass(frozen=True)
class TurnChoice:
    """The agent and MCP servers a request chose, checked against the configuration."""

    agent: str | None = None
    mcp_config: tuple[str, ...] = ()

    def apply(self, options: TurnOptions, *, agent: bool = True) -> TurnOptions:
        """``options`` with the choice; ``agent=False`` leaves the agent out (a resumed session
        keeps the system prompt it was created with, agent included)."""
        return replace(options, agent=self.agent if agent else None, mcp_config=self.mcp_config)


# ---- the store --------------------------------------------------------------------------------


def _write_atomically(path: Path, data: bytes) -> None:
    """Write to a temporary file beside ``path``, then rename it over ``path``. Its mode is
    mkstemp's 0600: the files may hold secrets (an MCP server's env, settings' env), and only
    the server's user, who runs the CLI, reads them."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


class ConfigFiles:
    """The configuration directory. Holds nothing but its root: every call opens what it needs."""

    def __init__(self, root: Path) -> None:
        # Resolved once, here: the operator may have made the directory a symlink.
        self.root = Path(os.path.realpath(root))

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """An exclusive flock on the directory itself (no lock file to leave behind); closing
        the descriptor releases it."""
        self.root.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def _read(self, kind: Kind, name: str) -> Entry | None:
        path = kind.path(self.root, name)
        try:
            with path.open("rb") as fh:
                data = fh.read()
                mtime = os.fstat(fh.fileno()).st_mtime
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            return None
        text = data.decode("utf-8", errors="replace")
        return Entry(kind, name, kind.show(name, text), _iso(mtime))

    def _name(self, kind: Kind, name: str) -> str:
        return kind.pattern if kind.single else check_name(name)

    def get(self, kind: Kind, name: str = "") -> Entry:
        """The file; 404 for a named one that does not exist, empty content for a single one."""
        name = self._name(kind, name)
        entry = self._read(kind, name)
        if entry is not None:
            return entry
        if kind.single:
            return Entry(kind, name, "", None)
        raise NotFound(f"No {kind.key} entry {name!r}", code="config_not_found")

    def _current(self, kind: Kind, name: str) -> Entry | None:
        """What preconditions compare against: a single file that is not set counts as empty,
        as GET shows it."""
        entry = self._read(kind, name)
        if entry is None and kind.single:
            return Entry(kind, name, "", None)
        return entry

    def put(self, kind: Kind, name: str, content: str, pre: Preconditions = UNCONDITIONAL) -> tuple[Entry, bool]:
        """Create or replace the file; returns it and whether it was created."""
        name = self._name(kind, name)
        check_size(len(content.encode()), f"content of {name}")
        data = kind.check(name, content).encode()
        path = kind.path(self.root, name)
        with self._locked():
            current = self._current(kind, name)
            pre.check(current)
            path.parent.mkdir(parents=True, exist_ok=True)
            _write_atomically(path, data)
            entry = self._read(kind, name)
        assert entry is not None
        return entry, current is None or current.updated_at is None

    def delete(self, kind: Kind, name: str, pre: Preconditions = UNCONDITIONAL) -> None:
        """Remove the file (a skill: its whole folder); 404 if it does not exist."""
        name = check_name(name)
        with self._locked():
            current = self._read(kind, name)
            if current is None:
                raise NotFound(f"No {kind.key} entry {name!r}", code="config_not_found")
            pre.check(current)
            if kind is SKILLS:
                # Renamed away first, so the CLI sees the whole skill or none of it.
                folder = kind.path(self.root, name).parent
                doomed = folder.with_name(f".{name}.deleted-{uuid.uuid4().hex[:8]}")
                folder.rename(doomed)
                shutil.rmtree(doomed, ignore_errors=True)
            else:
                kind.path(self.root, name).unlink()

    def entries(self, kind: Kind, *, after: str | None = None, limit: int = 50) -> list[Entry]:
        """Entries by name, those after ``after``; files whose names the API could not address
        (placed by hand) are left out."""
        folder = self.root / kind.folder
        try:
            candidates = sorted(os.listdir(folder))
        except (FileNotFoundError, NotADirectoryError):
            return []
        tail = kind.folder_entry("")
        out = []
        for entry_name in candidates:
            name = entry_name.removesuffix(tail) if tail else entry_name
            if not entry_name.endswith(tail) or not NAME_RE.fullmatch(name) or (after is not None and name <= after):
                continue
            entry = self._read(kind, name)
            if entry is not None:
                out.append(entry)
                if len(out) >= limit:
                    break
        return out

    # ---- a skill's other files ---------------------------------------------------------------

    def _skill_dir(self, name: str) -> Path:
        if self._read(SKILLS, check_name(name)) is None:
            raise NotFound(f"No skill {name!r}", code="config_not_found")
        return SKILLS.path(self.root, name).parent

    def skill_files(self, name: str) -> list[str]:
        """The other files of a skill, as paths relative to its folder (hidden ones left out)."""
        folder = SKILLS.path(self.root, check_name(name)).parent
        out = []
        for dirpath, dirnames, filenames in os.walk(folder):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            for filename in sorted(filenames):
                rel = (Path(dirpath) / filename).relative_to(folder).as_posix()
                if not filename.startswith(".") and rel != SKILL_FILE:
                    out.append(rel)
        return out

    def read_skill_file(self, name: str, rel: str) -> bytes:
        path = self._skill_dir(name).joinpath(*skill_file_path(rel))
        try:
            return path.read_bytes()
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            raise NotFound(f"No file {rel!r} in skill {name!r}", code="config_not_found") from None

    def put_skill_file(self, name: str, rel: str, data: bytes) -> bool:
        """Create or replace one of a skill's files (folders created); returns whether it was created."""
        check_size(len(data), "file")
        parts = skill_file_path(rel)
        with self._locked():
            folder = self._skill_dir(name)
            path = folder.joinpath(*parts)
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
            except (FileExistsError, NotADirectoryError):
                raise BadRequest(f"A parent of {rel!r} is a file", code="invalid_path", field="path") from None
            if path.is_dir():
                raise BadRequest(f"{rel!r} is a folder", code="invalid_path", field="path")
            created = not path.exists()
            _write_atomically(path, data)
        return created

    def delete_skill_file(self, name: str, rel: str) -> None:
        parts = skill_file_path(rel)
        with self._locked():
            path = self._skill_dir(name).joinpath(*parts)
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                try:
                    path.unlink()
                except (FileNotFoundError, NotADirectoryError):
                    raise NotFound(f"No file {rel!r} in skill {name!r}", code="config_not_found") from None

    # ---- what a turn uses --------------------------------------------------------------------

    def agent_names(self) -> list[str]:
        return sorted({*BUILTIN_AGENTS, *(e.name for e in self.entries(AGENTS, limit=10_000))})

    def choose(
        self,
        agent: str | None,
        mcp_servers: Sequence[str] = (),
        *,
        agent_field: str = "agent",
        mcp_field: str = "mcp_servers",
    ) -> TurnChoice:
        """Check a request's agent and MCP servers against the configuration; 400 naming the
        unknown ones. (A file deleted between this check and the CLI's start fails that turn.)"""
        configured = agent is not None and NAME_RE.fullmatch(agent) and AGENTS.path(self.root, agent).is_file()
        if agent is not None and agent not in BUILTIN_AGENTS and not configured:
            raise BadRequest(
                f"No agent {agent!r}: configure it with PUT /api/config/agents/<name>, or use one of "
                + ", ".join(self.agent_names()),
                code="unknown_agent",
                field=agent_field,
            )
        if len(mcp_servers) > MAX_MCP_SERVERS:
            raise BadRequest(f"At most {MAX_MCP_SERVERS} MCP servers", code="invalid_field", field=mcp_field)
        paths = []
        for name in dict.fromkeys(mcp_servers):  # in order, once each
            path = MCP_SERVERS.path(self.root, name)
            if not NAME_RE.fullmatch(name) or not path.is_file():
                raise BadRequest(
                    f"No MCP server {name!r}: configure it with PUT /api/config/mcp-servers/<name>",
                    code="unknown_mcp_server",
                    field=mcp_field,
                )
            paths.append(str(path))
        return TurnChoice(agent, tuple(paths))
