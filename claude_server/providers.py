"""Which provider a turn runs on, and whether each one works: choice, health, failover.

In memory only (health is about the last few minutes; a restart may forget it). No HTTP,
no database, no broker: the caller tells ``Providers`` what happened to each turn.

A turn's life, as the caller reports it::

    config, moved = providers.for_session(session.provider_id)   # NoProvider -> 503 + Retry-After
    providers.started(config.id)
    ... run the CLI with provider_env(os.environ, config) ...
    providers.succeeded(config.id)          # a result
    providers.failed(config.id, error)      # the account or endpoint failed (API error, auth...)
    providers.finished(config.id)           # neither: cancelled, a bad request of the user's

Each provider is a circuit breaker. Healthy (closed): turns run on it; ``failure_threshold``
failures in a row make it unhealthy (open) for ``recovery_timeout_s``. After that it is
half-open: exactly one turn may try it (the one ``started`` next), and the others see it
unusable until that trial ends: a success makes it healthy again, a failure unhealthy for
another ``recovery_timeout_s``, ``finished`` frees the trial slot without a verdict. The
trial is the provider's, not a turn's: ``started`` has no turn to name, so a turn begun
before the circuit opened that ends during a trial counts as its end (a success still
proves the account works; at worst a second trial runs).

Call ``started`` right after ``choose``/``for_session``, with no ``await`` in between, so
that two turns cannot both take one half-open provider's single trial.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from claude_server.provider_file import ProviderConfig, ProviderSettings

# Kept of a failure's message: enough for "API Error: 529 overloaded...", not a whole page.
MAX_ERROR_CHARS = 500
MIN_RETRY_AFTER_S = 1.0


class NoProvider(Exception):
    """No provider can take a turn now; ``retry_after_s`` is when one may (at least 1 s)."""

    def __init__(self, message: str, retry_after_s: float) -> None:
        super().__init__(message)
        self.message = message
        self.retry_after_s = max(MIN_RETRY_AFTER_S, retry_after_s)


@dataclass
class _Health:
    consecutive_failures: int = 0
    failures_total: int = 0
    turns_total: int = 0
    last_error: str | None = None
    last_error_at: str | None = None
    # On ``clock``: set while the circuit is open (unhealthy, then half-open once passed).
    unhealthy_until: float | None = None
    trial: bool = False  # a half-open trial turn is running
    enabled: bool | None = None  # enable()/disable() over the file's ``enabled``


def _now_iso(when: datetime | None = None) -> str:
    return (when or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


class Providers:
    """The providers of the current settings with their health; ``reload`` swaps the
    settings and keeps the health of the providers that stay."""

    def __init__(
        self,
        settings: ProviderSettings,
        *,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        self.settings = settings
        self._clock = clock
        self._rng = rng or random.Random()
        self._by_id = {p.id: p for p in settings.providers}
        self._health = {p.id: _Health() for p in settings.providers}
        self._next = 0  # round robin: the index in file order to try first

    # -- looking up ----------------------------------------------------------------------

    def get(self, provider_id: str) -> ProviderConfig | None:
        return self._by_id.get(provider_id)

    def enabled(self, provider_id: str) -> bool:
        """The file's ``enabled``, unless ``enable``/``disable`` said otherwise since."""
        config = self._by_id.get(provider_id)
        if config is None:
            return False
        override = self._health[provider_id].enabled
        return config.enabled if override is None else override

    def state(self, provider_id: str) -> str:
        """``healthy``, ``unhealthy``, ``half_open`` (its recovery timeout has passed) or
        ``disabled``; ``KeyError`` for an unknown id."""
        health = self._health[provider_id]
        if not self.enabled(provider_id):
            return "disabled"
        if health.unhealthy_until is None:
            return "healthy"
        return "unhealthy" if self._clock() < health.unhealthy_until else "half_open"

    def usable(self, provider_id: str) -> bool:
        """A turn may start on it now: healthy, or half-open with no trial running."""
        state = self.state(provider_id)
        return state == "healthy" or (state == "half_open" and not self._health[provider_id].trial)

    def healthy_count(self) -> int:
        """Enabled providers whose circuit is closed (half-open ones are not counted)."""
        return sum(1 for p in self.settings.providers if self.state(p.id) == "healthy")

    # -- choosing ------------------------------------------------------------------------

    def choose(self) -> ProviderConfig:
        """A provider for a new session, among those usable now: ``weighted`` draws one at
        random in proportion to its weight, ``round_robin`` takes the next in file order
        (skipping the unusable ones). ``NoProvider`` when none is usable."""
        providers = self.settings.providers
        if self.settings.strategy == "round_robin":
            for step in range(len(providers)):
                index = (self._next + step) % len(providers)
                if self.usable(providers[index].id):
                    self._next = (index + 1) % len(providers)
                    return providers[index]
        else:
            usable = [p for p in providers if self.usable(p.id)]
            if usable:
                return self._rng.choices(usable, weights=[p.weight for p in usable])[0]
        raise self._none_usable()

    def for_session(self, bound: str | None) -> tuple[ProviderConfig, bool]:
        """The provider for a session's next turn and whether it moved: the one it is bound
        to while that one is usable; else (``failover``) another, moved. A session bound to
        a provider a reload removed moves whatever ``failover`` says: its own is gone. With
        ``failover`` off and its own unusable: ``NoProvider`` (its conversation stays with
        its account, say for a gateway that keeps state)."""
        config = self._by_id.get(bound) if bound is not None else None
        if config is None:
            return self.choose(), bound is not None
        if self.usable(config.id):
            return config, False
        if self.settings.failover:
            return self.choose(), True
        state = self.state(config.id)
        why = "is disabled" if state == "disabled" else f"is unhealthy ({self._reason(config.id)})"
        raise NoProvider(
            f"the session's provider {config.id} {why}, and failover to another provider is off",
            self._retry_after(config.id),
        )

    # -- what happened -------------------------------------------------------------------

    def started(self, provider_id: str) -> None:
        """A turn begins on it; when it is half-open, this turn is its one trial."""
        health = self._health.get(provider_id)
        if health is not None and self.state(provider_id) == "half_open":
            health.trial = True

    def succeeded(self, provider_id: str) -> None:
        """A turn on it got its result: it works (consecutive failures 0, circuit closed)."""
        health = self._health.get(provider_id)
        if health is None:
            return
        health.consecutive_failures = 0
        health.unhealthy_until = None
        health.trial = False
        health.turns_total += 1

    def failed(self, provider_id: str, error: str) -> None:
        """A turn failed because of the provider (its API, its key, its gateway). The
        ``failure_threshold``-th in a row, or the failure of a half-open trial, opens the
        circuit for ``recovery_timeout_s`` (from now, again if it was open)."""
        health = self._health.get(provider_id)
        if health is None:
            return
        health.consecutive_failures += 1
        health.failures_total += 1
        text = " ".join(error.split()) or "(no message)"
        health.last_error = text if len(text) <= MAX_ERROR_CHARS else text[: MAX_ERROR_CHARS - 1] + "…"
        health.last_error_at = _now_iso()
        if health.trial or health.consecutive_failures >= self.settings.failure_threshold:
            health.unhealthy_until = self._clock() + self.settings.recovery_timeout_s
        health.trial = False

    def finished(self, provider_id: str) -> None:
        """A turn ended with no verdict on the provider (cancelled, the user's fault): a
        half-open trial ends, and the next turn may try it."""
        health = self._health.get(provider_id)
        if health is not None:
            health.trial = False

    # -- the admin's say -----------------------------------------------------------------

    def enable(self, provider_id: str) -> bool:
        """Turns may run on it, whatever the file says, until a reload changes it."""
        return self._override(provider_id, True)

    def disable(self, provider_id: str) -> bool:
        """No new turn on it (the running ones finish), until a reload changes it."""
        return self._override(provider_id, False)

    def reset(self, provider_id: str) -> bool:
        """Forget its failures: healthy now (the totals stay, and so does enable/disable)."""
        health = self._health.get(provider_id)
        if health is None:
            return False
        health.consecutive_failures = 0
        health.unhealthy_until = None
        health.trial = False
        return True

    def _override(self, provider_id: str, enabled: bool) -> bool:
        health = self._health.get(provider_id)
        if health is None:
            return False
        health.enabled = enabled
        return True

    def reload(self, settings: ProviderSettings) -> dict[str, list[str]]:
        """Use ``settings`` from now on; which ids were added, removed or changed (any of
        their settings). A provider that stays keeps its health even when its key or
        ``env`` changed: health is about the account, and a rotated key gets its next
        chance after the recovery timeout, or at once with ``reset``. An
        ``enable``/``disable`` holds until a reload changes that provider: the file then
        speaks again. Turns still running on a removed provider may report on it: ignored."""
        old = self._by_id
        new = {p.id: p for p in settings.providers}
        added = [p.id for p in settings.providers if p.id not in old]
        removed = [p.id for p in self.settings.providers if p.id not in new]
        changed = [p.id for p in settings.providers if p.id in old and old[p.id] != p]
        health = {pid: self._health.get(pid) or _Health() for pid in new}
        for pid in changed:
            health[pid].enabled = None
        self.settings = settings
        self._by_id = new
        self._health = health
        self._next = self._next % len(settings.providers) if settings.providers else 0
        return {"added": added, "removed": removed, "changed": changed}

    # -- showing -------------------------------------------------------------------------

    def public(self) -> list[dict[str, Any]]:
        """Each provider in file order: its public settings (no secret) and its health."""
        now = self._clock()
        wall = datetime.now(UTC)
        result = []
        for config in self.settings.providers:
            health = self._health[config.id]
            state = self.state(config.id)
            until = health.unhealthy_until
            result.append(
                config.public()
                | {
                    "enabled": self.enabled(config.id),
                    "healthy": state == "healthy",
                    "state": state,
                    "consecutive_failures": health.consecutive_failures,
                    "failures_total": health.failures_total,
                    "turns_total": health.turns_total,
                    "last_error": health.last_error,
                    "last_error_at": health.last_error_at,
                    "unhealthy_until": None if until is None else _now_iso(wall + timedelta(seconds=until - now)),
                }
            )
        return result

    # -- why not -------------------------------------------------------------------------

    def _none_usable(self) -> NoProvider:
        providers = self.settings.providers
        if not providers:
            return NoProvider("no provider is configured", self.settings.recovery_timeout_s)
        enabled = [p.id for p in providers if self.enabled(p.id)]
        if not enabled:
            ids = ", ".join(p.id for p in providers)
            what = "the only provider is" if len(providers) == 1 else f"all {len(providers)} providers are"
            # Nothing changes until an admin or a reload enables one.
            return NoProvider(f"{what} disabled: {ids}", self.settings.recovery_timeout_s)
        what = "the only provider is" if len(providers) == 1 else f"all {len(providers)} providers are"
        reasons = ", ".join(f"{p.id} ({self._reason(p.id)})" for p in providers)
        return NoProvider(f"{what} unhealthy: {reasons}", min(self._retry_after(pid) for pid in enabled))

    def _reason(self, provider_id: str) -> str:
        state = self.state(provider_id)
        if state == "disabled":
            return "disabled"
        health = self._health[provider_id]
        count = health.consecutive_failures
        failures = f"{count} failure{'' if count == 1 else 's'}: {health.last_error}"
        if state == "half_open":
            return f"a trial turn is running after {failures}"
        return failures

    def _retry_after(self, provider_id: str) -> float:
        """Seconds until a turn may try it: the rest of its recovery timeout; for one whose
        trial is running, unknown (the trial may end any moment): the minimum."""
        if not self.enabled(provider_id):
            return self.settings.recovery_timeout_s
        until = self._health[provider_id].unhealthy_until
        if until is None:
            return MIN_RETRY_AFTER_S
        return max(MIN_RETRY_AFTER_S, until - self._clock())
