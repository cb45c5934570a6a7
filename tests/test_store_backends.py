"""The store on both databases: the same answers from SQLite and PostgreSQL, the same
exceptions for the same conflicts, and the SQL that differs between them."""

from __future__ import annotations

import pytest

from claude_server.store import Conflict, ConversationTaken, KeyExists, Store
from claude_server.store.dialect import numbered_placeholders

pytestmark = pytest.mark.backends


async def new_session(store: Store, sid: str, prompt: str = "hello", **extra: str) -> None:
    await store.insert_session(sid, workspace_path=f"/w/{sid}", workspace_name=sid, first_prompt=prompt, **extra)


async def found(store: Store, query: str) -> set[str]:
    return {row.session_id for row in await store.list_sessions(limit=50, query=query)}


async def test_search_folds_unicode_case(store: Store) -> None:
    await new_session(store, "de", "Ärger im Büro")
    await new_session(store, "el", "ΣΟΦΊΑ και γνώση")
    await new_session(store, "sharp", "Grüße aus der Straße")
    await new_session(store, "ascii", "plain ASCII words")
    assert await found(store, "ärger") == {"de"}
    assert await found(store, "BÜRO") == {"de"}
    assert await found(store, "σοφία") == {"el"}
    assert await found(store, "ascii") == {"ascii"}
    # The capital sharp s folds to the small one (or to "ss", on both sides) everywhere.
    assert await found(store, "GRÜẞE") == {"sharp"}
    assert await found(store, "straße") == {"sharp"}
    assert await found(store, "nowhere") == set()


async def test_search_of_ss_for_sharp_s_follows_the_fold(store: Store) -> None:
    """``str.casefold`` (SQLite) and PostgreSQL 18's ``casefold()`` fold ß to ss; ``lower()``
    (PostgreSQL before 18) keeps it, so "STRASSE" finds "Straße" only with a full fold."""
    await new_session(store, "sharp", "Straße")
    full_fold = store.db.dialect.name == "sqlite" or "casefold(" in store.db.dialect.icontains("x")
    assert await found(store, "STRASSE") == ({"sharp"} if full_fold else set())


async def test_a_taken_key_name_is_key_exists(store: Store) -> None:
    await store.create_key("ops", admin=True, daily_budget_usd=None)
    with pytest.raises(KeyExists):
        await store.create_key("ops", admin=False, daily_budget_usd=1.5)
    assert [k.name for k in await store.list_keys()] == ["ops"]


async def test_a_taken_conversation_is_conversation_taken(store: Store) -> None:
    await new_session(store, "a", conversation_id="conv")
    with pytest.raises(ConversationTaken):
        await new_session(store, "b", conversation_id="conv")
    await new_session(store, "c")
    with pytest.raises(ConversationTaken):
        await store.bind_conversation("c", "conv")
    assert (await store.find_conversation("conv", None)).session_id == "a"  # type: ignore[union-attr]


async def test_a_conflict_in_a_transaction_rolls_it_back(store: Store) -> None:
    await new_session(store, "a")
    with pytest.raises(Conflict):
        async with store.db.transaction() as tx:
            await tx.execute("UPDATE sessions SET title = ? WHERE session_id = ?", ("changed", "a"))
            await tx.execute(
                "INSERT INTO sessions (session_id, workspace_path, workspace_name, created_at, last_used_at) "
                "VALUES (?, ?, ?, ?, ?)",
                ("a", "/w", "w", "2026-01-01T00:00:00.000Z", "2026-01-01T00:00:00.000Z"),
            )
    row = await store.get_session("a")
    assert row is not None and row.title is None


async def test_rowcounts(store: Store) -> None:
    for sid in ("a", "b", "c"):
        await new_session(store, sid)
    assert await store.db.execute("UPDATE sessions SET title = ? WHERE session_id != ?", ("t", "a")) == 2
    assert await store.db.execute("DELETE FROM sessions WHERE session_id = ?", ("nope",)) == 0
    assert await store.delete_session("a") is True
    assert await store.delete_session("a") is False


async def test_events_keep_their_bytes_and_a_repeated_chunk_is_ignored(store: Store) -> None:
    await store.insert_turn("t1", session_id=None, prompt="p", options={}, workspace_path="/w", detach=False)
    lines = [b'{"a": 1}', '{"b": "\u00e4\u2603"}'.encode(), b"\xff\x00raw"]
    chunk = ("t1", 1, 3, '{"3": "error"}', b"\n".join(lines))
    await store.insert_chunks([chunk])
    await store.insert_chunks([chunk, ("t1", 4, 4, None, b"last")])
    events = await store.events("t1")
    assert [(e.seq, e.name, e.data) for e in events] == [
        (1, None, lines[0]),
        (2, None, lines[1]),
        (3, "error", lines[2]),
        (4, None, b"last"),
    ]
    assert [e.seq for e in await store.events("t1", after=2**70)] == []


async def test_stats_sum_tokens_from_json_as_integers(store: Store) -> None:
    for n, (model, status) in enumerate([("opus", "succeeded"), ("opus", "failed"), ("haiku", "succeeded")]):
        turn = f"t{n}"
        await store.insert_turn(turn, session_id=None, prompt="p", options={}, workspace_path="/w", detach=False)
        await store.finish_turn(
            turn,
            status=status,
            exit_code=0,
            cost_usd=0.25,
            session_cost_usd=0.25,
            usage={"input_tokens": 10 + n, "output_tokens": 3},
            num_turns=1,
            error=None,
            last_seq=1,
            model=model,
            duration_ms=100.0 * (n + 1),
        )
    rows = await store.stats(since=None, until=None, group_by="model", owner=None, all_owners=True)
    assert rows == [
        {
            "group": "haiku",
            "turns": 1,
            "successes": 1,
            "failures": 0,
            "cost_usd": 0.25,
            "input_tokens": 12,
            "output_tokens": 3,
            "mean_duration_ms": 300.0,
        },
        {
            "group": "opus",
            "turns": 2,
            "successes": 1,
            "failures": 1,
            "cost_usd": 0.5,
            "input_tokens": 21,
            "output_tokens": 6,
            "mean_duration_ms": 150.0,
        },
    ]
    assert all(type(r["input_tokens"]) is int and type(r["turns"]) is int for r in rows)


async def test_deliveries_of_one_moment_keep_their_order(store: Store) -> None:
    for n in range(5):
        await store.insert_delivery(f"d{9 - n}", "task", "http://x", None, "{}", 100.0)
    assert [d.delivery_id for d in await store.pending_deliveries()] == [f"d{9 - n}" for n in range(5)]
    assert await store.record_attempt("d9", 1, 500, "boom", 1.0, 200.0, "pending")
    assert await store.record_attempt("d9", 1, 200, None, 2.0, None, "delivered")
    tries = (await store.deliveries_of("task"))[0]["tries"]
    assert [(t["attempt"], t["status_code"]) for t in tries] == [(1, 200)]


async def test_text_with_nul_is_stored(store: Store) -> None:
    """PostgreSQL's text has no NUL: it is stored as U+FFFD there, as it is on SQLite."""
    await new_session(store, "a", "x\x00y")
    await store.update_session("a", {"title": "t\x00", "metadata": {"k": "\x00"}})
    row = await store.get_session("a")
    assert row is not None and row.metadata == {"k": "\x00"}
    nul = "\x00" if store.db.dialect.name == "sqlite" else "\ufffd"
    assert (row.first_prompt, row.title) == (f"x{nul}y", f"t{nul}")
    assert await found(store, "x\x00") == {"a"}


async def test_ping(store: Store) -> None:
    assert await store.ping() is True


def test_placeholders_are_numbered_outside_quoted_text() -> None:
    assert numbered_placeholders("SELECT '?', \"a?\" FROM t WHERE a = ? AND b IN (?, ?)") == (
        "SELECT '?', \"a?\" FROM t WHERE a = $1 AND b IN ($2, $3)"
    )
    assert numbered_placeholders("SELECT 1") == "SELECT 1"
