"""PostgreSQL as the store: ``claude-server migrate`` from SQLite (every table, every row,
the counts), the same schema as SQLite's, and one-line refusals of a database that cannot
be reached."""

from __future__ import annotations

import asyncio
import json
import socket
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest

from claude_server.store import DatabaseUnavailable, Store
from claude_server.store.database import redacted
from claude_server.store.tasks import TaskRow
from tests.conftest import FAKE_CLI, ROOT, base_environ, start_server, stop_server
from tests.fake_anthropic import FakeAnthropic
from tests.helpers import pid_alive, wait_until
from tests.postgres_server import PostgresServer


def run_cli(tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    return subprocess.run(
        [sys.executable, "-m", "claude_server", *args],
        env={**base_environ(home), **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
    )


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def fill(path: Path) -> None:
    """A row in every table, through the store, as a server would write them."""
    store = await Store.open(path)
    try:
        await store.insert_session(
            "s1", workspace_path="/w/s1", workspace_name="s1", first_prompt="Grüße", metadata={"k": "ä"}
        )
        await store.insert_session("s2", workspace_path="/w/s2", workspace_name="s2", first_prompt="b", owner="key_1")
        await store.insert_turn("t1", session_id="s1", prompt="p", options={"model": "x"}, workspace_path="/w/s1",
                                detach=True, server_id="srv")  # fmt: skip
        await store.finish_turn("t1", status="succeeded", exit_code=0, cost_usd=0.125, session_cost_usd=0.125,
                                usage={"input_tokens": 5}, num_turns=1, error=None, last_seq=3, model="m",
                                duration_ms=12.5)  # fmt: skip
        await store.insert_chunks([("t1", 1, 2, None, b'{"a":1}\n\xff\x00'), ("t1", 3, 3, '{"3": "error"}', b"{}")])
        await store.insert_compat_turn("t1", session_id="s1", user_text="u", assistant_text="a", history_key="h")
        await store.create_key("ops", admin=True, daily_budget_usd=2.5)
        await store.insert_process("m1", "srv", "s1")
        await store.set_process_pid("m1", 4242)
        await store.set_turn_process("t1", "m1")
        await store.insert_tasks(
            [
                TaskRow(
                    "task1",
                    1,
                    None,
                    "b1",
                    "queued",
                    5,
                    {"prompt": "x"},
                    None,
                    None,
                    "http://h",
                    "sec",
                    {"m": 1},
                    None,
                    None,
                    None,
                    None,
                    0,
                    "2026-01-01T00:00:00.000Z",
                    None,
                    None,
                )  # fmt: skip
            ]
        )
        for n in range(3):
            await store.insert_delivery(f"d{n}", "task1", "http://h", "sec", "{}", 1.5)
        await store.record_attempt("d0", 1, 500, "boom", 3.5, 9.0, "pending")
        await store.move_provider("s1", "t1", None, "p2", "failover")
        await store.bind_provider("s2", "p1")
        await store.register_replica("srv", "a", "http://h:3000")
        await store.claim_session("s1", "t1", "srv", "2026-01-01T00:00:00.000Z")
        await store.take_task("task1", "srv", "2026-01-01T00:00:00.000Z")
        await store.take_rate("key_1", 1, 10, 1_767_225_600.25)
    finally:
        await store.close()


def sqlite_rows(path: Path, table: str, columns: list[str]) -> list[tuple[Any, ...]]:
    cols = ", ".join("rowid" if c == "rowid" else f'"{c}"' for c in columns)
    with sqlite3.connect(path) as conn:
        return sorted(conn.execute(f'SELECT {cols} FROM "{table}"').fetchall(), key=repr)


async def postgres_rows(url: str) -> dict[str, tuple[list[str], list[tuple[Any, ...]]]]:
    conn = await asyncpg.connect(url)
    try:
        tables: dict[str, list[str]] = {}
        for r in await conn.fetch(
            "SELECT table_name, column_name FROM information_schema.columns WHERE table_schema = 'public' "
            "ORDER BY table_name, ordinal_position"
        ):
            tables.setdefault(r["table_name"], []).append(r["column_name"])
        out = {}
        for table, columns in tables.items():
            rows = [tuple(r) for r in await conn.fetch(f'SELECT * FROM "{table}"')]
            out[table] = (columns, sorted(rows, key=repr))
        return out
    finally:
        await conn.close()


async def test_migrate_copies_every_table_and_row(tmp_path: Path, postgres_server: PostgresServer) -> None:
    source = tmp_path / "sessions.db"
    await fill(source)
    url = await postgres_server.new_database()
    done = await asyncio.to_thread(run_cli, tmp_path, "migrate", "--from", str(source), "--to", url)
    assert done.returncode == 0, done.stderr
    counts = {c["table"]: c for c in map(json.loads, done.stdout.splitlines())}
    copied = await postgres_rows(url)
    with sqlite3.connect(source) as conn:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert set(copied) == tables
    assert set(counts) == tables - {"schema_migrations"}
    for table, (columns, rows) in copied.items():
        if table == "schema_migrations":
            continue
        assert rows == sqlite_rows(source, table, columns), table
        assert counts[table] == {"table": table, "sqlite": len(rows), "postgres": len(rows)}
        assert rows, f"{table} was not filled"
    assert "every count matches" in done.stderr

    # The copy is a working store: it reads back what the server wrote, and goes on.
    store = await Store.open(url)
    try:
        events = await store.events("t1")
        assert [e.data for e in events] == [b'{"a":1}', b"\xff\x00", b"{}"]
        await store.insert_delivery("d9", "task1", "http://h", None, "{}", 1.5)
        # Due at the same time as d1 and d2, made after them: the rowid went on past the copied ones.
        assert [d.delivery_id for d in await store.pending_deliveries()] == ["d1", "d2", "d9", "d0"]
    finally:
        await store.close()


async def test_migrate_refuses_a_target_with_rows_unless_replace(
    tmp_path: Path, postgres_server: PostgresServer
) -> None:
    source = tmp_path / "sessions.db"
    await fill(source)
    url = await postgres_server.new_database()
    store = await Store.open(url)
    await store.create_key("already-there", admin=False, daily_budget_usd=None)
    await store.close()
    refused = await asyncio.to_thread(run_cli, tmp_path, "migrate", "--from", str(source), "--to", url)
    assert refused.returncode == 1
    assert refused.stderr.strip().splitlines()[-1].startswith("error: ")
    assert "is not empty (rows in api_keys)" in refused.stderr and "--replace" in refused.stderr
    assert "Traceback" not in refused.stderr
    replaced = await asyncio.to_thread(run_cli, tmp_path, "migrate", "--from", str(source), "--to", url, "--replace")
    assert replaced.returncode == 0, replaced.stderr
    keys = (await postgres_rows(url))["api_keys"][1]
    assert [k[1] for k in keys] == ["ops"]


async def test_migrate_errors_are_one_line(tmp_path: Path, postgres_server: PostgresServer) -> None:
    missing = await asyncio.to_thread(
        run_cli, tmp_path, "migrate", "--from", str(tmp_path / "none.db"), "--to", postgres_server.url()
    )
    assert missing.returncode == 1 and missing.stderr == f"error: no SQLite database at {tmp_path / 'none.db'}\n"
    not_url = await asyncio.to_thread(run_cli, tmp_path, "migrate", "--from", "x.db", "--to", "mysql://h/db")
    assert not_url.returncode == 2 and "must be a postgresql:// URL" in not_url.stderr
    source = tmp_path / "sessions.db"
    await fill(source)
    port = closed_port()
    unreachable = await asyncio.to_thread(
        run_cli, tmp_path, "migrate", "--from", str(source), "--to", f"postgresql://u:secret@127.0.0.1:{port}/db"
    )
    assert unreachable.returncode == 1
    assert unreachable.stderr.startswith(
        f"error: cannot connect to PostgreSQL at postgresql://u:***@127.0.0.1:{port}/db"
    )
    assert len(unreachable.stderr.splitlines()) == 1 and "secret" not in unreachable.stderr


@pytest.mark.parametrize(
    "url, says",
    [
        ("postgresql://u:secret@127.0.0.1:{port}/db", "cannot connect to PostgreSQL at postgresql://u:***@127.0.0.1"),
        ("postgresql://postgres@127.0.0.1:{pg}/no_such_database", 'database "no_such_database" does not exist'),
    ],
)
def test_a_server_on_a_database_it_cannot_reach_exits_with_one_line(
    tmp_path: Path, postgres_server: PostgresServer, url: str, says: str
) -> None:
    db = url.format(port=closed_port(), pg=postgres_server.port)
    done = run_cli(tmp_path, "--port", "0", env={"CLAUDE_SERVER_DB": db, "CLAUDE_SERVER_WORKSPACE_ROOT": str(tmp_path)})
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and says in lines[0], done.stderr
    assert "secret" not in done.stderr and "Traceback" not in done.stderr


def test_keys_on_an_unreachable_database_is_one_line(tmp_path: Path) -> None:
    done = run_cli(tmp_path, "keys", "list", "--db", f"postgresql://127.0.0.1:{closed_port()}/db")
    assert done.returncode == 1
    assert done.stderr.startswith("error: cannot connect to PostgreSQL") and len(done.stderr.splitlines()) == 1


async def test_open_reports_an_unreachable_server() -> None:
    with pytest.raises(DatabaseUnavailable, match="cannot connect to PostgreSQL at postgresql://127.0.0.1"):
        await Store.open(f"postgresql://127.0.0.1:{closed_port()}/db")


def test_redacted_hides_only_the_password() -> None:
    assert redacted("postgresql://u:pw@h:5432/d?sslmode=require") == "postgresql://u:***@h:5432/d?sslmode=require"
    assert redacted("postgresql://u@h/d") == "postgresql://u@h/d"
    assert redacted("postgresql://h:notaport/d") == "postgresql://h:notaport/d"


async def test_both_schemas_have_the_same_tables_and_columns(tmp_path: Path, postgres_server: PostgresServer) -> None:
    store = await Store.open(tmp_path / "s.db")
    await store.close()
    url = await postgres_server.new_database()
    pg = {t: [c for c in cols if c != "rowid"] for t, (cols, _) in (await postgres_rows(url)).items()}
    with sqlite3.connect(tmp_path / "s.db") as conn:
        names = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        lite = {n: [r[1] for r in conn.execute(f'PRAGMA table_info("{n}")')] for n in names}
    assert pg == lite
    applied = sorted(r[0] for r in (await postgres_rows(url))["schema_migrations"][1])
    assert applied == sorted(p.name for p in (Path(__file__).parent.parent / "migrations").glob("*.sql"))


async def test_the_server_and_its_commands_run_on_postgres(
    tmp_path: Path, postgres_server: PostgresServer, fake_api: FakeAnthropic
) -> None:
    url = await postgres_server.new_database()
    created = await asyncio.to_thread(run_cli, tmp_path, "keys", "create", "--name", "ops", "--admin", "--db", url)
    assert created.returncode == 0, created.stderr
    auth = {"Authorization": f"Bearer {json.loads(created.stdout)['secret']}"}
    server = await asyncio.to_thread(start_server, tmp_path, fake_api, FAKE_CLI, {"CLAUDE_SERVER_DB": url})
    try:
        async with aiohttp.ClientSession() as http:
            r = await http.post(f"{server.url}/api/claude", json={"prompt": "hi", "stream": False}, headers=auth)
            assert r.status == 200, await r.text()
            sid = (await r.json())["session_id"]
            r = await http.get(f"{server.url}/api/sessions/{sid}", headers=auth)
            assert r.status == 200 and (await r.json())["turn_count"] == 1
        assert f"database {url}, workspaces in" in server.log_text()
        # One server per database, as with SQLite: a second one refuses to start.
        second = await asyncio.to_thread(
            run_cli,
            tmp_path,
            "--port",
            "0",
            env={"CLAUDE_SERVER_DB": url, "CLAUDE_SERVER_WORKSPACE_ROOT": str(tmp_path)},
        )
        assert second.returncode == 1
        assert second.stderr.strip().splitlines() == [second.stderr.strip()]
        assert f"database {url} is in use by another claude-server" in second.stderr
    finally:
        await asyncio.to_thread(stop_server, server)
    listed = await asyncio.to_thread(run_cli, tmp_path, "keys", "list", "--db", url)
    assert [json.loads(line)["name"] for line in listed.stdout.splitlines()] == ["ops"]


async def test_a_database_that_is_not_utf8_is_refused(postgres_server: PostgresServer) -> None:
    conn = await asyncpg.connect(postgres_server.url())
    try:
        await conn.execute(
            "CREATE DATABASE ascii_only ENCODING 'SQL_ASCII' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0"
        )
    finally:
        await conn.close()
    url = postgres_server.url("ascii_only")
    with pytest.raises(DatabaseUnavailable, match="is encoded in SQL_ASCII; the server needs a UTF8 database"):
        await Store.open(url)
    await postgres_server.drop_database(url)


async def test_one_store_at_a_time_holds_the_server_lock(postgres_server: PostgresServer) -> None:
    url = await postgres_server.new_database()
    first, second = await Store.open(url), await Store.open(url)
    try:
        assert await first.db.lock_instance() is True
        assert await first.db.lock_instance() is True
        assert await second.db.lock_instance() is False
        await first.close()
        assert await second.db.lock_instance() is True
    finally:
        await first.close()
        await second.close()


def test_a_test_cluster_goes_when_the_tests_are_killed() -> None:
    """``kill -9`` of the process that started a test PostgreSQL stops it and removes its files."""
    script = (
        "import time\nfrom tests.postgres_server import PostgresServer\n"
        "print(PostgresServer().start().dir, flush=True)\ntime.sleep(600)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        directory = Path(proc.stdout.readline().strip())
        postmaster = int((directory / "data" / "postmaster.pid").read_text().split()[0])
        assert pid_alive(postmaster)
    finally:
        proc.kill()
        proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
    assert wait_until(lambda: not pid_alive(postmaster) and not directory.exists(), 30.0)
