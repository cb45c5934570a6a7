"""The gate: whether a turn may start, and when. One call, ``admit``, checks the operator's
permission policy, the key's daily budget and rate limit, and takes a slot or a place in
the queue; it either gives the turn its ticket or raises the error the client hears.
Budgets and rate limits are counted in the database (every replica sees the same); slots
and the queue are this server's. No aiohttp here."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from claude_server.admission import Admission
from claude_server.claude.command import TurnOptions
from claude_server.config import Settings
from claude_server.errors import Forbidden, TooManyRequests
from claude_server.outcome import TurnStatus
from claude_server.principal import Principal
from claude_server.rate_limit import RateLimiter
from claude_server.store import Store, now_iso
from claude_server.turn import Turn

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GateSettings:
    max_concurrent: int = 4
    max_queue: int = 100
    queue_timeout_s: float = 60.0
    rate_limit_per_min: int = 0
    allow_skip_permissions: bool = True
    permission_modes: tuple[str, ...] = ()

    @classmethod
    def of(cls, settings: Settings) -> GateSettings:
        return cls(
            max_concurrent=settings.max_concurrent,
            max_queue=settings.max_queue,
            queue_timeout_s=settings.queue_timeout_s,
            rate_limit_per_min=settings.rate_limit_per_min,
            allow_skip_permissions=settings.allow_skip_permissions,
            permission_modes=settings.permission_modes,
        )


class NoSpareSlot(Exception):
    """Background work may not start now: every slot is taken or a turn waits for one."""


def seconds_to_utc_midnight(now: datetime | None = None) -> float:
    now = now or datetime.now(UTC)
    tomorrow = (now + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    return (tomorrow - now).total_seconds()


class Gate:
    def __init__(self, settings: GateSettings, store: Store) -> None:
        self.settings = settings
        self.store = store
        self.admission: Admission[Turn] = Admission(settings.max_concurrent, settings.max_queue, Turn.set_position)
        self.rate_limiter = RateLimiter(settings.rate_limit_per_min, store)

    def check_policy(self, options: TurnOptions) -> None:
        """The operator's permission policy; 403 naming the setting that refuses the request."""
        bypass = options.skip_permissions or options.permission_mode == "bypassPermissions"
        if bypass and not self.settings.allow_skip_permissions:
            what = "dangerously-skip-permissions" if options.skip_permissions else "permission_mode bypassPermissions"
            raise Forbidden(
                f"{what} is not allowed on this server (CLAUDE_SERVER_ALLOW_SKIP_PERMISSIONS=false)",
                code="policy_refused",
            )
        mode = options.permission_mode
        allowed = self.settings.permission_modes
        if mode is not None and allowed and mode not in allowed:
            raise Forbidden(
                f"permission_mode {mode} is not allowed on this server "
                f"(CLAUDE_SERVER_PERMISSION_MODES={','.join(allowed)})",
                code="policy_refused",
            )

    async def _check_budget(self, principal: Principal) -> None:
        budget = principal.daily_budget_usd
        if not budget:
            return
        today = now_iso(datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0))
        spent = await self.store.spent_since(principal.key_id, today)
        if spent >= budget:
            raise TooManyRequests(
                f"Key {principal.name} reached its daily budget of ${budget:g} (spent ${spent:.4f} today, "
                "UTC); it resets at 00:00 UTC",
                retry_after=seconds_to_utc_midnight(),
                code="budget_exceeded",
            )

    async def admit(self, turn: Turn, ready: Callable[[], bool] = lambda: True, background: bool = False) -> bool:
        """Give ``turn`` its ticket (a slot now, or a place in the queue), or raise: 403 for
        the policy, 429 for the budget, the rate limit or a full queue. ``ready`` runs after
        the last await, so checks that must not race (is the session busy?) raise there; a
        rate token taken before it is then given back. When it returns False the turn is to
        wait for its session first: it gets no ticket now (False), and ``enter`` gives it one
        when its session is free. A ``background`` turn (a task, rate-limited when it was
        submitted) takes a spare slot or raises ``NoSpareSlot``."""
        self.check_policy(turn.options)
        await self._check_budget(turn.principal)
        principal = turn.principal
        wait = 0.0 if background else await self.rate_limiter.take(principal.key_id or "")
        turn.rate_taken = not background and wait == 0.0 and self.rate_limiter.on
        try:
            now = ready()
            if background:
                ticket = self.admission.spare(turn)
                if ticket is None:
                    raise NoSpareSlot()
                turn.ticket, turn.status = ticket, TurnStatus.RUNNING
                return True
            if wait:
                raise self._rate_limited(principal, wait)
            self._check_room()
            if now:
                self.enter(turn)
        except BaseException:
            await self.give_back(turn)
            raise
        return now

    async def give_back(self, turn: Turn) -> None:
        """Uncount the turn from its key's rate limit: it was refused before it started."""
        if turn.rate_taken:
            turn.rate_taken = False
            try:
                await self.rate_limiter.give_back(turn.principal.key_id or "")
            except Exception as exc:  # the refusal the client hears matters more
                log.warning("turn %s: could not give back its rate-limit token: %s", turn.id, exc)

    async def take_rate(self, principal: Principal, count: int = 1) -> None:
        """Count ``count`` turns against the key's rate limit now, all or none (tasks, when
        submitted)."""
        if self.rate_limiter.on and count > self.rate_limiter.per_minute:
            raise TooManyRequests(
                f"A batch of {count} turns is more than key {principal.name} may start in a minute "
                f"({self.rate_limiter.per_minute}, CLAUDE_SERVER_RATE_LIMIT_PER_MIN); submit at most that many at once",
                retry_after=60.0,
                code="rate_limited",
            )
        wait = await self.rate_limiter.take(principal.key_id or "", count)
        if wait:
            raise self._rate_limited(principal, wait)

    def _rate_limited(self, principal: Principal, wait: float) -> TooManyRequests:
        return TooManyRequests(
            f"Key {principal.name} may start {self.rate_limiter.per_minute} turns per minute "
            "(CLAUDE_SERVER_RATE_LIMIT_PER_MIN)",
            retry_after=wait,
            code="rate_limited",
        )

    def _check_room(self) -> None:
        if self.admission.full:
            raise TooManyRequests(
                f"All {self.admission.slots} slots are busy and the queue is full "
                f"({self.admission.max_queue} waiting); retry later",
                retry_after=self.settings.queue_timeout_s,
                code="queue_full",
            )

    def enter(self, turn: Turn) -> None:
        """A slot, or a place in the queue (429 when it is full)."""
        self._check_room()
        ticket = self.admission.ticket(turn)
        assert ticket is not None  # not full, checked above with nothing awaited since
        turn.ticket = ticket
        if ticket.slot is not None:
            turn.status = TurnStatus.RUNNING

    @property
    def running(self) -> int:
        return self.admission.running

    @property
    def queued(self) -> int:
        return self.admission.queued
