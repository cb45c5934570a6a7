"""One CLI process: spawn it in its workspace, write to its stdin, read its lines, end it.

The CLI runs in a process group of its own, and every Bash tool command it starts runs in a
session and group of their own (CLI-FACTS: "Processes"), so signalling a group never reaches
all of it. Its processes are found instead by the marker variable in their environment
(``PROCESS_MARKER``), which tools inherit and ``/proc/<pid>/environ`` shows.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import fcntl
import logging
import os
import signal
from collections.abc import AsyncIterator, Mapping
from pathlib import Path

from claude_server.claude.reaper import Reaper

log = logging.getLogger(__name__)

# asyncio's readline() stops at 64 KiB and CLI lines can be megabytes (a file read by a
# tool, a long answer): lines are framed here from raw chunks. A line longer than this
# ends the turn rather than the server's memory.
MAX_LINE_BYTES = 256 * 1024 * 1024
READ_CHUNK_BYTES = 1024 * 1024
# The pipe reader pauses the child at twice this much unread output.
PIPE_BUFFER_BYTES = 1024 * 1024
STDERR_TAIL_BYTES = 8 * 1024
# SIGTERM lets the CLI end its own tools (their results read "Exit code 137") and write its
# transcript; SIGKILL would orphan the tools. This is how long it gets before everything of
# the turn is killed: the pinned CLI took 1.1-1.6 s to exit after SIGTERM with a tool
# running, and a turn must be gone within 2 s of its client leaving. A CLI killed after this
# loses nothing already streamed (its transcript is written as it goes), and the tools it
# orphans are found by their marker.
TERM_GRACE_S = 1.5
# After the CLI exits, how long stdout may stay open (held by a stray child) before the
# turn's leftover processes are killed so that it closes.
EOF_GRACE_S = 1.0


class _Protocol(asyncio.subprocess.SubprocessStreamProtocol):
    """asyncio's protocol for a subprocess's streams, which also tells when the process
    exited: asyncio's own ``Process.wait()`` (3.11) waits until every pipe is closed too,
    which a stray child holding stdout can put off for as long as it lives."""

    def __init__(self, limit: int, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(limit=limit, loop=loop)
        self.exited = asyncio.Event()

    def process_exited(self) -> None:
        super().process_exited()
        self.exited.set()


class LineTooLong(Exception):
    """The CLI printed a line longer than MAX_LINE_BYTES."""


class CliProcess:
    """A running CLI. Use ``spawn``; iterate ``lines()``; ``terminate()`` or ``wait()``; ``close()``."""

    def __init__(self, proc: asyncio.subprocess.Process, exited: asyncio.Event, marker: str, reaper: Reaper) -> None:
        self.proc = proc
        self._exited = exited
        self.marker = marker
        self.reaper = reaper
        self._stderr: collections.deque[bytes] = collections.deque()
        self._stderr_size = 0
        self._eof = False
        self._stderr_task: asyncio.Task[None] | None = None
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def pid(self) -> int:
        return self.proc.pid

    @classmethod
    async def spawn(
        cls,
        argv: list[str],
        *,
        cwd: Path,
        env: Mapping[str, str],
        stdin_data: bytes | None,
        marker: str,
        reaper: Reaper,
    ) -> CliProcess:
        """Start the CLI in a new session (so in its own process group). ``stdin_data`` is
        written to its stdin, which is then closed; with None stdin stays open for
        ``write``."""
        # What asyncio.create_subprocess_exec does, with a protocol that reports the exit.
        loop = asyncio.get_running_loop()
        transport, protocol = await loop.subprocess_exec(
            lambda: _Protocol(PIPE_BUFFER_BYTES, loop),
            *argv,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            cwd=str(cwd),
            env=dict(env),
            start_new_session=True,
        )
        proc = asyncio.subprocess.Process(transport, protocol, loop)
        self = cls(proc, protocol.exited, marker, reaper)
        self._widen_stdout_pipe()
        self._stderr_task = asyncio.create_task(self._drain_stderr())
        self._tasks = [self._stderr_task, asyncio.create_task(self._watch_exit())]
        if stdin_data is not None:
            self._tasks.append(asyncio.create_task(self._feed(stdin_data)))
        return self

    def _widen_stdout_pipe(self) -> None:
        # A pipe holds 64 KiB by default: a CLI printing megabytes would wake the reader
        # every 64 KiB. Linux lets a pipe grow to /proc/sys/fs/pipe-max-size (1 MiB).
        transport = getattr(self.proc.stdout, "_transport", None)
        pipe = transport.get_extra_info("pipe") if transport is not None else None
        if pipe is not None and hasattr(fcntl, "F_SETPIPE_SZ"):
            # ValueError: a CLI that exited the instant it started has had its pipe read to
            # the end and closed already; its turn ends through the reader like any other.
            with contextlib.suppress(OSError, ValueError):
                fcntl.fcntl(pipe.fileno(), fcntl.F_SETPIPE_SZ, PIPE_BUFFER_BYTES)

    async def _feed(self, data: bytes) -> None:
        try:
            await self.write(data)
        finally:
            self.close_stdin()

    async def write(self, data: bytes) -> bool:
        """Write to the CLI's stdin; False when it is closed (the CLI is gone)."""
        stdin = self.proc.stdin
        assert stdin is not None
        if stdin.is_closing():
            return False
        try:
            stdin.write(data)
            await stdin.drain()
        except (BrokenPipeError, ConnectionResetError, RuntimeError):
            log.debug("process %s: CLI closed stdin before reading what was written", self.marker)
            return False
        return True

    def close_stdin(self) -> None:
        """End the CLI's input: in stream-json mode it finishes what it runs, then exits."""
        stdin = self.proc.stdin
        assert stdin is not None
        with contextlib.suppress(BrokenPipeError, ConnectionResetError, RuntimeError):
            stdin.close()

    async def _drain_stderr(self) -> None:
        # An undrained stderr pipe blocks the child once it is full.
        stderr = self.proc.stderr
        assert stderr is not None
        while chunk := await stderr.read(64 * 1024):
            log.debug("process %s stderr: %s", self.marker, chunk.decode(errors="replace").rstrip())
            self._stderr.append(chunk)
            self._stderr_size += len(chunk)
            while self._stderr_size - len(self._stderr[0]) >= STDERR_TAIL_BYTES:
                self._stderr_size -= len(self._stderr.popleft())

    async def _watch_exit(self) -> None:
        await self.wait()
        await asyncio.sleep(EOF_GRACE_S)
        if not self._eof:
            log.warning("process %s: CLI exited but its stdout is still open; ending leftover processes", self.marker)
            await self.sweep()

    async def stderr_done(self, timeout_s: float = 1.0) -> None:
        """Wait (briefly) until stderr is read to its end, so that its tail is complete."""
        if self._stderr_task is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._stderr_task), timeout_s)

    def stderr_tail(self) -> str:
        return b"".join(self._stderr)[-STDERR_TAIL_BYTES:].decode(errors="replace")

    async def batches(self) -> AsyncIterator[list[bytes]]:
        """stdout as lists of whole lines (each without its newline, of any length up to
        MAX_LINE_BYTES): all the lines that one read completed, so a flood costs one wake-up
        per read rather than per line."""
        stdout = self.proc.stdout
        assert stdout is not None
        pending = bytearray()
        while chunk := await stdout.read(READ_CHUNK_BYTES):
            lines = chunk.split(b"\n")
            if len(lines) == 1:
                pending += chunk
            else:
                if pending:
                    pending += lines[0]
                    lines[0] = bytes(pending)
                    pending.clear()
                pending += lines.pop()
                yield lines
            if len(pending) > MAX_LINE_BYTES:
                raise LineTooLong(f"the CLI printed a line longer than {MAX_LINE_BYTES} bytes")
        self._eof = True
        if pending:
            yield [bytes(pending)]

    async def lines(self) -> AsyncIterator[bytes]:
        """stdout one line at a time (see ``batches``)."""
        async for batch in self.batches():
            for line in batch:
                yield line

    async def wait(self) -> int:
        """The exit code, as soon as the CLI has exited (even while a stray child it left
        still holds its stdout open)."""
        await self._exited.wait()
        returncode = self.proc.returncode
        assert returncode is not None
        return returncode

    async def terminate(self, grace_s: float = TERM_GRACE_S) -> None:
        """SIGTERM the CLI's group, wait ``grace_s``, then SIGKILL everything it left."""
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                await asyncio.wait_for(self.wait(), grace_s)
            except TimeoutError:
                log.warning("process %s: CLI ignored SIGTERM for %.1fs; killing it", self.marker, grace_s)
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                await self.wait()
        await self.sweep()

    @property
    def running(self) -> bool:
        return self.proc.returncode is None

    async def sweep(self) -> int:
        """Kill every process still carrying this CLI's marker (tools it left behind)."""
        killed = await self.reaper.sweep({self.marker})
        if killed:
            log.info("process %s: killed %d leftover process(es)", self.marker, killed)
        return killed

    async def close(self) -> None:
        """Make sure the process is gone and nothing of it is left."""
        if self.proc.returncode is None:
            await self.terminate()
        else:
            await self.sweep()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
