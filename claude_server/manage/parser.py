"""The management subcommands' arguments, and running one: its source opened and named on
stderr, its errors one line (status 1, or 2 for a command asked wrongly), never a traceback."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Awaitable, Callable
from typing import Any

from claude_server import config, logs
from claude_server.config import Settings
from claude_server.manage import commands
from claude_server.manage.doctor import doctor
from claude_server.manage.local import DatabaseSource
from claude_server.manage.remote import ServerSource
from claude_server.manage.source import ManageError, Source
from claude_server.stats import GROUPS

COMMANDS = frozenset({"status", "sessions", "turns", "stats", "doctor"})
# The variables a command reads for a running server (the server's own settings are
# CLAUDE_SERVER_* too, but these two are the client's).
URL_VARIABLE = "CLAUDE_SERVER_URL"
KEY_VARIABLE = "CLAUDE_SERVER_API_KEY"
SESSIONS_LIMIT = 50

Command = Callable[[Source, argparse.Namespace], Awaitable[int]]


def positive(raw: str) -> int:
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number greater than 0, got {raw!r}")
    return value


def add_source_arguments(p: argparse.ArgumentParser, *, server_only: bool = False, every_key: bool = False) -> None:
    where = p.add_argument_group("where to read (the database unless --url)")
    if not server_only:
        where.add_argument(
            "--db",
            dest="db_path",
            default=argparse.SUPPRESS,
            help="the server's database (env CLAUDE_SERVER_DB; default: <data dir>/sessions.db)",
        )
        where.add_argument(
            "--data-dir",
            dest="data_dir",
            default=argparse.SUPPRESS,
            help="the server's data directory (env CLAUDE_SERVER_DATA_DIR; default: $XDG_DATA_HOME/claude-server)",
        )
        where.add_argument(
            "--config-file",
            dest="config_file",
            default=argparse.SUPPRESS,
            help="the server's settings file, for its database location (env CLAUDE_SERVER_CONFIG_FILE)",
        )
    where.add_argument("--url", help=f"a running server instead, http://host:port (env {URL_VARIABLE})")
    where.add_argument("--api-key", help=f"the key to send to it (env {KEY_VARIABLE})")
    if every_key:
        where.add_argument(
            "--all-keys",
            dest="all",
            action="store_true",
            help="with --url and an admin key: every key's sessions and turns",
        )
    p.add_argument("--json", action="store_true", help="JSON for scripts instead of a table")


def add_commands(sub: argparse._SubParsersAction[Any]) -> None:
    """Register the management commands on the main parser's subcommands."""
    status = sub.add_parser(
        "status",
        help="a running server's health, readable (needs --url)",
        description="Show a running server's /health: CLI, credentials, database, turns, queue, warm pool, "
        "tasks. Only a running server knows these: give --url. Exit status 1 when it is degraded.",
    )
    add_source_arguments(status, server_only=True)
    status.set_defaults(manage=commands.status)

    sessions = sub.add_parser("sessions", help="list, show and delete sessions")
    actions = sessions.add_subparsers(
        dest="sessions_command", metavar="ACTION", required=True, prog="claude-server sessions"
    )
    ls = actions.add_parser("ls", help="sessions, newest first by last use")
    ls.add_argument(
        "--limit", type=positive, default=SESSIONS_LIMIT, help=f"at most this many (default {SESSIONS_LIMIT})"
    )
    ls.add_argument(
        "-q", dest="q", default=None, metavar="TEXT", help="only those whose title or first prompt has TEXT"
    )
    add_source_arguments(ls, every_key=True)
    ls.set_defaults(manage=commands.sessions_ls)
    show = actions.add_parser("show", help="a session and its turns")
    show.add_argument("session_id", metavar="ID")
    add_source_arguments(show, every_key=True)
    show.set_defaults(manage=commands.sessions_show)
    rm = actions.add_parser(
        "rm",
        help="delete a session: its rows, its workspace (unless still used) and its transcripts",
        description="Delete a session as DELETE /api/sessions/{id} does. Through --url the server stops its "
        "running turn first; on the database a session with a running turn is refused, and the workspace "
        "and transcripts are found with the server's settings (its variables, or the flags below).",
    )
    rm.add_argument("session_id", metavar="ID")
    rm.add_argument("--yes", "-y", action="store_true", help="do not ask for confirmation")
    # On the database, where the server keeps workspaces and transcripts (also from its variables).
    rm.add_argument(
        "--workspace-root",
        dest="workspace_root",
        default=argparse.SUPPRESS,
        help="the server's workspace root (env CLAUDE_SERVER_WORKSPACE_ROOT; default: <data dir>/workspace)",
    )
    rm.add_argument(
        "--claude-config-dir",
        dest="config_dir",
        default=argparse.SUPPRESS,
        help="the server's managed Claude configuration directory, for the transcripts "
        "(env CLAUDE_SERVER_CLAUDE_CONFIG_DIR; default: the CLI's own)",
    )
    add_source_arguments(rm, every_key=True)
    rm.set_defaults(manage=commands.sessions_rm)

    turns = sub.add_parser("turns", help="show a turn")
    turn_actions = turns.add_subparsers(
        dest="turns_command", metavar="ACTION", required=True, prog="claude-server turns"
    )
    turn = turn_actions.add_parser("show", help="a turn: status, times, cost, usage, error")
    turn.add_argument("turn_id", metavar="ID")
    turn.add_argument(
        "--events",
        action="store_true",
        help="and its event log (through --url a running turn is followed to its end; the database has what "
        "is recorded so far)",
    )
    add_source_arguments(turn, every_key=True)
    turn.set_defaults(manage=commands.turns_show)

    stats = sub.add_parser(
        "stats",
        help="turns, outcomes, cost, tokens and mean duration by day, model, key or provider",
        description="The numbers of GET /api/stats. On the database: every key's turns. Through --url: what the "
        "key may see (an ordinary key its own; --by key needs an admin key).",
    )
    stats.add_argument("--by", choices=GROUPS, default="day", help="how to group the turns (default: day)")
    stats.add_argument("--since", metavar="WHEN", help="turns started since: 7d, 12h, 30m, a date or a date-time")
    add_source_arguments(stats)
    stats.set_defaults(manage=commands.stats)

    check = sub.add_parser(
        "doctor",
        help="check this machine's setup: CLI, API credentials, database, folders, disk, memory",
        description="Check what the server needs, with the server's settings (the same flags and variables): "
        "the CLI and its version, the API with the configured key, the database, the workspace root and the "
        "configuration directory, free disk space, memory for the CLIs. Run it where the server runs (it has "
        "no --url). Each line is OK or what to do; exit status 1 when a check fails.",
        usage="%(prog)s [--json] [OPTIONS]",
    )
    check.add_argument("--json", action="store_true", help="JSON for scripts instead of lines")
    config.add_arguments(check)
    check.set_defaults(manage=None)


async def open_source(args: argparse.Namespace, settings: Settings) -> Source:
    url = args.url or settings.environ.get(URL_VARIABLE) or None
    if url:
        return ServerSource(url, args.api_key or settings.environ.get(KEY_VARIABLE) or None)
    if args.command == "status":
        raise ManageError(f"status asks a running server: give --url (or set {URL_VARIABLE})", status=2)
    return await DatabaseSource.open(settings)


async def run(args: argparse.Namespace, settings: Settings) -> int:
    """Run the parsed management command; its exit status (a ManageError raised through)."""
    if args.command == "doctor":
        return await doctor(settings, args)
    source = await open_source(args, settings)
    try:
        print(f"from {source.description}", file=sys.stderr)
        command: Command = args.manage
        return await command(source, args)
    finally:
        await source.close()


async def run_safely(args: argparse.Namespace, settings: Settings) -> int:
    """``run``, a ManageError printed as one line and returned as its status."""
    try:
        return await run(args, settings)
    except ManageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.status


def main(args: argparse.Namespace, settings: Settings) -> int:
    """``run_safely`` for the command line (130 for ^C)."""
    logs.setup("WARNING", "text")
    try:
        return asyncio.run(run_safely(args, settings))
    except KeyboardInterrupt:
        return 130
