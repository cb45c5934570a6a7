"""The statistics of ``GET /api/stats`` and ``claude-server stats``: the store's sums per
group, the groups named for people, and the total over them."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from claude_server.store import Store

GROUPS = ("day", "model", "key", "provider")


async def report(
    store: Store,
    *,
    since: str | None,
    until: str | None,
    group_by: str,
    owner: str | None,
    all_owners: bool,
    operator_names: Mapping[str, str],
) -> dict[str, Any]:
    """``{"group_by", "from", "to", "groups", "total"}`` over the finished turns started in
    [``since``, ``until``): keys by name (``operator_names``: the configured operator keys),
    turns without a key or a provider as ``(no key)`` and ``(none)``."""
    groups = await store.stats(since=since, until=until, group_by=group_by, owner=owner, all_owners=all_owners)
    if group_by == "key":
        names = {**await store.key_names(), **operator_names}
        for g in groups:
            g["group"] = names.get(g["group"], g["group"] or "(no key)")
    if group_by == "provider":  # turns from before a providers file, or without one
        for g in groups:
            g["group"] = g["group"] or "(none)"
    return {"group_by": group_by, "from": since, "to": until, "groups": groups, "total": total(groups)}


def total(groups: list[dict[str, Any]]) -> dict[str, Any]:
    turns = sum(g["turns"] for g in groups)
    durations = [(g["mean_duration_ms"], g["turns"]) for g in groups if g["mean_duration_ms"] is not None]
    weight = sum(n for _, n in durations)
    return {
        "turns": turns,
        "successes": sum(g["successes"] for g in groups),
        "failures": sum(g["failures"] for g in groups),
        "cost_usd": sum(g["cost_usd"] for g in groups),
        "input_tokens": sum(g["input_tokens"] for g in groups),
        "output_tokens": sum(g["output_tokens"] for g in groups),
        "mean_duration_ms": sum(m * n for m, n in durations) / weight if weight else None,
    }
