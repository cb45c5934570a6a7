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
``claude_server.config_content``; how a folder or file is reached is ``claude_server.config_fs``.
Safety here:

- Every path is walked from the root without following a symlink, and only plain files are
  read or replaced (config_fs): what a turn planted in the directory (a symlink, a hard link,
  a FIFO) is refused with 403 ``outside_config_dir``, or left out of a listing.
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
import stat
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
    SKILL_FILE_MAX_DEPTH,
    SKILLS,
    UNCONDITIONAL,
    Entry,
    Kind,
    Preconditions,
    check_name,
    check_size,
    skill_file_path,
)
from claude_server.config_fs import Folder, NotAFolder, OutsideConfigDir, open_root
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


def _where(kind: Kind, name: str) -> tuple[list[str], str]:
    """The folders on the way to ``name``'s file, and the file's name in the last of them."""
    *folders, file = kind.pattern.format(name=name).split("/")
    return folders, file


class ConfigFiles:
    """The configuration directory. Holds nothing but its root: every call opens what it needs."""

    def __init__(self, root: Path) -> None:
        # Resolved once, here: the operator may have made the directory a symlink. Below it,
        # nothing is ever followed (config_fs), and a symlink found later at this path is refused.
        self.root = Path(os.path.realpath(root))

    @contextlib.contextmanager
    def _locked(self) -> Iterator[Folder]:
        """The root, under an exclusive flock on the directory itself (no lock file to leave
        behind); closing the descriptor releases it."""
        with open_root(self.root, create=True) as root:
            fcntl.flock(root.fd, fcntl.LOCK_EX)
            yield root

    @contextlib.contextmanager
    def _reading(self) -> Iterator[Folder | None]:
        """The root for a reader; None while it does not exist (nothing is configured yet)."""
        try:
            root = open_root(self.root)
        except FileNotFoundError:
            yield None
            return
        with root:
            yield root

    def _read(self, root: Folder | None, kind: Kind, name: str) -> Entry | None:
        """The entry, None when there is none; 403 for a symlink or anything but a plain file."""
        if root is None:
            return None
        folders, file = _where(kind, name)
        try:
            with root.descend(folders) as folder:
                data, st = folder.read(file)
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            return None
        text = data.decode("utf-8", errors="replace")
        return Entry(kind, name, kind.show(name, text), _iso(st.st_mtime))

    def _name(self, kind: Kind, name: str) -> str:
        return kind.pattern if kind.single else check_name(name)

    def get(self, kind: Kind, name: str = "") -> Entry:
        """The file; 404 for a named one that does not exist, empty content for a single one."""
        name = self._name(kind, name)
        with self._reading() as root:
            entry = self._read(root, kind, name)
        if entry is not None:
            return entry
        if kind.single:
            return Entry(kind, name, "", None)
        raise NotFound(f"No {kind.key} entry {name!r}", code="config_not_found")

    def _current(self, root: Folder, kind: Kind, name: str) -> Entry | None:
        """What preconditions compare against: a single file that is not set counts as empty,
        as GET shows it."""
        entry = self._read(root, kind, name)
        if entry is None and kind.single:
            return Entry(kind, name, "", None)
        return entry

    def put(self, kind: Kind, name: str, content: str, pre: Preconditions = UNCONDITIONAL) -> tuple[Entry, bool]:
        """Create or replace the file; returns it and whether it was created."""
        name = self._name(kind, name)
        check_size(len(content.encode()), f"content of {name}")
        data = kind.check(name, content).encode()
        folders, file = _where(kind, name)
        with self._locked() as root:
            current = self._current(root, kind, name)
            pre.check(current)
            with root.descend(folders, create=True) as folder:
                folder.write(file, data)
            entry = self._read(root, kind, name)
        assert entry is not None
        return entry, current is None or current.updated_at is None

    def delete(self, kind: Kind, name: str, pre: Preconditions = UNCONDITIONAL) -> None:
        """Remove the file (a skill: its whole folder); 404 if it does not exist."""
        name = check_name(name)
        folders, file = _where(kind, name)
        with self._locked() as root:
            current = self._read(root, kind, name)
            if current is None:
                raise NotFound(f"No {kind.key} entry {name!r}", code="config_not_found")
            pre.check(current)
            if kind is SKILLS:
                with root.folder(SKILLS.folder) as skills:
                    # Renamed away first, so the CLI sees the whole skill or none of it. rename
                    # moves a name: a symlink swapped in since the read is moved, not followed,
                    # and rmtree then refuses it.
                    doomed = f".{name}.deleted-{uuid.uuid4().hex[:8]}"
                    skills.rename(name, doomed)
                    skills.rmtree(doomed, ignore_errors=True)
            else:
                with root.descend(folders) as folder:
                    folder.unlink(file)

    def entries(self, kind: Kind, *, after: str | None = None, limit: int = 50) -> list[Entry]:
        """Entries by name, those after ``after``; files whose names the API could not address
        (placed by hand) and files it refuses (symlinks, FIFOs, hard links) are left out. 403
        when the kind's folder is a symlink."""
        tail = kind.folder_entry("")
        out: list[Entry] = []
        with self._reading() as root:
            if root is None:
                return out
            try:
                with root.folder(kind.folder) as folder:
                    candidates = sorted(folder.names())
            except (FileNotFoundError, NotADirectoryError):
                return out
            for entry_name in candidates:
                name = entry_name.removesuffix(tail) if tail else entry_name
                if (
                    not entry_name.endswith(tail)
                    or not NAME_RE.fullmatch(name)
                    or (after is not None and name <= after)
                ):
                    continue
                with contextlib.suppress(OutsideConfigDir):
                    entry = self._read(root, kind, name)
                    if entry is not None:
                        out.append(entry)
                        if len(out) >= limit:
                            break
        return out

    # ---- a skill's other files ---------------------------------------------------------------

    def _skill_folder(self, root: Folder | None, name: str) -> Folder:
        """The skill's folder; 404 unless the skill (its SKILL.md) exists."""
        if self._read(root, SKILLS, check_name(name)) is None:
            raise NotFound(f"No skill {name!r}", code="config_not_found")
        assert root is not None
        return root.descend([SKILLS.folder, name])

    def skill_files(self, name: str) -> list[str]:
        """The other files of a skill, as paths relative to its folder: plain files only, no
        hidden ones, none deeper than a path can name (``SKILL_FILE_MAX_DEPTH``)."""
        out: list[str] = []
        with self._reading() as root:
            if root is None:
                return out
            try:
                with root.descend([SKILLS.folder, check_name(name)]) as folder:
                    _walk(folder, (), out)
            except (FileNotFoundError, NotADirectoryError):
                pass
        return out

    def read_skill_file(self, name: str, rel: str) -> bytes:
        name = check_name(name)
        *folders, file = skill_file_path(rel)
        with self._reading() as root, self._skill_folder(root, name) as skill:
            try:
                with skill.descend(folders) as folder:
                    return folder.read(file)[0]
            except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
                raise NotFound(f"No file {rel!r} in skill {name!r}", code="config_not_found") from None

    def put_skill_file(self, name: str, rel: str, data: bytes) -> bool:
        """Create or replace one of a skill's files (folders created); returns whether it was created."""
        check_size(len(data), "file")
        *folders, file = skill_file_path(rel)
        with self._locked() as root, self._skill_folder(root, name) as skill:
            try:
                folder = skill.descend(folders, create=True)
            except NotAFolder:
                raise BadRequest(f"A parent of {rel!r} is a file", code="invalid_path", field="path") from None
            with folder:
                st = folder.lstat(file)
                if st is not None and stat.S_ISDIR(st.st_mode):
                    raise BadRequest(f"{rel!r} is a folder", code="invalid_path", field="path")
                folder.plain(file)
                folder.write(file, data)
        return st is None

    def delete_skill_file(self, name: str, rel: str) -> None:
        """Remove one of a skill's files, or a folder of them (symlinks inside unlinked, not followed)."""
        *folders, file = skill_file_path(rel)
        with self._locked() as root, self._skill_folder(root, name) as skill:
            try:
                with skill.descend(folders) as folder:
                    st = folder.lstat(file)
                    if st is None:
                        raise FileNotFoundError(rel)
                    if stat.S_ISDIR(st.st_mode):
                        folder.rmtree(file)
                    else:
                        folder.plain(file)
                        folder.unlink(file)
            except (FileNotFoundError, NotADirectoryError):
                raise NotFound(f"No file {rel!r} in skill {name!r}", code="config_not_found") from None

    # ---- what a turn uses --------------------------------------------------------------------

    def agent_names(self) -> list[str]:
        """Built-in and configured agents; the built-in ones alone when the folder is refused."""
        configured: list[Entry] = []
        with contextlib.suppress(OutsideConfigDir):
            configured = self.entries(AGENTS, limit=10_000)
        return sorted({*BUILTIN_AGENTS, *(e.name for e in configured)})

    def _usable(self, root: Folder | None, kind: Kind, name: str) -> bool:
        """Whether the CLI may be pointed at the file: a plain file, no symlink on the way
        (the CLI would follow one). Stat calls only: this runs for every turn."""
        if root is None or not NAME_RE.fullmatch(name):
            return False
        folders, file = _where(kind, name)
        try:
            with root.descend(folders) as folder:
                return folder.plain(file) is not None
        except (FileNotFoundError, NotADirectoryError, OutsideConfigDir):
            return False

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
        with self._reading() as root:
            configured = agent is not None and self._usable(root, AGENTS, agent)
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
                if not self._usable(root, MCP_SERVERS, name):
                    raise BadRequest(
                        f"No MCP server {name!r}: configure it with PUT /api/config/mcp-servers/<name>",
                        code="unknown_mcp_server",
                        field=mcp_field,
                    )
                paths.append(str(MCP_SERVERS.path(self.root, name)))
        return TurnChoice(agent, tuple(paths))


def _walk(folder: Folder, prefix: tuple[str, ...], out: list[str]) -> None:
    """Append the plain files under ``folder`` to ``out``: a folder's files first, then its
    subfolders', each by name (as os.walk lists them)."""
    entries = sorted((e for e in folder.scan() if not e.name.startswith(".")), key=lambda e: e.name)
    subfolders = []
    for entry in entries:
        rel = (*prefix, entry.name)
        try:
            st = entry.stat(follow_symlinks=False)
        except FileNotFoundError:  # gone since the scan
            continue
        if stat.S_ISDIR(st.st_mode):
            subfolders.append(entry.name)
        elif stat.S_ISREG(st.st_mode) and st.st_nlink == 1 and rel != (SKILL_FILE,):
            out.append("/".join(rel))
    if len(prefix) + 1 >= SKILL_FILE_MAX_DEPTH:
        return
    for name in subfolders:
        # Swapped for a symlink or a file since the scan: left out like one.
        with contextlib.suppress(FileNotFoundError, NotADirectoryError, OutsideConfigDir), folder.folder(name) as sub:
            _walk(sub, (*prefix, name), out)
