"""Reloading configuration while the server runs (``SIGHUP``, ``POST /api/admin/reload``).

The providers file and the settings file (``--config-file``) are read again; a file with an
error is refused as a whole, with the reason, and nothing of either is applied. Of the
settings, those in ``RELOADABLE`` take effect at once (limits and timeouts for turns that
start from now on); any other that changed is listed as needing a restart. A setting a flag
or a variable gave is not the file's to change. Running turns are never touched: a provider
a reload removes keeps serving the turns that run on it, and its sessions fail over on
their next turn. No aiohttp here.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from claude_server import config
from claude_server.broker import Broker
from claude_server.broker_settings import BrokerSettings
from claude_server.deliveries import Deliverer
from claude_server.gate import GateSettings
from claude_server.logs import set_level
from claude_server.provider_file import ProviderFileError, ProviderSettings, load_providers
from claude_server.providers import Providers
from claude_server.tasks import Tasks, TaskSettings

log = logging.getLogger(__name__)

# What may change while the server runs: read at the time of use, or applied by an applier.
RELOADABLE = frozenset(
    {
        "log_level",
        "rate_limit_per_min",
        "daily_budget_usd",
        "max_concurrent",
        "max_queue",
        "queue_timeout_s",
        "turn_timeout_s",
        "inactivity_timeout_s",
        "permission_timeout_s",
        "warm_idle_timeout_s",
        "max_warm",
        "allow_skip_permissions",
        "permission_modes",
        "max_prompt_bytes",
        "max_tasks_queued",
        "max_batch",
        "task_retry_interrupted",
        "spawn_retries",
        "webhook_url",
        "webhook_secret",
        "webhook_timeout_s",
        "webhook_retries",
    }
)
# Shown as changed, never by value.
SECRET = frozenset({"webhook_secret", "api_keys"})
NOT_SETTINGS = frozenset({"environ", "pinned"})


class ReloadRefused(Exception):
    """The new configuration has an error; nothing of it was applied."""


def _shown(name: str, value: Any) -> Any:
    if name in SECRET:
        return "(secret)"
    return list(value) if isinstance(value, tuple) else value


class Reloader:
    def __init__(
        self,
        settings: config.Settings,
        providers: Providers | None,
        appliers: list[Callable[[config.Settings], None]] | None = None,
    ) -> None:
        self.settings = settings
        self.providers = providers
        self.appliers = appliers if appliers is not None else []

    def reload(self) -> dict[str, Any]:
        """Apply the configuration as the files say now; what changed. Raises ReloadRefused."""
        current = self.settings
        fresh_providers: ProviderSettings | None = None
        fresh: config.Settings | None = None
        try:
            if self.providers is not None:
                fresh_providers = load_providers(Path(current.providers_file), current.environ)
            if current.config_file:
                fresh = config.load(None, {**current.environ, "CLAUDE_SERVER_CONFIG_FILE": current.config_file})
        except (ProviderFileError, config.ConfigError) as exc:
            raise ReloadRefused(str(exc)) from None
        changed: dict[str, Any] = {}
        restart: list[str] = []
        if fresh is not None:
            for f in dataclasses.fields(current):
                name = f.name
                if name in NOT_SETTINGS or name in current.pinned or name == "config_file":
                    continue
                old, new = getattr(current, name), getattr(fresh, name)
                if old == new:
                    continue
                if name in RELOADABLE:
                    changed[name] = new
                else:
                    restart.append(name)
        shown = {n: {"from": _shown(n, getattr(current, n)), "to": _shown(n, v)} for n, v in changed.items()}
        if changed:
            current.update(changed)
            for apply in self.appliers:
                apply(current)
        providers = None
        if self.providers is not None and fresh_providers is not None:
            providers = self.providers.reload(fresh_providers)
        answer = {"providers": providers, "settings": {"changed": shown, "needs_restart": sorted(restart)}}
        log.info(
            "configuration reloaded: settings changed %s, needing a restart %s, providers %s",
            sorted(changed) or "none",
            sorted(restart) or "none",
            providers,
        )
        return answer


def apply_live(settings: config.Settings, broker: Broker, tasks: Tasks, deliverer: Deliverer) -> None:
    """Hand reloaded settings to the parts that keep copies of them (routes and the key
    check read ``settings`` itself at the time of use)."""
    set_level(settings.log_level)
    gate = broker.gate
    gate.settings = GateSettings.of(settings)
    gate.rate_limiter.per_minute = settings.rate_limit_per_min
    gate.admission.resize(settings.max_concurrent, settings.max_queue)
    broker.settings = BrokerSettings.of(settings, broker.settings.server_id)
    broker.supply.settings = broker.settings
    broker.supply.pool.idle_timeout_s, broker.supply.pool.max_idle = settings.warm_idle_timeout_s, settings.max_warm
    tasks.settings = TaskSettings.of(settings)
    deliverer.timeout_s, deliverer.retries = settings.webhook_timeout_s, settings.webhook_retries
