"""Who is asking: API keys, the principal a request acts as, and who may see what.

Keys come from ``CLAUDE_SERVER_API_KEYS`` (operator keys, always admin) and from the
``api_keys`` table (``claude-server keys``), looked up on every request so that a created
or revoked key counts at once. A key is sent as ``Authorization: Bearer <key>`` or
``x-api-key: <key>``. Only SHA-256 hashes of secrets are kept; the operator keys' hashes are
compared in constant time, and table keys are found by their hash (an index lookup reveals
nothing about a secret whose hash is unknown).

As long as no key was ever configured (none in the environment, none ever created) the
server is open: every request acts as ``OPEN``, which sees everything. Revoking every key
does not open it again.
"""

from __future__ import annotations

import hmac

from aiohttp import web

from claude_server.config import Settings
from claude_server.errors import ApiError, Forbidden
from claude_server.principal import OPEN, Principal
from claude_server.store import Store, hash_secret

PRINCIPAL = web.RequestKey("PRINCIPAL", Principal)


class Unauthorized(ApiError):
    status = 401
    code = "unauthorized"


def presented_secret(request: web.Request) -> str | None:
    auth = request.headers.get("Authorization", "")
    scheme, _, value = auth.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    key = request.headers.get("x-api-key", "").strip()
    return key or None


class Authenticator:
    def __init__(self, settings: Settings, store: Store) -> None:
        self.settings = settings
        self.store = store
        self._operators = [hash_secret(k) for k in settings.api_keys]

    def operator_names(self) -> dict[str, str]:
        return {self._operator_id(h): f"operator-{i + 1}" for i, h in enumerate(self._operators)}

    @staticmethod
    def _operator_id(digest: str) -> str:
        return f"op_{digest[:12]}"

    async def keys_configured(self) -> bool:
        return bool(self._operators) or await self.store.any_key()

    def _budget(self, own: float | None) -> float | None:
        if own is not None:
            return own or None
        return self.settings.daily_budget_usd or None

    async def authenticate(self, secret: str | None) -> Principal:
        if not await self.keys_configured():
            return OPEN
        if secret is None:
            raise Unauthorized("An API key is required: send Authorization: Bearer <key> or x-api-key: <key>")
        digest = hash_secret(secret)
        found = None
        for index, operator in enumerate(self._operators):
            # Every operator key is compared, matching or not, in constant time.
            if hmac.compare_digest(digest, operator) and found is None:
                found = Principal(self._operator_id(operator), f"operator-{index + 1}", True, self._budget(None))
        if found is not None:
            return found
        row = await self.store.key_by_secret_hash(digest)
        if row is None:
            raise Unauthorized("The API key is not valid (unknown or revoked)")
        return Principal(row.key_id, row.name, row.admin, self._budget(row.daily_budget_usd))

    async def principal_of(self, key_id: str | None) -> Principal | None:
        """The principal a key id stands for now (a task runs as the key that submitted
        it); None when that key is gone (revoked, or no longer configured)."""
        if key_id is None:
            return OPEN if not await self.keys_configured() else None
        for index, operator in enumerate(self._operators):
            if self._operator_id(operator) == key_id:
                return Principal(key_id, f"operator-{index + 1}", True, self._budget(None))
        row = await self.store.get_key(key_id)
        if row is None or row.revoked_at is not None or row.key_id != key_id:
            return None
        return Principal(row.key_id, row.name, row.admin, self._budget(row.daily_budget_usd))


def principal(request: web.Request) -> Principal:
    """The principal the auth middleware attached to the request."""
    found = request.get(PRINCIPAL)
    return found if found is not None else OPEN


def wants_all(request: web.Request) -> bool:
    """``?all=true``: an admin asks to see every key's sessions and turns."""
    raw = request.query.get("all", "").lower()
    if raw in ("", "0", "false", "no"):
        return False
    if raw not in ("1", "true", "yes"):
        raise ApiError("all must be true or false", code="invalid_parameter", status=400, field="all")
    who = principal(request)
    if not who.admin:
        raise Forbidden("Only admin keys may ask for all=true", code="admin_only")
    return True
