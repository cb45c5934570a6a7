"""Fixtures: the app with the fake CLI (fast tests), and the real server with the real CLI
against the fake Anthropic API (end-to-end tests)."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
from aiohttp.test_utils import TestClient

from claude_server.app import create_app
from claude_server.config import Settings
from claude_server.store import Store
from tests.fake_anthropic import FakeAnthropic
from tests.postgres_server import PostgresServer

ROOT = Path(__file__).resolve().parent.parent
FAKE_CLI = Path(__file__).resolve().parent / "fake_claude.py"
FAKE_API_KEY = "sk-ant-fake-key"
BACKENDS = ("sqlite", "postgres")


def real_cli_path() -> Path:
    """The pinned CLI that `make setup` installs (or CLAUDE_SERVER_TEST_CLI)."""
    path = Path(os.environ.get("CLAUDE_SERVER_TEST_CLI") or ROOT / "node_modules" / ".bin" / "claude")
    if not path.exists():
        pytest.fail(f"The real Claude Code CLI is not installed at {path}: run `make setup` (npm ci) first")
    return path


def base_environ(home: Path) -> dict[str, str]:
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "LANG": "C.UTF-8",
    }


# ---- the database: SQLite, and PostgreSQL for tests marked ``backends`` ---------------------


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """A test (or module) marked ``backends`` runs once per database; others, and tests marked
    ``sqlite`` (which read the file themselves), on SQLite only."""
    marked = metafunc.definition.get_closest_marker
    if "backend" in metafunc.fixturenames and marked("backends") and not marked("sqlite"):
        metafunc.parametrize("backend", BACKENDS)


@pytest.fixture
def backend() -> str:
    return "sqlite"


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    server = PostgresServer().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def database(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[str]:
    """Where the test's store lives: a SQLite file, or a fresh PostgreSQL database's URL."""
    if backend == "sqlite":
        yield str(tmp_path / "sessions.db")
        return
    server: PostgresServer = request.getfixturevalue("postgres_server")
    url = asyncio.run(server.new_database())
    yield url
    asyncio.run(server.drop_database(url))


@pytest.fixture
async def store(database: str) -> AsyncIterator[Store]:
    opened = await Store.open(database)
    yield opened
    await opened.close()


@pytest.fixture
def settings(tmp_path: Path, database: str) -> Settings:
    home = tmp_path / "home"
    home.mkdir()
    return Settings(
        db_path=database,
        workspace_root=str(tmp_path / "workspace"),
        claude_bin=str(FAKE_CLI),
        # The fake CLI, like the real one, is "not logged in" without credentials.
        environ={**base_environ(home), "ANTHROPIC_API_KEY": FAKE_API_KEY},
    )


@pytest.fixture
async def client(aiohttp_client, settings: Settings) -> TestClient:  # type: ignore[no-untyped-def]
    return await aiohttp_client(create_app(settings))


# ---- end to end ----------------------------------------------------------------------------


@pytest.fixture(scope="session")
def fake_api() -> Iterator[FakeAnthropic]:
    api = FakeAnthropic().start()
    yield api
    api.stop()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class RunningServer:
    url: str
    proc: subprocess.Popen[bytes]
    root: Path
    log: Path

    @property
    def workspace_root(self) -> Path:
        return self.root / "workspace"

    @property
    def home(self) -> Path:
        return self.root / "home"

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


def start_server(root: Path, api: FakeAnthropic, cli: Path, extra_env: dict[str, str] | None = None) -> RunningServer:
    """The server as a user runs it: `python -m claude_server` in a subprocess."""
    (root / "home").mkdir(parents=True, exist_ok=True)
    port = free_port()
    env = {
        **base_environ(root / "home"),
        "ANTHROPIC_BASE_URL": api.base_url,
        "ANTHROPIC_API_KEY": FAKE_API_KEY,
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
        "IS_SANDBOX": "1",
        "CLAUDE_SERVER_PORT": str(port),
        "CLAUDE_SERVER_DB": str(root / "sessions.db"),
        "CLAUDE_SERVER_WORKSPACE_ROOT": str(root / "workspace"),
        "CLAUDE_SERVER_CLAUDE_BIN": str(cli),
        "CLAUDE_SERVER_LOG_LEVEL": "DEBUG",
        **(extra_env or {}),
    }
    log = root / "server.log"
    with log.open("wb") as out:  # the child keeps its own copy of the descriptor
        proc = subprocess.Popen(
            [sys.executable, "-m", "claude_server"], env=env, cwd=root, stdout=out, stderr=subprocess.STDOUT
        )
    server = RunningServer(f"http://127.0.0.1:{port}", proc, root, log)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}:\n{server.log_text()}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return server
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError(f"server did not listen within 30s:\n{server.log_text()}")


def stop_server(server: RunningServer) -> None:
    if server.proc.poll() is None:
        server.proc.terminate()
        try:
            server.proc.wait(15)
        except subprocess.TimeoutExpired:
            server.proc.kill()
            server.proc.wait()


@pytest.fixture(scope="session")
def e2e_server(tmp_path_factory: pytest.TempPathFactory, fake_api: FakeAnthropic) -> Iterator[RunningServer]:
    """One real server with the real CLI, shared by the end-to-end tests."""
    server = start_server(tmp_path_factory.mktemp("e2e"), fake_api, real_cli_path())
    yield server
    stop_server(server)


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120)) as session:
        yield session
