"""Finding and killing what is left of a CLI process, by the marker in its processes' environment.

The CLI runs its Bash tools in sessions and process groups of their own (CLI-FACTS,
"Processes"), so no group signal reaches all of a turn; every process of a turn carries
``PROCESS_MARKER=<process id>`` instead, which ``/proc/<pid>/environ`` shows, also after a server
restart. Scanning ``/proc`` is blocking work of several milliseconds: it runs in a thread of
the reaper's own, so that no file download or other blocking call in the shared thread pool
can hold up cleaning after a turn, and sweeps asked for while one runs are done together
in the next scan, so that a hundred turns ending at once cost a few scans, not a hundred.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor

from claude_server.claude.command import PROCESS_MARKER

SWEEP_ROUNDS = 10
SWEEP_PAUSE_S = 0.05


def scan_marked(name: str = PROCESS_MARKER) -> dict[int, str]:
    """Every live process (but this one) whose environment holds ``name``, with its value."""
    me = os.getpid()
    prefix = b"\0" + name.encode() + b"="
    found: dict[int, str] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit() or int(entry.name) == me:
            continue
        try:
            with open(f"/proc/{entry.name}/environ", "rb") as fh:
                data = b"\0" + fh.read()
        except OSError:  # gone, or not ours to read
            continue
        start = data.find(prefix)
        if start < 0:
            continue
        start += len(prefix)
        end = data.find(b"\0", start)
        found[int(entry.name)] = data[start : end if end >= 0 else len(data)].decode(errors="replace")
    return found


def kill_marked_each(values: set[str], name: str = PROCESS_MARKER) -> dict[str, int]:
    """SIGKILL every process whose marker is one of ``values``, until none is left; how many
    were killed, per value. Blocking (reads /proc): run it in a thread."""
    killed: dict[str, int] = {}
    for _ in range(SWEEP_ROUNDS):
        marked = [(pid, value) for pid, value in scan_marked(name).items() if value in values]
        if not marked:
            break
        for pid, value in marked:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
                killed[value] = killed.get(value, 0) + 1
        # A killed process stays visible until its parent reaps it; its environ then reads
        # empty, so the next scan skips it. Give the kernel a moment.
        time.sleep(SWEEP_PAUSE_S)
    return killed


def kill_marked(values: set[str], name: str = PROCESS_MARKER) -> int:
    """SIGKILL every process whose marker is one of ``values``; how many were killed."""
    return sum(kill_marked_each(values, name).values())


class Reaper:
    """Sweeps turns' leftover processes in its own thread, batching concurrent requests."""

    def __init__(self) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="reaper")
        self._waiting: list[tuple[set[str], asyncio.Future[int]]] = []
        self._running: asyncio.Task[None] | None = None

    async def sweep(self, turn_ids: Iterable[str]) -> int:
        """Kill every process carrying one of these turns' markers; how many were killed.
        The sweep goes on even if the caller is cancelled."""
        loop = asyncio.get_running_loop()
        done: asyncio.Future[int] = loop.create_future()
        self._waiting.append((set(turn_ids), done))
        if self._running is None or self._running.done():
            self._running = loop.create_task(self._run(), name="reaper")
        return await asyncio.shield(done)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while self._waiting:
            batch, self._waiting = self._waiting, []
            ids = set().union(*(ids for ids, _ in batch))
            try:
                killed = await loop.run_in_executor(self._executor, kill_marked_each, ids)
            except BaseException as exc:
                for _, done in batch:
                    if not done.done():
                        done.set_exception(exc if isinstance(exc, Exception) else RuntimeError("sweep cancelled"))
                raise
            for wanted, done in batch:
                if not done.done():
                    done.set_result(sum(killed.get(i, 0) for i in wanted))

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
