"""Which provider a turn runs on, and what its outcome tells of that provider's health.

A new session gets a provider by the strategy; every later turn of the session uses the
same one (affinity: its prompt cache and its rate limits live there), unless that provider
is unhealthy, disabled or gone: then, with failover, the session moves to a healthy one and
the move is recorded (the transcript is local, so ``--resume`` works against any provider).
The first ``api_retry`` line of a turn counts a failure at once (health must not wait for
the CLI's retries to run out); a turn's API error at the end counts one unless its retries
did already; a result without an error counts a success. No aiohttp here.
"""

from __future__ import annotations

import hashlib
import logging
from typing import Any

from claude_server.errors import ServiceUnavailable
from claude_server.outcome import StopCode
from claude_server.provider_file import ProviderConfig
from claude_server.providers import NoProvider, Providers
from claude_server.store import SessionRow, Store
from claude_server.turn import Turn

log = logging.getLogger(__name__)

# The ends of a turn that say something about its provider (from the CLI's result).
PROVIDER_FAILURES = (
    StopCode.NOT_LOGGED_IN,
    StopCode.AUTHENTICATION_FAILED,
    StopCode.API_RATE_LIMITED,
    StopCode.API_OVERLOADED,
    StopCode.API_ERROR,
)


def fingerprint(provider: ProviderConfig | None) -> str | None:
    """What a CLI started for ``provider`` is bound to: its id and its environment (a reload
    that changes a provider's key restarts its warm CLIs)."""
    if provider is None:
        return None
    env = "\0".join(f"{k}={v}" for k, v in sorted(provider.env.items()))
    return f"{provider.id}:{hashlib.sha256(env.encode()).hexdigest()[:16]}"


class ProviderRouting:
    def __init__(self, providers: Providers | None, store: Store) -> None:
        self.providers = providers
        self.store = store

    def choose(self, turn: Turn) -> None:
        """Give the turn its provider (none without a providers file); 503 ``no_provider``
        with ``Retry-After`` when none can take it."""
        if self.providers is None:
            return
        session: SessionRow | None = turn.session
        bound = session.provider_id if session is not None else None
        try:
            provider, moved = (
                self.providers.for_session(bound) if session is not None else (self.providers.choose(), False)
            )
        except NoProvider as exc:
            raise ServiceUnavailable(
                f"No provider can take the turn now: {exc}",
                code="no_provider",
                headers={"Retry-After": str(max(1, int(exc.retry_after_s + 0.999)))},
                retry_after=max(1, int(exc.retry_after_s + 0.999)),
            ) from None
        self.providers.started(provider.id)
        turn.provider = provider
        turn.provider_moved_from = bound if moved else None

    async def bind(self, turn: Turn) -> None:
        """Record the turn's provider (after its row exists), and a session's move."""
        provider = turn.provider
        if provider is None:
            return
        await self.store.set_turn_provider(turn.id, provider.id)
        session = turn.session
        if session is not None and session.provider_id != provider.id:
            reason = "failover" if turn.provider_moved_from is not None else "bound"
            await self.store.move_provider(session.session_id, turn.id, session.provider_id, provider.id, reason)
            log.info(
                "session %s moves from provider %s to %s (%s)",
                session.session_id,
                session.provider_id,
                provider.id,
                reason,
            )

    async def session_recorded(self, turn: Turn, session_id: str) -> None:
        """A new session (or a fork) is bound to the provider its first turn ran on."""
        if turn.provider is not None:
            await self.store.bind_provider(session_id, turn.provider.id)

    def api_retry(self, turn: Turn, obj: dict[str, Any]) -> None:
        """The CLI retries a failed API request: count it against the provider now, once a turn."""
        if self.providers is None or turn.provider is None or turn.provider_failed:
            return
        turn.provider_failed = True
        status, error = obj.get("error_status"), obj.get("error")
        what = f"API request failed ({status or 'no answer'}: {error or 'unknown'}); the CLI retries"
        self.providers.failed(turn.provider.id, what)

    def ended(self, turn: Turn) -> None:
        """What the turn's end says of its provider."""
        if self.providers is None or turn.provider is None:
            return
        provider_id = turn.provider.id
        result, error = turn.result, turn.error
        if error is not None and error.code in PROVIDER_FAILURES:
            if not turn.provider_failed:
                self.providers.failed(provider_id, error.message)
            else:
                self.providers.finished(provider_id)
        elif result is not None and not result.is_error:
            self.providers.succeeded(provider_id)
        else:
            self.providers.finished(provider_id)
