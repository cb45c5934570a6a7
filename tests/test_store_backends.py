"""The store on both databases: the same answers from SQLite and PostgreSQL."""

from __future__ import annotations

import pytest

from claude_server.store import Store

pytestmark = pytest.mark.backends


async def test_sessions_round_trip(store: Store) -> None:
    await store.insert_session("s1", workspace_path="/w/a", workspace_name="a", first_prompt="Grüße aus Ärgern")
    row = await store.get_session("s1")
    assert row is not None and row.first_prompt == "Grüße aus Ärgern"
