"""Webhook deliveries: signing, retries and backoff, failures, durability across restarts,
redelivery, and the refusal of non-public addresses, against real receivers on 127.0.0.1
and the real store."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from claude_server.deliveries import Deliverer
from claude_server.store import Store
from claude_server.webhooks import AddressNotPublic, PublicResolver, WebhookRefused, check_url, sign

Handler = Callable[[int, web.Request], Awaitable[web.StreamResponse]]


@dataclass
class Hit:
    at: float
    headers: dict[str, str]
    body: bytes


async def ok(n: int, request: web.Request) -> web.StreamResponse:
    return web.Response(text="thanks")


class Receiver:
    """An aiohttp app on 127.0.0.1 that records every request and answers with ``handler``."""

    def __init__(self, handler: Handler = ok) -> None:
        self.handler = handler
        self.hits: list[Hit] = []
        self.runner: web.AppRunner | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.hits.append(Hit(time.monotonic(), dict(request.headers), await request.read()))
        return await self.handler(len(self.hits), request)

    async def start(self, port: int = 0) -> Receiver:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self.runner = web.AppRunner(app, handler_cancellation=True, shutdown_timeout=0.5)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", port)
        await site.start()
        self.port = self.runner.addresses[0][1]
        return self

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    store = await Store.open(tmp_path / "db.sqlite")
    yield store
    await store.close()


@pytest.fixture
async def receivers() -> AsyncIterator[Callable[..., Awaitable[Receiver]]]:
    started: list[Receiver] = []

    async def make(handler: Handler = ok, port: int = 0) -> Receiver:
        receiver = await Receiver(handler).start(port)
        started.append(receiver)
        return receiver

    yield make
    for receiver in started:
        await receiver.stop()


@pytest.fixture
async def deliverers(store: Store) -> AsyncIterator[Callable[..., Awaitable[Deliverer]]]:
    made: list[Deliverer] = []

    async def make(**options: Any) -> Deliverer:
        settings: dict[str, Any] = {"timeout_s": 5.0, "retries": 5, "allow_private": True, "first_backoff_s": 0.05}
        deliverer = Deliverer(store, **{**settings, **options})
        await deliverer.start()
        made.append(deliverer)
        return deliverer

    yield make
    for deliverer in made:
        await deliverer.close()


async def settled(store: Store, task_id: str, count: int = 1, timeout: float = 8.0) -> list[dict[str, Any]]:
    """The task's deliveries once ``count`` of them are no longer pending."""
    deadline = time.monotonic() + timeout
    while True:
        views = await store.deliveries_of(task_id)
        if len([v for v in views if v["status"] != "pending"]) >= count or time.monotonic() > deadline:
            return views
        await asyncio.sleep(0.02)


async def until(predicate: Callable[[], Awaitable[bool]], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not await predicate():
        assert time.monotonic() < deadline, "timed out waiting"
        await asyncio.sleep(0.02)


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


PAYLOAD = {"event": "task.finished", "task_id": "t-1", "status": "succeeded", "result": "déjà vu ✓"}


async def test_signed_delivery_carries_every_header_and_the_payload(store: Store, receivers, deliverers) -> None:
    receiver = await receivers()
    deliverer = await deliverers()
    delivery_id = await deliverer.enqueue("t-1", receiver.url, "s3cret", PAYLOAD)
    [view] = await settled(store, "t-1")
    assert view["status"] == "delivered" and view["delivery_id"] == delivery_id
    [hit] = receiver.hits
    headers = hit.headers
    assert headers["Content-Type"] == "application/json"
    assert headers["User-Agent"].startswith("claude-server/")
    assert headers["X-Claude-Server-Event"] == "task.finished"
    assert headers["X-Claude-Server-Delivery"] == delivery_id
    timestamp = headers["X-Claude-Server-Timestamp"]
    assert abs(int(timestamp) - time.time()) < 10
    expected = hmac.new(b"s3cret", timestamp.encode() + b"." + hit.body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(headers["X-Claude-Server-Signature"], "sha256=" + expected)
    assert sign("s3cret", int(timestamp), hit.body) == "sha256=" + expected
    assert json.loads(hit.body) == PAYLOAD
    assert hit.body == json.dumps(PAYLOAD, ensure_ascii=False, separators=(",", ":")).encode()
    # The public view: one try, and no secret anywhere.
    assert [t["status_code"] for t in view["tries"]] == [200]
    assert view["ended_at"] and view["next_attempt_at"] is None and view["attempts"] == 1
    assert "s3cret" not in json.dumps(view) and "secret" not in view

    await deliverer.enqueue("t-2", receiver.url, None, PAYLOAD)
    await settled(store, "t-2")
    assert "X-Claude-Server-Signature" not in receiver.hits[1].headers
    assert "X-Claude-Server-Timestamp" in receiver.hits[1].headers


async def test_500_twice_then_200_is_delivered_on_the_third_attempt_with_growing_backoff(
    store: Store,
    receivers,
    deliverers,
) -> None:
    async def flaky(n: int, request: web.Request) -> web.StreamResponse:
        return web.Response(status=500 if n <= 2 else 200)

    receiver = await receivers(flaky)
    deliverer = await deliverers(first_backoff_s=0.1)
    await deliverer.enqueue("t-1", receiver.url, None, PAYLOAD)
    [view] = await settled(store, "t-1")
    assert view["status"] == "delivered"
    assert [t["status_code"] for t in view["tries"]] == [500, 500, 200]
    assert [t["attempt"] for t in view["tries"]] == [1, 2, 3]
    assert view["attempts"] == 3
    first, second, third = (hit.at for hit in receiver.hits)
    # 0.1 s then 0.2 s, each ±20 %.
    assert 0.075 <= second - first < 0.5
    assert third - second > second - first
    assert third - second >= 0.155
    assert len({hit.body for hit in receiver.hits}) == 1


async def test_retries_exhausted_is_failed_after_retries_plus_one_attempts(store: Store, receivers, deliverers) -> None:
    async def down(n: int, request: web.Request) -> web.StreamResponse:
        return web.Response(status=503)

    receiver = await receivers(down)
    deliverer = await deliverers(retries=2, first_backoff_s=0.02)
    await deliverer.enqueue("t-1", receiver.url, None, PAYLOAD)
    [view] = await settled(store, "t-1")
    assert view["status"] == "failed"
    assert [t["status_code"] for t in view["tries"]] == [503, 503, 503]
    assert view["attempts"] == 3 and len(receiver.hits) == 3
    assert view["ended_at"] and view["next_attempt_at"] is None
    await asyncio.sleep(0.1)
    assert len(receiver.hits) == 3


async def test_a_timeout_is_an_error_naming_it(store: Store, receivers, deliverers) -> None:
    release = asyncio.Event()

    async def slow(n: int, request: web.Request) -> web.StreamResponse:
        await asyncio.wait_for(release.wait(), 5)
        return web.Response()

    receiver = await receivers(slow)
    deliverer = await deliverers(timeout_s=0.3, retries=0)
    await deliverer.enqueue("t-1", receiver.url, None, PAYLOAD)
    [view] = await settled(store, "t-1")
    release.set()
    assert view["status"] == "failed"
    [attempt] = view["tries"]
    assert attempt["status_code"] is None
    assert attempt["error"] == "timed out after 0.3s"
    assert 250 <= attempt["duration_ms"] < 2000


async def test_a_closed_port_is_connection_refused(store: Store, deliverers) -> None:
    deliverer = await deliverers(retries=0)
    await deliverer.enqueue("t-1", f"http://127.0.0.1:{closed_port()}/hook", None, PAYLOAD)
    [view] = await settled(store, "t-1")
    assert view["status"] == "failed"
    assert view["tries"][0]["error"] == "connection refused"
    assert view["tries"][0]["status_code"] is None


async def test_a_redirect_is_a_failure_and_is_not_followed(store: Store, receivers, deliverers) -> None:
    target = await receivers()

    async def moved(n: int, request: web.Request) -> web.StreamResponse:
        return web.Response(status=302, headers={"Location": target.url})

    receiver = await receivers(moved)
    deliverer = await deliverers(retries=0)
    await deliverer.enqueue("t-1", receiver.url, None, PAYLOAD)
    [view] = await settled(store, "t-1")
    assert view["status"] == "failed"
    assert view["tries"][0]["status_code"] == 302
    assert view["tries"][0]["error"] == f"redirect to {target.url} not followed"
    assert len(receiver.hits) == 1 and target.hits == []


async def test_a_pending_delivery_survives_a_restart(store: Store, receivers, deliverers) -> None:
    port = closed_port()
    first = await deliverers(first_backoff_s=0.3)
    delivery_id = await first.enqueue("t-1", f"http://127.0.0.1:{port}/hook", None, PAYLOAD)

    async def tried() -> bool:
        return bool((await store.deliveries_of("t-1"))[0]["tries"])

    await until(tried)
    await first.close()
    [view] = await store.deliveries_of("t-1")
    assert view["status"] == "pending" and view["tries"][0]["error"] == "connection refused"
    assert view["next_attempt_at"] is not None

    receiver = await receivers(port=port)
    await deliverers(first_backoff_s=0.3)
    [view] = await settled(store, "t-1")
    assert view["status"] == "delivered"
    assert [t["error"] for t in view["tries"]][-1] is None and len(view["tries"]) >= 2
    [hit] = receiver.hits
    assert hit.headers["X-Claude-Server-Delivery"] == delivery_id
    assert json.loads(hit.body) == PAYLOAD


async def test_an_attempt_cut_off_by_close_stays_pending(store: Store, receivers, deliverers) -> None:
    release = asyncio.Event()

    async def hangs_once(n: int, request: web.Request) -> web.StreamResponse:
        if n == 1:
            await asyncio.wait_for(release.wait(), 5)
        return web.Response()

    receiver = await receivers(hangs_once)
    first = await deliverers()
    await first.enqueue("t-1", receiver.url, None, PAYLOAD)

    async def arrived() -> bool:
        return bool(receiver.hits)

    await until(arrived)
    await first.close()
    release.set()
    [view] = await store.deliveries_of("t-1")
    assert view["status"] == "pending" and view["tries"] == [] and view["attempts"] == 0

    await deliverers()
    [view] = await settled(store, "t-1")
    assert view["status"] == "delivered" and [t["attempt"] for t in view["tries"]] == [1]
    assert len(receiver.hits) == 2


async def test_redeliver_sends_the_same_body_under_a_new_id(store: Store, receivers, deliverers) -> None:
    receiver = await receivers()
    deliverer = await deliverers()
    first = await deliverer.enqueue("t-1", receiver.url, "k", PAYLOAD)
    await settled(store, "t-1")
    again = await deliverer.redeliver("t-1")
    assert again is not None and again != first
    views = await settled(store, "t-1", count=2)
    assert [v["delivery_id"] for v in views] == [first, again]
    assert [v["status"] for v in views] == ["delivered", "delivered"]
    assert receiver.hits[0].body == receiver.hits[1].body
    assert [h.headers["X-Claude-Server-Delivery"] for h in receiver.hits] == [first, again]
    assert "X-Claude-Server-Signature" in receiver.hits[1].headers
    assert await deliverer.redeliver("t-none") is None


async def test_logs_name_the_delivery_but_never_the_secret_or_url_credentials(
    store: Store, receivers, deliverers, caplog
) -> None:
    receiver = await receivers()
    deliverer = await deliverers()
    caplog.set_level(logging.INFO, logger="claude_server.deliveries")
    url = f"http://alice:hunter2@127.0.0.1:{receiver.port}/hook?token=tok-123"
    delivery_id = await deliverer.enqueue("t-1", url, "sekrit-value", PAYLOAD)
    await settled(store, "t-1")
    assert delivery_id in caplog.text and "t-1" in caplog.text and "HTTP 200" in caplog.text
    for secret in ("hunter2", "alice", "sekrit-value", "tok-123"):
        assert secret not in caplog.text


async def test_deleted_deliveries_are_gone(store: Store) -> None:
    await store.insert_delivery("d-1", "t-1", "http://example.com/", "s", "{}", time.time())
    assert await store.last_delivery_body("t-1") == ("http://example.com/", "s", "{}")
    assert await store.record_attempt("d-1", 1, 500, None, 3.0, time.time() + 5, "pending")
    assert len(await store.pending_deliveries()) == 1
    await store.delete_deliveries("t-1")
    assert await store.deliveries_of("t-1") == []
    assert await store.last_delivery_body("t-1") is None
    assert await store.pending_deliveries() == []
    assert not await store.record_attempt("d-1", 2, 200, None, 3.0, None, "delivered")


def test_backoff_doubles_with_jitter_up_to_the_maximum(store: Store) -> None:
    deliverer = Deliverer(store, timeout_s=1, retries=5, allow_private=False)
    for attempt, base in ((1, 2.0), (2, 4.0), (3, 8.0), (8, 256.0)):
        assert [0.8 * base <= deliverer.delay_after(attempt) <= 1.2 * base for _ in range(50)] == [True] * 50
    assert all(240.0 <= deliverer.delay_after(n) <= 300.0 for n in (9, 20, 1000))


REFUSED = [
    "http://127.0.0.1/",
    "http://[::1]/",
    "http://10.0.0.1/",
    "http://192.168.1.1/",
    "http://172.16.0.1/",
    "http://169.254.169.254/latest/meta-data/",
    "http://[fe80::1]/",
    "http://[fc00::1]/",
    "http://[::ffff:127.0.0.1]/",
    "http://[::ffff:10.0.0.1]/",
    "http://[64:ff9b::7f00:1]/",
    "http://[2002:7f00:1::]/",
    "http://100.64.0.1/",
    "http://0.0.0.0/",
    "http://224.0.0.1/",
    "http://240.0.0.1/",
    "http://localhost/",
    "http://localhost:8080/hook",
    "http://2130706433/",
    "ftp://example.com/",
    "file:///etc/passwd",
    "http:///nohost",
    "not a url",
    "http://does-not-exist.invalid/",
    "http://93.184.215.14:99999/",
    "https://93.184.215.14/" + "a" * 2048,
]


@pytest.mark.parametrize("url", REFUSED)
async def test_check_url_refuses(url: str) -> None:
    with pytest.raises(WebhookRefused) as refused:
        await check_url(url, allow_private=False)
    assert str(refused.value)


async def test_check_url_says_why() -> None:
    with pytest.raises(WebhookRefused, match="address 127.0.0.1 is not public"):
        await check_url("http://127.0.0.1/", allow_private=False)
    with pytest.raises(WebhookRefused, match="does not resolve"):
        await check_url("http://does-not-exist.invalid/", allow_private=False)
    with pytest.raises(WebhookRefused, match="http:// or https://"):
        await check_url("ftp://example.com/", allow_private=False)


@pytest.mark.parametrize("url", ["https://93.184.215.14/hook", "http://[2606:4700::1111]:8443/x?y=1"])
async def test_check_url_accepts_public_addresses(url: str) -> None:
    await check_url(url, allow_private=False)


async def test_check_url_allows_private_when_told() -> None:
    await check_url("http://127.0.0.1/", allow_private=True)
    await check_url("http://localhost:8080/", allow_private=True)
    with pytest.raises(WebhookRefused):
        await check_url("ftp://127.0.0.1/", allow_private=True)
    with pytest.raises(WebhookRefused, match="does not resolve"):
        await check_url("http://does-not-exist.invalid/", allow_private=True)


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
async def test_delivery_to_a_non_public_address_is_refused_when_it_is_made(
    store: Store, receivers, deliverers, host: str
) -> None:
    # As if the URL had passed check_url at submission and resolved to loopback since.
    receiver = await receivers()
    deliverer = await deliverers(allow_private=False, retries=1, first_backoff_s=0.02)
    await deliverer.enqueue("t-1", f"http://{host}:{receiver.port}/hook", "s", PAYLOAD)
    [view] = await settled(store, "t-1")
    assert view["status"] == "failed" and len(view["tries"]) == 2
    for attempt in view["tries"]:
        assert attempt["status_code"] is None
        assert attempt["error"] in ("address 127.0.0.1 is not public", "address ::1 is not public")
    assert receiver.hits == []


async def test_the_resolver_of_deliveries_refuses_names_of_non_public_addresses() -> None:
    # What guards a name that resolves to loopback at delivery time (the socket factory
    # behind it guards literal addresses, which aiohttp never resolves).
    strict, lenient = PublicResolver(allow_private=False), PublicResolver(allow_private=True)
    try:
        with pytest.raises(AddressNotPublic, match="is not public"):
            await strict.resolve("localhost", 80, socket.AF_UNSPEC)
        assert {r["host"] for r in await lenient.resolve("localhost", 80, socket.AF_INET)} == {"127.0.0.1"}
    finally:
        await strict.close()
        await lenient.close()


async def test_a_receivers_cookie_does_not_travel_with_later_deliveries(store: Store, receivers, deliverers) -> None:
    async def sets_cookie(n: int, request: web.Request) -> web.StreamResponse:
        return web.Response(headers={"Set-Cookie": f"sid=task-{n}; Path=/"})

    receiver = await receivers(sets_cookie)
    deliverer = await deliverers()
    url = f"http://localhost:{receiver.port}/hook"  # a name: cookies of IP addresses are never kept
    await deliverer.enqueue("t-1", url, None, PAYLOAD)
    await settled(store, "t-1")
    await deliverer.enqueue("t-2", url, None, PAYLOAD)
    await settled(store, "t-2")
    assert len(receiver.hits) == 2 and "Cookie" not in receiver.hits[1].headers
