"""The command line: ``claude-server [serve]`` starts the server; ``claude-server purge``
removes the sessions past their retention and ``claude-server keys`` manages API keys, both
on the server's own database and settings; ``status``, ``sessions``, ``turns``, ``stats``
and ``doctor`` are the management commands (``claude_server.manage``)."""

from __future__ import annotations

import argparse
import asyncio
import errno
import gc
import ipaddress
import json
import logging
import signal
import socket
import sys
from collections.abc import Sequence
from pathlib import Path

from aiohttp import web

from claude_server import __version__, config, connections, logs, manage
from claude_server.app import create_app
from claude_server.appkeys import RELOADER
from claude_server.instance import DatabaseInUse, InstanceLock, in_use_message
from claude_server.reload import ReloadRefused
from claude_server.sessions import Sessions
from claude_server.store import DatabaseUnavailable, KeyExists, Store
from claude_server.store.database import redacted
from claude_server.workspaces import Workspaces

# How long open streams get to finish after SIGTERM/SIGINT before aiohttp cancels them.
SHUTDOWN_TIMEOUT_S = 10.0
# Connections the kernel holds for us before accept(); aiohttp's own default.
LISTEN_BACKLOG = 128

BOOLEAN_FORMS = (
    "A true/false setting takes true/false, 1/0, yes/no or on/off (--health-auth=false); "
    "its flag alone means true. Every flag has a CLAUDE_SERVER_* variable; the flag wins."
)


class Parser(argparse.ArgumentParser):
    """argparse, with the boolean flags put in their ``--flag=value`` form first (see
    ``config.attach_boolean_values``), knowing the subcommands that may follow a bare flag."""

    commands: frozenset[str] = frozenset()

    def parse_known_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        argv = sys.argv[1:] if args is None else args
        return super().parse_known_args(config.attach_boolean_values(argv, self.commands), namespace)


def build_parser() -> argparse.ArgumentParser:
    # A usage line of its own: argparse's would list every setting, dozens of lines above
    # each one-line error.
    parser = Parser(
        prog="claude-server",
        usage="%(prog)s [OPTIONS] [serve | purge | keys | migrate | status | sessions | turns | stats | doctor ...]",
        description="Run the Claude Code CLI as an HTTP service (SSE streaming, SQLite sessions).",
        epilog=BOOLEAN_FORMS,
    )
    parser.add_argument("--version", action="version", version=f"claude-server {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", prog="claude-server")
    serve = sub.add_parser(
        "serve", help="start the server (the default)", usage="%(prog)s [OPTIONS]", epilog=BOOLEAN_FORMS
    )
    purge = sub.add_parser(
        "purge",
        help="delete the sessions unused for longer than the retention period, now",
        description="Delete every session unused for CLAUDE_SERVER_SESSION_RETENTION_DAYS and not running: "
        "its rows, its workspace (unless another session uses it) and its transcripts.",
        usage="%(prog)s [--dry-run] [OPTIONS]",
    )
    purge.add_argument("--dry-run", action="store_true", help="only list what would be deleted")
    keys = sub.add_parser("keys", help="create, list and revoke API keys")
    keys_sub = keys.add_subparsers(dest="keys_command", metavar="ACTION", required=True, prog="claude-server keys")
    create = keys_sub.add_parser("create", help="create a key; its secret is shown once")
    create.add_argument("--name", required=True, help="a unique name for the key")
    create.add_argument("--admin", action="store_true", help="an admin key (may see every key's sessions)")
    create.add_argument("--daily-budget-usd", type=float, default=None, help="this key's daily budget (UTC days)")
    listing = keys_sub.add_parser("list", help="list keys (never their secrets)")
    revoke = keys_sub.add_parser("revoke", help="revoke a key; its next request is refused")
    revoke.add_argument("key", help="the key's name or id")
    migrate = sub.add_parser(
        "migrate",
        help="copy a SQLite database into PostgreSQL",
        description="Copy every table of a SQLite database into a PostgreSQL database (migrated first), in "
        "one transaction, and verify the row count of each table.",
        usage="%(prog)s --from FILE --to URL [--replace]",
    )
    migrate.add_argument("--from", dest="source", required=True, metavar="FILE", help="the SQLite database")
    migrate.add_argument("--to", dest="target", required=True, metavar="URL", help="a postgresql:// URL")
    migrate.add_argument("--replace", action="store_true", help="empty a target that holds rows, then copy")
    manage.add_commands(sub)
    parser.commands = frozenset(sub.choices)
    for p in (parser, serve, purge):
        config.add_arguments(p)
    # The key actions take only the database location of the server's settings (--daily-budget-usd
    # is the key's own there).
    for p in (keys, create, listing, revoke):
        p.add_argument(
            "--db",
            dest="db_path",
            default=argparse.SUPPRESS,
            help="the server's database (env CLAUDE_SERVER_DB; default: <data dir>/sessions.db)",
        )
        p.add_argument(
            "--data-dir",
            dest="data_dir",
            default=argparse.SUPPRESS,
            help="the server's data directory (env CLAUDE_SERVER_DATA_DIR; default: $XDG_DATA_HOME/claude-server)",
        )
    return parser


class BindError(Exception):
    """The server cannot listen where it was told to; the message says why, in one line."""


def bind_refusal(exc: OSError, host: str, port: int) -> str:
    """One line for why ``host``:``port`` cannot be listened on."""
    if exc.errno == errno.EADDRINUSE:
        return f"port {port} is in use; pick another with --port"
    if exc.errno == errno.EACCES:
        return f"no permission to listen on port {port} (ports below 1024 need root); pick another with --port"
    if exc.errno == errno.EADDRNOTAVAIL:
        return f"cannot listen on {host}: it is not an address of this machine; check --host"
    return f"cannot listen on {host} port {port}: {exc.strerror or exc}"


def bind_sockets(host: str, port: int) -> list[socket.socket]:
    """Listening sockets on every address ``host`` names (``localhost``: 127.0.0.1 and ::1),
    bound here so that a refusal is one line before anything starts (BindError). With port 0
    every address gets the port the first one got."""
    try:
        infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise BindError(f"cannot listen on {host!r}: {exc.strerror}; check --host") from None
    sockets: list[socket.socket] = []
    seen: set[tuple[int, str]] = set()
    try:
        for family, kind, proto, _, address in infos:
            if (family, str(address[0])) in seen:
                continue
            seen.add((family, str(address[0])))
            sock = socket.socket(family, kind, proto)
            sockets.append(sock)
            # Without it a restart fails for a minute while the old connections sit in TIME_WAIT.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                # Else :: takes the IPv4 addresses too and 0.0.0.0 next to it is "in use".
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            if port == 0 and len(sockets) > 1:
                address = (address[0], sockets[0].getsockname()[1], *address[2:])
            try:
                sock.bind(address)
                # Listening now, not when aiohttp starts: with SO_REUSEADDR two servers may
                # both bind a port that nobody listens on yet.
                sock.listen(LISTEN_BACKLOG)
            except OSError as exc:
                raise BindError(bind_refusal(exc, host, port)) from None
            sock.setblocking(False)
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    return sockets


def socket_url(sock: socket.socket) -> str:
    """``http://127.0.0.1:3000``, ``http://[::1]:3000``: where a bound socket listens."""
    address, port = sock.getsockname()[:2]
    return f"http://[{address}]:{port}" if sock.family == socket.AF_INET6 else f"http://{address}:{port}"


def is_loopback(host: str) -> bool:
    """True when every address ``host`` names is a loopback address."""
    try:
        infos = socket.getaddrinfo(host, None)
    except OSError:
        return False
    return bool(infos) and all(ipaddress.ip_address(str(info[4][0]).split("%")[0]).is_loopback for info in infos)


async def keys_in_database(database: Path | str) -> bool:
    """Whether the database holds a key; opening it (a URL) raises ``DatabaseUnavailable``."""
    if isinstance(database, Path) and not await asyncio.to_thread(database.exists):
        return False
    store = await Store.open(database)
    try:
        return await store.any_key()
    finally:
        await store.close()


def check_exposure(settings: config.Settings) -> str | None:
    """Why the server must not start, or None: without any key it only listens on loopback,
    and it does not grant CORS to every origin (``*``)."""
    reachable = not (settings.insecure_no_auth or is_loopback(settings.host))
    # Any web page the user visits could then run commands as this user: there is no safe
    # way to run so, hence no flag for it (--insecure-no-auth is about who can connect).
    any_origin = "*" in settings.cors_origins
    if not (reachable or any_origin):
        return None
    if settings.api_keys or bool(asyncio.run(keys_in_database(settings.database))):
        return None
    if reachable:
        return (
            f"refusing to listen on {settings.host} without any API key: set CLAUDE_SERVER_API_KEYS or create "
            "one with `claude-server keys create`, or pass --insecure-no-auth to run open"
        )
    return (
        "refusing to start with CLAUDE_SERVER_CORS_ORIGINS=* and no API key: every web page could use the "
        "server; list your frontends' origins instead (scheme://host:port), or create a key"
    )


async def freeze_gc(_app: web.Application) -> None:
    """After start-up, move everything alive into the permanent generation: full collections
    then no longer walk the modules, classes and settings of a server that lives for days
    (they were 21-29% of the event loop's time when forwarding a flood of small lines)."""
    gc.collect()
    gc.freeze()


async def reload_on_sighup(app: web.Application) -> None:
    """``kill -HUP``: reload the configuration (see ``reload``); a refusal is logged."""

    def hup() -> None:
        try:
            app[RELOADER].reload()
        except ReloadRefused as exc:
            logging.getLogger("claude_server").error("reload refused, the configuration stays as it was: %s", exc)

    asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, hup)


def serve(settings: config.Settings) -> None:
    """Run the server until SIGTERM or SIGINT. Refusals (exposure: status 2; the address:
    status 1) are one log line, and "listening" is logged only once it is true."""
    logs.setup(settings.log_level, settings.log_format)
    log = logging.getLogger("claude_server")
    # One server per database, decided before anything else: a second server must not even
    # bind, let alone recover (kill) the first one's turns. Held until the process exits.
    try:
        if settings.db_is_url:
            asyncio.run(reach_database(settings.database, lock=not settings.replica_id))
        elif not settings.replica_id:  # named replicas share the file (see replicas)
            InstanceLock.acquire(settings.db_file, f"{settings.host}:{settings.port}")
    except (DatabaseInUse, DatabaseUnavailable) as exc:
        log.error("%s", exc)
        sys.exit(1)
    refusal = check_exposure(settings)
    if refusal:
        log.error("%s", refusal)
        sys.exit(2)
    try:
        sockets = bind_sockets(settings.host, settings.port)
    except BindError as exc:
        log.error("%s", exc)
        sys.exit(1)
    log.info("database %s, workspaces in %s", where(settings), settings.workspace_root_path)
    try:
        app = create_app(settings)
    except config.ConfigError as exc:
        log.error("%s", exc)
        sys.exit(2)
    app.on_startup.append(freeze_gc)
    app.on_startup.append(reload_on_sighup)
    urls = ", ".join(socket_url(sock) for sock in sockets)

    def listening(_banner: str) -> None:
        # run_app calls this once every site has started, after the app's startup.
        log.info("claude-server %s listening on %s", __version__, urls)

    web.run_app(
        app,
        sock=sockets,
        # Without it aiohttp does not cancel a handler whose client went away, and a silent
        # CLI would outlive its client.
        handler_cancellation=True,
        shutdown_timeout=SHUTDOWN_TIMEOUT_S,
        access_log_class=logs.AccessLogger,
        print=listening,
        # Caps and header deadlines for connections (an event loop that wraps aiohttp's protocol).
        **connections.run_app_options(settings),
    )


async def purge(settings: config.Settings, dry_run: bool) -> int:
    store = await Store.open(settings.database)
    try:
        sessions = Sessions(settings, store, Workspaces(settings.workspace_root_path), broker=None)
        rows = await sessions.purge(dry_run=dry_run)
    finally:
        await store.close()
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


async def manage_keys(settings: config.Settings, args: argparse.Namespace) -> int:
    keys = await Store.open(settings.database)
    try:
        if args.keys_command == "create":
            budget = args.daily_budget_usd
            if budget is not None and budget < 0:
                print("--daily-budget-usd must be 0 or more", file=sys.stderr)
                return 2
            try:
                row, secret = await keys.create_key(args.name, admin=args.admin, daily_budget_usd=budget)
            except KeyExists as exc:
                print(f"error: {exc}", file=sys.stderr)
                return 1
            print(json.dumps({**row.public(), "secret": secret}))
            print("Store the secret now: it is not kept and cannot be shown again.", file=sys.stderr)
        elif args.keys_command == "list":
            for row in await keys.list_keys():
                print(json.dumps(row.public()))
        else:
            revoked = await keys.revoke_key(args.key)
            if revoked is None:
                print(f"error: no key named or with id {args.key!r}", file=sys.stderr)
                return 1
            print(json.dumps(revoked.public()))
    finally:
        await keys.close()
    return 0


async def reach_database(database: Path | str, lock: bool = True) -> None:
    """Open (and migrate) the database once: ``DatabaseUnavailable`` says why it cannot be;
    with ``lock``, ``DatabaseInUse`` when another server holds it."""
    store = await Store.open(database)
    try:
        if lock and not await store.db.lock_instance():
            raise DatabaseInUse(in_use_message(store.db.where))
    finally:
        await store.close()


def where(settings: config.Settings) -> str:
    """The database for messages: its path, or its URL without the password."""
    return redacted(settings.db_path) if settings.db_is_url else str(settings.db_file)


async def copy_to_postgres(args: argparse.Namespace) -> int:
    if not args.target.startswith(("postgresql://", "postgres://")):
        print(f"error: --to must be a postgresql:// URL, not {redacted(args.target)!r}", file=sys.stderr)
        return 2
    try:
        # Here, not above: it needs the postgres extra, which a SQLite-only install lacks.
        from claude_server.store.copy import CopyRefused, copy_database
    except ModuleNotFoundError as exc:
        print(f"error: migrate needs {exc.name}: pip install 'claude-server[postgres]'", file=sys.stderr)
        return 1
    try:
        counts = await copy_database(
            Path(args.source), args.target, replace=args.replace, progress=lambda line: print(line, file=sys.stderr)
        )
    except (CopyRefused, DatabaseUnavailable) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for c in counts:
        print(json.dumps({"table": c.table, "sqlite": c.source, "postgres": c.target}))
    print(f"copied {sum(c.target for c in counts)} rows in {len(counts)} tables; every count matches", file=sys.stderr)
    return 0


def main(argv: Sequence[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        settings = config.load(args)
    except config.ConfigError as exc:
        parser.error(str(exc))
    if args.command in manage.COMMANDS:
        sys.exit(manage.main(args, settings))
    if args.command == "migrate":
        logs.setup("WARNING", "text")
        sys.exit(asyncio.run(copy_to_postgres(args)))
    try:
        if args.command == "keys":
            logs.setup("WARNING", "text")
            sys.exit(asyncio.run(manage_keys(settings, args)))
        if args.command == "purge":
            logs.setup("WARNING", "text")
            if settings.session_retention_days <= 0:
                print("retention is 0 (keep forever): nothing to purge", file=sys.stderr)
                return
            sys.exit(asyncio.run(purge(settings, args.dry_run)))
    except DatabaseUnavailable as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)
    serve(settings)
