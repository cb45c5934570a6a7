"""Typed application state. In a module of its own so that nothing imports in a circle."""

from __future__ import annotations

from aiohttp import web

from claude_server.auth import Authenticator
from claude_server.broker import Broker
from claude_server.config import Settings
from claude_server.config_files import ConfigFiles
from claude_server.metrics import Metrics
from claude_server.openapi.served import OpenApiDocument
from claude_server.providers import Providers
from claude_server.reload import Reloader
from claude_server.sessions import Sessions
from claude_server.store import Store
from claude_server.tasks import Tasks
from claude_server.workspace_files import FilePool

SETTINGS = web.AppKey("SETTINGS", Settings)
STORE = web.AppKey("STORE", Store)
BROKER = web.AppKey("BROKER", Broker)
SESSIONS = web.AppKey("SESSIONS", Sessions)
AUTHENTICATOR = web.AppKey("AUTHENTICATOR", Authenticator)
METRICS = web.AppKey("METRICS", Metrics)
CONFIG_FILES = web.AppKey("CONFIG_FILES", ConfigFiles)
FILE_POOL = web.AppKey("FILE_POOL", FilePool)
TASKS = web.AppKey("TASKS", Tasks)
PROVIDERS = web.AppKey("PROVIDERS", Providers)  # only with a providers file
RELOADER = web.AppKey("RELOADER", Reloader)
OPENAPI = web.AppKey("OPENAPI", OpenApiDocument)
