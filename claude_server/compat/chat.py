"""One compatible-API request run as a turn, on the right session.

Where a request runs:

1. ``X-Claude-Session-Id``: that session, resumed with the newest message only.
2. ``X-Conversation-Id``: the session bound to that id (the broker's ``conversation_id``), or a
   new one that gets bound to it.
3. Otherwise the history the client sent before its newest message is looked up by its key
   (``conversation.history_key``) among the sessions whose newest turn recorded exactly that
   key. The whole history must match, so a session that went on (its key changed) is never
   picked for an older history, and each recorded state of a session is taken by one
   continuation only: two chats that both began with "hi" and got the same answer hold two
   sessions at that same key, and their second turns take one each. Of several, the one
   that has waited longest is taken; busy ones are passed over.
4. No match: a new session, given the earlier history (if any) once, inside the prompt.

The system message goes to a new session only: Claude Code fixes the system prompt when a
session is created and ignores it on a resumed turn.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass

from claude_server.broker import Broker
from claude_server.claude.command import TurnOptions
from claude_server.compat.content import AnswerReader, Outcome
from claude_server.compat.conversation import Conversation, context_prompt, history_key, recorded_key
from claude_server.compat.models import Model
from claude_server.config import Settings
from claude_server.config_files import TurnChoice
from claude_server.errors import ApiError, BadRequest, Conflict, PayloadTooLarge
from claude_server.principal import OPEN, Principal
from claude_server.store import Store
from claude_server.subscription import Subscription
from claude_server.turn import Turn, kind_of

log = logging.getLogger(__name__)

# Linux caps one argv element at 128 KiB; the system prompt travels as --flag=value.
MAX_SYSTEM_BYTES = 128 * 1024 - 64
# An implicitly matched session can be taken by a concurrent request between the lookup and
# the start; the lookup is repeated without it this many times in all.
MATCH_ATTEMPTS = 3


@dataclass(frozen=True)
class ChatRequest:
    """What an OpenAI or Anthropic request asks for, flattened."""

    conversation: Conversation
    model: Model
    session_id: str | None = None  # X-Claude-Session-Id
    conversation_id: str | None = None  # X-Conversation-Id
    config: TurnChoice = TurnChoice()  # X-Claude-Agent, X-Claude-Mcp-Servers


@dataclass(frozen=True)
class Placement:
    """An existing session to resume (and the history key its newest turn recorded), or a new
    session (``session_id`` None)."""

    session_id: str | None
    session_key: str | None = None
    implicit: bool = False


async def place(
    store: Store, broker: Broker, req: ChatRequest, principal: Principal, passed_over: frozenset[str] = frozenset()
) -> Placement:
    """The session a request runs on (see the module's docstring)."""
    if req.session_id is not None:
        return Placement(req.session_id, await store.compat_session_key(req.session_id))
    if req.conversation_id is not None:
        bound = await store.find_conversation(req.conversation_id, principal.key_id)
        if bound is None:
            return Placement(None)
        return Placement(bound.session_id, await store.compat_session_key(bound.session_id))
    if req.conversation.history:
        key = history_key(req.conversation.history)
        for sid in await store.compat_sessions_at(key, principal.key_id):
            if sid not in passed_over and broker.running_on(sid) is None:
                return Placement(sid, key, implicit=True)
    return Placement(None)


def turn_options(req: ChatRequest, placement: Placement, settings: Settings) -> TurnOptions:
    """The CLI's options: a resumed session gets the newest message only; a new one the earlier
    history as context and the system message."""
    conv = req.conversation
    if placement.session_id is not None:
        prompt, system = conv.newest, None
    else:
        prompt, system = context_prompt(conv), conv.system
    if system is not None and len(system.encode()) > MAX_SYSTEM_BYTES:
        raise BadRequest(
            f"The system message is {len(system.encode())} bytes; at most {MAX_SYSTEM_BYTES} "
            "(it is passed to Claude Code as one command-line argument)",
            code="invalid_field",
            field="system",
        )
    size = len(prompt.encode())
    if size > settings.max_prompt_bytes:
        raise PayloadTooLarge(
            f"The prompt is {size} bytes; at most {settings.max_prompt_bytes} (CLAUDE_SERVER_MAX_PROMPT_SIZE)",
            code="prompt_too_large",
            field="messages",
        )
    replace = settings.compat_system_prompt_mode == "replace"
    options = TurnOptions(
        prompt=prompt,
        session_id=placement.session_id,
        model=req.model.cli_model,
        system_prompt=system if replace else None,
        append_system_prompt=None if replace else system,
        include_partial_messages=True,
    )
    # Like the system message, an agent only counts when the session is created.
    return req.config.apply(options, agent=placement.session_id is None)


class ChatTurn:
    """A started turn, read as text. Use it as ``async with``: leaving closes the subscription,
    which cancels the turn if it is still running (the client went away)."""

    def __init__(
        self, sub: Subscription, req: ChatRequest, placement: Placement, store: Store, *, tool_trace: bool
    ) -> None:
        assert sub.turn is not None
        self._sub = sub
        self.turn: Turn = sub.turn
        self._req = req
        self._placement = placement
        self._store = store
        self._reader = AnswerReader(tool_trace=tool_trace)
        self._early: list[str] = []  # text read while waiting for init

    async def __aenter__(self) -> ChatTurn:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._sub.close()

    @property
    def session_id(self) -> str:
        assert self.turn.session_id is not None, "started() first"
        return self.turn.session_id

    async def started(self) -> None:
        """Wait for the CLI's init line, the first it prints: from then on the session id is
        known (a stream's headers carry it). Raises the turn's error if it ended before."""
        init = False
        while not init:
            batch = await self._sub.next_batch()
            if batch is None:
                raise self._reader.outcome().error or ApiError(
                    "Claude Code ended before it started a session", code="cli_failed", status=502
                )
            for event in batch:
                init = init or kind_of(event) == "system/init"
                self._early += self._reader.feed(event)

    async def texts(self, ping_after_s: float) -> AsyncIterator[list[str]]:
        """The answer's text as it arrives; ``[]`` after ``ping_after_s`` without any."""
        if self._early:
            yield self._early
            self._early = []
        loop = asyncio.get_running_loop()
        last = loop.time()
        while True:
            batch = await self._sub.next_batch(max(0.0, last + ping_after_s - loop.time()))
            if batch is None:
                return
            out = [text for event in batch for text in self._reader.feed(event)]
            if out or loop.time() - last >= ping_after_s:
                yield out
                last = loop.time()

    async def finish(self) -> Outcome:
        """How the turn ended (once ``texts()`` is exhausted). A successful exchange is recorded
        before the client hears the end, so its next request can find this session."""
        outcome = self._reader.outcome()
        if outcome.error is None:
            conv = self._req.conversation
            new = self._placement.session_id is None
            key = recorded_key(conv, outcome.text, new_session=new, session_key=self._placement.session_key)
            try:
                await self._store.insert_compat_turn(
                    self.turn.id,
                    session_id=self.session_id,
                    user_text=conv.newest,
                    assistant_text=outcome.text,
                    history_key=key,
                )
            except Exception:
                # The answer is still good; only the next request's match is lost.
                log.exception("turn %s: could not record the exchange", self.turn.id)
        return outcome


async def start_chat(
    broker: Broker, store: Store, settings: Settings, req: ChatRequest, principal: Principal = OPEN
) -> ChatTurn:
    """Start the request's turn on its session. Raises ``ApiError`` as ``Broker.start`` does."""
    passed_over: set[str] = set()
    while True:
        placement = await place(store, broker, req, principal, frozenset(passed_over))
        try:
            sub = await broker.start(
                turn_options(req, placement, settings), conversation_id=req.conversation_id, principal=principal
            )
        except Conflict as exc:
            retry = placement.implicit and exc.code == "session_busy" and len(passed_over) + 1 < MATCH_ATTEMPTS
            if retry and placement.session_id is not None:
                passed_over.add(placement.session_id)
                continue
            raise
        return ChatTurn(sub, req, placement, store, tool_trace=settings.compat_tool_trace)
