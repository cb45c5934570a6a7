"""Where a turn's CLI comes from, and where it goes after the turn.

``take`` gives a turn its session's warm CLI from the pool (changed in place through the
control protocol when only the model or the permission mode differ) or starts a new one
(``--resume`` of the session); ``give_back`` puts it into the pool after a turn that leaves
it fit for the next one, or ends it. Every CLI is recorded in the store before it starts
and when it ends, so that restart recovery can find what a server that died left running.
No aiohttp here.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from typing import Any

from claude_server.broker_settings import BrokerSettings
from claude_server.claude.command import build_argv, build_env, fixed_at_start
from claude_server.claude.live import ControlError, LiveCli
from claude_server.claude.probe import CliInfo, CredentialCheck, Credentials, install_hint, probe_cli
from claude_server.claude.reaper import Reaper
from claude_server.errors import ServiceUnavailable
from claude_server.metrics import Metrics
from claude_server.outcome import StopCode
from claude_server.provider_file import provider_env
from claude_server.provider_routing import fingerprint
from claude_server.store import Store
from claude_server.turn import Turn
from claude_server.warm import WarmPool

log = logging.getLogger(__name__)

# Why a turn may be stopped by interrupting it (the CLI stays, and may stay warm); any
# other stop (timeouts, shutdown, a deleted session) ends the CLI.
INTERRUPTING = (StopCode.CANCELLED, StopCode.CLIENT_DISCONNECTED)
# The first wait before a CLI that failed to start (or crashed before printing anything) is
# started again; it doubles each time.
SPAWN_BACKOFF_S = 0.5


class CliSupply:
    def __init__(self, settings: BrokerSettings, store: Store, reaper: Reaper, metrics: Metrics, cli: CliInfo) -> None:
        self.settings = settings
        self.cli = cli
        self._credentials = CredentialCheck()
        self.store = store
        self.reaper = reaper
        self.metrics = metrics
        self.pool = WarmPool(settings.warm_idle_timeout_s, settings.max_warm, self.retire)
        metrics.watch_pool(self.pool.public)

    async def available(self) -> None:
        """503 ``cli_not_found`` unless the CLI is there (looked for again when it was not:
        installed since the server started?)."""
        if not self.cli.found:
            self.cli = await probe_cli(self.settings.claude_bin, build_env(self.settings.environ, "probe"))
        if not self.cli.found:
            raise ServiceUnavailable(
                f"Claude Code CLI is not available: {self.cli.error}. {install_hint()}", code="cli_not_found"
            )

    async def credentials(self, max_age_s: float = 0.0) -> Credentials:
        """Whether the CLI has credentials, looked at again when older than ``max_age_s``."""
        env = build_env(self.settings.environ, "probe", self.settings.child_env)
        return await self._credentials.get(self.cli.path, env, max_age_s)

    async def take(self, turn: Turn) -> LiveCli:
        """The CLI the turn runs in: its session's warm one, or a new one (a start that
        fails is tried again, with a backoff, while the turn has ``spawn_retries`` left)."""
        live = await self._warm_for(turn)
        failures = 0
        while live is None:
            try:
                live = await self._spawn(turn)
            except OSError as exc:
                if turn.spawn_retries <= 0 or turn.stop_reason is not None:
                    raise
                turn.spawn_retries -= 1
                failures += 1
                log.warning("turn %s: the CLI did not start (%s); trying again", turn.id, exc)
                await asyncio.sleep(SPAWN_BACKOFF_S * 2 ** (failures - 1))
        return live

    async def _warm_for(self, turn: Turn) -> LiveCli | None:
        options = turn.options
        if options.fork_session:
            return None
        live = self.pool.take(options.session_id)
        if live is None:
            if options.session_id is not None and self.pool.enabled:
                self.pool.count(hit=False)
            return None
        if await self.store.ran_elsewhere(options.session_id, turn.id, self.settings.server_id):
            # Another replica ran a turn of the session since: this CLI's history is behind.
            log.info("turn %s: its session ran on another replica since its warm CLI; starting anew", turn.id)
            await self.retire(live)
            self.pool.count(hit=False)
            return None
        if live.fixed != self._fixed(turn) or (live.model is not None and options.model is None):
            log.info("turn %s: options changed since the warm CLI of its session started; starting anew", turn.id)
            await self.retire(live)
            self.pool.count(hit=False)
            return None
        try:
            if options.model != live.model:
                await live.control("set_model", model=options.model)
                live.model = options.model
            if (options.permission_mode or "default") != (live.permission_mode or "default"):
                await live.control("set_permission_mode", mode=options.permission_mode or "default")
                live.permission_mode = options.permission_mode
        except ControlError as exc:
            log.info("turn %s: the warm CLI could not change in place (%s); starting anew", turn.id, exc)
            await self.retire(live)
            self.pool.count(hit=False)
            return None
        self.pool.count(hit=True)
        return live

    async def _spawn(self, turn: Turn) -> LiveCli:
        assert self.cli.path is not None
        marker = f"p-{uuid.uuid4()}"
        # Recorded before it starts: restart recovery must know of every process.
        await self.store.insert_process(marker, self.settings.server_id, turn.options.session_id)
        try:
            live = await LiveCli.spawn(
                build_argv(self.cli.path, turn.options),
                cwd=turn.workspace,
                env=self._env(turn, marker),
                marker=marker,
                reaper=self.reaper,
                fixed=self._fixed(turn),
                model=turn.options.model,
                permission_mode=turn.options.permission_mode,
            )
        except BaseException:
            await self.store.end_process(marker)
            raise
        await self.store.set_process_pid(marker, live.pid)
        return live

    @staticmethod
    def _fixed(turn: Turn) -> tuple[Any, ...]:
        """What the turn's CLI is fixed to from its start: options, and the provider."""
        return (*fixed_at_start(turn.options), fingerprint(turn.provider))

    def _env(self, turn: Turn, marker: str) -> dict[str, str]:
        """The CLI's environment: the server's (filtered), or with a provider, the provider's
        credentials and variables in place of the server's own ``ANTHROPIC_*``."""
        env = build_env(self.settings.environ, marker, self.settings.child_env)
        return provider_env(env, turn.provider) if turn.provider is not None else dict(env)

    def keeps(self, turn: Turn, live: LiveCli, closing: bool) -> bool:
        """Whether the turn's CLI stays warm for its session's next turn: it printed the
        turn's result, it still runs, and the turn did not fail (an interrupted one did not)."""
        if not self.pool.enabled or closing or not live.alive or turn.result is None:
            return False
        stop = turn.stop_reason
        if stop is not None:
            return stop.code in INTERRUPTING
        return not turn.result.is_error

    def keep(self, live: LiveCli) -> bool:
        """Into the pool; False when it does not take it (then ``retire`` it)."""
        live.attach(None)
        return self.pool.put(live)

    async def retire(self, live: LiveCli) -> None:
        """End a CLI (it exits by itself once its input closes) and record it ended."""
        live.attach(None)
        try:
            await live.end()
        finally:
            await self.store.end_process(live.marker)

    async def end_session(self, session_id: str) -> None:
        await self.pool.end(session_id)

    async def close(self) -> int:
        """End every warm CLI; how many there were."""
        count = self.pool.size
        await self.pool.close()
        return count
