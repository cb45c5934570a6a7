"""A real PostgreSQL server for the tests: its own cluster in a temporary directory, on a free
port of 127.0.0.1, stopped (and its directory removed) at the end.

The binaries are Debian's ``postgresql`` package (``make setup`` installs it), the newest
under ``/usr/lib/postgresql/*/bin``, or ``CLAUDE_SERVER_TEST_PG_BIN``. PostgreSQL refuses to
run as root: as root, the cluster belongs to the package's unprivileged ``postgres`` user and
its commands run through ``runuser``.

Each test gets a database of its own, created from a migrated template (a copy of a few
megabytes of files: milliseconds), so no test sees another's rows.

Nothing is left behind, even when the test process is killed (``kill -9``, a CI timeout): a
watchdog process of its own session holds the read end of a pipe whose only write end is the
test process's; when that closes (``stop()``, or the process died) it stops the cluster and
removes its directory.
"""

from __future__ import annotations

import asyncio
import os
import pwd
import socket
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

import asyncpg
import pytest

from claude_server.store.postgres import PostgresDatabase

TEMPLATE = "claude_server_template"
# Waits for its stdin to close, then runs the command in argv (the cluster's stop) and
# removes the directory named first.
WATCHDOG = """
import shutil, subprocess, sys
sys.stdin.buffer.read()
try:
    subprocess.run(sys.argv[2:], capture_output=True, timeout=60)
finally:
    shutil.rmtree(sys.argv[1], ignore_errors=True)
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def find_bin() -> Path:
    given = os.environ.get("CLAUDE_SERVER_TEST_PG_BIN")
    if given:
        return Path(given)
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parent.parent.name))
    if not found:
        pytest.fail("PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/initdb): run `make setup`")
    return found[-1].parent


class PostgresServer:
    def __init__(self) -> None:
        self.bin = find_bin()
        self.dir = Path(tempfile.mkdtemp(prefix="claude-server-pg-"))
        self.data = self.dir / "data"
        self.port = _free_port()
        self._user = None
        self._watchdog: subprocess.Popen[bytes] | None = None
        if os.geteuid() == 0:
            try:
                self._user = pwd.getpwnam("postgres")
            except KeyError:
                pytest.fail("PostgreSQL refuses to run as root and there is no postgres user: run `make setup`")
        if self._user is not None:
            os.chown(self.dir, self._user.pw_uid, self._user.pw_gid)

    def _command(self, *args: str) -> list[str]:
        command = [str(self.bin / args[0]), *args[1:]]
        if self._user is not None:
            command = ["runuser", "-u", "postgres", "--", *command]
        return command

    def _run(self, *args: str) -> None:
        command = self._command(*args)
        result = subprocess.run(command, capture_output=True, text=True, timeout=60, cwd=self.dir)
        if result.returncode != 0:
            log = self.dir / "log"
            tail = log.read_text()[-2000:] if log.exists() else ""
            raise RuntimeError(f"{args[0]} failed: {result.stdout}{result.stderr}{tail}")

    def start(self) -> PostgresServer:
        stop = self._command("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
        self._watchdog = subprocess.Popen(
            [sys.executable, "-c", WATCHDOG, str(self.dir), *stop],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # a Ctrl-C of the tests' process group leaves it to clean up
            cwd="/",
        )
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--locale=C.UTF-8")
        # Durability off: a test cluster lives for one run.
        options = f"-p {self.port} -h 127.0.0.1 -k {self.dir} -c fsync=off -c synchronous_commit=off "
        options += "-c full_page_writes=off -c max_connections=200"
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.dir / "log"), "-o", options, "-w", "start")
        asyncio.run(self._make_template())
        return self

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    async def _make_template(self) -> None:
        conn = await asyncpg.connect(self.url())
        try:
            await conn.execute(f"CREATE DATABASE {TEMPLATE}")
        finally:
            await conn.close()
        db = await PostgresDatabase.open(self.url(TEMPLATE))
        await db.close()

    async def new_database(self) -> str:
        """The URL of a fresh, migrated, empty database."""
        name = "t_" + uuid.uuid4().hex[:12]
        conn = await asyncpg.connect(self.url())
        try:
            await conn.execute(f"CREATE DATABASE {name} TEMPLATE {TEMPLATE}")
        finally:
            await conn.close()
        return self.url(name)

    async def drop_database(self, url: str) -> None:
        conn = await asyncpg.connect(self.url())
        try:
            await conn.execute(f"DROP DATABASE IF EXISTS {url.rsplit('/', 1)[1]} WITH (FORCE)")
        finally:
            await conn.close()

    def stop(self) -> None:
        """Stop the cluster and remove its directory (the watchdog does both)."""
        if self._watchdog is not None and self._watchdog.stdin is not None:
            self._watchdog.stdin.close()
            self._watchdog.wait(90)
