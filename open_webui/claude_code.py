"""
title: Claude Code
author: claude-server
version: 0.2.0
license: MIT
requirements: aiohttp
description: Claude Code via claude-server: a workspace per chat, streaming, tool approvals, questions, files.
"""

# One self-contained file: Open WebUI pastes it into a fresh module, so nothing here may
# import from this repository. It talks to claude-server's native API only:
#   POST /api/claude                     run a turn, streamed as SSE (one CLI line per event)
#   GET/PATCH /api/sessions/{id}         session metadata (remembers which files were uploaded)
#   PUT /api/sessions/{id}/files/{path}  upload an attached file into the session's workspace
#   POST /api/turns/{turn}/permissions/{request}  answer a tool permission request of a running turn
#   POST /api/turns/{turn}/questions/{request}    answer Claude's question (AskUserQuestion)
#
# Approvals (valve ASK_PERMISSIONS, on by default): chat turns ask the server for
# `permission_prompt`, so a tool use the permission settings leave open arrives as an
# `event: permission_request`. The pipe shows Open WebUI's own tool-approval dialog for it
# (`__event_call__` type "confirmation") and allows the tool only when the reply `is True`;
# anything else (denied, dismissed, no browser: a bare API call answers with an error dict) is a
# deny whose message names the line that allows the tool without asking (`allowedTools=[...]`).
# Claude's questions (`event: question`, AskUserQuestion) go to Open WebUI's question card
# (type "request:user_input"). Each is asked in a task of its own while the stream is read on.
#
# No `from __future__ import annotations`: pydantic resolves the valve annotations at class
# creation, and the module Open WebUI creates is not importable by name in every version.

import asyncio
import json
import logging
import re
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Literal
from urllib.parse import quote

import aiohttp
from pydantic import BaseModel, Field

log = logging.getLogger(__name__)

EventEmitter = Callable[[dict[str, Any]], Awaitable[Any]]
# Open WebUI's __event_call__: sends an event to the user's browser and returns its reply.
EventCaller = Callable[[dict[str, Any]], Awaitable[Any]]

# ---- limits and wording --------------------------------------------------------------------

# Permission modes claude-server accepts (its PermissionMode). Checked here too, so that a bad
# value given once in a chat is refused on its own turn instead of breaking every later turn.
PERMISSION_MODES = ("acceptEdits", "auto", "bypassPermissions", "default", "dontAsk", "manual", "plan")
MODEL_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/@\[\]-]{0,255}$")
# The seed design's marker for bare API calls: the answer's last line names its session.
SESSION_LINE_RE = re.compile(r"^session_id=([A-Za-z0-9][A-Za-z0-9._-]{0,127})\s*$", re.MULTILINE)

CONNECT_TIMEOUT_S = 10.0
# A new message right after the stop button may find the server still ending the old turn.
BUSY_RETRY_S = 10.0
BUSY_RETRY_INTERVAL_S = 0.5
SESSION_CACHE_SIZE = 2048
TOOL_INPUT_CHARS = 1500
TOOL_OUTPUT_CHARS = 3000
SUMMARY_CHARS = 80
TITLE_CHARS = 50
TITLE_WORDS = 7
# Session metadata key under which the pipe records the Open WebUI files it uploaded.
UPLOADS_KEY = "open_webui_uploads"
# Runs once when a chat's files arrive before its session exists (see Pipe._prepare_session).
PREPARE_PROMPT = (
    "The user is attaching files to this conversation; they are being saved in the working "
    "directory and the next message will name them. Reply with the single word: ready"
)
EDIT_TOOLS = {"Edit", "MultiEdit", "Write", "NotebookEdit"}
# How long Open WebUI keeps a dialog open (it caps data.timeout_ms to 60-240 s and then answers
# with an error dict); the server denies an unanswered request itself after its own timeout.
DIALOG_TIMEOUT_MS = 240_000
# Open WebUI's question card cuts longer texts (its own ask_user tool enforces these).
QUESTION_CHARS, HEADER_CHARS, LABEL_CHARS, OPTION_CHARS = 500, 48, 80, 240


# ---- parameters at the top of a message ----------------------------------------------------


class ParameterError(ValueError):
    """A parameter line has a value that cannot be used."""


def _parse_bool(raw: str) -> bool | None:
    value = raw.strip().lower()
    if value == "":
        return None
    if value in ("true", "yes", "on", "1"):
        return True
    if value in ("false", "no", "off", "0"):
        return False
    raise ParameterError(f"expected true or false, got {raw.strip()!r}")


def _parse_tools(raw: str) -> tuple[str, ...] | None:
    value = raw.strip()
    if value == "":
        return None
    if value.startswith("["):
        try:
            items = json.loads(value)
        except ValueError:
            raise ParameterError('expected a JSON list of tool names such as ["Bash","Edit"]') from None
        if not isinstance(items, list) or not all(isinstance(i, str) for i in items):
            raise ParameterError('expected a JSON list of tool names such as ["Bash","Edit"]')
    else:
        items = value.split(",")  # lenient: Bash,Edit
    tools = tuple(i.strip() for i in items if i.strip())
    for tool in tools:
        if tool.startswith("-") or len(tool) > 512:
            raise ParameterError(f"{tool[:40]!r} is not a tool name")
    return tools


def _parse_permission_mode(raw: str) -> str | None:
    value = raw.strip()
    if value == "":
        return None
    if value not in PERMISSION_MODES:
        raise ParameterError(f"{value!r} is not one of {', '.join(PERMISSION_MODES)}")
    return value


def _parse_model(raw: str) -> str | None:
    value = raw.strip()
    if value == "":
        return None
    if not MODEL_RE.match(value):
        raise ParameterError(f"{value[:60]!r} is not a model name")
    return value


# Settings a message may change; a value of None puts the setting back to the valves' default.
PARSERS: dict[str, Callable[[str], Any]] = {
    "skip_permissions": _parse_bool,
    "allowed_tools": _parse_tools,
    "disallowed_tools": _parse_tools,
    "permission_mode": _parse_permission_mode,
    "model": _parse_model,
}
PERMISSION_FIELDS = frozenset({"skip_permissions", "allowed_tools", "disallowed_tools", "permission_mode"})
# Spellings accepted on a parameter line (lower-cased, '-' read as '_').
KEYS = {
    "dangerously_skip_permissions": "skip_permissions",
    "allowedtools": "allowed_tools",
    "allowed_tools": "allowed_tools",
    "disallowedtools": "disallowed_tools",
    "disallowed_tools": "disallowed_tools",
    "permission_mode": "permission_mode",
    "permissionmode": "permission_mode",
    "model": "model",
    "prompt": "prompt",
}
PARAM_LINE_RE = re.compile(r"^\s*([A-Za-z][A-Za-z_-]*)\s*=(.*)$")


@dataclass
class ParsedMessage:
    """A user message split into its leading parameter lines and its prompt."""

    updates: dict[str, Any] = field(default_factory=dict)
    prompt: str = ""
    errors: list[str] = field(default_factory=list)


def parse_message(text: str) -> ParsedMessage:
    """Read the parameter lines at the top of ``text``.

    Parameters are leading ``key=value`` lines with a known key (blank lines between them
    are fine). ``prompt=`` takes the rest of the message, newlines included; otherwise the
    prompt starts at the first line that is not a parameter. A line such as ``x=1 is odd``
    is not a parameter (unknown key), so ordinary text is never eaten."""
    parsed = ParsedMessage()
    lines = text.split("\n")
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        match = PARAM_LINE_RE.match(line)
        name = KEYS.get(match.group(1).lower().replace("-", "_")) if match else None
        if match is None or name is None:
            parsed.prompt = "\n".join(lines[i:]).strip()
            return parsed
        if name == "prompt":
            parsed.prompt = "\n".join([match.group(2), *lines[i + 1 :]]).strip()
            return parsed
        try:
            parsed.updates[name] = PARSERS[name](match.group(2))
        except ParameterError as exc:
            parsed.errors.append(f"`{match.group(1)}`: {exc}")
    return parsed


@dataclass(frozen=True)
class TurnSettings:
    skip_permissions: bool = False
    permission_mode: str | None = None
    allowed_tools: tuple[str, ...] | None = None
    disallowed_tools: tuple[str, ...] | None = None
    model: str | None = None

    def apply(self, updates: dict[str, Any], defaults: "TurnSettings") -> "TurnSettings":
        values = dict(self.__dict__)
        for name, value in updates.items():
            values[name] = getattr(defaults, name) if value is None else value
        return TurnSettings(**values)

    def request_fields(self) -> dict[str, Any]:
        """The settings as POST /api/claude fields (unset ones left out)."""
        out: dict[str, Any] = {}
        if self.skip_permissions:
            out["dangerously-skip-permissions"] = True
        if self.permission_mode:
            out["permission_mode"] = self.permission_mode
        if self.allowed_tools:
            out["allowedTools"] = list(self.allowed_tools)
        if self.disallowed_tools:
            out["disallowedTools"] = list(self.disallowed_tools)
        if self.model:
            out["model"] = self.model
        return out

    def describe(self) -> str:
        parts = [
            f"dangerously-skip-permissions={'true' if self.skip_permissions else 'false'}",
            f"permission_mode={self.permission_mode or '(default)'}",
            f"allowedTools={json.dumps(list(self.allowed_tools or ()))}",
            f"disallowedTools={json.dumps(list(self.disallowed_tools or ()))}",
            f"model={self.model or '(default)'}",
        ]
        return "\n".join(parts)


def message_text(content: Any) -> str:
    """The text of a chat message (a string, or a list of parts for images and text)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = [p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text"]
        return "\n".join(p for p in parts if isinstance(p, str))
    return ""


def chat_settings(
    messages: list[dict[str, Any]], defaults: TurnSettings, allow_permissions: bool
) -> tuple[TurnSettings, ParsedMessage]:
    """The settings for the newest user message, and that message parsed.

    Settings given once carry over: every earlier user message in the history Open WebUI
    resends is applied in order (later ones win), so they survive restarts of Open WebUI
    and of the pipe. Earlier lines with errors were refused on their own turn and are
    skipped here; only the newest message's errors are reported."""
    user_texts = [message_text(m.get("content")) for m in messages if m.get("role") == "user"]
    settings = defaults
    for text in user_texts[:-1]:
        parsed = parse_message(text)
        settings = settings.apply(_allowed(parsed.updates, allow_permissions), defaults)
    newest = parse_message(user_texts[-1] if user_texts else "")
    refused = sorted(set(newest.updates) & PERMISSION_FIELDS) if not allow_permissions else []
    for name in refused:
        newest.errors.append(f"`{name}`: permission settings are fixed by the administrator of this model")
    return settings.apply(_allowed(newest.updates, allow_permissions), defaults), newest


def _allowed(updates: dict[str, Any], allow_permissions: bool) -> dict[str, Any]:
    if allow_permissions:
        return updates
    return {k: v for k, v in updates.items() if k not in PERMISSION_FIELDS}


def session_from_history(messages: list[dict[str, Any]]) -> str | None:
    """The newest ``session_id=<id>`` line an earlier answer printed (bare API calls)."""
    for message in reversed(messages[:-1]):
        if message.get("role") != "assistant":
            continue
        found = SESSION_LINE_RE.findall(message_text(message.get("content")))
        if found:
            return str(found[-1])
    return None


# ---- Open WebUI's background tasks ------------------------------------------------------------

# The JSON key each task's answer carries, by Open WebUI's task name.
TASK_KEYS = {
    "title_generation": "title",
    "tags_generation": "tags",
    "follow_up_generation": "follow_ups",
    "query_generation": "queries",
    "autocomplete_generation": "text",
}
OUTPUT_KEY_RE = re.compile(r'JSON format:\s*\{\s*"(\w+)"')
# The first user message in a task prompt's "<chat_history>" (lines "USER: ..." and "ASSISTANT: ...").
CHAT_HISTORY_USER_RE = re.compile(
    r"<chat_history>.*?^USER:[ \t]*(.*?)(?=^ASSISTANT:|^USER:|</chat_history>)", re.S | re.M
)


def detect_task(task: str | None, messages: list[dict[str, Any]], stream: bool) -> str | None:
    """The Open WebUI background task this call is, or None for a chat turn.

    Open WebUI names the task in ``__task__``. Without it (older versions, other callers),
    a task is recognised by its prompt: a single non-streamed message holding one of Open
    WebUI's task templates ("### Task: ..." asking for a JSON answer, or the emoji one)."""
    if task:
        return str(task)
    if stream:
        return None
    turns = [m for m in messages if m.get("role") in ("user", "assistant")]
    if len(turns) != 1 or turns[0].get("role") != "user":
        return None
    text = message_text(turns[0].get("content")).lstrip()
    if text.startswith("Your task is to reflect the speaker's likely facial expression"):
        return "emoji_generation"
    if not text.startswith("### Task:"):
        return None
    key = OUTPUT_KEY_RE.search(text)
    by_key = {task_key: name for name, task_key in TASK_KEYS.items()}
    if key and key.group(1) in by_key:
        return by_key[key.group(1)]
    head = text[:300].lower()
    if "title" in head:
        return "title_generation"
    if "autocompletion" in head:
        return "autocomplete_generation"
    return "unknown_task" if "json" in text.lower() else None


def task_answer(task: str, task_body: dict[str, Any] | None, messages: list[dict[str, Any]]) -> str:
    """The raw JSON a task expects, made up without asking Claude Code (a CLI run per title
    or suggestion would be slow, cost money and clutter the chat's session)."""
    key = TASK_KEYS.get(task)
    if key == "title":
        history = (task_body or {}).get("messages")
        if not isinstance(history, list):
            history = messages
        return json.dumps({"title": derive_title(history)}, ensure_ascii=False)
    if key == "text":
        return json.dumps({"text": ""})
    if key is not None:
        return json.dumps({key: []})
    return "{}"


def derive_title(messages: list[dict[str, Any]]) -> str:
    """A short title from the chat's first user prompt (its parameter lines left out)."""
    first = next((message_text(m.get("content")) for m in messages if m.get("role") == "user"), "")
    if first.lstrip().startswith("### Task:"):
        # Only the task prompt is at hand: take the first user line of its chat history.
        match = CHAT_HISTORY_USER_RE.search(first)
        first = match.group(1) if match else ""
    words = parse_message(first).prompt.split()
    title = " ".join(words[:TITLE_WORDS])
    if len(title) > TITLE_CHARS:
        title = title[: TITLE_CHARS - 1].rsplit(" ", 1)[0].rstrip() or title[: TITLE_CHARS - 1]
        title += "…"
    elif len(words) > TITLE_WORDS:
        title += "…"
    return title or "Claude Code"


# ---- the server's SSE stream ---------------------------------------------------------------


@dataclass(frozen=True)
class SseEvent:
    name: str | None  # "error" for the server's own errors; None for CLI lines
    data: str
    id: str | None = None  # "<turn_id>:<seq>" for logged events


async def iter_sse(chunks: AsyncIterator[bytes]) -> AsyncIterator[SseEvent]:
    """SSE events from raw chunks. Framed here rather than with the client's line reader:
    one CLI line can be megabytes, beyond aiohttp's line-length limit. Each byte is scanned
    once, so a huge line arriving in many chunks costs linear time."""
    buffer = bytearray()
    held = b""  # a trailing CR, until we know whether an LF follows it
    async for raw in chunks:
        chunk = held + raw
        held = b""
        if chunk.endswith(b"\r"):
            chunk, held = chunk[:-1], b"\r"
        start = max(0, len(buffer) - 1)  # a boundary may straddle the old and the new bytes
        buffer += chunk.replace(b"\r\n", b"\n")
        while (end := buffer.find(b"\n\n", start)) >= 0:
            block = bytes(buffer[:end])
            del buffer[: end + 2]
            start = 0
            event = _parse_block(block.decode("utf-8", errors="replace"))
            if event is not None:
                yield event


def _parse_block(block: str) -> SseEvent | None:
    name: str | None = None
    event_id: str | None = None
    data: list[str] = []
    for line in block.split("\n"):
        if not line or line.startswith(":"):  # ": ping" keeps the connection (and our idle timer) alive
            continue
        key, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if key == "event":
            name = value
        elif key == "data":
            data.append(value)
        elif key == "id":
            event_id = value
    if not data:
        return None
    return SseEvent(name, "\n".join(data), event_id)


# ---- rendering a turn ------------------------------------------------------------------------


@dataclass(frozen=True)
class Status:
    """A status line for Open WebUI's message header (``__event_emitter__``)."""

    description: str
    done: bool = False


Piece = str | Status


def shorten(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    return text[:limit].rstrip() + f"\n… ({len(text) - limit} more characters)"


def one_line(text: str, limit: int = SUMMARY_CHARS) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1].rstrip() + "…"


def fenced(text: str, lang: str = "") -> str:
    """A Markdown code block that ``text`` cannot break out of."""
    longest = max((len(m) for m in re.findall(r"`+", text)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}{lang}\n{text}\n{fence}"


def _file_name(tool_input: dict[str, Any]) -> str:
    path = tool_input.get("file_path") or tool_input.get("notebook_path") or tool_input.get("path") or ""
    return PurePosixPath(str(path)).name if path else ""


def describe_tool(tool_input: dict[str, Any]) -> str:
    """What a tool call does, in one short line: the command, file, pattern or URL."""
    for key in ("command", "file_path", "notebook_path", "pattern", "url", "query", "description", "prompt"):
        value = tool_input.get(key)
        if isinstance(value, str) and value.strip():
            return one_line(value)
    return ""


def tool_status(name: str, tool_input: dict[str, Any]) -> str:
    target = _file_name(tool_input)
    if name in EDIT_TOOLS and target:
        return f"Editing {target}…"
    if name == "Read" and target:
        return f"Reading {target}…"
    return f"Running {name}…"


def tool_input_text(name: str, tool_input: dict[str, Any]) -> tuple[str, str]:
    """The tool's input for display, and the code block's language."""
    command = tool_input.get("command")
    if name == "Bash" and isinstance(command, str):
        return command, "bash"
    return json.dumps(tool_input, indent=2, ensure_ascii=False), "json"


def tool_result_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for block in content:
            if isinstance(block, dict) and block.get("type") == "text":
                parts.append(str(block.get("text", "")))
            elif isinstance(block, dict):
                parts.append(f"[{block.get('type', 'content')}]")
        return "\n".join(parts)
    return "" if content is None else json.dumps(content)


# Open WebUI finds a <details> block's end by counting "<details" and "</details>" in it, and
# its summary by "</summary>", even inside code blocks: a zero-width space keeps a tool's
# output (an HTML file, say) from closing the block early.
TAG_RE = re.compile(r"<(/?)(details|summary)", re.IGNORECASE)


def defuse(text: str) -> str:
    return TAG_RE.sub("<\u200b\\1\\2", text)


def render_tool(name: str, tool_input: dict[str, Any], output: Any, is_error: bool) -> str:
    """A collapsed ``<details>`` block for one tool call and its result."""
    what = describe_tool(tool_input)
    summary = f"🔧 {name}: {what}" if what else f"🔧 {name}"
    if is_error:
        summary += " (failed)"
    shown_input, lang = tool_input_text(name, tool_input)
    result = tool_result_text(output).strip() or "(no output)"
    # The summary is shown as plain text (Open WebUI does not decode entities in it).
    return (
        f"<details>\n<summary>{defuse(summary)}</summary>\n\n"
        f"{fenced(defuse(shorten(shown_input, TOOL_INPUT_CHARS)), lang)}\n\n"
        f"{fenced(defuse(shorten(result, TOOL_OUTPUT_CHARS)))}\n\n</details>\n\n"
    )


class TurnView:
    """Turns the CLI's stream-json lines into chat text and status updates.

    Text is taken from the partial messages (``stream_event`` deltas) as it arrives; the
    full ``assistant`` line that follows repeats it, so a message whose deltas were seen is
    not rendered again. Messages that came without deltas (synthetic error messages, CLIs
    that do not stream) are rendered from the full line. Only the main conversation's text
    is shown; a subagent's text is its own business, its tool calls are shown like others."""

    def __init__(self, show_tools: bool, show_thinking: bool) -> None:
        self.show_tools = show_tools
        self.show_thinking = show_thinking
        self.session_id: str | None = None
        self.result: dict[str, Any] | None = None
        self.failed = False  # the turn ended in an error of any kind
        self._parts: list[str] = []  # everything rendered so far (joined only when needed)
        self._tail = ""  # its last two characters, for the paragraph breaks
        self._message_id: str | None = None
        self._streamed: set[str] = set()
        self._blocks: dict[int, str] = {}
        self._tools: dict[str, tuple[str, dict[str, Any]]] = {}
        self._denied: dict[str, str] = {}  # tool_use_id -> tool name
        self._explained = False  # the server's error event came

    # -- output helpers --
    @property
    def text(self) -> str:
        return "".join(self._parts)

    def _out(self, text: str) -> list[str]:
        if not text:
            return []
        self._parts.append(text)
        self._tail = (self._tail + text)[-2:]
        return [text]

    def paragraph(self, text: str) -> list[str]:
        """``text`` as a block of its own: a blank line before it unless one is there."""
        return self._out(self.separator("\n\n") + text)

    def separator(self, wanted: str) -> str:
        """What to add so that the output so far ends with ``wanted`` (a line or paragraph break)."""
        if not self._tail:
            return ""
        if self._tail.endswith(wanted):
            return ""
        return wanted[1:] if self._tail.endswith("\n") else wanted

    # -- lines --
    def feed(self, obj: dict[str, Any]) -> Sequence[Piece]:
        handler = {
            "system": self._system,
            "stream_event": self._stream_event,
            "assistant": self._assistant,
            "user": self._user,
            "result": self._result,
        }.get(str(obj.get("type")))
        return handler(obj) if handler else []  # unknown types pass silently

    def _system(self, obj: dict[str, Any]) -> Sequence[Piece]:
        subtype = obj.get("subtype")
        if subtype == "init" and isinstance(obj.get("session_id"), str):
            self.session_id = obj["session_id"]
        elif subtype == "api_retry":
            attempt, most = obj.get("attempt"), obj.get("max_retries")
            tries = f" (attempt {attempt} of {most})" if attempt and most else ""
            return [Status(f"The Claude API failed; retrying{tries}…")]
        elif subtype == "permission_denied" and obj.get("tool_use_id"):
            self._denied[str(obj["tool_use_id"])] = str(obj.get("tool_name") or "a tool")
        return []

    def _stream_event(self, obj: dict[str, Any]) -> Sequence[Piece]:
        if obj.get("parent_tool_use_id"):
            return []
        event = obj.get("event") or {}
        kind = event.get("type")
        if kind == "message_start":
            self._message_id = (event.get("message") or {}).get("id")
            self._blocks = {}
            return []
        message_id = obj.get("api_message_id") or self._message_id
        index = event.get("index", 0)
        if kind == "content_block_start":
            block_type = str((event.get("content_block") or {}).get("type"))
            self._blocks[index] = block_type
            if block_type == "thinking" and self.show_thinking:
                self._mark(message_id)
                return self.paragraph("<think>\n")
            if block_type == "text":  # a new block of text: its own paragraph after what came before
                return self._out(self.separator("\n\n"))
        elif kind == "content_block_delta":
            delta = event.get("delta") or {}
            if delta.get("type") == "text_delta":
                self._mark(message_id)
                return self._out(str(delta.get("text", "")))
            if delta.get("type") == "thinking_delta" and self.show_thinking:
                return self._out(str(delta.get("thinking", "")))
        elif kind == "content_block_stop" and self._blocks.get(index) == "thinking" and self.show_thinking:
            return self._out("\n</think>\n\n")
        return []

    def _mark(self, message_id: str | None) -> None:
        if message_id:
            self._streamed.add(message_id)

    def _assistant(self, obj: dict[str, Any]) -> Sequence[Piece]:
        message = obj.get("message") or {}
        streamed = message.get("id") in self._streamed
        main_thread = not obj.get("parent_tool_use_id")
        pieces: list[Piece] = []
        for block in message.get("content") or []:
            if not isinstance(block, dict):
                continue
            kind = block.get("type")
            if kind == "tool_use":
                tool_input = _dict(block.get("input"))
                name = str(block.get("name") or "tool")
                self._tools[str(block.get("id"))] = (name, tool_input)
                pieces.append(Status(tool_status(name, tool_input)))
            elif kind == "text" and main_thread and not streamed:
                pieces += self.paragraph(str(block.get("text", "")))
            elif kind == "thinking" and main_thread and not streamed and self.show_thinking:
                pieces += self.paragraph(f"<think>\n{block.get('thinking', '')}\n</think>\n\n")
        return pieces

    def _user(self, obj: dict[str, Any]) -> Sequence[Piece]:
        content = (obj.get("message") or {}).get("content")
        results = (
            [b for b in content if isinstance(b, dict) and b.get("type") == "tool_result"]
            if isinstance(content, list)
            else []
        )
        pieces: list[Piece] = []
        for block in results:
            name, tool_input = self._tools.pop(str(block.get("tool_use_id")), ("tool", {}))
            if self.show_tools:
                output, failed = block.get("content"), bool(block.get("is_error"))
                pieces += self.paragraph(render_tool(name, tool_input, output, failed))
        if results:
            pieces.append(Status("Claude Code is working…"))
        return pieces

    def _result(self, obj: dict[str, Any]) -> Sequence[Piece]:
        self.result = obj
        if isinstance(obj.get("session_id"), str):
            self.session_id = self.session_id or obj["session_id"]
        for denial in obj.get("permission_denials") or []:
            if isinstance(denial, dict):
                self._denied.setdefault(str(denial.get("tool_use_id")), str(denial.get("tool_name") or "a tool"))
        pieces: list[Piece] = []
        # A failed result is followed by the server's error event, which says what it means
        # (not logged in, an API error, a limit): that is shown instead (see finish()).
        if self._denied:
            pieces += self.paragraph(permission_hint(sorted(set(self._denied.values()))))
        return pieces

    def queued(self, event: dict[str, Any]) -> Status:
        position = event.get("position")
        where = f" (number {position} in the queue)" if isinstance(position, int) else ""
        return Status(f"Waiting for a free Claude Code slot on the server{where}…")

    def server_error(self, error: dict[str, Any]) -> list[str]:
        self._explained = True
        return self.problem(server_error_text(error))

    def problem(self, text: str) -> list[str]:
        """A failure, worded for the chat, as a paragraph of its own."""
        self.failed = True
        return self.paragraph(text)

    def finish(self) -> list[str]:
        """What to add once the stream has ended."""
        if self.result is None and not self.failed:
            self.failed = True
            return self.paragraph("⚠️ The connection to claude-server ended before Claude Code finished this turn.")
        result = self.result or {}
        if not self._explained and (result.get("is_error") or result.get("subtype") not in (None, "success")):
            # A server that sent no error event after it (an older one).
            return self.problem(result_problem(result, self.text))
        return []


def result_problem(result: dict[str, Any], shown: str) -> str:
    subtype = str(result.get("subtype") or "")
    reasons = {
        "error_max_turns": "it reached the maximum number of turns",
        "error_max_budget_usd": "it reached its budget",
        "error_during_execution": "it failed while running",
    }
    reason = reasons.get(subtype, "it reported an error")
    text = str(result.get("result") or "").strip()
    detail = f": {one_line(text, 300)}" if text and text not in shown else ""
    return f"⚠️ Claude Code stopped because {reason}{detail}"


def permission_hint(tools: list[str]) -> str:
    names = ", ".join(f"`{t}`" for t in tools)
    example = json.dumps(tools[:3])
    return (
        f"🔒 Claude Code was not allowed to use {names} in this turn. To allow it for this chat, "
        f"start a message with a line such as `allowedTools={example}`, "
        "`permission_mode=acceptEdits` (file edits) or `dangerously-skip-permissions=true` (everything)."
    )


def server_error_text(error: dict[str, Any]) -> str:
    code = str(error.get("code") or "error")
    message = str(error.get("message") or "unknown error").strip()
    if code == "cancelled":
        return "⏹️ The turn was stopped."
    return f"⚠️ claude-server: {message} ({code})"


def http_error_text(status: int, body: str, server_url: str) -> str:
    """A readable line for an error claude-server answered before any stream."""
    try:
        error = json.loads(body).get("error") or {}
    except (ValueError, AttributeError):
        error = {}
    code = str(error.get("code") or "")
    message = str(error.get("message") or "").strip() or one_line(body, 300) or f"HTTP {status}"
    if status == 401:
        return f"⚠️ claude-server at {server_url} refused the API key: {message}. Check the API_KEY valves."
    if code == "policy_refused":
        return (
            f"⚠️ The server's policy refuses this: {message}. Change this chat's settings (a message starting "
            "with `dangerously-skip-permissions=false` or `permission_mode=`) or ask the administrator."
        )
    if code == "session_busy":
        return (
            "⚠️ Claude Code is still working on an earlier message of this chat. "
            "Wait for it to finish (or stop it) and send your message again."
        )
    if code == "session_not_found":
        return f"⚠️ {message}. Start a new chat to get a new session."
    return f"⚠️ claude-server answered HTTP {status}{f' ({code})' if code else ''}: {message}"


# ---- files -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class FileRef:
    id: str
    name: str
    path: str | None


def safe_file_name(name: str, file_id: str) -> str:
    """The name a file gets in the workspace: its base name, nothing that walks folders."""
    base = PurePosixPath(str(name).replace("\\", "/")).name.replace("\x00", "").strip()
    if base in ("", ".", "..") or base.startswith("."):
        base = f"file-{file_id[:8]}{'-' + base.lstrip('.') if base.strip('.') else ''}"
    return base[:200]


def attached_files(files: Iterable[Any] | None) -> list[FileRef]:
    """The uploaded files among Open WebUI's ``__files__`` entries (collections and web
    pages have no file to copy), each once, with unique workspace names."""
    out: list[FileRef] = []
    seen_ids: set[str] = set()
    seen_names: set[str] = set()
    for item in files or []:
        if not isinstance(item, dict):
            continue
        inner = _dict(item.get("file"))
        file_id = str(item.get("id") or inner.get("id") or "")
        if not file_id or file_id in seen_ids or item.get("type") not in (None, "file", "image", "doc"):
            continue
        meta = _dict(inner.get("meta"))
        name = safe_file_name(str(item.get("name") or inner.get("filename") or meta.get("name") or ""), file_id)
        if name in seen_names:
            stem, dot, ext = name.partition(".")
            name = f"{stem}-{file_id[:8]}{dot}{ext}"
        seen_ids.add(file_id)
        seen_names.add(name)
        path = inner.get("path") or item.get("path")
        out.append(FileRef(file_id, name, str(path) if path else None))
    return out


@dataclass
class FileSync:
    uploaded: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


# ---- asking the user: tool approvals and Claude's questions -------------------------------------


def confirmation_event(request: dict[str, Any]) -> dict[str, Any]:
    """Open WebUI's own tool-approval dialog for a permission request (the shape its middleware
    sends for its tools in approval mode "ask"), with the longest timeout it allows."""
    tool_call = {
        "id": str(request.get("tool_use_id") or request.get("request_id") or ""),
        "name": str(request.get("tool_name") or "tool"),
        "arguments": _dict(request.get("input")),
    }
    return {"type": "confirmation", "data": {"tool_call": tool_call, "timeout_ms": DIALOG_TIMEOUT_MS}}


def refusal_reason(reply: Any) -> str | None:
    """None when the dialog's reply approves (only ``True`` does, as in Open WebUI), else why not."""
    if reply is True:
        return None
    if reply is False:
        return "the user denied it"
    if isinstance(reply, dict) and reply.get("error"):
        return f"Open WebUI could not ask the user ({one_line(str(reply['error']), 200)})"
    if isinstance(reply, dict) and reply.get("status") == "cancelled":
        return "the approval dialog was dismissed"
    return "the user gave no answer"


def user_input_event(questions: list[Any]) -> dict[str, Any]:
    """Open WebUI's question card (as its ``ask_user`` tool opens it) for Claude's questions;
    question i gets the id ``q<i+1>``, by which the answers come back."""
    shown = []
    for i, question in enumerate(q for q in questions if isinstance(q, dict)):
        text = str(question.get("question") or "").strip()
        if question.get("multiSelect"):
            text += " (Several apply? Type them under Other, separated by commas.)"
        options = [
            {
                "label": str(option.get("label") or "")[:LABEL_CHARS],
                "description": str(option.get("description") or "")[:OPTION_CHARS],
            }
            for option in question.get("options") or []
            if isinstance(option, dict)
        ]
        shown.append(
            {
                "id": f"q{i + 1}",
                "header": str(question.get("header") or "").strip()[:HEADER_CHARS] or f"Question {i + 1}",
                "question": text[:QUESTION_CHARS],
                "options": options,
                "allow_other": True,
            }
        )
    return {
        "type": "request:user_input",
        "data": {"questions": shown, "allow_other": True, "timeout_ms": DIALOG_TIMEOUT_MS},
    }


def question_answers(questions: list[Any], reply: Any) -> tuple[dict[str, str], str | None]:
    """The answers as the server takes them, ``{question text: label}``, from the card's reply
    ``{"status": "answered", "answers": {"q1": {"type": "option", "label": ...} | {"type":
    "other", "text": ...}}}``; or no answers and why."""
    if not isinstance(reply, dict):
        return {}, "the user gave no answer"
    if reply.get("error"):
        return {}, f"Open WebUI could not ask the user ({one_line(str(reply['error']), 200)})"
    if reply.get("status") == "cancelled":
        return {}, "the user dismissed the question"
    given = _dict(reply.get("answers"))
    out: dict[str, str] = {}
    for i, question in enumerate(q for q in questions if isinstance(q, dict)):
        answer = _dict(given.get(f"q{i + 1}"))
        value = answer.get("text") if answer.get("type") == "other" else answer.get("label")
        if isinstance(value, str) and value.strip():
            out[str(question.get("question") or "")] = value.strip()
    return out, None if out else "the user gave no answer"


class Asker:
    """Answers one turn's permission requests and questions by asking the user in Open WebUI.

    Each request is handled in a task of its own, so the turn's stream is read on meanwhile
    (the server keeps pinging; its ``*_resolved`` events follow the answer). Dialogs are shown
    one at a time. A request the server resolved by itself (its timeout, the CLI withdrawing
    it) stops being asked; whatever is open when the stream ends is dropped (the server denies
    it when the turn ends)."""

    def __init__(
        self,
        http: aiohttp.ClientSession,
        base_url: str,
        turn_id: str | None,
        event_call: EventCaller | None,
        emitter: EventEmitter | None,
        allow_hint: Callable[[str], str],
    ) -> None:
        self.http = http
        self.base_url = base_url
        self.turn_id = turn_id
        self.event_call = event_call
        self.emitter = emitter
        self.allow_hint = allow_hint
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._tools: dict[str, str] = {}
        self._dialog = asyncio.Lock()

    def ask(self, kind: str, event: SseEvent) -> None:
        request = _json_object(event.data)
        request_id = request.get("request_id")
        if not isinstance(request_id, str) or request_id in self._tools:
            return  # malformed, or seen already
        if self.turn_id is None and event.id:
            self.turn_id = event.id.rpartition(":")[0] or None
        self._tools[request_id] = str(request.get("tool_name") or "AskUserQuestion")
        handle = self._permission if kind == "permission_request" else self._question
        self._tasks[request_id] = asyncio.create_task(handle(request_id, request))

    def resolved(self, event: dict[str, Any]) -> Status:
        """A request was settled (by the user through us, or by the server): a status line."""
        request_id = str(event.get("request_id"))
        task = self._tasks.get(request_id)
        if task is not None and not task.done():
            task.cancel()  # settled without us (timeout, withdrawn): stop asking
        tool = self._tools.get(request_id, "a tool")
        if event.get("type") == "question_resolved":
            answered = event.get("behavior") != "deny"
            return Status("Claude Code is working…" if answered else "Question left unanswered")
        if event.get("behavior") == "allow":
            return Status(f"Approved: {tool}")
        return Status(f"Denied: {tool}")

    async def close(self) -> None:
        tasks = [t for t in self._tasks.values() if not t.done()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._tasks.clear()

    async def _call(self, event: dict[str, Any]) -> Any:
        """The browser's reply; an exception is a reply too (nobody could be asked)."""
        if self.event_call is None:
            return {"error": "no browser session"}
        async with self._dialog:
            try:
                return await self.event_call(event)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("__event_call__ failed", exc_info=True)
                return {"error": f"{exc.__class__.__name__}: {exc}"}

    async def _permission(self, request_id: str, request: dict[str, Any]) -> None:
        tool = self._tools[request_id]
        await Pipe._emit(self.emitter, f"Waiting for approval: {tool}")
        reason = refusal_reason(await self._call(confirmation_event(request)))
        if reason is None:
            body: dict[str, Any] = {"behavior": "allow"}
        else:
            message = f"Not allowed to use {tool}: {reason}. {self.allow_hint(tool)}"
            body = {"behavior": "deny", "message": message}
        await self._answer("permissions", request_id, body)

    async def _question(self, request_id: str, request: dict[str, Any]) -> None:
        questions = request.get("questions")
        questions = questions if isinstance(questions, list) else []
        await Pipe._emit(self.emitter, "Claude is asking you a question…")
        answers, reason = question_answers(questions, await self._call(user_input_event(questions)))
        if answers:
            body: dict[str, Any] = {"answers": answers}
        else:
            message = (
                f"The question got no answer: {reason}. Go on without it: make a reasonable choice "
                "and say which one you made."
            )
            body = {"behavior": "deny", "message": message}
        await self._answer("questions", request_id, body)

    async def _answer(self, kind: str, request_id: str, body: dict[str, Any]) -> None:
        if self.turn_id is None:
            log.warning("cannot answer request %s: the server named no turn id", request_id)
            return
        url = f"{self.base_url}/api/turns/{quote(self.turn_id)}/{kind}/{quote(request_id)}"
        try:
            async with self.http.post(url, json=body) as resp:
                if resp.status not in (200, 409):  # 409: settled meanwhile (timeout, turn over)
                    log.warning("answering %s: HTTP %s %s", request_id, resp.status, await resp.text())
        except (aiohttp.ClientError, TimeoutError):
            log.warning("answering %s failed", request_id, exc_info=True)


def allow_hint(tool: str, overrides: bool) -> str:
    """How the tool would be allowed without asking: the parameter line, or the valve."""
    if overrides:
        line = f"allowedTools={json.dumps([tool])}"
        return f"To let Claude Code use {tool} in this chat without asking, start a message with the line `{line}`."
    return f"An administrator can allow {tool} without asking in this model's ALLOWED_TOOLS valve."


# ---- the pipe --------------------------------------------------------------------------------


@dataclass(frozen=True)
class CallOptions:
    """What one call runs with: the valves, with the calling user's valves over them."""

    defaults: TurnSettings
    show_tools: bool
    show_thinking: bool
    api_key: str


class ServerError(Exception):
    """claude-server answered an error (already worded for the chat)."""


def select(options: list[str]) -> dict[str, Any]:
    # Open WebUI renders a valve with input.options as a drop-down (older versions: a text box).
    return {"input": {"type": "select", "options": options}}


class Pipe:
    class Valves(BaseModel):
        SERVER_URL: str = Field(default="http://localhost:3000", description="claude-server's base URL.")
        API_KEY: str = Field(
            default="",
            description="Sent as 'Authorization: Bearer <key>' when set.",
            json_schema_extra={"input": {"type": "password"}},
        )
        SKIP_PERMISSIONS: bool = Field(
            default=False,
            description="Run every turn with --dangerously-skip-permissions (unless a chat says otherwise).",
        )
        PERMISSION_MODE: str = Field(
            default="",
            description=f"Default permission mode: {', '.join(PERMISSION_MODES)}; empty for Claude Code's default.",
            json_schema_extra=select(["", *PERMISSION_MODES]),
        )
        ALLOWED_TOOLS: str = Field(default="", description='Default allowed tools: "Bash,Edit" or ["Bash","Edit"].')
        DISALLOWED_TOOLS: str = Field(default="", description="Default disallowed tools, same syntax.")
        MODEL: str = Field(
            default="", description="Default model (e.g. sonnet, opus); empty for Claude Code's default."
        )
        ALLOW_PERMISSION_OVERRIDES: bool = Field(
            default=True,
            description="Let users change permissions (skip, mode, allowed/disallowed tools) per chat and in their "
            "user valves. Turn off to enforce the settings above.",
        )
        ASK_PERMISSIONS: bool = Field(
            default=True,
            description="Ask the user in Open WebUI's approval dialog before a tool use the permission settings "
            "leave open, and show Claude's questions in its question card. Without a browser to ask (a bare API "
            "call) such tool uses are denied, with the line that would allow them. Off: refused without asking.",
        )
        SHOW_TOOL_ACTIVITY: bool = Field(default=True, description="Show each tool call and its result, collapsed.")
        SHOW_THINKING: bool = Field(default=False, description="Show Claude's thinking blocks.")
        IDLE_TIMEOUT: int = Field(
            default=600,
            ge=20,
            description="Seconds without anything from the server (it pings every 15 s) before giving up. "
            "There is no total limit: long tool runs are fine.",
        )

    class UserValves(BaseModel):
        API_KEY: str = Field(
            default="",
            description="Your own claude-server key (your sessions, limits and budget); empty for the administrator's.",
            json_schema_extra={"input": {"type": "password"}},
        )
        MODEL: str = Field(default="", description="Your default model; empty for the administrator's.")
        PERMISSION_MODE: str = Field(
            default="",
            description="Your default permission mode; empty for the administrator's.",
            json_schema_extra=select(["", *PERMISSION_MODES]),
        )
        SHOW_TOOL_ACTIVITY: Literal["default", "on", "off"] = Field(default="default", description="Show tool calls.")
        SHOW_THINKING: Literal["default", "on", "off"] = Field(default="default", description="Show thinking blocks.")

    def __init__(self) -> None:
        self.valves = self.Valves()
        # chat id -> session id, learnt from each turn's init line. Only needed to upload
        # files before a turn; turns themselves find their session by conversation_id.
        self._sessions: OrderedDict[str, str] = OrderedDict()
        # (chat id, file id) of files without a path, already reported in that chat.
        self._reported: set[tuple[str, str]] = set()

    async def pipe(
        self,
        body: dict[str, Any],
        __user__: dict[str, Any] | None = None,
        __metadata__: dict[str, Any] | None = None,
        __task__: str | None = None,
        __event_emitter__: EventEmitter | None = None,
        __event_call__: EventCaller | None = None,
        __chat_id__: str | None = None,
        __message_id__: str | None = None,
        __files__: list[dict[str, Any]] | None = None,
        __task_body__: dict[str, Any] | None = None,
    ) -> str | AsyncIterator[str]:
        messages = [m for m in body.get("messages") or [] if isinstance(m, dict)]
        stream = bool(body.get("stream", False))
        task = detect_task(__task__, messages, stream)
        if task is not None:
            return task_answer(task, __task_body__, messages)
        chat_id = str((__metadata__ or {}).get("chat_id") or __chat_id__ or "")
        if chat_id.startswith("local:"):
            # A temporary chat's id is the browser socket's: every temporary chat of a tab shares
            # it and a reconnect changes it. Such a chat keeps its session the bare-API way.
            chat_id = ""
        files = (__metadata__ or {}).get("files") if __files__ is None else __files__
        output = self._chat(messages, chat_id, __user__ or {}, __event_emitter__, __event_call__, attached_files(files))
        if stream:
            return output
        return "".join([piece async for piece in output])

    # -- one chat turn --
    async def _chat(
        self,
        messages: list[dict[str, Any]],
        chat_id: str,
        user: dict[str, Any],
        emitter: EventEmitter | None,
        event_call: EventCaller | None,
        files: list[FileRef],
    ) -> AsyncIterator[str]:
        """The answer to the newest message, as it streams. Every failure ends as a readable
        message in the chat; cancellation (the stop button) propagates and closes the request,
        which makes the server end the CLI."""
        if not messages or messages[-1].get("role") != "user":
            yield "⚠️ Claude Code answers new messages only; continuing an earlier answer is not supported."
            return
        try:
            options = self._options(user)
        except ParameterError as exc:
            yield f"⚠️ A valve of this model has a value that cannot be used: {exc}."
            return
        settings, newest = chat_settings(messages, options.defaults, self.valves.ALLOW_PERMISSION_OVERRIDES)
        if newest.errors:
            yield "⚠️ Some parameter lines at the top of your message could not be used:\n\n"
            yield "\n".join(f"- {e}" for e in newest.errors)
            yield "\n\nNothing was sent to Claude Code. Fix the lines and send the message again."
            return
        if not newest.prompt:
            if newest.updates:  # only settings: they apply from the next message on
                yield f"⚙️ Settings for this chat from now on:\n\n{fenced(settings.describe())}"
            else:
                yield "There is no prompt in your message."
            return
        # A bare API call has no chat: its session travels in the answers' session_id= lines.
        session_id = None if chat_id else session_from_history(messages)
        view = TurnView(options.show_tools, options.show_thinking)
        auth = {"Authorization": f"Bearer {options.api_key}"} if options.api_key else {}
        async with aiohttp.ClientSession(timeout=self._timeout(), headers=auth) as http:
            try:
                prompt = newest.prompt
                if files:
                    sync, session_id = await self._sync_files(http, chat_id, session_id, settings, files, emitter)
                    prompt = with_file_note(prompt, sync)
                    for problem in sync.problems:
                        for text in view.paragraph(f"⚠️ {problem}"):
                            yield text
                request = {
                    "prompt": prompt,
                    "stream": True,
                    "include_partial_messages": True,
                    **settings.request_fields(),
                }
                if chat_id:
                    request["conversation_id"] = chat_id
                elif session_id:
                    request["session_id"] = session_id
                if self.valves.ASK_PERMISSIONS:
                    request["permission_prompt"] = True
                await self._emit(emitter, "Claude Code is working…")
                async for piece in self._turn(http, request, view, emitter, event_call):
                    yield piece
            except ServerError as exc:
                for text in view.problem(str(exc)):
                    yield text
            except (aiohttp.ClientError, TimeoutError) as exc:
                for text in view.problem(self._connection_problem(exc)):
                    yield text
        if view.session_id:
            if chat_id:
                self._remember(chat_id, view.session_id)
            else:
                # The seed design's marker, on a line of its own at the very end of the answer.
                yield view.separator("\n\n") + f"session_id={view.session_id}"
        await self._emit(emitter, "Stopped with an error" if view.failed else "Done", done=True)

    async def _turn(
        self,
        http: aiohttp.ClientSession,
        request: dict[str, Any],
        view: TurnView,
        emitter: EventEmitter | None,
        event_call: EventCaller | None,
    ) -> AsyncIterator[str]:
        async with await self._post_turn(http, request, emitter) as resp:
            overrides = self.valves.ALLOW_PERMISSION_OVERRIDES
            asker = Asker(
                http,
                self.valves.SERVER_URL.rstrip("/"),
                resp.headers.get("X-Turn-Id"),
                event_call,
                emitter,
                lambda tool: allow_hint(tool, overrides),
            )
            try:
                async for event in iter_sse(resp.content.iter_any()):
                    pieces: Sequence[Piece]
                    if event.name == "error":
                        pieces = view.server_error(_json_object(event.data))
                    elif event.name is None:
                        obj = _json_object(event.data)
                        pieces = view.feed(obj) if obj else []
                    elif event.name == "queued":
                        pieces = [view.queued(_json_object(event.data))]
                    elif event.name in ("permission_request", "question"):
                        asker.ask(event.name, event)  # answered in a task: the stream goes on
                        pieces = []
                    elif event.name in ("permission_resolved", "question_resolved"):
                        pieces = [asker.resolved({"type": event.name, **_json_object(event.data)})]
                    else:
                        pieces = []  # a server event of a later version: nothing to show
                    for piece in pieces:
                        if isinstance(piece, Status):
                            await self._emit(emitter, piece.description, piece.done)
                        elif piece.startswith("data:"):
                            # Open WebUI passes a yielded string starting with "data:" through as a
                            # raw SSE line; split it so the text is never taken for one.
                            yield piece[:1]
                            yield piece[1:]
                        else:
                            yield piece
            finally:
                await asker.close()
        for text in view.finish():
            yield text

    async def _post_turn(
        self, http: aiohttp.ClientSession, request: dict[str, Any], emitter: EventEmitter | None
    ) -> aiohttp.ClientResponse:
        """POST /api/claude; a 409 session_busy is retried for a few seconds (the previous
        turn may still be ending after the stop button)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + BUSY_RETRY_S
        while True:
            resp = await http.post(self._url("/api/claude"), json=request)
            if resp.status == 200:
                return resp
            body = await resp.text()
            resp.release()
            busy = resp.status == 409 and '"session_busy"' in body
            if not busy or loop.time() >= deadline:
                raise ServerError(http_error_text(resp.status, body, self.valves.SERVER_URL))
            await self._emit(emitter, "Waiting for the previous turn of this chat to end…")
            await asyncio.sleep(BUSY_RETRY_INTERVAL_S)

    # -- files --
    async def _sync_files(
        self,
        http: aiohttp.ClientSession,
        chat_id: str,
        session_id: str | None,
        settings: TurnSettings,
        files: list[FileRef],
        emitter: EventEmitter | None,
    ) -> tuple[FileSync, str | None]:
        """Upload the chat's files that the session has not had yet.

        Open WebUI passes every file of the chat on every turn. Each is handled once per
        session, and the session's metadata records which (so a file Claude has edited since
        is never overwritten by the original, even after a restart, and a file that cannot
        be uploaded is reported once, not on every turn)."""
        sync = FileSync()
        for ref in files:
            if not ref.path and (chat_id, ref.id) not in self._reported:
                # Nothing to copy (a web page, a file kept elsewhere): no session is needed to say so.
                sync.problems.append(f"{ref.name} could not be uploaded: Open WebUI gave no file path for it.")
                if len(self._reported) > SESSION_CACHE_SIZE:
                    self._reported.clear()  # at worst a warning is repeated once
                self._reported.add((chat_id, ref.id))
        uploadable = [ref for ref in files if ref.path]
        if not uploadable:
            return sync, session_id
        if chat_id:
            session_id = self._sessions.get(chat_id)
        if session_id is None:
            await self._emit(emitter, "Preparing the workspace for your files…")
            session_id = await self._prepare_session(http, chat_id, settings)
        metadata = await self._session_metadata(http, session_id)
        handled = _dict(metadata.get(UPLOADS_KEY))
        for ref in uploadable:
            if ref.id in handled:
                continue
            await self._emit(emitter, f"Uploading {ref.name}…")
            problem = await self._upload(http, session_id, ref)
            if problem:
                sync.problems.append(problem)
            else:
                sync.uploaded.append(ref.name)
            handled[ref.id] = ref.name
        if len(handled) > len(_dict(metadata.get(UPLOADS_KEY))):
            await self._patch_metadata(http, session_id, {**metadata, UPLOADS_KEY: handled})
        return sync, session_id

    async def _prepare_session(self, http: aiohttp.ClientSession, chat_id: str, settings: TurnSettings) -> str:
        """The chat's session id, made by a one-step turn when the pipe does not know it.

        A file must be in the workspace before the turn that mentions it, but a new chat
        has no session (hence no workspace) until its first turn, and claude-server offers
        no way to look a session up by conversation_id. So a minimal turn runs first: with
        the chat's conversation_id it resumes the chat's session or creates it."""
        request: dict[str, Any] = {"prompt": PREPARE_PROMPT, "stream": False, "max_turns": 1}
        if settings.model:
            request["model"] = settings.model
        if chat_id:
            request["conversation_id"] = chat_id
        async with http.post(self._url("/api/claude"), json=request) as resp:
            body = await resp.text()
            if resp.status != 200:
                raise ServerError(http_error_text(resp.status, body, self.valves.SERVER_URL))
        session_id = _json_object(body).get("session_id")
        if not isinstance(session_id, str):
            raise ServerError("⚠️ claude-server did not say which session it prepared for the files.")
        if chat_id:
            self._remember(chat_id, session_id)
        return session_id

    async def _session_metadata(self, http: aiohttp.ClientSession, session_id: str) -> dict[str, Any]:
        async with http.get(self._url(f"/api/sessions/{quote(session_id)}")) as resp:
            body = await resp.text()
            if resp.status != 200:
                raise ServerError(http_error_text(resp.status, body, self.valves.SERVER_URL))
        metadata = _json_object(body).get("metadata")
        return dict(metadata) if isinstance(metadata, dict) else {}

    async def _patch_metadata(self, http: aiohttp.ClientSession, session_id: str, metadata: dict[str, Any]) -> None:
        url = self._url(f"/api/sessions/{quote(session_id)}")
        async with http.patch(url, json={"metadata": metadata}) as resp:
            if resp.status != 200:
                # The files are uploaded; only the record failed: they may be uploaded again later.
                log.warning(
                    "could not record uploads on session %s: HTTP %s %s", session_id, resp.status, await resp.text()
                )

    async def _upload(self, http: aiohttp.ClientSession, session_id: str, ref: FileRef) -> str | None:
        """Upload one file; a problem comes back as a sentence, None when it worked."""
        try:
            data = await asyncio.to_thread(Path(ref.path or "").read_bytes)
        except OSError as exc:
            return f"{ref.name} could not be uploaded: cannot read {ref.path} ({exc.strerror or exc})."
        url = self._url(f"/api/sessions/{quote(session_id)}/files/{quote(ref.name)}")
        async with http.put(url, data=data, headers={"Content-Type": "application/octet-stream"}) as resp:
            if resp.status in (200, 201):
                return None
            return f"{ref.name} could not be uploaded: " + http_error_text(
                resp.status, await resp.text(), self.valves.SERVER_URL
            ).removeprefix("⚠️ ")

    # -- settings and plumbing --
    def _options(self, user: dict[str, Any]) -> CallOptions:
        """The valves' settings with the user's own valves over them."""
        v = self.valves
        mine = user_valves(user)
        mode, mode_from = v.PERMISSION_MODE, "PERMISSION_MODE"
        if v.ALLOW_PERMISSION_OVERRIDES and str(mine.get("PERMISSION_MODE") or "").strip():
            mode, mode_from = str(mine["PERMISSION_MODE"]), "your PERMISSION_MODE"
        model, model_from = v.MODEL, "MODEL"
        if str(mine.get("MODEL") or "").strip():
            model, model_from = str(mine["MODEL"]), "your MODEL"
        defaults = TurnSettings(
            skip_permissions=v.SKIP_PERMISSIONS,
            permission_mode=_valve(_parse_permission_mode, mode, mode_from),
            allowed_tools=_valve(_parse_tools, v.ALLOWED_TOOLS, "ALLOWED_TOOLS"),
            disallowed_tools=_valve(_parse_tools, v.DISALLOWED_TOOLS, "DISALLOWED_TOOLS"),
            model=_valve(_parse_model, model, model_from),
        )
        return CallOptions(
            defaults=defaults,
            show_tools=_switch(mine.get("SHOW_TOOL_ACTIVITY"), v.SHOW_TOOL_ACTIVITY),
            show_thinking=_switch(mine.get("SHOW_THINKING"), v.SHOW_THINKING),
            api_key=str(mine.get("API_KEY") or "").strip() or v.API_KEY.strip(),
        )

    def _remember(self, chat_id: str, session_id: str) -> None:
        self._sessions[chat_id] = session_id
        self._sessions.move_to_end(chat_id)
        while len(self._sessions) > SESSION_CACHE_SIZE:
            self._sessions.popitem(last=False)

    def _url(self, path: str) -> str:
        return self.valves.SERVER_URL.rstrip("/") + path

    def _timeout(self) -> aiohttp.ClientTimeout:
        # No total limit: a turn may run for an hour. sock_read bounds the silence between
        # two reads, and the server pings every 15 s, so it only fires on a dead connection.
        return aiohttp.ClientTimeout(total=None, sock_connect=CONNECT_TIMEOUT_S, sock_read=self.valves.IDLE_TIMEOUT)

    def _connection_problem(self, exc: BaseException) -> str:
        url = self.valves.SERVER_URL
        if isinstance(exc, aiohttp.InvalidURL):
            return f"⚠️ The SERVER_URL valve ({url!r}) is not a valid URL."
        if isinstance(exc, aiohttp.ClientConnectorError):
            return (
                f"⚠️ Could not reach claude-server at {url}: {exc.os_error.strerror or exc.os_error}. "
                "Check that it is running and the SERVER_URL valve."
            )
        # aiohttp >= 3.10 tells a connect timeout apart; anything else timing out is silence.
        connect_timeout = getattr(aiohttp, "ConnectionTimeoutError", ())
        if isinstance(exc, connect_timeout):
            return f"⚠️ Could not connect to claude-server at {url} within {CONNECT_TIMEOUT_S:g} s."
        if isinstance(exc, TimeoutError):
            return (
                f"⚠️ claude-server at {url} sent nothing for {self.valves.IDLE_TIMEOUT} s (the IDLE_TIMEOUT valve); "
                "gave up waiting, which also ends the turn on the server."
            )
        return f"⚠️ The connection to claude-server at {url} failed: {exc.__class__.__name__}: {exc}"

    @staticmethod
    async def _emit(emitter: EventEmitter | None, description: str, done: bool = False) -> None:
        if emitter is None:
            return
        try:
            await emitter({"type": "status", "data": {"description": description, "done": done}})
        except Exception:  # a status line is never worth failing the answer for
            log.debug("status event failed", exc_info=True)


def user_valves(user: dict[str, Any]) -> dict[str, Any]:
    """Open WebUI puts the user's valves in ``__user__["valves"]`` as a UserValves object."""
    valves = user.get("valves")
    if isinstance(valves, BaseModel):
        return valves.model_dump()
    return dict(valves) if isinstance(valves, dict) else {}


def _valve(parse: Callable[[str], Any], raw: str, name: str) -> Any:
    try:
        return parse(raw)
    except ParameterError as exc:
        raise ParameterError(f"{name}: {exc}") from None


def _switch(choice: Any, default: bool) -> bool:
    return {"on": True, "off": False}.get(str(choice), default)


def with_file_note(prompt: str, sync: FileSync) -> str:
    if not sync.uploaded:
        return prompt
    names = ", ".join(f"`{n}`" for n in sync.uploaded)
    return f"{prompt}\n\n(Files attached in Open WebUI, saved in your working directory: {names})"


def _dict(value: Any) -> dict[str, Any]:
    return dict(value) if isinstance(value, dict) else {}


def _json_object(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}
