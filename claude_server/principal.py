"""The key a request acts as (no aiohttp here: the broker uses it too)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Principal:
    """The key a request acts as. ``key_id`` is None when the server runs without keys."""

    key_id: str | None
    name: str
    admin: bool
    daily_budget_usd: float | None = None

    @property
    def open(self) -> bool:
        return self.key_id is None

    def can_see(self, owner: str | None, all_owners: bool = False) -> bool:
        """A key sees what it created; an admin sees everything when it asks for all."""
        return self.open or owner == self.key_id or (self.admin and all_owners)


OPEN = Principal(None, "anonymous", admin=True)
