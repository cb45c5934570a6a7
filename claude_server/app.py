"""create_app(settings): wiring only. State lives under typed AppKeys; resources open and
close in cleanup contexts (cleanup runs if and only if startup finished)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp_cors
from aiohttp import web

from claude_server import connections, origin, quiet_log
from claude_server.appkeys import (
    AUTHENTICATOR,
    BROKER,
    CONFIG_FILES,
    FILE_POOL,
    METRICS,
    OPENAPI,
    PROVIDERS,
    RELOADER,
    SESSIONS,
    SETTINGS,
    STORE,
    TASKS,
)
from claude_server.auth import Authenticator
from claude_server.broker import Broker
from claude_server.broker_settings import BrokerSettings
from claude_server.claude.command import build_env
from claude_server.claude.probe import probe_cli
from claude_server.config import ConfigError, Settings
from claude_server.config_files import ConfigFiles
from claude_server.deliveries import Deliverer
from claude_server.forwarding import forwarding_middleware
from claude_server.gate import Gate, GateSettings
from claude_server.instance import DatabaseInUse, InstanceLock, in_use_message, server_id
from claude_server.metrics import Metrics
from claude_server.middleware import auth_middleware, error_middleware, on_response_prepare, request_id_middleware
from claude_server.openapi.served import OpenApiDocument
from claude_server.provider_file import ProviderFileError, load_providers
from claude_server.providers import Providers
from claude_server.reload import Reloader, apply_live
from claude_server.routes import setup_routes
from claude_server.sessions import Sessions
from claude_server.store import Store
from claude_server.tasks import Tasks, TaskSettings
from claude_server.web.serving import site
from claude_server.workspace_files import FilePool
from claude_server.workspaces import Workspaces

log = logging.getLogger(__name__)


async def store_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    # A PostgreSQL database has no file to lock beside it; named replicas share one SQLite
    # file on one machine (their recovery spares each other's turns, see replicas).
    lock = None if settings.db_is_url or settings.replica_id else InstanceLock.acquire(settings.db_file)
    try:
        store = await Store.open(settings.database)
        # Named replicas share the database (see replicas): no lock on it.
        if not settings.replica_id and not await store.db.lock_instance():
            await store.close()
            raise DatabaseInUse(in_use_message(store.db.where))
    except BaseException:
        if lock is not None:
            lock.release()
        raise
    app[STORE] = store
    app[AUTHENTICATOR] = Authenticator(settings, store)
    yield
    await store.close()
    if lock is not None:
        lock.release()


async def broker_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    cli = await probe_cli(settings.claude_bin, build_env(settings.environ, "probe"))
    if cli.found:
        log.info("Claude Code CLI %s at %s", cli.version, cli.path)
        if cli.version_warning:
            log.warning("%s", cli.version_warning)
    else:
        log.warning("Claude Code CLI not usable: %s; /api/claude answers 503 until it is", cli.error)
    workspaces = Workspaces(settings.workspace_root_path)
    workspaces.ensure_root()
    store = app[STORE]
    broker = Broker(
        BrokerSettings.of(settings, server_id()),
        Gate(GateSettings.of(settings), store),
        store,
        workspaces,
        cli,
        app[METRICS],
        app.get(PROVIDERS),
    )
    if cli.found:
        credentials = await broker.check_credentials()
        if not credentials.found:
            log.warning("%s", credentials.source)
    await broker.open()
    app[BROKER] = broker
    app[SESSIONS] = Sessions(settings, store, workspaces, broker)
    retention = asyncio.create_task(app[SESSIONS].purge_periodically(), name="retention")
    deliverer = Deliverer(
        store,
        timeout_s=settings.webhook_timeout_s,
        retries=settings.webhook_retries,
        allow_private=settings.webhook_allow_private,
    )
    await deliverer.start()
    tasks = Tasks(broker, store, deliverer, TaskSettings.of(settings), app[AUTHENTICATOR].principal_of)
    await tasks.open()
    app[TASKS] = tasks
    app[RELOADER].appliers.append(lambda fresh: apply_live(fresh, broker, tasks, deliverer))
    yield
    retention.cancel()
    await asyncio.gather(retention, return_exceptions=True)
    await tasks.close()
    await deliverer.close()


async def file_pool_ctx(app: web.Application) -> AsyncIterator[None]:
    # The files API's own threads (why: workspace_files.FilePool).
    app[FILE_POOL] = FilePool()
    yield
    app[FILE_POOL].close()


async def on_shutdown(app: web.Application) -> None:
    # Runs after the listener closed and before aiohttp waits for handlers: ending the
    # turns here lets every open stream send its last event and finish by itself.
    if TASKS in app:
        app[TASKS].stop()
    if BROKER in app:
        await app[BROKER].shutdown()


def setup_cors(app: web.Application, routes: list[web.AbstractRoute], origins: tuple[str, ...]) -> None:
    """Grant CORS to ``origins`` on every route; with none, no route sends a CORS header (and
    ``origin_middleware`` answers every preflight)."""
    if not origins:
        return
    options = aiohttp_cors.ResourceOptions(  # type: ignore[no-untyped-call]
        allow_credentials=False,
        expose_headers="*",
        allow_headers="*",
        allow_methods="*",
        max_age=3600,
    )
    cors = aiohttp_cors.setup(app, defaults={origin: options for origin in origins})
    for route in routes:
        cors.add(route)


def create_app(settings: Settings) -> web.Application:
    # Order matters, outermost first:
    # 1. connection_middleware sees every request (a connection is busy while one runs);
    # 2. request_id_middleware, so that every answer below carries X-Request-Id;
    # 3. error_middleware renders what the next two raise, in the shape of the route's API;
    # 4. origin_middleware refuses foreign Host names and pages of other origins before
    #    anything looks at credentials or runs a handler (a preflight is answered by
    #    aiohttp_cors's handler, so one it refuses gets no grant);
    # 5. auth_middleware: who is asking;
    # 6. forwarding_middleware: a control message of a turn that runs on another replica goes there.
    app = web.Application(
        client_max_size=settings.max_body_bytes,
        middlewares=[
            connections.connection_middleware,
            request_id_middleware,
            error_middleware,
            origin.origin_middleware,
            auth_middleware,
            forwarding_middleware,
        ],
    )
    app[SETTINGS] = settings
    # Built here so that an allowed host that is no name stops the start (ConfigError).
    app[origin.ORIGIN_POLICY] = origin.OriginPolicy.of(settings)
    app[METRICS] = Metrics()
    app[OPENAPI] = OpenApiDocument()
    # The directory is resolved here, once: see ConfigFiles.
    app[CONFIG_FILES] = ConfigFiles(settings.claude_config_dir)
    providers = None
    if settings.providers_file:
        try:
            providers = Providers(load_providers(Path(settings.providers_file), settings.environ))
        except ProviderFileError as exc:
            raise ConfigError(f"CLAUDE_SERVER_PROVIDERS_FILE: {exc}") from None
        app[PROVIDERS] = providers
        app[METRICS].watch_providers(providers.public)
    app[RELOADER] = Reloader(settings, providers)
    # The web app's files, read, hashed and compressed now: a page naming a missing file stops the start.
    site()
    app.on_response_prepare.append(on_response_prepare)
    app.cleanup_ctx.append(quiet_log.bad_request_log_ctx)
    app.cleanup_ctx.append(store_ctx)
    app.cleanup_ctx.append(broker_ctx)
    app.cleanup_ctx.append(file_pool_ctx)
    app.on_shutdown.append(on_shutdown)
    setup_cors(app, setup_routes(app), settings.cors_origins)
    return app
