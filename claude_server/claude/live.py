"""A CLI in its interactive mode: user messages and control requests in, lines out.

The process reads one JSON object per stdin line (CLI-FACTS, "Interactive mode"): a user
message starts a turn, which ends with the turn's ``result`` line; control requests
(``interrupt``, ``set_model``, ``set_permission_mode``) are answered by a
``control_response`` with the same ``request_id``; and the CLI asks its own control
requests (``can_use_tool``) and waits for the answer. ``LiveCli`` owns the one reader of
the process's stdout for its whole life, answers control responses to whoever asked, and
hands every other line to the sink attached at the time: the broker attaches one per turn.
Nothing here knows what a turn is.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

from claude_server.claude import events
from claude_server.claude.process import CliProcess, LineTooLong
from claude_server.claude.reaper import Reaper

log = logging.getLogger(__name__)

# How long a control request (set_model, interrupt, ...) may take to be answered.
CONTROL_TIMEOUT_S = 5.0
# After stdin closes the CLI finishes and exits by itself (measured: at once when idle).
EXIT_GRACE_S = 3.0

Line = tuple[bytes, str, dict[str, Any] | None]  # the line, its kind, its parsed object (for a few)


class ControlError(Exception):
    """A control request failed: the CLI answered an error, or did not answer in time."""


class Sink(Protocol):
    """Who reads the CLI's lines (the running turn)."""

    async def lines(self, batch: list[Line]) -> None: ...

    def control_request(self, request_id: str, request: dict[str, Any]) -> None: ...

    def control_cancelled(self, request_id: str) -> None: ...

    def ended(self) -> None: ...


def user_message(text: str, priority: str | None = None) -> bytes:
    """One user turn, as the Agent SDKs write it."""
    obj: dict[str, Any] = {
        "type": "user",
        "message": {"role": "user", "content": text},
        "parent_tool_use_id": None,
        "session_id": "",
    }
    if priority is not None:
        obj["priority"] = priority
    return json.dumps(obj, ensure_ascii=False).encode() + b"\n"


def control_request(request_id: str, subtype: str, **fields: Any) -> bytes:
    return (
        json.dumps(
            {"type": "control_request", "request_id": request_id, "request": {"subtype": subtype, **fields}}
        ).encode()
        + b"\n"
    )


def control_response(request_id: str, response: dict[str, Any]) -> bytes:
    body = {"subtype": "success", "request_id": request_id, "response": response}
    return json.dumps({"type": "control_response", "response": body}, ensure_ascii=False).encode() + b"\n"


class LiveCli:
    """One interactive CLI process. ``spawn``; ``attach`` a sink; ``send`` a user message;
    ``control`` to ask it something, ``answer`` what it asked; ``end`` it."""

    _ids = itertools.count(1)

    def __init__(self, process: CliProcess, fixed: tuple[Any, ...], model: str | None, mode: str | None) -> None:
        self.process = process
        self.fixed = fixed  # the options it was started with that cannot change (command.fixed_at_start)
        self.model = model  # as asked for (None: the CLI's default)
        self.permission_mode = mode
        self.session_id: str | None = None
        self.turns = 0  # user messages sent
        self.last_total_cost: float | None = None  # the CLI's running total at its last result
        self._sink: Sink | None = None
        self._pending: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._writes: set[asyncio.Task[bool]] = set()
        self._eof = asyncio.Event()
        self._closed = False
        self.failure: str | None = None  # why reading it stopped, when it was not its exit
        self.line_too_long = False
        self._reader = asyncio.create_task(self._read(), name=f"cli-{process.marker}")

    @property
    def marker(self) -> str:
        return self.process.marker

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def alive(self) -> bool:
        return self.process.running and not self._eof.is_set()

    @classmethod
    async def spawn(
        cls,
        argv: list[str],
        *,
        cwd: Path,
        env: Mapping[str, str],
        marker: str,
        reaper: Reaper,
        fixed: tuple[Any, ...],
        model: str | None,
        permission_mode: str | None,
    ) -> LiveCli:
        process = await CliProcess.spawn(argv, cwd=cwd, env=env, stdin_data=None, marker=marker, reaper=reaper)
        return cls(process, fixed, model, permission_mode)

    # ---- lines out -------------------------------------------------------------------------
    def attach(self, sink: Sink | None) -> None:
        """Give the CLI's lines to ``sink`` from now on (None: nobody; they are dropped).
        A CLI that has ended already (one that exits the instant it starts can be read to its
        end before anyone attaches) tells the new sink at once, or it would wait forever."""
        self._sink = sink
        if sink is not None and self._eof.is_set():
            sink.ended()

    async def _read(self) -> None:
        try:
            async for batch in self.process.batches():
                out: list[Line] = []
                for line in batch:
                    classified = events.classify(line)
                    if classified is None:
                        if line.strip():
                            log.info("process %s: non-JSON line from the CLI: %.300r", self.marker, line)
                        continue
                    kind, obj = classified
                    if kind == "control_response" and obj is not None:
                        self._answered(obj)
                    elif kind == "control_request" and obj is not None:
                        # The lines printed before the request go into the turn's log first
                        # (its init, the tool use it asks about): the log keeps the CLI's order.
                        await self._deliver(out)
                        out = []
                        self._asked(obj)
                    elif kind == "control_cancel_request" and obj is not None:
                        # The CLI no longer waits for the answer (seen after an interrupt).
                        await self._deliver(out)
                        out = []
                        if self._sink is not None and isinstance(obj.get("request_id"), str):
                            self._sink.control_cancelled(obj["request_id"])
                    else:
                        out.append((line, kind, obj))
                await self._deliver(out)
        except LineTooLong as exc:
            self.failure, self.line_too_long = str(exc), True
            await self.process.terminate()
        except Exception as exc:
            log.exception("process %s: reading the CLI failed", self.marker)
            self.failure = f"The server failed while reading the CLI: {exc}"
            await self.process.terminate()
        finally:
            self._eof.set()
            for future in self._pending.values():
                if not future.done():
                    future.set_exception(ControlError("the CLI exited"))
            if self._sink is not None:
                self._sink.ended()

    async def _deliver(self, out: list[Line]) -> None:
        if not out:
            return
        if self._sink is not None:
            await self._sink.lines(out)
        else:
            log.debug("process %s: %d line(s) between turns dropped", self.marker, len(out))

    def _answered(self, obj: dict[str, Any]) -> None:
        response = obj.get("response")
        if not isinstance(response, dict):
            return
        future = self._pending.pop(str(response.get("request_id")), None)
        if future is None or future.done():
            return
        if response.get("subtype") == "success":
            body = response.get("response")
            future.set_result(body if isinstance(body, dict) else {})
        else:
            future.set_exception(ControlError(str(response.get("error") or "the CLI refused the request")))

    def _asked(self, obj: dict[str, Any]) -> None:
        request_id, request = obj.get("request_id"), obj.get("request")
        if not isinstance(request_id, str) or not isinstance(request, dict):
            return
        if self._sink is not None:
            self._sink.control_request(request_id, request)
        else:  # nobody to ask: refuse, so that the CLI does not wait forever
            log.warning("process %s: control request %s between turns refused", self.marker, request.get("subtype"))
            self.refuse(request_id, "No turn is running")

    # ---- messages in -----------------------------------------------------------------------
    async def send(self, text: str, priority: str | None = None) -> bool:
        """Start a turn; False when the CLI is gone."""
        self.turns += 1
        return await self.process.write(user_message(text, priority))

    def answer(self, request_id: str, response: dict[str, Any]) -> None:
        """Answer a control request the CLI asked."""
        self._write_soon(control_response(request_id, response))

    def refuse(self, request_id: str, message: str) -> None:
        """Answer a control request the CLI asked with an error."""
        body = {"subtype": "error", "request_id": request_id, "error": message}
        self._write_soon(json.dumps({"type": "control_response", "response": body}).encode() + b"\n")

    def _write_soon(self, data: bytes) -> None:
        task = asyncio.get_running_loop().create_task(self.process.write(data))
        self._writes.add(task)
        task.add_done_callback(self._writes.discard)

    async def control(self, subtype: str, timeout_s: float = CONTROL_TIMEOUT_S, **fields: Any) -> dict[str, Any]:
        """Ask the CLI something and wait for its answer (raises ControlError)."""
        if not self.alive:
            raise ControlError("the CLI is not running")
        request_id = f"srv_{next(self._ids)}"
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = future
        try:
            if not await self.process.write(control_request(request_id, subtype, **fields)):
                raise ControlError("the CLI closed its input")
            async with asyncio.timeout(timeout_s):
                return await future
        except TimeoutError:
            raise ControlError(f"no answer to {subtype} within {timeout_s:g}s") from None
        finally:
            self._pending.pop(request_id, None)

    # ---- the end ---------------------------------------------------------------------------
    async def wait_closed(self) -> None:
        """Until the CLI's stdout ended (the process exited, or is about to)."""
        await self._eof.wait()

    async def end(self, grace_s: float = EXIT_GRACE_S) -> None:
        """Close its input and let it exit by itself; after ``grace_s`` end it by signal.
        Then nothing carrying its marker is left."""
        self.process.close_stdin()
        if self.process.running:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.process.wait(), grace_s)
        await self.close()

    async def close(self) -> None:
        """End it now (SIGTERM, then SIGKILL) and everything it left; once."""
        if self._closed:
            return
        self._closed = True
        await self.process.close()
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader
