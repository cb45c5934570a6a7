"""Trying it without an Anthropic key: the fake Anthropic API as a script, and ``make demo``
(``scripts/demo.py``), which must answer with the fake and leave nothing running."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import FAKE_CLI, ROOT, base_environ, free_port, real_cli_path

DEMO = ROOT / "scripts" / "demo.py"
START_TIMEOUT_S = 30.0
# The server's shutdown (10 s for open streams at most) and the fake's, with room to spare.
STOP_TIMEOUT_S = 30.0
NUL = b"\0"  # /proc/<pid>/cmdline separates the arguments with it


def get(url: str, timeout_s: float = 2.0) -> tuple[int, bytes]:
    with urllib.request.urlopen(url, timeout=timeout_s) as resp:
        return int(resp.status), bytes(resp.read())


def post_json(url: str, body: dict[str, object], timeout_s: float = 120.0) -> dict[str, object]:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}, method="POST"
    )
    with urllib.request.urlopen(request, timeout=timeout_s) as resp:
        answer = json.loads(resp.read())
    assert isinstance(answer, dict)
    return answer


def wait_until_up(url: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        assert proc.poll() is None, log.read_text(errors="replace")
        try:
            get(url, timeout_s=0.5)
            return
        except OSError:
            time.sleep(0.1)
    pytest.fail(f"{url} did not answer within {START_TIMEOUT_S}s:\n{log.read_text(errors='replace')}")


def processes_mentioning(text: str) -> dict[int, str]:
    """The live processes (pid: command line) whose environment or command line contains ``text``."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
            seen = (entry / "environ").read_bytes() + cmdline
            status = (entry / "status").read_text()
        except OSError:  # gone meanwhile, or not ours to read
            continue
        if text.encode() in seen and "\nState:\tZ" not in status:
            found[int(entry.name)] = cmdline.replace(NUL, b" ").decode(errors="replace")
    return found


@pytest.fixture(autouse=True)
def no_strays(tmp_path: Path) -> Iterator[None]:
    """Whatever a test's demo left running (a failure midway, say) is killed afterwards: its
    processes carry the test's TMPDIR (see start_demo)."""
    yield
    for pid in processes_mentioning(str(tmp_path / "tmp")):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def start_demo(tmp_path: Path, cli: Path) -> tuple[subprocess.Popen[bytes], str, Path]:
    """``scripts/demo.py`` as ``make demo`` runs it, in a session of its own as a terminal
    would have it, with TMPDIR in ``tmp_path``: every process it starts (the fake, the server,
    the CLI, whose environment keeps TMPDIR) carries that path, and so does its data."""
    port, api_port = free_port(), free_port()
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    (tmp_path / "home").mkdir()
    env = {**base_environ(tmp_path / "home"), "TMPDIR": str(tmp)}
    log = tmp_path / "demo.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, str(DEMO), "--port", str(port), "--api-port", str(api_port), "--claude-bin", str(cli)],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    wait_until_up(f"{url}/health", proc, log)
    return proc, url, log


def assert_all_gone(tmp_path: Path, proc: subprocess.Popen[bytes], log: Path, port: str) -> None:
    assert proc.returncode == 0, log.read_text(errors="replace")
    assert processes_mentioning(str(tmp_path / "tmp")) == {}
    assert list((tmp_path / "tmp").glob("claude-server-demo-*")) == []  # its temporary data directory went too
    with pytest.raises(OSError):
        get(f"http://127.0.0.1:{port}/health", timeout_s=0.5)


def test_the_fake_anthropic_api_runs_as_a_script_from_the_repository() -> None:
    port = free_port()
    with subprocess.Popen(
        [sys.executable, "tests/fake_anthropic.py", "--port", str(port)],
        cwd=ROOT,
        env=base_environ(ROOT),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    ) as proc:
        try:
            assert proc.stdout is not None
            first_line = proc.stdout.readline().decode().strip()
            assert first_line == f"fake Anthropic API listening on http://127.0.0.1:{port}"
            answer = post_json(
                f"http://127.0.0.1:{port}/v1/messages",
                {"model": "m", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]},
            )
            assert answer["content"] == [{"type": "text", "text": "Echo(1): hi"}]
        finally:
            proc.terminate()  # the with block waits for it


def test_ctrl_c_stops_the_demo_the_server_and_the_fake(tmp_path: Path) -> None:
    proc, url, log = start_demo(tmp_path, FAKE_CLI)
    assert processes_mentioning(str(tmp_path / "tmp")) != {}
    os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal does
    proc.wait(STOP_TIMEOUT_S)
    assert_all_gone(tmp_path, proc, log, url.rsplit(":", 1)[1])


@pytest.mark.e2e
def test_the_demo_answers_with_the_fake_api_and_stops_cleanly(tmp_path: Path) -> None:
    proc, url, log = start_demo(tmp_path, real_cli_path())
    try:
        answer = post_json(f"{url}/api/claude", {"prompt": "hello from the demo", "stream": False})
        assert answer["result"] == "Echo(1): hello from the demo", answer
        assert answer["subtype"] == "success"
    finally:
        proc.send_signal(signal.SIGTERM)  # what a supervisor does: only to the demo itself
        proc.wait(STOP_TIMEOUT_S)
    assert_all_gone(tmp_path, proc, log, url.rsplit(":", 1)[1])
    assert "demo: fake Anthropic API on http://127.0.0.1:" in log.read_text()
