"""The command line: ``claude-server [serve]`` starts the server."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from aiohttp import web

from claude_server import __version__, config
from claude_server.app import create_app

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
    for p in (parser, serve):
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


def main(argv: Sequence[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        settings = config.load(args)
    except config.ConfigError as exc:
        parser.error(str(exc))
    serve(settings)
