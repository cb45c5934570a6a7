"""Background tasks through the app, with the fake CLI: submit, order, cancel, batches,
ownership, durability across a restart, spawn retries."""

from __future__ import annotations

import asyncio
import json
from dataclasses import replace
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from claude_server.app import create_app
from claude_server.config import Settings
from tests.helpers import JSON, data_events, parse_sse, post, run_turn, session_of, texts
from tests.test_security import OPERATOR, bearer, create_key

pytestmark = pytest.mark.backends

FINAL = ("succeeded", "failed", "cancelled", "interrupted")


async def submit(client: TestClient, body: dict[str, Any], headers: dict[str, str] | None = None) -> dict[str, Any]:
    resp = await client.post("/api/tasks", data=json.dumps(body), headers={**JSON, **(headers or {})})
    assert resp.status == 202, await resp.text()
    assert resp.headers["Location"].startswith("/api/tasks/task-")
    return dict(await resp.json())


async def refused(client: TestClient, body: Any, path: str = "/api/tasks") -> tuple[int, dict[str, Any]]:
    resp = await client.post(path, data=json.dumps(body), headers=JSON)
    return resp.status, (await resp.json())["error"]


async def get_task(client: TestClient, task_id: str, headers: dict[str, str] | None = None) -> dict[str, Any]:
    resp = await client.get(f"/api/tasks/{task_id}", headers=headers)
    assert resp.status == 200, await resp.text()
    return dict(await resp.json())


async def until_ended(client: TestClient, task_id: str, timeout: float = 20.0) -> dict[str, Any]:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        task = await get_task(client, task_id)
        if task["status"] in FINAL:
            return task
        assert asyncio.get_running_loop().time() < deadline, task
        await asyncio.sleep(0.05)


async def until_status(client: TestClient, task_id: str, status: str) -> dict[str, Any]:
    for _ in range(400):
        task = await get_task(client, task_id)
        if task["status"] == status:
            return task
        await asyncio.sleep(0.05)
    raise AssertionError(f"task {task_id} never became {status}: {task}")


@pytest.fixture
async def one_slot(aiohttp_client, settings: Settings) -> TestClient:  # type: ignore[no-untyped-def]
    return await aiohttp_client(create_app(replace(settings, max_concurrent=1)))


# ---- a task's life -----------------------------------------------------------------------


async def test_a_task_is_queued_at_once_runs_and_keeps_its_result(client: TestClient) -> None:
    accepted = await submit(client, {"prompt": "background work", "metadata": {"ticket": "T-1", "n": [1, 2]}})
    assert accepted["status"] == "queued" and accepted["task_id"].startswith("task-")
    assert set(accepted) == {"task_id", "status", "session_id", "turn_id", "position"}
    task = await until_ended(client, accepted["task_id"])
    assert task["status"] == "succeeded", task
    assert task["result"] == "fake answer 1: background work"
    assert task["cost_usd"] == pytest.approx(0.001) and task["usage"]["output_tokens"] > 0
    assert task["metadata"] == {"ticket": "T-1", "n": [1, 2]} and task["priority"] == 5
    assert task["session_id"] and task["turn_id"] and task["attempts"] == 1
    assert task["created_at"] <= task["started_at"] <= task["ended_at"] and task["error"] is None
    assert task["deliveries"] == [] and task["position"] is None
    # Its turn is an ordinary turn: replayable, and its session resumable.
    events = await client.get(f"/api/turns/{task['turn_id']}/events")
    assert "fake answer 1: background work" in await events.text()
    _, again = await run_turn(client, {"prompt": "and then", "session_id": task["session_id"]})
    assert texts(again) == ["fake answer 2: and then"]


async def test_a_task_on_a_session_resumes_it_and_failures_are_recorded(client: TestClient) -> None:
    _, first = await run_turn(client, {"prompt": "one"})
    sid = session_of(first)
    task = await until_ended(client, (await submit(client, {"prompt": "two", "session_id": sid}))["task_id"])
    assert task["status"] == "succeeded" and task["session_id"] == sid and task["result"] == "fake answer 2: two"
    failed = await until_ended(client, (await submit(client, {"prompt": "x @api-error=500"}))["task_id"])
    assert failed["status"] == "failed" and failed["error"]["code"] == "api_error", failed


@pytest.mark.sqlite  # validation before the store
@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"prompt": "x", "priority": 0}, "priority"),
        ({"prompt": "x", "priority": 11}, "priority"),
        ({"prompt": "x", "priority": "5"}, "priority"),
        ({"prompt": "x", "metadata": [1]}, "metadata"),
        ({"prompt": "x", "metadata": {"big": "x" * 70_000}}, "metadata"),
        ({"prompt": "x", "webhook_url": "ftp://example.com/hook"}, "webhook_url"),
        ({"prompt": "x", "webhook_url": "http://127.0.0.1:9/hook"}, "webhook_url"),
        ({"prompt": "x", "webhook_url": "http://localhost/hook"}, "webhook_url"),
        ({"prompt": "x", "webhook_secret": "s"}, "webhook_secret"),
        ({"prompt": "x", "colour": "blue"}, "colour"),
        ({"prompt": " "}, "prompt"),
        ({"priority": 3}, "prompt"),
    ],
)
async def test_a_bad_task_is_a_400_naming_the_field(client: TestClient, body: dict[str, Any], field: str) -> None:
    status, error = await refused(client, body)
    assert status == 400 and error["field"] == field, error
    listed = await (await client.get("/api/tasks")).json()
    assert listed["tasks"] == []


async def test_a_task_on_an_unknown_session_is_a_404_at_once(client: TestClient) -> None:
    status, error = await refused(client, {"prompt": "x", "session_id": "no-such-session"})
    assert status == 404 and error["code"] == "session_not_found"


async def test_the_task_queue_has_a_limit(aiohttp_client, settings: Settings) -> None:  # type: ignore[no-untyped-def]
    client = await aiohttp_client(create_app(replace(settings, max_concurrent=1, max_tasks_queued=2)))
    await submit(client, {"prompt": "@sleep=2 long"})
    for _ in range(60):  # the first one is running, out of the queue
        if (await (await client.get("/health")).json())["tasks"] == {"queued": 0, "running": 1}:
            break
        await asyncio.sleep(0.05)
    await submit(client, {"prompt": "a"})
    await submit(client, {"prompt": "b"})
    status, error = await refused(client, {"prompt": "c"})
    assert status == 429 and error["code"] == "task_queue_full"
    metrics = await (await client.get("/metrics")).text()
    assert "claude_server_tasks_queued 2.0" in metrics and "claude_server_tasks_running 1.0" in metrics


# ---- order -----------------------------------------------------------------------------------


async def test_queued_tasks_start_by_priority_then_age(one_slot: TestClient) -> None:
    blocker = await submit(one_slot, {"prompt": "@sleep=1 first"})
    await until_status(one_slot, blocker["task_id"], "running")
    ids = {}
    for name, priority in (("low", 1), ("old-mid", 5), ("high", 10), ("new-mid", 5)):
        ids[name] = (await submit(one_slot, {"prompt": name, "priority": priority}))["task_id"]
    positions = {name: (await get_task(one_slot, tid))["position"] for name, tid in ids.items()}
    assert positions == {"high": 1, "old-mid": 2, "new-mid": 3, "low": 4}
    done = {name: await until_ended(one_slot, tid) for name, tid in ids.items()}
    order = sorted(done, key=lambda name: done[name]["started_at"])
    assert order == ["high", "old-mid", "new-mid", "low"], done


async def test_an_interactive_turn_overtakes_queued_tasks(one_slot: TestClient) -> None:
    blocker = await submit(one_slot, {"prompt": "@sleep=1 first"})
    await until_status(one_slot, blocker["task_id"], "running")
    queued = [(await submit(one_slot, {"prompt": f"task {n}", "priority": 10}))["task_id"] for n in range(2)]
    resp = await post(one_slot, {"prompt": "me first", "stream": False})
    assert resp.status == 200, await resp.text()
    turn = await (await one_slot.get(f"/api/turns/{(await resp.json())['turn_id']}")).json()
    for task_id in queued:
        task = await until_ended(one_slot, task_id)
        assert task["started_at"] >= turn["finished_at"], (task, turn)


async def test_tasks_on_one_session_run_in_submission_order_and_wait_for_a_busy_session(
    aiohttp_client,  # type: ignore[no-untyped-def]
    settings: Settings,
) -> None:
    client = await aiohttp_client(create_app(replace(settings, max_concurrent=3)))
    _, first = await run_turn(client, {"prompt": "one"})
    sid = session_of(first)
    busy = await post(client, {"prompt": "@sleep=1 busy", "session_id": sid})
    a = (await submit(client, {"prompt": "@sleep=0.3 a", "session_id": sid, "priority": 1}))["task_id"]
    b = (await submit(client, {"prompt": "b", "session_id": sid, "priority": 10}))["task_id"]
    assert (await get_task(client, a))["status"] == "queued"  # waits for the session: no 409
    texts_busy = texts(parse_sse(await busy.text()))
    assert texts_busy == ["fake answer 2: @sleep=1 busy"]
    ta, tb = await until_ended(client, a), await until_ended(client, b)
    assert ta["status"] == tb["status"] == "succeeded"
    assert ta["result"] == "fake answer 3: @sleep=0.3 a" and tb["result"] == "fake answer 4: b"
    assert ta["ended_at"] <= tb["started_at"]


# ---- cancel, delete ------------------------------------------------------------------------


async def test_cancel_a_queued_task_and_a_running_one(one_slot: TestClient) -> None:
    running = (await submit(one_slot, {"prompt": "@sleep=30 long"}))["task_id"]
    await until_status(one_slot, running, "running")
    queued = (await submit(one_slot, {"prompt": "never"}))["task_id"]
    resp = await one_slot.post(f"/api/tasks/{queued}/cancel")
    assert resp.status == 200 and (await resp.json())["status"] == "cancelled"
    loop = asyncio.get_running_loop()
    started = loop.time()
    resp = await one_slot.post(f"/api/tasks/{running}/cancel")
    assert resp.status == 200, await resp.text()
    assert loop.time() - started < 5
    ended = await until_ended(one_slot, running)
    assert ended["status"] == "cancelled"
    never = await get_task(one_slot, queued)
    assert never["status"] == "cancelled" and never["turn_id"] is None and never["started_at"] is None
    again = await one_slot.post(f"/api/tasks/{queued}/cancel")
    assert again.status == 409 and (await again.json())["error"]["code"] == "task_finished"


async def test_delete_forgets_a_finished_task_only(one_slot: TestClient) -> None:
    running = (await submit(one_slot, {"prompt": "@sleep=30 long"}))["task_id"]
    await until_status(one_slot, running, "running")
    resp = await one_slot.delete(f"/api/tasks/{running}")
    assert resp.status == 409 and (await resp.json())["error"]["code"] == "task_not_finished"
    await one_slot.post(f"/api/tasks/{running}/cancel")
    await until_ended(one_slot, running)
    assert (await one_slot.delete(f"/api/tasks/{running}")).status == 200
    gone = await one_slot.get(f"/api/tasks/{running}")
    assert gone.status == 404 and (await gone.json())["error"]["code"] == "task_not_found"


# ---- lists, batches, ownership ------------------------------------------------------------


async def test_list_filters_and_pages(client: TestClient) -> None:
    ids = [(await submit(client, {"prompt": f"n{n}", "priority": 1 + n % 2}))["task_id"] for n in range(5)]
    for task_id in ids:
        await until_ended(client, task_id)
    page = await (await client.get("/api/tasks?limit=2")).json()
    assert [t["task_id"] for t in page["tasks"]] == ids[::-1][:2] and page["next_cursor"]
    rest = await (await client.get(f"/api/tasks?limit=10&cursor={page['next_cursor']}")).json()
    assert [t["task_id"] for t in rest["tasks"]] == ids[::-1][2:] and rest["next_cursor"] is None
    high = await (await client.get("/api/tasks?priority=2")).json()
    assert [t["task_id"] for t in high["tasks"]] == [ids[3], ids[1]]
    assert len((await (await client.get("/api/tasks?status=succeeded")).json())["tasks"]) == 5
    assert (await (await client.get("/api/tasks?status=queued")).json())["tasks"] == []
    for query, field in (("status=done", "status"), ("priority=11", "priority"), ("cursor=zzz", "cursor")):
        resp = await client.get(f"/api/tasks?{query}")
        assert resp.status == 400 and (await resp.json())["error"]["field"] == field


async def test_a_batch_is_queued_whole_or_not_at_all(client: TestClient) -> None:
    bad = {"tasks": [{"prompt": "a"}, {"prompt": "b"}, {"prompt": "c", "priority": 99}]}
    status, error = await refused(client, bad, "/api/tasks/batch")
    assert status == 400 and error["field"] == "tasks[2].priority" and error["message"].startswith("tasks[2]: ")
    assert (await (await client.get("/api/tasks")).json())["tasks"] == []
    for body, field in (({"tasks": []}, "tasks"), ({"tasks": [{"prompt": "a"}] * 11}, "tasks"), ({"x": 1}, "x")):
        status, error = await refused(client, body, "/api/tasks/batch")
        assert status == 400 and error["field"] == field, error
    status, error = await refused(client, {"tasks": ["just a string"]}, "/api/tasks/batch")
    assert status == 400 and error["field"] == "tasks[0]", error
    resp = await client.post(
        "/api/tasks/batch", data=json.dumps({"tasks": [{"prompt": "a"}, {"prompt": "b"}]}), headers=JSON
    )
    assert resp.status == 202, await resp.text()
    batch = await resp.json()
    assert len(batch["task_ids"]) == 2 and [t["task_id"] for t in batch["tasks"]] == batch["task_ids"]
    for task_id in batch["task_ids"]:
        await until_ended(client, task_id)
    listed = await (await client.get(f"/api/tasks?batch_id={batch['batch_id']}")).json()
    assert sorted(t["task_id"] for t in listed["tasks"]) == sorted(batch["task_ids"])
    summary = await (await client.get(f"/api/tasks/batches/{batch['batch_id']}")).json()
    assert summary["tasks"] == 2 and summary["by_status"] == {"succeeded": 2} and summary["finished"] is True
    assert summary["cost_usd"] == pytest.approx(0.002)
    assert (await client.get("/api/tasks/batches/batch-nope")).status == 404


async def test_a_key_sees_only_its_own_tasks(aiohttp_client, settings: Settings) -> None:  # type: ignore[no-untyped-def]
    settings = replace(settings, api_keys=(OPERATOR,))
    client = await aiohttp_client(create_app(settings))
    alice, bob = await create_key(settings, "alice"), await create_key(settings, "bob")
    mine = await submit(client, {"prompt": "alice's"}, bearer(alice))
    await until_ended_as(client, mine["task_id"], bearer(alice))
    for path in (f"/api/tasks/{mine['task_id']}", f"/api/tasks/{mine['task_id']}/deliveries"):
        resp = await client.get(path, headers=bearer(bob))
        assert resp.status == 404, path
    for verb, path in (("post", "cancel"), ("post", "redeliver"), ("delete", "")):
        resp = await getattr(client, verb)(f"/api/tasks/{mine['task_id']}/{path}".rstrip("/"), headers=bearer(bob))
        assert resp.status == 404, path
    assert (await (await client.get("/api/tasks", headers=bearer(bob))).json())["tasks"] == []
    everyone = await (await client.get("/api/tasks?all=true", headers=bearer(OPERATOR))).json()
    assert [t["task_id"] for t in everyone["tasks"]] == [mine["task_id"]]
    # A session of another key is not found for a task either.
    task = await get_task(client, mine["task_id"], bearer(alice))
    resp = await client.post(
        "/api/tasks",
        data=json.dumps({"prompt": "x", "session_id": task["session_id"]}),
        headers={**JSON, **bearer(bob)},
    )
    assert resp.status == 404


async def until_ended_as(client: TestClient, task_id: str, headers: dict[str, str]) -> dict[str, Any]:
    for _ in range(400):
        task = await get_task(client, task_id, headers)
        if task["status"] in FINAL:
            return task
        await asyncio.sleep(0.05)
    raise AssertionError(task)


# ---- retries of the CLI's start, restarts ----------------------------------------------------


async def test_a_cli_that_dies_before_init_is_started_again_for_tasks_and_whole_answers(client: TestClient) -> None:
    task = await until_ended(client, (await submit(client, {"prompt": "@die-once=task hello"}))["task_id"])
    assert task["status"] == "succeeded" and task["result"] == "fake answer 1: @die-once=task hello", task
    resp = await post(client, {"prompt": "@die-once=whole hi", "stream": False})
    assert resp.status == 200 and (await resp.json())["subtype"] == "success"
    # A streaming request is not: its stream had begun.
    streamed = parse_sse(await (await post(client, {"prompt": "@die-once=sse x"})).text())
    assert data_events(streamed) == [] and streamed[-1].event == "error", streamed
    assert streamed[-1].json()["code"] == "cli_failed"


async def test_queued_tasks_survive_a_restart_and_a_running_one_runs_again(
    aiohttp_client,  # type: ignore[no-untyped-def]
    settings: Settings,
) -> None:
    settings = replace(settings, max_concurrent=1)
    first = await aiohttp_client(create_app(settings))
    running = (await submit(first, {"prompt": "@sleep=3 long"}))["task_id"]
    await until_status(first, running, "running")
    queued = [(await submit(first, {"prompt": f"q{n}"}))["task_id"] for n in range(2)]
    await first.close()  # a clean stop ends the running turn: the task is queued again
    second = await aiohttp_client(create_app(settings))
    for task_id in queued:
        assert (await until_ended(second, task_id))["status"] == "succeeded"
    again = await until_ended(second, running)
    assert again["attempts"] == 2 and again["status"] == "succeeded", again
