"""The reader of an interactive CLI's stdout (``claude.live``): what reaches the turn, in
which order."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any, cast

from claude_server.claude.live import Line, LiveCli
from claude_server.claude.process import CliProcess


def line(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj).encode()


INIT = line({"type": "system", "subtype": "init", "session_id": "s1"})
TOOL_USE = line({"type": "assistant", "message": {"content": [{"type": "tool_use", "id": "t1", "name": "Write"}]}})
ASK = line(
    {"type": "control_request", "request_id": "r1", "request": {"subtype": "can_use_tool", "tool_name": "Write"}}
)
CANCEL = line({"type": "control_cancel_request", "request_id": "r1"})
RESULT = line({"type": "result", "subtype": "success", "total_cost_usd": 0.0})


class OneBatch:
    """A CLI process whose whole output arrives in one read."""

    marker = "p-test"
    pid = 0
    running = True

    def __init__(self, batch: list[bytes]) -> None:
        self._batch = batch

    async def batches(self) -> AsyncIterator[list[bytes]]:
        yield self._batch

    async def terminate(self) -> None:
        pass

    async def write(self, data: bytes) -> bool:
        return True


class Recorder:
    def __init__(self) -> None:
        self.seen: list[str] = []
        self.done = asyncio.Event()

    async def lines(self, batch: list[Line]) -> None:
        await asyncio.sleep(0)  # the turn records its init in the store here
        self.seen.extend(kind for _, kind, _ in batch)

    def control_request(self, request_id: str, request: dict[str, Any]) -> None:
        self.seen.append(f"ask {request_id}")

    def control_cancelled(self, request_id: str) -> None:
        self.seen.append(f"cancel {request_id}")

    def ended(self) -> None:
        self.done.set()


async def test_lines_before_a_request_in_the_same_read_reach_the_turn_before_it() -> None:
    # The turn's log showed the permission request before the init printed before it.
    sink = Recorder()
    process = OneBatch([INIT, TOOL_USE, ASK, CANCEL, RESULT])
    live = LiveCli(cast(CliProcess, process), (), None, None)
    live.attach(sink)
    await asyncio.wait_for(sink.done.wait(), 5)
    assert sink.seen == ["system/init", "assistant", "ask r1", "cancel r1", "result"]
