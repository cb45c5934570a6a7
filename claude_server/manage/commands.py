"""The management commands that read a source: ``status``, ``sessions ls|show|rm``, ``turns
show`` and ``stats``. Each prints a table (or ``--json``) and returns its exit status."""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import sys
from datetime import UTC, date, datetime, timedelta
from typing import Any

from claude_server.manage import render
from claude_server.manage.source import ManageError, Source
from claude_server.store import now_iso

RELATIVE_RE = re.compile(r"(\d+)([dhm])")
UNITS = {"d": "days", "h": "hours", "m": "minutes"}


def parse_since(raw: str, now: datetime | None = None) -> str:
    """A stamp as turns are stamped, from ``7d``/``12h``/``30m`` ago, an ISO date (its
    midnight UTC) or an ISO date-time (UTC unless it says otherwise)."""
    now = now or datetime.now(UTC)
    relative = RELATIVE_RE.fullmatch(raw.strip())
    if relative:
        return now_iso(now - timedelta(**{UNITS[relative.group(2)]: int(relative.group(1))}))
    try:
        day = date.fromisoformat(raw)
    except ValueError:
        pass
    else:
        return now_iso(datetime(day.year, day.month, day.day, tzinfo=UTC))
    try:
        moment = datetime.fromisoformat(raw)
    except ValueError:
        raise ManageError(
            f"--since must be 7d, 12h, 30m, a date (2026-11-22) or a date-time (2026-11-22T10:00:00Z), got {raw!r}",
            status=2,
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    try:
        return now_iso(moment.astimezone(UTC))
    except OverflowError:
        raise ManageError(f"--since is out of range: {raw!r}", status=2) from None


# ---- status --------------------------------------------------------------------------------


async def status(source: Source, args: argparse.Namespace) -> int:
    """A running server's /health; status 1 when it is degraded."""
    health = await source.health()
    if args.json:
        render.emit_json(health)
    else:
        print(render.fields(health_lines(health)))
    return 0 if health.get("status") == "ok" else 1


def health_lines(health: dict[str, Any]) -> list[tuple[str, str]]:
    cli = health.get("cli") or {}
    credentials = health.get("credentials") or {}
    lines = [("status", str(health.get("status"))), ("version", str(health.get("version")))]
    if "uptime_s" in health:
        lines.append(("uptime", render.duration(float(health["uptime_s"]) * 1000)))
    if cli.get("found"):
        lines.append(("cli", f"{cli.get('path')} ({cli.get('version')}; tested: {cli.get('tested_version')})"))
    else:
        lines.append(("cli", f"not usable: {cli.get('error')}"))
    if credentials:
        lines.append(("credentials", ("" if credentials.get("found") else "none: ") + str(credentials.get("source"))))
    database = health.get("database") or {}
    lines.append(("database", "ok" if database.get("ok") else "does not answer"))
    lines.append(("turns", f"{health.get('running_turns')} running of {health.get('max_concurrent')}"))
    lines.append(("queue", f"{health.get('queue_length')} waiting of {health.get('max_queue')}"))
    warm = health.get("warm")
    if isinstance(warm, dict):
        if warm.get("enabled"):
            lines.append(
                (
                    "warm pool",
                    f"{warm.get('size')} idle of {warm.get('max')}; {warm.get('hits')} hits, {warm.get('misses')} "
                    f"misses, {warm.get('evictions')} evicted, {warm.get('expired')} expired",
                )
            )
        else:
            lines.append(("warm pool", "off"))
    tasks = health.get("tasks")
    if isinstance(tasks, dict):
        lines.append(("tasks", f"{tasks.get('running')} running, {tasks.get('queued')} queued"))
    providers = health.get("providers")
    if isinstance(providers, list):
        for p in providers:
            if isinstance(p, dict):
                lines.append(("provider", f"{p.get('name') or p.get('id')}: {render.text(p.get('state') or p)}"))
    known = {"status", "version", "uptime_s", "cli", "credentials", "database", "running_turns", "max_concurrent"}
    known |= {"queue_length", "max_queue", "warm", "tasks", "providers", "problems", "warnings"}
    lines += [(name, render.text(value)) for name, value in health.items() if name not in known]
    lines += [("problem", str(p)) for p in health.get("problems") or []]
    lines += [("warning", str(w)) for w in health.get("warnings") or []]
    return lines


# ---- sessions ------------------------------------------------------------------------------


async def sessions_ls(source: Source, args: argparse.Namespace) -> int:
    sessions = await source.list_sessions(limit=args.limit, query=args.q, every_key=args.all)
    if args.json:
        render.emit_json(sessions)
        return 0
    if not sessions:
        print("no sessions" + (f" matching {args.q!r}" if args.q else ""), file=sys.stderr)
        return 0
    rows = [
        [
            s["session_id"],
            render.when(s.get("last_used_at")),
            render.count(s.get("turn_count")),
            render.cost(s.get("total_cost_usd")),
            s.get("last_turn_status") or "-",
            render.cut(s.get("title") or ""),
        ]
        for s in sessions
    ]
    print(render.table(["SESSION", "LAST USED (UTC)", "TURNS", "COST", "LAST TURN", "TITLE"], rows, frozenset({2, 3})))
    return 0


def turns_table(turns: list[dict[str, Any]]) -> str:
    rows = [
        [
            t["turn_id"],
            t.get("status") or "-",
            render.when(t.get("started_at")),
            render.duration(render.span(t.get("started_at"), t.get("finished_at"))),
            render.cost(t.get("cost_usd")),
            render.cut(render.error_text(t["error"]) if t.get("error") else (t.get("prompt") or ""), 50),
        ]
        for t in turns
    ]
    headers = ["TURN", "STATUS", "STARTED (UTC)", "DURATION", "COST", "PROMPT / ERROR"]
    return render.table(headers, rows, frozenset({3, 4}))


async def sessions_show(source: Source, args: argparse.Namespace) -> int:
    detail = await source.session(args.session_id, every_key=args.all)
    turns = await source.session_turns(args.session_id, every_key=args.all)
    if args.json:
        render.emit_json({**detail, "turns": turns})
        return 0
    running = detail.get("running_turn")
    pairs = [
        ("session", detail["session_id"]),
        ("title", render.cut(detail.get("title") or "", 200)),
        ("created", render.when(detail.get("created_at"))),
        ("last used", render.when(detail.get("last_used_at"))),
        ("turns", render.count(detail.get("turn_count"))),
        ("cost", render.cost(detail.get("total_cost_usd"))),
        ("workspace", f"{detail.get('workspace')} ({detail.get('workspace_path')})"),
        ("running turn", f"{running['turn_id']} ({running.get('status')})" if running else "-"),
    ]
    for name, label in (("forked_from", "forked from"), ("conversation_id", "conversation"), ("provider", "provider")):
        if detail.get(name):
            pairs.append((label, str(detail[name])))
    if detail.get("metadata"):
        pairs.append(("metadata", json.dumps(detail["metadata"], ensure_ascii=False)))
    print(render.fields(pairs))
    if turns:
        print()
        print(turns_table(turns))
    return 0


async def confirm(question: str) -> bool:
    """Ask on the terminal; no terminal means no (a script says --yes)."""
    if not sys.stdin.isatty():
        raise ManageError("not deleting without a terminal to confirm on: add --yes", status=2)
    answer = await asyncio.to_thread(input, f"{question} [y/N] ")
    return answer.strip().lower() in ("y", "yes")


async def sessions_rm(source: Source, args: argparse.Namespace) -> int:
    detail = await source.session(args.session_id, every_key=args.all)
    if not args.yes:
        what = f"session {detail['session_id']} ({render.cut(detail.get('title') or '', 40)!r}, "
        what += f"{detail.get('turn_count')} turn(s), workspace {detail.get('workspace')})"
        if not await confirm(f"Delete {what}?"):
            print("not deleted", file=sys.stderr)
            return 1
    note = await source.delete_session(args.session_id, every_key=args.all)
    if note:
        print(note, file=sys.stderr)
    if args.json:
        render.emit_json({"deleted": detail["session_id"]})
    else:
        print(f"deleted session {detail['session_id']}")
    return 0


# ---- turns ---------------------------------------------------------------------------------


async def turns_show(source: Source, args: argparse.Namespace) -> int:
    turn = await source.turn(args.turn_id, every_key=args.all)
    if args.json:
        if args.events:
            turn = {**turn, "events": [ev.public() async for ev in source.events(args.turn_id, every_key=args.all)]}
        render.emit_json(turn)
        return 0
    usage = turn.get("usage") or {}
    tokens = ", ".join(
        f"{render.count(v)} {k.removesuffix('_tokens').replace('_', ' ')}"
        for k, v in usage.items()
        if isinstance(v, int)
    )
    pairs = [
        ("turn", turn["turn_id"]),
        ("session", turn.get("session_id") or "-"),
        ("status", str(turn.get("status"))),
        ("started", render.when(turn.get("started_at"))),
        ("finished", render.when(turn.get("finished_at"))),
        ("duration", render.duration(render.span(turn.get("started_at"), turn.get("finished_at")))),
        ("CLI time", render.duration(turn.get("duration_ms"))),
        ("model", turn.get("model") or "-"),
        ("cost", render.cost(turn.get("cost_usd"))),
        ("tokens", tokens or "-"),
        ("CLI turns", render.count(turn.get("num_turns"))),
        ("exit code", render.text(turn.get("exit_code"))),
        ("error", render.error_text(turn.get("error"))),
        ("prompt", render.cut(turn.get("prompt") or "", 200)),
    ]
    print(render.fields(pairs))
    if args.events:
        print()
        async for ev in source.events(args.turn_id, every_key=args.all):
            seq = str(ev.seq) if ev.seq is not None else "-"
            name = f"{ev.name}: " if ev.name else ""
            print(f"{seq:>5}  {name}{ev.data.decode(errors='replace')}")
    return 0


# ---- stats ---------------------------------------------------------------------------------


async def stats(source: Source, args: argparse.Namespace) -> int:
    since = parse_since(args.since) if args.since else None
    body = await source.stats(group_by=args.by, since=since)
    if args.json:
        render.emit_json(body)
        return 0

    def row(name: str, g: dict[str, Any]) -> list[str]:
        return [
            name,
            render.count(g["turns"]),
            render.count(g["successes"]),
            render.count(g["failures"]),
            render.cost(g["cost_usd"]),
            render.count(g["input_tokens"]),
            render.count(g["output_tokens"]),
            render.duration(g["mean_duration_ms"]),
        ]

    rows = [row(str(g["group"] if g["group"] is not None else "-"), g) for g in body["groups"]]
    rows.append(row("total", body["total"]))
    headers = [args.by.upper(), "TURNS", "OK", "FAILED", "COST", "INPUT TOK", "OUTPUT TOK", "MEAN TIME"]
    print(render.table(headers, rows, frozenset(range(1, 8))))
    if body.get("from"):
        print(f"turns started since {render.when(body['from'])} UTC", file=sys.stderr)
    return 0
