"""The Claude configuration files the server manages, laid out exactly as Claude Code reads them.

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

Safety:

- A name matches ``NAME_RE``, so it is always one path component and never leads outside
  its folder; skill files take a checked relative path (``skill_file_path``).
- Writes go to a temporary file in the same folder, then ``os.replace``: a reader (the CLI
  starting a turn) sees the old file or the new one, never half of one.
- Check-and-write (``If-Match``) runs under an exclusive ``flock`` on the configuration
  directory, so two writers, in this process or in another server sharing the directory,
  cannot both pass the same check.
- An ETag is a hash of the content, so it changes whenever the content does.

No aiohttp here. The functions block (small files, local disk): the routes call them in a
worker thread, except ``choose``, a few stat calls made for every turn.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from claude_server.claude.command import TurnOptions
from claude_server.errors import ApiError, BadRequest, NotFound, PayloadTooLarge

NAME_RE = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")
MAX_FILE_BYTES = 256 * 1024
MAX_MCP_SERVERS = 64
# One part of a path inside a skill's folder: no leading dot, so never '.', '..' or hidden.
SKILL_FILE_PART_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,127}")
SKILL_FILE_MAX_DEPTH = 8
SKILL_FILE = "SKILL.md"

# The agents the pinned CLI (2.1.330) lists in its init line with an empty configuration
# directory. ``--agent`` with a name it does not know prints "not found" and streams nothing,
# so a request may only name these or a configured agent.
BUILTIN_AGENTS = ("claude", "Explore", "general-purpose", "Plan", "statusline-setup")

# MCP transports a server can run with. "sdk" needs an SDK host answering on the CLI's stdin
# (seen: the CLI asks with a control_request and waits), the IDE and claude.ai types are the
# CLI's own.
MCP_TYPES = ("stdio", "sse", "http", "ws")


class PreconditionFailed(ApiError):
    status = 412
    code = "precondition_failed"


def check_name(name: str, field: str = "name") -> str:
    if not NAME_RE.fullmatch(name):
        raise BadRequest(
            f"{name!r} is not a valid name: use 1 to 64 of a-z, 0-9, '_' and '-', starting with a letter or digit",
            code="invalid_name",
            field=field,
        )
    return name


def etag_of(content: str) -> str:
    return '"' + hashlib.sha256(content.encode()).hexdigest()[:32] + '"'


def _iso(timestamp: float) -> str:
    # The same format as the database's timestamps (store.now_iso).
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


# ---- frontmatter ------------------------------------------------------------------------------

FRONTMATTER_RE = re.compile(r"\A\ufeff?---[ \t]*\r?\n(.*?)^---[ \t]*\r?$", re.S | re.M)


def _scalar(raw: str) -> str:
    value = raw.strip()
    if value[:1] == '"':
        with contextlib.suppress(ValueError):
            return str(json.loads(value))
    if value[:1] == "'" and value.endswith("'") and len(value) > 1:
        return value[1:-1].replace("''", "'")
    if value[:1] in ("|", ">"):  # a block scalar: its text is on the indented lines below
        return ""
    return re.split(r"\s+#", value, maxsplit=1)[0].strip()


def parse_frontmatter(text: str) -> dict[str, str] | None:
    """The top-level ``key: value`` pairs of a leading ``---`` block, None when there is none.

    Enough YAML for what the server checks (name, description): plain, quoted and block
    scalars; indented lines (block scalars, lists) are appended to the key above them.
    ValueError names a line that is not ``key: value``."""
    match = FRONTMATTER_RE.match(text)
    if match is None:
        return None
    fields: dict[str, str] = {}
    key = None
    for line in match.group(1).splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if line[0] in " \t":
            if key is not None:
                fields[key] = f"{fields[key]} {line.strip()}".strip()
            continue
        key, sep, value = line.partition(":")
        key = key.strip()
        if not sep or not key:
            raise ValueError(f"frontmatter line {line.strip()!r} is not 'key: value'")
        fields[key] = _scalar(value)
    return fields


def _check_frontmatter(what: str, name: str, content: str) -> str:
    """An agent or skill file: Claude Code needs name and description, and selects agents by
    the frontmatter's name, which must therefore be the name in the path."""
    example = f"---\\nname: {name}\\ndescription: ...\\n---"
    try:
        fields = parse_frontmatter(content)
    except ValueError as exc:
        raise BadRequest(f"The {what}'s {exc}", code="invalid_frontmatter", field="content") from None
    if fields is None:
        raise BadRequest(
            f"The {what} must start with a frontmatter block ({example})", code="invalid_frontmatter", field="content"
        )
    for required in ("name", "description"):
        if not fields.get(required):
            raise BadRequest(
                f"The {what}'s frontmatter needs a non-empty {required} ({example})",
                code="invalid_frontmatter",
                field="content",
            )
    if fields["name"] != name:
        raise BadRequest(
            f"The {what}'s frontmatter name is {fields['name']!r}, but the path names it {name!r}: "
            f"they must be the same (Claude Code finds {what}s by the frontmatter's name)",
            code="invalid_frontmatter",
            field="content",
        )
    return content


# ---- JSON files -------------------------------------------------------------------------------


def _json_object(what: str, content: str) -> dict[str, Any]:
    try:
        value = json.loads(content)
    except ValueError as exc:
        raise BadRequest(f"The {what} is not valid JSON: {exc}", code="invalid_content", field="content") from None
    if not isinstance(value, dict):
        raise BadRequest(f"The {what} must be a JSON object", code="invalid_content", field="content")
    return value


def _string_map(server: dict[str, Any], key: str) -> None:
    value = server.get(key)
    if value is not None and not (isinstance(value, dict) and all(isinstance(v, str) for v in value.values())):
        raise BadRequest(
            f"The MCP server's {key} must be an object of strings", code="invalid_content", field="content"
        )


def check_mcp_server(name: str, content: str) -> str:
    """One MCP server's object, checked as the CLI checks it (it silently drops a server it
    cannot use, so a mistake would only show as a missing server); the file to store."""
    server = _json_object("MCP server", content)
    if "mcpServers" in server:
        raise BadRequest(
            'Send the one server\'s object ({"command": ...} or {"type": "http", "url": ...}), '
            'not {"mcpServers": ...}: the name comes from the path',
            code="invalid_content",
            field="content",
        )
    kind = server.get("type", "stdio")
    if kind not in MCP_TYPES:
        raise BadRequest(
            f"The MCP server's type must be one of {', '.join(MCP_TYPES)} (got {kind!r})",
            code="invalid_content",
            field="content",
        )
    needed = "command" if kind == "stdio" else "url"
    if not isinstance(server.get(needed), str) or not server[needed].strip():
        raise BadRequest(
            f"A {kind} MCP server needs a non-empty string {needed}", code="invalid_content", field="content"
        )
    args = server.get("args")
    if args is not None and not (isinstance(args, list) and all(isinstance(a, str) for a in args)):
        raise BadRequest("The MCP server's args must be a list of strings", code="invalid_content", field="content")
    _string_map(server, "env")
    _string_map(server, "headers")
    return json.dumps({"mcpServers": {name: server}}, indent=2, ensure_ascii=False) + "\n"


def show_mcp_server(name: str, text: str) -> str:
    """The server's object out of its stored file (the file as it is if edited by hand)."""
    try:
        server = json.loads(text)["mcpServers"][name]
    except (ValueError, KeyError, TypeError):
        return text
    return json.dumps(server, indent=2, ensure_ascii=False) + "\n"


def _check_settings(_name: str, content: str) -> str:
    _json_object("settings file", content)
    return content


def _as_is(_name: str, content: str) -> str:
    return content


# ---- kinds ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Kind:
    """One kind of configuration file and where it lives."""

    key: str  # in the routes: /api/config/<key>[/<name>]
    list_key: str  # the list's key in the JSON answer
    pattern: str  # the file, relative to the configuration directory; "{name}" for a named kind
    check: Callable[[str, str], str] = _as_is  # (name, content) -> the file's text, or BadRequest
    show: Callable[[str, str], str] = _as_is  # (name, file's text) -> the content the API shows
    json_content: bool = False  # a request may send the content as a JSON object
    frontmatter: bool = False

    @property
    def single(self) -> bool:
        return "{name}" not in self.pattern

    @property
    def folder(self) -> str:
        return self.pattern.split("/", 1)[0]

    def path(self, root: Path, name: str) -> Path:
        return root / self.pattern.format(name=name)

    def folder_entry(self, name: str) -> str:
        """The entry of ``folder`` that holds ``name``'s file: ``x.md`` or ``x`` (a skill's folder)."""
        return self.pattern.split("/")[1].format(name=name)


def _agent(name: str, content: str) -> str:
    return _check_frontmatter("agent", name, content)


def _skill(name: str, content: str) -> str:
    return _check_frontmatter("skill", name, content)


AGENTS = Kind("agents", "agents", "agents/{name}.md", check=_agent, frontmatter=True)
SKILLS = Kind("skills", "skills", "skills/{name}/" + SKILL_FILE, check=_skill, frontmatter=True)
RULES = Kind("rules", "rules", "rules/{name}.md")
MCP_SERVERS = Kind(
    "mcp-servers",
    "mcp_servers",
    "mcp-servers/{name}.json",
    check=check_mcp_server,
    show=show_mcp_server,
    json_content=True,
)
CLAUDE_MD = Kind("claude-md", "claude_md", "CLAUDE.md")
SETTINGS_JSON = Kind("settings", "settings", "settings.json", check=_check_settings, json_content=True)

NAMED_KINDS = {k.key: k for k in (AGENTS, SKILLS, RULES, MCP_SERVERS)}
SINGLE_KINDS = {k.key: k for k in (CLAUDE_MD, SETTINGS_JSON)}


# ---- entries and preconditions ----------------------------------------------------------------


@dataclass(frozen=True)
class Entry:
    """One file as the API shows it. ``updated_at`` is None for a single file that is not set."""

    kind: Kind
    name: str
    content: str
    updated_at: str | None

    @property
    def etag(self) -> str:
        return etag_of(self.content)

    def public(self) -> dict[str, Any]:
        return {"name": self.name, "content": self.content, "updated_at": self.updated_at, "etag": self.etag}

    def summary(self) -> dict[str, Any]:
        """What a list shows: no content, but an agent's or skill's description."""
        out: dict[str, Any] = {"name": self.name, "updated_at": self.updated_at, "etag": self.etag}
        out["size"] = len(self.content.encode())
        if self.kind.frontmatter:
            try:
                out["description"] = (parse_frontmatter(self.content) or {}).get("description")
            except ValueError:  # edited by hand; the list still shows it
                out["description"] = None
        return out


def _tags(header: str) -> list[str]:
    return re.findall(r'(?:W/)?"[^"]*"', header)


@dataclass(frozen=True)
class Preconditions:
    """``If-Match`` / ``If-None-Match`` of a write (RFC 9110, strong comparison for If-Match)."""

    if_match: str | None = None
    if_none_match: str | None = None

    def check(self, current: Entry | None) -> None:
        """412 unless the file as it is now (None: absent) meets the conditions."""
        if self.if_match is not None:
            if self.if_match.strip() == "*":
                ok = current is not None
            else:
                ok = current is not None and current.etag in _tags(self.if_match)
            if not ok:
                now = f"its ETag is now {current.etag}" if current is not None else "it does not exist"
                raise PreconditionFailed(f"If-Match does not match: {now}", etag=current.etag if current else None)
        if self.if_none_match is not None and current is not None:
            star = self.if_none_match.strip() == "*"
            plain = [t.removeprefix("W/") for t in _tags(self.if_none_match)]
            if star or current.etag in plain:
                raise PreconditionFailed(
                    f"If-None-Match: {current.name} exists, ETag {current.etag}", etag=current.etag
                )


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


def _check_size(size: int, what: str) -> None:
    if size > MAX_FILE_BYTES:
        raise PayloadTooLarge(f"The {what} is {size} bytes; at most {MAX_FILE_BYTES}", code="config_too_large")


def skill_file_path(rel: str) -> tuple[str, ...]:
    """The parts of a path inside a skill's folder, or 400 (``..``, hidden, absolute, empty)."""
    parts = tuple(rel.split("/"))
    if (
        not rel
        or len(parts) > SKILL_FILE_MAX_DEPTH
        or not all(SKILL_FILE_PART_RE.fullmatch(p) for p in parts)
        or parts == (SKILL_FILE,)
    ):
        raise BadRequest(
            f"{rel!r} is not a path for a skill's file: up to {SKILL_FILE_MAX_DEPTH} '/'-separated parts of "
            f"A-Z, a-z, 0-9, '.', '_' and '-', none starting with '.'; {SKILL_FILE} is the skill itself",
            code="invalid_path",
            field="path",
        )
    return parts


class ConfigFiles:
    """The configuration directory. Stateless: cheap to make per request."""

    def __init__(self, root: Path) -> None:
        self.root = root

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

    def put(self, kind: Kind, name: str, content: str, pre: Preconditions = Preconditions()) -> tuple[Entry, bool]:
        """Create or replace the file; returns it and whether it was created."""
        name = self._name(kind, name)
        _check_size(len(content.encode()), f"content of {name}")
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

    def delete(self, kind: Kind, name: str, pre: Preconditions = Preconditions()) -> None:
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
        _check_size(len(data), "file")
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
