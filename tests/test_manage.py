"""The management commands (status, sessions, turns, stats, doctor), each against the
database and, where it has one, a running server (the app with the fake CLI): tables,
``--json``, the source named on stderr, and every error as one line with its exit status."""

from __future__ import annotations

import asyncio
import json
import re
import socket
import sqlite3
import subprocess
import sys
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from claude_server import cli, config
from claude_server.app import create_app
from claude_server.config import Settings
from claude_server.manage import run_safely
from claude_server.manage.commands import parse_since
from claude_server.manage.doctor import CLI_FOOTPRINT_BYTES, check_memory, meminfo
from claude_server.store import Store
from claude_server.store.database import migrations_dir
from tests.conftest import FAKE_API_KEY, FAKE_CLI, ROOT, base_environ, free_port
from tests.fake_anthropic import FakeAnthropic
from tests.helpers import JSON, parse_sse, post, run_turn, session_of

OPERATOR = "operator-secret-for-manage"
MODES = ("database", "server")


@dataclass
class Ran:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)

    @property
    def source_line(self) -> str:
        return self.err.splitlines()[0]

    @property
    def error(self) -> str:
        """The one error line (and nothing else on stderr but the source line)."""
        lines = [line for line in self.err.splitlines() if not line.startswith("from ")]
        assert len(lines) == 1, self.err
        assert "Traceback" not in self.err
        return lines[0]


async def manage(capsys: pytest.CaptureFixture[str], argv: list[str], environ: dict[str, str] | None = None) -> Ran:
    """``claude-server <argv>`` run in this event loop (the server under test shares it)."""
    capsys.readouterr()
    args = cli.build_parser().parse_args(argv)
    settings = config.load(args, environ if environ is not None else {})
    code = await run_safely(args, settings)
    out, err = capsys.readouterr()
    return Ran(code, out, err)


def fields_of(out: str) -> dict[str, str]:
    """The ``name  value`` lines of a command, by name."""
    return dict(re.split(r"\s{2,}", line, maxsplit=1) for line in out.splitlines())  # type: ignore[misc]


@dataclass
class Filled:
    client: TestClient
    settings: Settings
    first: str  # two turns, the second one resumed
    second: str  # one turn, prompt "find me please"
    failed: str  # one failed turn
    turns: list[str]  # the first session's turn ids, oldest first
    failed_turn: str

    def where(self, mode: str) -> list[str]:
        if mode == "database":
            return ["--db", self.settings.db_path]
        return ["--url", str(self.client.make_url("")).rstrip("/")]


async def turn_of(client: TestClient, body: dict[str, Any]) -> tuple[str, str]:
    resp, events = await run_turn(client, body)
    return session_of(events), resp.headers["X-Turn-Id"]


@pytest.fixture
async def filled(client: TestClient, settings: Settings) -> Filled:
    first, t1 = await turn_of(client, {"prompt": "hello"})
    _, t2 = await turn_of(client, {"prompt": "again", "session_id": first})
    second, _ = await turn_of(client, {"prompt": "find me please"})
    failed, t4 = await turn_of(client, {"prompt": "@exit=3"})
    return Filled(client, settings, first, second, failed, [t1, t2], t4)


# ---- sessions ------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
async def test_sessions_ls_lists_them_newest_first_as_json_and_as_a_table(
    filled: Filled, capsys: pytest.CaptureFixture[str], mode: str
) -> None:
    ran = await manage(capsys, ["sessions", "ls", "--json", *filled.where(mode)])
    assert ran.code == 0
    expected = f"from database {filled.settings.db_path}" if mode == "database" else "from server http://127.0.0.1:"
    assert ran.source_line.startswith(expected)
    listed = ran.json()
    assert [s["session_id"] for s in listed] == [filled.failed, filled.second, filled.first]
    first = listed[-1]
    assert first["turn_count"] == 2 and first["total_cost_usd"] == pytest.approx(0.002) and first["title"] == "hello"

    ran = await manage(capsys, ["sessions", "ls", *filled.where(mode)])
    header, *rows = ran.out.splitlines()
    assert header.split() == ["SESSION", "LAST", "USED", "(UTC)", "TURNS", "COST", "LAST", "TURN", "TITLE"]
    assert rows[-1].startswith(filled.first)
    assert "$0.0020" in rows[-1] and "succeeded" in rows[-1] and rows[-1].endswith("hello")
    # The columns line up: every row's cost ends where the header's COST does.
    end = header.index("COST") + len("COST")
    assert all(row[end - 1] == "0" for row in rows)


@pytest.mark.parametrize("mode", MODES)
async def test_sessions_ls_searches_and_limits(filled: Filled, capsys: pytest.CaptureFixture[str], mode: str) -> None:
    ran = await manage(capsys, ["sessions", "ls", "-q", "FIND", "--json", *filled.where(mode)])
    assert [s["session_id"] for s in ran.json()] == [filled.second]
    ran = await manage(capsys, ["sessions", "ls", "--limit", "1", "--json", *filled.where(mode)])
    assert [s["session_id"] for s in ran.json()] == [filled.failed]
    ran = await manage(capsys, ["sessions", "ls", "-q", "nothing like it", *filled.where(mode)])
    assert ran.code == 0 and ran.out == "" and "no sessions matching 'nothing like it'" in ran.err


@pytest.mark.parametrize("mode", MODES)
async def test_sessions_show_gives_the_detail_and_its_turns(
    filled: Filled, capsys: pytest.CaptureFixture[str], mode: str
) -> None:
    ran = await manage(capsys, ["sessions", "show", filled.first, "--json", *filled.where(mode)])
    assert ran.code == 0
    shown = ran.json()
    assert shown["session_id"] == filled.first and shown["running_turn"] is None
    assert shown["workspace_path"].startswith(str(filled.settings.workspace_root_path))
    assert [(t["turn_id"], t["prompt"], t["status"]) for t in shown["turns"]] == [
        (filled.turns[0], "hello", "succeeded"),
        (filled.turns[1], "again", "succeeded"),
    ]
    ran = await manage(capsys, ["sessions", "show", filled.first, *filled.where(mode)])
    assert f"session       {filled.first}" in ran.out and "cost          $0.0020" in ran.out
    turns = ran.out.split("\n\n")[1].splitlines()
    assert turns[0].split()[:2] == ["TURN", "STATUS"]
    assert turns[1].startswith(filled.turns[0]) and turns[1].endswith("hello")
    # A failed turn shows its error instead of its prompt.
    ran = await manage(capsys, ["sessions", "show", filled.failed, *filled.where(mode)])
    assert "failed" in ran.out and "cli_failed" in ran.out.split("\n\n")[1]


@pytest.mark.parametrize("mode", MODES)
async def test_sessions_rm_deletes_with_yes_and_asks_otherwise(
    filled: Filled, capsys: pytest.CaptureFixture[str], mode: str
) -> None:
    workspace = Path((await (await filled.client.get(f"/api/sessions/{filled.second}")).json())["workspace_path"])
    assert workspace.is_dir()
    # Without a terminal to ask on, nothing is deleted.
    ran = await manage(capsys, ["sessions", "rm", filled.second, *filled.where(mode)])
    assert ran.code == 2 and ran.error == "error: not deleting without a terminal to confirm on: add --yes"
    assert (await filled.client.get(f"/api/sessions/{filled.second}")).status == 200

    root = ["--workspace-root", str(filled.settings.workspace_root_path)] if mode == "database" else []
    ran = await manage(capsys, ["sessions", "rm", filled.second, "--yes", *root, *filled.where(mode)])
    assert ran.code == 0 and ran.out == f"deleted session {filled.second}\n" and len(ran.err.splitlines()) == 1
    assert (await filled.client.get(f"/api/sessions/{filled.second}")).status == 404
    assert not workspace.exists()
    ran = await manage(capsys, ["sessions", "rm", filled.second, "-y", "--json", *filled.where(mode)])
    assert ran.code == 1 and ran.error == f"error: No session {filled.second} (it may have been deleted)"
    ran = await manage(capsys, ["sessions", "rm", filled.first, "-y", "--json", *filled.where(mode)])
    assert ran.json() == {"deleted": filled.first}
    if mode == "database":  # without the server's workspace root, its workspace is kept, and that is said
        assert ran.err.splitlines()[1].startswith("its workspace ")
        assert ran.err.splitlines()[1].endswith("give the server's --workspace-root (or CLAUDE_SERVER_WORKSPACE_ROOT)")


async def test_sessions_rm_of_a_running_turn_is_refused_on_the_database_and_stops_it_through_the_server(
    filled: Filled, capsys: pytest.CaptureFixture[str]
) -> None:
    resp = await post(filled.client, {"prompt": "@sleep=30", "session_id": filled.first, "detach": True})
    assert resp.status == 200
    turn_id = resp.headers["X-Turn-Id"]
    # The turn is recorded as running once its init line is in.
    await resp.content.readline()
    ran = await manage(capsys, ["sessions", "rm", filled.first, "--yes", *filled.where("database")])
    assert ran.code == 1
    assert ran.error == (
        f"error: session {filled.first} has a running turn ({turn_id}): delete it through the server (--url), "
        "which stops the turn first"
    )
    ran = await manage(capsys, ["sessions", "show", filled.first, "--json", *filled.where("database")])
    assert ran.json()["running_turn"]["turn_id"] == turn_id
    ran = await manage(capsys, ["sessions", "rm", filled.first, "--yes", *filled.where("server")])
    assert ran.code == 0
    assert (await filled.client.get(f"/api/sessions/{filled.first}")).status == 404
    resp.close()


# ---- turns ---------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
async def test_turns_show_gives_status_times_cost_usage_and_the_event_log(
    filled: Filled, capsys: pytest.CaptureFixture[str], mode: str
) -> None:
    turn_id = filled.turns[1]
    ran = await manage(capsys, ["turns", "show", turn_id, "--json", *filled.where(mode)])
    assert ran.code == 0
    turn = ran.json()
    assert turn["turn_id"] == turn_id and turn["status"] == "succeeded" and turn["cost_usd"] == pytest.approx(0.001)
    assert turn["usage"]["output_tokens"] > 0 and "events" not in turn

    ran = await manage(capsys, ["turns", "show", turn_id, "--json", "--events", *filled.where(mode)])
    events = ran.json()["events"]
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert events[0]["data"]["type"] == "system" and events[-1]["data"]["type"] == "result"

    ran = await manage(capsys, ["turns", "show", turn_id, "--events", *filled.where(mode)])
    head, log = ran.out.split("\n\n")
    fields = fields_of(head)
    assert (fields["status"], fields["cost"], fields["prompt"]) == ("succeeded", "$0.0010", "again")
    assert re.fullmatch(r"\d+ ms", fields["CLI time"]) and re.fullmatch(r"\d+ ms|\d+\.\d s", fields["duration"])
    assert re.fullmatch(r"\d+ input, .*\d+ output", fields["tokens"])
    # Each line as stored, byte for byte, after its seq.
    lines = log.splitlines()
    assert [line[:7] for line in lines] == [f"{n:>5}  " for n in range(1, len(lines) + 1)]
    assert [json.loads(line[7:])["type"] for line in (lines[0], lines[-1])] == ["system", "result"]
    stored = [e.data.decode() for e in await store_events(filled.settings, turn_id)]
    assert [line[7:] for line in lines] == stored

    # A failed turn: its error, and the error event in its log.
    ran = await manage(capsys, ["turns", "show", filled.failed_turn, "--events", *filled.where(mode)])
    assert fields_of(ran.out.split("\n\n")[0])["error"].startswith("cli_failed: ")
    assert ran.out.split("\n\n")[1].splitlines()[-1].split(None, 2)[1] == "error:"


async def store_events(settings: Settings, turn_id: str) -> list[Any]:
    store = await Store.open(settings.db_path)
    try:
        return await store.events(turn_id)
    finally:
        await store.close()


# ---- stats ---------------------------------------------------------------------------------


@pytest.mark.parametrize("group_by", ["day", "model", "key", "provider"])
async def test_stats_are_the_same_from_the_database_and_from_the_server(
    filled: Filled, capsys: pytest.CaptureFixture[str], group_by: str
) -> None:
    from_db = await manage(capsys, ["stats", "--by", group_by, "--json", *filled.where("database")])
    from_server = await manage(capsys, ["stats", "--by", group_by, "--json", *filled.where("server")])
    assert from_db.code == from_server.code == 0
    assert from_db.json() == from_server.json()
    total = from_db.json()["total"]
    assert (total["turns"], total["successes"], total["failures"]) == (4, 3, 1)
    assert total["cost_usd"] == pytest.approx(0.003)  # the failed turn reported no cost


@pytest.mark.parametrize("mode", MODES)
async def test_stats_table_and_since(filled: Filled, capsys: pytest.CaptureFixture[str], mode: str) -> None:
    ran = await manage(capsys, ["stats", *filled.where(mode)])
    header, *rows = ran.out.splitlines()
    assert header.split() == ["DAY", "TURNS", "OK", "FAILED", "COST", "INPUT", "TOK", "OUTPUT", "TOK", "MEAN", "TIME"]
    assert rows[-1].split()[:5] == ["total", "4", "3", "1", "$0.0030"]
    ran = await manage(capsys, ["stats", "--since", "2999-01-01", "--json", *filled.where(mode)])
    assert ran.json()["total"]["turns"] == 0 and ran.json()["from"] == "2999-01-01T00:00:00.000Z"
    ran = await manage(capsys, ["stats", "--since", "1d", "--json", *filled.where(mode)])
    assert ran.json()["total"]["turns"] == 4
    ran = await manage(capsys, ["stats", "--since", "last week", *filled.where(mode)])
    assert ran.code == 2 and "--since must be 7d, 12h, 30m, a date" in ran.error


def test_since_takes_relative_times_dates_and_date_times() -> None:
    now = datetime(2026, 12, 2, 19, 0, tzinfo=UTC)
    assert parse_since("7d", now) == "2026-11-25T19:00:00.000Z"
    assert parse_since("90m", now) == "2026-12-02T17:30:00.000Z"
    assert parse_since("2026-11-22") == "2026-11-22T00:00:00.000Z"
    assert parse_since("2026-11-22T10:00:00+02:00") == "2026-11-22T08:00:00.000Z"
    assert parse_since("2026-11-22T10:00:00") == "2026-11-22T10:00:00.000Z"


# ---- status --------------------------------------------------------------------------------


async def test_status_shows_a_running_servers_health(filled: Filled, capsys: pytest.CaptureFixture[str]) -> None:
    ran = await manage(capsys, ["status", "--json", *filled.where("server")])
    assert ran.code == 0 and ran.json()["status"] == "ok" and ran.json()["max_concurrent"] == 4
    ran = await manage(capsys, ["status", *filled.where("server")])
    lines = fields_of(ran.out)
    assert lines["status"] == "ok" and lines["database"] == "ok"
    assert lines["turns"] == "0 running of 4" and lines["queue"] == "0 waiting of 100"
    assert lines["tasks"] == "0 running, 0 queued"
    assert lines["cli"].startswith(f"{FAKE_CLI} (9.9.9")
    assert "warning" in lines  # the fake CLI is not the tested version
    # The three sessions' CLIs stay warm (the failed one's does not).
    assert re.fullmatch(r"\d idle of 8; \d+ hits, \d+ misses, 0 evicted, 0 expired", lines["warm pool"])


async def test_status_of_a_degraded_server_exits_1(
    aiohttp_client: Any, settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    client = await aiohttp_client(create_app(replace(settings, claude_bin="/nonexistent/claude")))
    ran = await manage(capsys, ["status", "--url", str(client.make_url("")).rstrip("/")])
    assert ran.code == 1
    lines = fields_of(ran.out)
    assert lines["status"] == "degraded" and lines["problem"].startswith("Claude Code CLI is not available: ")


async def test_status_needs_a_server(settings: Settings, capsys: pytest.CaptureFixture[str]) -> None:
    ran = await manage(capsys, ["status"])
    assert ran.code == 2 and ran.error == "error: status asks a running server: give --url (or set CLAUDE_SERVER_URL)"


# ---- keys and ownership --------------------------------------------------------------------


@pytest.fixture
async def keyed(aiohttp_client: Any, settings: Settings) -> tuple[TestClient, Settings, str]:
    """A server with an operator (admin) key and a key of alice's, who ran one turn."""
    keyed = replace(settings, api_keys=(OPERATOR,))
    client = await aiohttp_client(create_app(keyed))
    store = await Store.open(keyed.db_path)
    try:
        _, alice = await store.create_key("alice", admin=False, daily_budget_usd=None)
    finally:
        await store.close()
    resp = await post(client, {"prompt": "alice's"}, {**JSON, "Authorization": f"Bearer {alice}"})
    assert resp.status == 200
    parse_sse(await resp.text())
    return client, keyed, alice


async def test_through_the_server_a_key_sees_what_the_api_lets_it_see(
    keyed: tuple[TestClient, Settings, str], capsys: pytest.CaptureFixture[str]
) -> None:
    client, _, alice = keyed
    url = str(client.make_url("")).rstrip("/")
    ran = await manage(capsys, ["sessions", "ls", "--json", "--url", url, "--api-key", alice])
    assert [s["title"] for s in ran.json()] == ["alice's"]
    session_id = ran.json()[0]["session_id"]
    # The operator sees its own sessions (none), and everyone's with --all-keys; the key from the environment.
    env = {"CLAUDE_SERVER_API_KEY": OPERATOR, "CLAUDE_SERVER_URL": url}
    ran = await manage(capsys, ["sessions", "ls", "--json"], env)
    assert ran.code == 0 and ran.json() == []
    ran = await manage(capsys, ["sessions", "ls", "--json", "--all-keys"], env)
    assert [s["session_id"] for s in ran.json()] == [session_id]
    ran = await manage(capsys, ["sessions", "show", session_id, "--json"], env)
    assert ran.code == 1 and ran.error == f"error: No session {session_id} (it may have been deleted)"
    ran = await manage(capsys, ["stats", "--by", "key", "--json"], env)
    assert [g["group"] for g in ran.json()["groups"]] == ["alice"]
    # Only an admin may ask for everyone's.
    ran = await manage(capsys, ["sessions", "ls", "--all-keys", "--url", url, "--api-key", alice])
    assert ran.code == 1 and ran.error == "error: the server refused (403): Only admin keys may ask for all=true"


async def test_a_missing_or_wrong_key_is_one_line(
    keyed: tuple[TestClient, Settings, str], capsys: pytest.CaptureFixture[str]
) -> None:
    url = str(keyed[0].make_url("")).rstrip("/")
    for argv in (["sessions", "ls", "--url", url], ["turns", "show", "x", "--url", url, "--api-key", "wrong"]):
        ran = await manage(capsys, argv)
        assert ran.code == 1
        assert ran.error.startswith(f"error: the server at {url} refused the key (")
        assert ran.error.endswith("): give --api-key or set CLAUDE_SERVER_API_KEY")


# ---- errors --------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
async def test_unknown_ids_are_one_line(filled: Filled, capsys: pytest.CaptureFixture[str], mode: str) -> None:
    for argv, message in (
        (["sessions", "show", "nope"], "No session nope (it may have been deleted)"),
        (["sessions", "rm", "nope", "--yes"], "No session nope (it may have been deleted)"),
        (["turns", "show", "nope"], "No turn nope"),
        (["turns", "show", "nope", "--events"], "No turn nope"),
    ):
        ran = await manage(capsys, [*argv, *filled.where(mode)])
        assert (ran.code, ran.error) == (1, f"error: {message}")


async def test_an_unreachable_server_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    for argv in (["status"], ["sessions", "ls"], ["turns", "show", "x", "--events"], ["stats"]):
        ran = await manage(capsys, [*argv, "--url", url])
        assert ran.code == 1 and ran.error.startswith(f"error: cannot reach the server at {url}: "), ran.err


async def test_something_that_is_not_claude_server_is_one_line(
    fake_api: FakeAnthropic, capsys: pytest.CaptureFixture[str]
) -> None:
    ran = await manage(capsys, ["sessions", "ls", "--url", fake_api.base_url])
    assert (
        ran.code == 1
        and ran.error == f"error: {fake_api.base_url}/api/sessions answered HTTP 404, not as claude-server does"
    )


async def test_a_missing_database_is_one_line_and_not_created(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "none" / "sessions.db"
    ran = await manage(capsys, ["sessions", "ls", "--db", str(db)])
    assert ran.code == 1
    assert ran.error == (
        f"error: no database at {db}: give the server's --db or --data-dir (or CLAUDE_SERVER_DB / "
        "CLAUDE_SERVER_DATA_DIR), or --url to ask a running server"
    )
    assert not db.parent.exists()
    # The data directory from the environment, as the server finds it.
    ran = await manage(capsys, ["stats"], {"CLAUDE_SERVER_DATA_DIR": str(tmp_path / "data")})
    assert ran.error.startswith(f"error: no database at {tmp_path / 'data' / 'sessions.db'}: ")
    (tmp_path / "junk.db").write_text("not a database at all, not even close to one" * 100)
    ran = await manage(capsys, ["sessions", "ls", "--db", str(tmp_path / "junk.db")])
    assert ran.code == 1 and ran.error.startswith(f"error: cannot open the database {tmp_path / 'junk.db'}: ")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["sessions", "ls", "--limit", "0"], "argument --limit: must be a whole number greater than 0, got '0'"),
        (["stats", "--by", "week"], "argument --by: invalid choice: 'week'"),
        (["sessions", "show"], "the following arguments are required: ID"),
        (["sessions"], "the following arguments are required: ACTION"),
    ],
)
def test_bad_arguments_are_one_line_and_status_2(
    capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    with pytest.raises(SystemExit) as caught:
        cli.main(argv)
    assert caught.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and message in err.splitlines()[-1]


async def test_a_bad_url_is_status_2(capsys: pytest.CaptureFixture[str]) -> None:
    ran = await manage(capsys, ["sessions", "ls", "--url", "localhost:3000"])
    assert ran.code == 2 and ran.error == "error: --url must be http://host:port or https://host, got 'localhost:3000'"


async def create_database(path: Path) -> None:
    await (await Store.open(path)).close()


def test_the_installed_command_runs_them(tmp_path: Path) -> None:
    """As a user types it: the real entry point, its source on stderr, no traceback."""
    db = tmp_path / "sessions.db"
    asyncio.run(create_database(db))
    env = {**base_environ(tmp_path), "CLAUDE_SERVER_DB": str(db)}

    def run(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "claude_server", *argv],
            env=env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )

    done = run("sessions", "ls", "--json")
    assert (done.returncode, done.stdout, done.stderr) == (0, "[]\n", f"from database {db}\n")
    done = run("turns", "show", "nope")
    assert (done.returncode, done.stderr) == (1, f"from database {db}\nerror: No turn nope\n")


# ---- doctor --------------------------------------------------------------------------------


def doctor_argv(tmp_path: Path, *extra: str) -> list[str]:
    return [
        "doctor",
        "--json",
        "--db",
        str(tmp_path / "sessions.db"),
        "--workspace-root",
        str(tmp_path / "workspace"),
        "--claude-config-dir",
        str(tmp_path / "claude-config"),
        "--max-concurrent",
        "1",
        "--warm-idle-timeout",
        "0",
        *extra,
    ]


def doctor_env(tmp_path: Path, api: FakeAnthropic, **changes: str) -> dict[str, str]:
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    env = {
        **base_environ(home),
        "ANTHROPIC_API_KEY": FAKE_API_KEY,
        "ANTHROPIC_BASE_URL": api.base_url,
        "CLAUDE_SERVER_CLAUDE_BIN": str(FAKE_CLI),
    }
    env.update(changes)
    return {k: v for k, v in env.items() if v}


def by_check(ran: Ran) -> dict[str, dict[str, str]]:
    return {c["check"]: c for c in ran.json()["checks"]}


async def test_doctor_with_a_good_setup_says_ok(
    tmp_path: Path, fake_api: FakeAnthropic, capsys: pytest.CaptureFixture[str]
) -> None:
    await create_database(tmp_path / "sessions.db")
    (tmp_path / "workspace").mkdir()
    ran = await manage(capsys, doctor_argv(tmp_path), doctor_env(tmp_path, fake_api))
    assert ran.code == 0 and ran.json()["ok"] is True, ran.out
    checks = by_check(ran)
    assert list(checks) == ["cli", "api", "database", "workspaces", "config", "disk", "memory"]
    # The fake CLI is found, but is not the tested version.
    assert checks["cli"]["status"] == "WARN" and checks["cli"]["message"].startswith(f"{FAKE_CLI} (9.9.9")
    assert checks["api"] == {
        "check": "api",
        "status": "OK",
        "message": f"{fake_api.base_url} accepts ANTHROPIC_API_KEY",
    }
    assert (
        checks["database"]["status"] == "OK"
        and f"all {len(list(migrations_dir().glob('*.sql')))} migrations applied" in checks["database"]["message"]
    )
    assert checks["workspaces"] == {
        "check": "workspaces",
        "status": "OK",
        "message": f"{tmp_path / 'workspace'} is writable",
    }
    assert checks["config"]["message"] == f"{tmp_path / 'claude-config'} does not exist yet; it is created when needed"
    assert checks["memory"]["message"].startswith("1 CLIs (1 running) x 200 MB = 0.2 GB")
    # For people: one line per check, its status first.
    ran = await manage(capsys, [a for a in doctor_argv(tmp_path) if a != "--json"], doctor_env(tmp_path, fake_api))
    lines = ran.out.splitlines()
    assert [line.split()[:2] for line in lines[:3]] == [["WARN", "cli"], ["OK", "api"], ["OK", "database"]]


async def test_doctor_with_a_broken_setup_says_what_to_do_and_exits_1(
    tmp_path: Path, fake_api: FakeAnthropic, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "workspace").write_text("a file where the workspace root should be")
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    env = doctor_env(
        tmp_path, fake_api, ANTHROPIC_API_KEY="sk-ant-wrong", CLAUDE_SERVER_CLAUDE_BIN="claude", PATH=str(empty)
    )
    ran = await manage(capsys, doctor_argv(tmp_path), env)
    assert ran.code == 1 and ran.json()["ok"] is False
    checks = by_check(ran)
    assert checks["cli"]["status"] == "FAIL"
    assert checks["cli"]["message"].startswith("'claude' not found on PATH. Install it with `npm install -g")
    assert checks["api"] == {
        "check": "api",
        "status": "FAIL",
        "message": f"{fake_api.base_url} refuses ANTHROPIC_API_KEY (401: invalid x-api-key); set a valid one in "
        "the server's environment",
    }
    assert checks["workspaces"]["status"] == "FAIL"
    assert checks["workspaces"]["message"] == (
        f"workspace root {tmp_path / 'workspace'}: {tmp_path / 'workspace'} is not a folder; fix its permissions or "
        "give another --workspace-root"
    )
    assert (
        checks["database"]["message"]
        == f"{tmp_path / 'sessions.db'} does not exist yet; the server creates it at start"
    )


async def test_doctor_api_check_by_token_unreachable_cloud_and_login(
    tmp_path: Path, fake_api: FakeAnthropic, capsys: pytest.CaptureFixture[str]
) -> None:
    env = doctor_env(tmp_path, fake_api, ANTHROPIC_API_KEY="", ANTHROPIC_AUTH_TOKEN=FAKE_API_KEY)
    assert by_check(await manage(capsys, doctor_argv(tmp_path), env))["api"]["message"] == (
        f"{fake_api.base_url} accepts ANTHROPIC_AUTH_TOKEN"
    )
    gone = f"http://127.0.0.1:{free_port()}"
    api = by_check(await manage(capsys, doctor_argv(tmp_path), doctor_env(tmp_path, fake_api, ANTHROPIC_BASE_URL=gone)))
    assert api["api"]["status"] == "FAIL" and api["api"]["message"].startswith(f"cannot reach {gone}/v1/models: ")
    env = doctor_env(tmp_path, fake_api, ANTHROPIC_API_KEY="", CLAUDE_CODE_USE_BEDROCK="1")
    api = by_check(await manage(capsys, doctor_argv(tmp_path), env))["api"]
    assert api["status"] == "SKIP" and "CLAUDE_CODE_USE_BEDROCK is set" in api["message"]
    # No key: a login in the CLI's configuration directory is not checked, and no login fails.
    ran = await manage(capsys, doctor_argv(tmp_path), doctor_env(tmp_path, fake_api, ANTHROPIC_API_KEY=""))
    assert ran.code == 1 and by_check(ran)["api"]["status"] == "FAIL"
    assert "Set ANTHROPIC_API_KEY in the server's environment, or log the CLI in" in by_check(ran)["api"]["message"]
    config_dir = tmp_path / "claude-config"
    config_dir.mkdir()
    login = {"claudeAiOauth": {"accessToken": "t", "scopes": ["user:inference"]}}
    (config_dir / ".credentials.json").write_text(json.dumps(login))
    ran = await manage(capsys, doctor_argv(tmp_path), doctor_env(tmp_path, fake_api, ANTHROPIC_API_KEY=""))
    api = by_check(ran)["api"]
    assert api["status"] == "SKIP" and api["message"].startswith("not checked: the CLI has credentials of its own (")


async def test_doctor_database_states(
    tmp_path: Path, fake_api: FakeAnthropic, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "sessions.db"
    await create_database(db)
    with sqlite3.connect(db) as conn:
        conn.execute("DELETE FROM schema_migrations WHERE name = '0007_providers.sql'")
    check = by_check(await manage(capsys, doctor_argv(tmp_path), doctor_env(tmp_path, fake_api)))["database"]
    assert check["status"] == "WARN"
    assert check["message"] == (
        f"{db} lacks 1 migration(s) (0007_providers.sql); the server applies them when it starts"
    )
    with sqlite3.connect(db) as conn:
        conn.execute("INSERT INTO schema_migrations VALUES ('0007_providers.sql', 'x'), ('9999_future.sql', 'x')")
    ran = await manage(capsys, doctor_argv(tmp_path), doctor_env(tmp_path, fake_api))
    assert ran.code == 1 and by_check(ran)["database"]["message"] == (
        f"{db} has migrations this version does not know (9999_future.sql): it belongs to a newer claude-server; "
        "upgrade this one"
    )
    db.write_bytes(b"x" * 4096)
    check = by_check(await manage(capsys, doctor_argv(tmp_path), doctor_env(tmp_path, fake_api)))["database"]
    assert check["status"] == "FAIL" and check["message"].startswith(f"{db} cannot be read as a database: ")


def test_doctor_memory_counts_running_and_warm_clis() -> None:
    info = meminfo("MemTotal:        2000000 kB\nMemFree:  100 kB\nMemAvailable:    1000000 kB\n")
    assert info["MemTotal"] == 2_048_000_000
    settings = Settings(max_concurrent=4, max_warm=8)
    failed = check_memory(settings, info)
    assert failed.status == "FAIL"
    assert failed.message == (
        "12 CLIs (4 running + 8 warm) x 200 MB = 2.4 GB, more than the machine has (2.0 GB in all, 1.0 GB "
        "available); lower --max-concurrent or --max-warm, or add memory"
    )
    assert check_memory(replace(settings, max_concurrent=6, warm_idle_timeout_s=0), info).status == "WARN"
    assert check_memory(replace(settings, max_concurrent=2, warm_idle_timeout_s=0), info).status == "OK"
    assert check_memory(settings, None).status == "SKIP"
    assert CLI_FOOTPRINT_BYTES == 200 * 10**6


# ---- on PostgreSQL ---------------------------------------------------------------------------


async def test_on_postgresql_the_commands_read_the_database_and_doctor_checks_it(
    tmp_path: Path, fake_api: FakeAnthropic, capsys: pytest.CaptureFixture[str], postgres_server: Any
) -> None:
    url = await postgres_server.new_database()
    try:
        store = await Store.open(url)
        await store.insert_session("s-pg", workspace_path="w", workspace_name="w", first_prompt="on postgres")
        await store.close()
        (tmp_path / "workspace").mkdir()
        env = doctor_env(tmp_path, fake_api)
        listed = await manage(capsys, ["sessions", "ls", "--json", "--db", url], env)
        assert listed.code == 0 and [s["session_id"] for s in listed.json()] == ["s-pg"], listed.err
        assert listed.source_line.startswith("from database postgresql://")
        argv = [a if a != str(tmp_path / "sessions.db") else url for a in doctor_argv(tmp_path)]
        checks = by_check(await manage(capsys, argv, env))
        assert checks["database"]["status"] == "OK" and "migrations applied" in checks["database"]["message"]
        assert "database" not in checks["disk"]["message"]
    finally:
        await postgres_server.drop_database(url)


async def test_on_an_unreachable_postgresql_the_commands_fail_in_one_line(
    tmp_path: Path, fake_api: FakeAnthropic, capsys: pytest.CaptureFixture[str]
) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"postgresql://u:secret@127.0.0.1:{port}/db"
    env = doctor_env(tmp_path, fake_api)
    listed = await manage(capsys, ["sessions", "ls", "--db", url], env)
    assert listed.code == 1 and listed.error.startswith("error: cannot connect to PostgreSQL at postgresql://u:***@")
    argv = [a if a != str(tmp_path / "sessions.db") else url for a in doctor_argv(tmp_path)]
    ran = await manage(capsys, argv, env)
    database = by_check(ran)["database"]
    assert ran.code == 1 and database["status"] == "FAIL" and "secret" not in ran.out, database
    assert database["message"].startswith("cannot connect to PostgreSQL at postgresql://u:***@127.0.0.1")
