"""What a Claude configuration file may contain, and how the API shows and compares it.

- A name matches ``NAME_RE``, so it is always one path component and never leads outside
  its folder; skill files take a checked relative path (``skill_file_path``).
- Agents and skills start with the frontmatter Claude Code needs (``name``, ``description``),
  MCP servers are checked as the CLI checks them, settings.json is a JSON object.
- An ETag is a hash of the content, so it changes whenever the content does; ``Preconditions``
  compares it with a write's ``If-Match`` / ``If-None-Match``.

Where the files live and how they are read and written is ``claude_server.config_files``.
No I/O here.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from claude_server import json_input
from claude_server.errors import ApiError, BadRequest, PayloadTooLarge

NAME_RE = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")
MAX_FILE_BYTES = 256 * 1024
# One part of a path inside a skill's folder: no leading dot, so never '.', '..' or hidden.
SKILL_FILE_PART_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,127}")
SKILL_FILE_MAX_DEPTH = 8
SKILL_FILE = "SKILL.md"

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
        value = json_input.loads(content)
    except json_input.TooDeep as exc:
        raise BadRequest(f"The {what} is {exc}", code="invalid_content", field="content") from None
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
        server = json_input.loads(text)["mcpServers"][name]
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


# A write without If-Match or If-None-Match.
UNCONDITIONAL = Preconditions()


# ---- sizes and paths -------------------------------------------------------------------------


def check_size(size: int, what: str) -> None:
    """413 for a file larger than the API stores."""
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
