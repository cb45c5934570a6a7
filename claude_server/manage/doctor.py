"""``claude-server doctor``: whether this machine, with the server's settings, can run the
server. Each check is one line, ``OK`` or what to do; the exit status is 1 when one fails.

It looks at this machine only (the CLI the server would start, its files, its memory), so it
has no ``--url``: run it where the server runs, with the server's settings."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import sqlite3
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from claude_server.claude.command import build_env
from claude_server.claude.probe import PROVIDER_SWITCHES, install_hint, probe_cli, probe_credentials
from claude_server.config import Settings
from claude_server.manage import render
from claude_server.store.database import redacted
from claude_server.store.errors import DatabaseUnavailable
from claude_server.store.schema import SchemaState, inspect, inspect_url

# What one CLI holds in memory: an idle CLI measured 161-192 MB RSS (README, Warm CLIs),
# a running one somewhat more; 200 MB each is what running and warm CLIs are counted at.
CLI_FOOTPRINT_BYTES = 200 * 1000 * 1000
# Free disk space below this is a warning (transcripts, workspaces and the event log grow),
# below the second one a failure (SQLite and the CLI fail to write).
DISK_WARN_BYTES = 1024**3
DISK_FAIL_BYTES = 100 * 1024**2
# The API check gives up after this long: an unreachable API must not hang the doctor.
API_TIMEOUT_S = 10.0
ANTHROPIC_API = "https://api.anthropic.com"
ANTHROPIC_VERSION = "2023-06-01"

OK, WARN, FAIL, SKIP = "OK", "WARN", "FAIL", "SKIP"


@dataclass(frozen=True)
class Check:
    name: str
    status: str  # OK, WARN, FAIL or SKIP (not checked, and why)
    message: str

    def public(self) -> dict[str, str]:
        return {"check": self.name, "status": self.status, "message": self.message}


async def check_cli(settings: Settings, env: Mapping[str, str]) -> tuple[Check, str | None]:
    """The CLI the server would start, and its version; its path when found."""
    cli = await probe_cli(settings.claude_bin, env)
    if not cli.found:
        return Check("cli", FAIL, f"{cli.error}. {install_hint()}"), None
    if cli.version_warning:
        return Check("cli", WARN, f"{cli.path} ({cli.version}): {cli.version_warning}"), cli.path
    return Check("cli", OK, f"{cli.path} ({cli.version})"), cli.path


async def check_api(env: Mapping[str, str], cli_path: str | None) -> Check:
    """Whether the API the CLI talks to takes its key: ``GET /v1/models`` at
    ``ANTHROPIC_BASE_URL`` with ``ANTHROPIC_API_KEY`` (or ``ANTHROPIC_AUTH_TOKEN``). Other
    credentials are the CLI's own to use, and are not checked."""
    for switch in PROVIDER_SWITCHES:
        if env.get(switch, "").strip().lower() in ("1", "true", "yes", "on"):
            return Check("api", SKIP, f"not checked: {switch} is set, the cloud provider's credentials are its own")
    key, token = env.get("ANTHROPIC_API_KEY", "").strip(), env.get("ANTHROPIC_AUTH_TOKEN", "").strip()
    if not (key or token):
        credentials = await probe_credentials(cli_path, env)
        if not credentials.found:
            return Check(
                "api",
                FAIL,
                f"{credentials.source}. Set ANTHROPIC_API_KEY in the server's environment, or log the CLI in as "
                "the server's user (`claude`, then /login)",
            )
        return Check(
            "api",
            SKIP,
            f"not checked: the CLI has credentials of its own ({credentials.source}), which only a turn can try",
        )
    name = "ANTHROPIC_API_KEY" if key else "ANTHROPIC_AUTH_TOKEN"
    headers = {"x-api-key": key} if key else {"Authorization": f"Bearer {token}"}
    base = (env.get("ANTHROPIC_BASE_URL") or ANTHROPIC_API).rstrip("/")
    url = f"{base}/v1/models"
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=API_TIMEOUT_S), trust_env=True) as http,
            http.get(url, headers={**headers, "anthropic-version": ANTHROPIC_VERSION}) as resp,
        ):
            body = await resp.text()
            status = resp.status
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        reason = f"no answer within {API_TIMEOUT_S:g} s" if isinstance(exc, TimeoutError) else str(exc)
        return Check("api", FAIL, f"cannot reach {url}: {reason}; check ANTHROPIC_BASE_URL, the network or the proxy")
    if status == 200:
        return Check("api", OK, f"{base} accepts {name}")
    detail = render.cut(api_message(body) or body, 120)
    if status in (401, 403):
        return Check(
            "api", FAIL, f"{base} refuses {name} ({status}: {detail}); set a valid one in the server's environment"
        )
    return Check("api", FAIL, f"{base} answered {status} to GET /v1/models ({detail}); check ANTHROPIC_BASE_URL")


def api_message(body: str) -> str | None:
    try:
        parsed = json.loads(body)
    except ValueError:
        return None
    error = parsed.get("error") if isinstance(parsed, dict) else None
    return str(error.get("message")) if isinstance(error, dict) and error.get("message") else None


async def check_database_url(url: str) -> Check:
    """A PostgreSQL database: reachable, writable, with every migration of this version."""
    where = redacted(url)
    try:
        state = await inspect_url(url)
    except DatabaseUnavailable as exc:
        return Check("database", FAIL, f"{exc}; check CLAUDE_SERVER_DB, the server and the login")
    return schema_check(where, state)


async def check_database(path: Path) -> Check:
    """The database: there or creatable, writable, with every migration of this version."""
    if not await asyncio.to_thread(path.exists):
        problem = await asyncio.to_thread(writable_dir, path.parent)
        if problem:
            return Check("database", FAIL, f"{path} cannot be created: {problem}; give another --db or --data-dir")
        return Check("database", OK, f"{path} does not exist yet; the server creates it at start")
    try:
        state = await inspect(path)
    except (sqlite3.Error, OSError) as exc:
        return Check("database", FAIL, f"{path} cannot be read as a database: {exc}")
    return schema_check(str(path), state)


def schema_check(path: str, state: SchemaState) -> Check:
    if state.write_error:
        return Check("database", FAIL, f"{path} is not writable ({state.write_error}); fix its permissions")
    if state.unknown:
        return Check(
            "database",
            FAIL,
            f"{path} has migrations this version does not know ({', '.join(state.unknown)}): it belongs to a newer "
            "claude-server; upgrade this one",
        )
    if state.pending:
        return Check(
            "database",
            WARN,
            f"{path} lacks {len(state.pending)} migration(s) ({', '.join(state.pending)}); the server applies them "
            "when it starts",
        )
    return Check("database", OK, f"{path} is writable, all {len(state.applied)} migrations applied")


def writable_dir(path: Path) -> str | None:
    """Why nothing can be written in ``path`` (or in the folder that would hold it, when it
    does not exist yet), or None. Blocking."""
    target = path
    while not target.exists():
        if target.parent == target:
            return f"no folder of {path} exists"
        target = target.parent
    if not target.is_dir():
        return f"{target} is not a folder"
    try:
        fd, name = tempfile.mkstemp(prefix=".claude-server-doctor-", dir=target)
    except OSError as exc:
        return f"cannot write in {target}: {exc.strerror or exc}"
    os.close(fd)
    os.unlink(name)
    return None


async def check_folder(name: str, path: Path, what: str, flag: str) -> Check:
    problem = await asyncio.to_thread(writable_dir, path)
    if problem:
        return Check(name, FAIL, f"{what} {path}: {problem}; fix its permissions or give another {flag}")
    if not await asyncio.to_thread(path.exists):
        return Check(name, OK, f"{path} does not exist yet; it is created when needed")
    return Check(name, OK, f"{path} is writable")


def existing(path: Path) -> Path:
    while not path.exists() and path.parent != path:
        path = path.parent
    return path


def check_disk(paths: Mapping[str, Path]) -> list[Check]:
    """Free space on the file system of each of ``paths`` (one line per file system)."""
    checks: list[Check] = []
    seen: set[int] = set()
    for what, path in paths.items():
        where = existing(path)
        try:
            device = where.stat().st_dev
            usage = shutil.disk_usage(where)
        except OSError as exc:
            checks.append(Check("disk", FAIL, f"cannot see the free space of {where}: {exc}"))
            continue
        if device in seen:
            continue
        seen.add(device)
        free = f"{gib(usage.free)} free of {gib(usage.total)} for the {what} ({where})"
        if usage.free < DISK_FAIL_BYTES:
            checks.append(Check("disk", FAIL, f"{free}: below {mib(DISK_FAIL_BYTES)}, writes will fail; free some"))
        elif usage.free < DISK_WARN_BYTES:
            checks.append(Check("disk", WARN, f"{free}: below {gib(DISK_WARN_BYTES)}; free some"))
        else:
            checks.append(Check("disk", OK, free))
    return checks


def gib(n: int) -> str:
    return f"{n / 1024**3:.1f} GiB"


def mib(n: int) -> str:
    return f"{n / 1024**2:.0f} MiB"


def meminfo(text: str) -> dict[str, int]:
    """Bytes by field of /proc/meminfo."""
    out = {}
    for line in text.splitlines():
        name, _, rest = line.partition(":")
        parts = rest.split()
        if parts and parts[0].isdigit():
            out[name] = int(parts[0]) * (1024 if parts[1:] == ["kB"] else 1)
    return out


def check_memory(settings: Settings, info: Mapping[str, int] | None) -> Check:
    """The machine's memory against the CLIs the settings allow at once: running ones
    (max_concurrent) and idle warm ones (max_warm, unless warm CLIs are off)."""
    warm = settings.max_warm if settings.warm_idle_timeout_s > 0 else 0
    clis = settings.max_concurrent + warm
    need = clis * CLI_FOOTPRINT_BYTES
    if not info or "MemTotal" not in info:
        return Check("memory", SKIP, "not checked: no /proc/meminfo on this system")
    total, available = info["MemTotal"], info.get("MemAvailable", info["MemTotal"])
    counted = f"{settings.max_concurrent} running" + (f" + {warm} warm" if warm else "")
    summary = f"{clis} CLIs ({counted}) x {CLI_FOOTPRINT_BYTES // 10**6} MB = {need / 10**9:.1f} GB"
    room = f"{total / 10**9:.1f} GB in all, {available / 10**9:.1f} GB available"
    advice = "lower --max-concurrent or --max-warm, or add memory"
    if need > total:
        return Check("memory", FAIL, f"{summary}, more than the machine has ({room}); {advice}")
    if need > available:
        return Check("memory", WARN, f"{summary}, more than is available now ({room}); {advice}")
    return Check("memory", OK, f"{summary}; {room}")


def read_meminfo() -> dict[str, int] | None:
    try:
        return meminfo(Path("/proc/meminfo").read_text())
    except OSError:
        return None


async def checks(settings: Settings) -> list[Check]:
    env = build_env(settings.environ, "probe", settings.child_env)
    cli, cli_path = await check_cli(settings, env)
    found = [
        cli,
        await check_api(env, cli_path),
        await (check_database_url(settings.db_path) if settings.db_is_url else check_database(settings.db_file)),
        await check_folder("workspaces", settings.workspace_root_path, "workspace root", "--workspace-root"),
        await check_folder("config", settings.claude_config_dir, "configuration directory", "--claude-config-dir"),
    ]
    disks = {"workspaces": settings.workspace_root_path}
    if not settings.db_is_url:
        disks["database"] = settings.db_file.parent
    found += await asyncio.to_thread(check_disk, disks)
    found.append(check_memory(settings, await asyncio.to_thread(read_meminfo)))
    return found


async def doctor(settings: Settings, args: argparse.Namespace) -> int:
    found = await checks(settings)
    failed = any(c.status == FAIL for c in found)
    if args.json:
        result: dict[str, Any] = {"ok": not failed, "checks": [c.public() for c in found]}
        render.emit_json(result)
    else:
        width = max(len(c.name) for c in found)
        for c in found:
            print(f"{c.status:<4}  {c.name.ljust(width)}  {c.message}")
    return 1 if failed else 0
