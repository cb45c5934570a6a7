"""The command line: ``claude-server [serve]`` starts the server; ``claude-server purge``
removes the sessions past their retention, with the server's own settings."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from collections.abc import Sequence

from aiohttp import web

from claude_server import __version__, config, db
from claude_server.app import create_app
from claude_server.sessions import Sessions
from claude_server.store import Store
from claude_server.workspaces import Workspaces

# How long open streams get to finish after SIGTERM/SIGINT before aiohttp cancels them.
SHUTDOWN_TIMEOUT_S = 10.0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="claude-server",
        description="Run the Claude Code CLI as an HTTP service (SSE streaming, SQLite sessions).",
    )
    parser.add_argument("--version", action="version", version=f"claude-server {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    serve = sub.add_parser("serve", help="start the server (the default)")
    purge = sub.add_parser(
        "purge",
        help="delete the sessions unused for longer than the retention period, now",
        description="Delete every session unused for CLAUDE_SERVER_SESSION_RETENTION_DAYS and not running: "
        "its rows, its workspace (unless another session uses it) and its transcripts.",
    )
    purge.add_argument("--dry-run", action="store_true", help="only list what would be deleted")
    for p in (parser, serve, purge):
        config.add_arguments(p)
    return parser


def setup_logging(level: str) -> None:
    logging.basicConfig(
        level=level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # One line per request is aiohttp.access at INFO.
    logging.getLogger("aiohttp.access").setLevel(level)


def serve(settings: config.Settings) -> None:
    setup_logging(settings.log_level)
    log = logging.getLogger("claude_server")
    app = create_app(settings)
    log.info("claude-server %s listening on http://%s:%d", __version__, settings.host, settings.port)
    web.run_app(
        app,
        host=settings.host,
        port=settings.port,
        # Without it aiohttp does not cancel a handler whose client went away, and a silent
        # CLI would outlive its client.
        handler_cancellation=True,
        shutdown_timeout=SHUTDOWN_TIMEOUT_S,
        print=None,
    )


async def purge(settings: config.Settings, dry_run: bool) -> int:
    conn = await db.connect(settings.db_file)
    try:
        await db.migrate(conn)
        store = Store(conn)
        await store.setup()
        sessions = Sessions(settings, store, Workspaces(settings.workspace_root_path), broker=None)
        rows = await sessions.purge(dry_run=dry_run)
    finally:
        await conn.close()
    verb = "would delete" if dry_run else "deleted"
    for row in rows:
        print(
            json.dumps(
                {"session_id": row.session_id, "last_used_at": row.last_used_at, "workspace": row.workspace_path}
            )
        )
    days = settings.session_retention_days
    print(f"{verb} {len(rows)} session(s) unused for more than {days:g} days", file=sys.stderr)
    return 0


def main(argv: Sequence[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        settings = config.load(args)
    except config.ConfigError as exc:
        parser.error(str(exc))
    if args.command == "purge":
        setup_logging("WARNING")
        if settings.session_retention_days <= 0:
            print("retention is 0 (keep forever): nothing to purge", file=sys.stderr)
            return
        sys.exit(asyncio.run(purge(settings, args.dry_run)))
    serve(settings)
