"""A stateless request's messages as Claude Code needs them, and the key that finds the session
a resent history belongs to.

OpenAI and Anthropic clients send the whole conversation on every request; Claude Code keeps
it in a session and wants only the newest message. The bridge is ``history_key``: after each
successful exchange the server records the key of everything the client has seen so far
(user text as sent, assistant text as returned); the client's next request, history resent,
carries exactly that history before its newest message, so its key finds the session.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from claude_server.errors import BadRequest

Role = Literal["user", "assistant"]
# Text parts of one message are joined with this (both APIs allow several per message).
PART_SEPARATOR = "\n"
HISTORY_INTRO = "This conversation began before this session. Its earlier messages, for context:"


@dataclass(frozen=True)
class Message:
    role: Role
    text: str
    where: str = field(default="messages", compare=False)  # the field it came from, for errors


@dataclass(frozen=True)
class Conversation:
    """The system text, the messages before the newest user message, and that message."""

    system: str | None
    history: tuple[Message, ...]
    newest: str

    def after(self, answer: str) -> tuple[Message, ...]:
        """The history as the client sees it once ``answer`` is returned."""
        return (*self.history, Message("user", self.newest), Message("assistant", answer))


def text_of(content: str | Sequence[Mapping[str, Any]] | None, where: str) -> str:
    """A message's content as text: a string as is, text parts joined. Images, files, tool
    calls and tool results are refused rather than dropped: Claude Code receives text only,
    and an answer that silently ignored an attachment would mislead."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    texts = []
    for i, part in enumerate(content):
        kind = part.get("type")
        text = part.get("text")
        if kind != "text" or not isinstance(text, str):
            shown = kind if isinstance(kind, str) else "without a type"
            raise BadRequest(
                f"{where}.{i}: only text content is supported (this part is {shown})",
                code="unsupported_content",
                field=f"{where}.{i}",
            )
        texts.append(text)
    return PART_SEPARATOR.join(texts)


def conversation(messages: Sequence[Message], system: Sequence[str] = ()) -> Conversation:
    """Split the messages into history and the newest user message, which must come last."""
    if not messages:
        raise BadRequest("messages must hold at least one user message", code="invalid_field", field="messages")
    last = messages[-1]
    if last.role != "user":
        raise BadRequest(
            f"The last message must be the user's (it is the {last.role}'s): Claude Code answers a user message",
            code="invalid_field",
            field=f"{last.where}.role",
        )
    if not last.text.strip():
        raise BadRequest("The last user message has no text", code="invalid_field", field=f"{last.where}.content")
    system_text = "\n\n".join(s for s in system if s.strip())
    return Conversation(system_text or None, tuple(messages[:-1]), last.text)


def history_key(messages: Sequence[Message]) -> str:
    """The key of a visible history: same roles and texts in the same order, same key. Outer
    whitespace does not count, since chat UIs trim what they store."""
    canonical = json.dumps([[m.role, m.text.strip()] for m in messages], ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def recorded_key(conv: Conversation, answer: str, *, new_session: bool, session_key: str | None) -> str | None:
    """The history key to record for a successful exchange, or None when the session's
    context is not known to equal what the client sees: a session resumed by header whose
    recorded history is not the history the client sent (a client that sends only its newest
    message, or a session continued through the native API). Such a session stays reachable
    by header, never by a resent history."""
    if new_session or session_key == history_key(conv.history):
        return history_key(conv.after(answer))
    return None


def context_prompt(conv: Conversation) -> str:
    """The prompt of a new session: the newest message, after the earlier history (if any),
    which the session has not seen."""
    if not conv.history:
        return conv.newest
    earlier = "\n".join(f"<{m.role}>\n{m.text}\n</{m.role}>" for m in conv.history)
    return f"{HISTORY_INTRO}\n\n<earlier_messages>\n{earlier}\n</earlier_messages>\n\n{conv.newest}"
