"""The CLI process layer: line framing, stderr tail, ending a whole process tree, probing."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from pathlib import Path

from claude_server.claude import process
from claude_server.claude.command import PROCESS_MARKER
from claude_server.claude.probe import probe_cli
from claude_server.claude.process import CliProcess
from claude_server.claude.reaper import Reaper, kill_marked, scan_marked
from tests.helpers import pid_alive, wait_until


def env_for(turn_id: str) -> dict[str, str]:
    return {"PATH": os.environ["PATH"], PROCESS_MARKER: turn_id}


async def spawn_py(code: str, tmp_path: Path, stdin: bytes = b"") -> CliProcess:
    return await CliProcess.spawn(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        env=env_for(str(uuid.uuid4())),
        stdin_data=stdin,
        marker="t",
        reaper=Reaper(),
    )


async def collect(proc: CliProcess) -> list[bytes]:
    return [line async for line in proc.lines()]


async def test_lines_of_any_size_pass_intact(tmp_path: Path) -> None:
    big = 8 * 1024 * 1024 + 123
    code = (
        "import sys\n"
        "w = sys.stdout.buffer.write\n"
        "w(b'a\\n')\n"
        f"w(b'{{' + b'x' * {big} + b'}}\\n')\n"
        "w(b'b\\r\\n\\n')\n"
        "w(b'tail-without-newline')\n"
    )
    proc = await spawn_py(code, tmp_path)
    lines = await collect(proc)
    assert await proc.wait() == 0
    assert lines[0] == b"a"
    assert len(lines[1]) == big + 2 and lines[1].startswith(b"{x") and lines[1].endswith(b"x}")
    assert lines[2:] == [b"b\r", b"", b"tail-without-newline"]
    await proc.close()


async def test_a_line_over_the_limit_is_refused(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(process, "MAX_LINE_BYTES", 1000)
    proc = await spawn_py("import sys; sys.stdout.write('y' * 5000)", tmp_path)
    try:
        await collect(proc)
    except process.LineTooLong:
        pass
    else:
        raise AssertionError("expected LineTooLong")
    await proc.close()


async def test_prompt_goes_to_stdin_and_stdin_is_closed(tmp_path: Path) -> None:
    prompt = ("p" * (1 << 20)).encode()
    proc = await spawn_py("import sys; d = sys.stdin.buffer.read(); print(len(d))", tmp_path, prompt)
    assert await collect(proc) == [str(1 << 20).encode()]
    await proc.close()


async def test_stderr_is_drained_and_its_tail_kept(tmp_path: Path) -> None:
    # 1 MiB of stderr would block a child whose stderr nobody reads (the pipe holds 64 KiB).
    code = "import sys; sys.stderr.write('e' * (1 << 20) + 'THE END'); print('done')"
    proc = await spawn_py(code, tmp_path)
    assert await asyncio.wait_for(collect(proc), 10) == [b"done"]
    await proc.wait()
    await proc.stderr_done()
    tail = proc.stderr_tail()
    assert tail.endswith("THE END")
    assert len(tail) <= process.STDERR_TAIL_BYTES
    await proc.close()


async def test_terminate_kills_what_ignores_sigterm_and_the_detached_grandchild(tmp_path: Path) -> None:
    turn_id = str(uuid.uuid4())
    code = (
        "import signal, subprocess, sys, time\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "c = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'], start_new_session=True)\n"
        "print(c.pid, flush=True)\n"
        "time.sleep(60)\n"
    )
    proc = await CliProcess.spawn(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        env=env_for(turn_id),
        stdin_data=b"",
        marker=turn_id,
        reaper=Reaper(),
    )
    lines = proc.lines()
    grandchild = int(await anext(lines))
    assert pid_alive(grandchild)
    # A process just started may show an empty environ for a moment (the parent of a vfork
    # resumes before the new program's memory is set up).
    assert wait_until(lambda: {proc.pid, grandchild} <= set(scan_marked()), 2)
    loop = asyncio.get_running_loop()
    started = loop.time()
    await proc.terminate()
    elapsed = loop.time() - started
    assert proc.proc.returncode is not None
    assert wait_until(lambda: not pid_alive(grandchild), 2)
    assert process.TERM_GRACE_S <= elapsed < process.TERM_GRACE_S + 1.0
    await lines.aclose()
    await proc.close()


async def test_exit_with_stdout_held_open_by_a_stray_child(tmp_path: Path) -> None:
    # The child inherits stdout and outlives its parent: EOF never comes by itself.
    turn_id = str(uuid.uuid4())
    code = "import subprocess, sys; subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); print('x')"
    proc = await CliProcess.spawn(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        env=env_for(turn_id),
        stdin_data=b"",
        marker=turn_id,
        reaper=Reaper(),
    )
    assert await asyncio.wait_for(collect(proc), process.EOF_GRACE_S + 5) == [b"x"]
    assert not [p for p, v in scan_marked().items() if v == turn_id and pid_alive(p)]
    await proc.close()


def test_kill_marked_only_touches_its_own_turn() -> None:
    mine, other = str(uuid.uuid4()), str(uuid.uuid4())
    procs = {
        value: subprocess.Popen(
            [sys.executable, "-c", "import time; time.sleep(60)"],
            env={**os.environ, PROCESS_MARKER: value},
            start_new_session=True,
        )
        for value in (mine, other)
    }
    try:
        assert wait_until(lambda: {procs[mine].pid, procs[other].pid} <= set(scan_marked()))
        assert kill_marked({mine}) == 1
        assert procs[mine].wait(5) == -9
        assert procs[other].poll() is None
    finally:
        for p in procs.values():
            p.kill()
            p.wait()


async def test_probe_finds_the_cli_and_its_version() -> None:
    fake = Path(__file__).resolve().parent / "fake_claude.py"
    info = await probe_cli(str(fake), {"PATH": os.environ["PATH"]})
    assert info.found and info.version == "9.9.9 (Fake Claude Code)" and info.path == str(fake)


async def test_probe_reports_a_missing_cli(tmp_path: Path) -> None:
    info = await probe_cli("claude-not-installed-here", {"PATH": str(tmp_path)})
    assert not info.found and info.path is None
    assert info.error and "not found on PATH" in info.error
    info = await probe_cli(str(tmp_path / "nope"), {"PATH": "/bin"})
    assert info.error and "not found at that path" in info.error


async def test_probe_reports_a_broken_cli(tmp_path: Path) -> None:
    broken = tmp_path / "claude"
    broken.write_text("#!/bin/sh\necho 'cannot start' >&2\nexit 3\n")
    broken.chmod(0o755)
    info = await probe_cli(str(broken), {"PATH": "/bin:/usr/bin"})
    assert not info.found
    assert info.error and "exited with 3" in info.error and "cannot start" in info.error
