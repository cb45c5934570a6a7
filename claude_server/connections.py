"""Connection hygiene: how many connections the server holds, how long a client may take to
send a request, and what is logged about requests that are not HTTP.

What aiohttp 3.14 does by itself (``aiohttp/web_protocol.py``): ``RequestHandler`` arms its
keep-alive timer when a connection opens and after each response, and the timer closes the
connection if no complete request head has arrived by then (``keepalive_timeout``, 75 s under
``web.run_app``); it is not extended by bytes arriving. Nothing bounds the number of
connections, nothing times out a request body (the timer does nothing while a handler runs),
and every unparsable request is logged at ERROR with a traceback. So this module adds:

- ``GuardedProtocol``: wraps aiohttp's protocol for each accepted connection. It caps open
  connections in total and per client address, and over a cap closes the connection that has
  been idle (between requests, or before its first one) longest; with no idle connection to
  spare, the newcomer gets a short 503 written straight to the socket. A request head must
  arrive within ``header_timeout_s`` of the connection opening or of its first byte.
- ``connection_middleware``: tells the guard which connections are busy (never evicted) and
  holds request bodies to an idle and a total deadline; a body that misses one gets a 408 and
  its connection is closed.
- ``quiet_log.BadRequestFilter``: aiohttp's ERROR-with-traceback for a malformed request
  becomes one INFO line, at most one per kind per interval plus a count of the rest.

Hooks: ``serve()`` passes ``**run_app_options(settings)`` to ``web.run_app`` (an event loop
whose ``create_server`` wraps aiohttp's protocol factory, which aiohttp offers no other way
to do); ``create_app`` puts ``connection_middleware`` first and ``bad_request_log_ctx`` in
``cleanup_ctx``. The test server has neither loop nor caps, but body deadlines and the filter.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import resource
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

from aiohttp import web

from claude_server.appkeys import SETTINGS
from claude_server.config import Settings
from claude_server.errors import ApiError
from claude_server.middleware import REQUEST_ID_KEY, Handler, error_response
from claude_server.quiet_log import RateLimitedLog

log = logging.getLogger(__name__)

# File descriptors kept for everything but client sockets: the database and its WAL, the
# event loop, each running CLI's three pipes, the listening sockets.
FD_RESERVE = 256
# asyncio accepts up to the listen backlog (run_app's default: 128) sockets per loop cycle,
# admits them two cycles later, and a closed one frees its descriptor a cycle after that: in
# a flood the descriptors in use pass the cap by up to three batches.
ACCEPTING_FDS = 3 * 128
# A connection can hold two descriptors at once: its socket, and a file it uploads or downloads.
FDS_PER_CONNECTION = 2
# Raising the soft limit this far is enough for the largest default cap; the CLIs and their
# tools inherit it, and some programs still loop over every possible descriptor.
NOFILE_TARGET = 65536
# A refused client gets this long to finish sending and read its 503 before the socket is
# closed: closing with its request unread would reset the connection and lose the answer.
REFUSAL_LINGER_S = 1.0
# Refusals allowed to linger at once; past that they are closed at once (and may see a reset).
MAX_LINGERING_REFUSALS = 128
RETRY_AFTER_S = 1
# A deadline timer may fire a little early (the loop's clock resolution).
CLOCK_SLACK_S = 0.001
# A body is looked at this often per idle timeout: it is dropped at most a quarter late.
CHECKS_PER_IDLE_WINDOW = 4


class BodyTimeout(ApiError):
    """The request body did not arrive in time (raised into the handler reading it)."""

    status = 408
    code = "body_timeout"


notices = RateLimitedLog(log)


def raw_response(status: int, body: bytes, headers: Mapping[str, str]) -> bytes:
    """A whole HTTP/1.1 response that closes the connection, for writing straight to a socket."""
    lines = [f"HTTP/1.1 {status} {HTTPStatus(status).phrase}", f"Content-Length: {len(body)}", "Connection: close"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


# ---- connection caps and header deadline ---------------------------------------------------


def raise_fd_limit() -> int:
    """Raise the soft RLIMIT_NOFILE towards the hard one (at most NOFILE_TARGET); the soft
    limit in force after."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = NOFILE_TARGET if hard == resource.RLIM_INFINITY else min(hard, NOFILE_TARGET)
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError) as exc:
            log.warning("could not raise the open file limit from %d to %d: %s", soft, target, exc)
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


@dataclass(frozen=True)
class Limits:
    max_connections: int
    max_per_client: int  # 0: none
    exempt: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]
    header_timeout_s: float

    @classmethod
    def from_settings(cls, settings: Settings, fd_limit: int) -> Limits:
        """The caps of ``settings``, the total lowered to what ``fd_limit`` descriptors allow."""
        spare = fd_limit - FD_RESERVE - ACCEPTING_FDS - MAX_LINGERING_REFUSALS
        budget = max(1, spare // FDS_PER_CONNECTION)
        total = min(settings.max_connections, budget)
        if total < settings.max_connections:
            msg = "at most %d connections, not %d: the open file limit is %d (raise it: ulimit -n)"
            log.warning(msg, total, settings.max_connections, fd_limit)
        exempt = tuple(ipaddress.ip_network(net, strict=False) for net in settings.per_client_exempt)
        return cls(total, settings.max_connections_per_client, exempt, settings.header_timeout_s)

    def client_key(self, peername: Any) -> str | None:
        """What the per-client cap counts a peer as (its address, an IPv6 /64), or None when
        the cap does not apply to it."""
        try:
            ip = ipaddress.ip_address(str(peername[0]).split("%")[0])
        except (TypeError, IndexError, ValueError):
            return None  # not an IP peer (a Unix socket)
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        if not self.max_per_client or any(ip in net for net in self.exempt):
            return None
        if isinstance(ip, ipaddress.IPv6Address):
            return str(ipaddress.ip_network(f"{ip}/64", strict=False))  # one host, many addresses
        return str(ip)


class Guard:
    """The open connections of one server: counts, and the idle ones oldest first."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.open = 0
        self.per_client: dict[str, int] = {}
        self.idle: OrderedDict[GuardedProtocol, None] = OrderedDict()
        self.lingering = 0

    def wrap(self, factory: Callable[[], asyncio.Protocol]) -> Callable[[], GuardedProtocol]:
        """A protocol factory for ``loop.create_server`` that guards ``factory``'s protocols."""
        return lambda: GuardedProtocol(self, factory)

    def admit(self, conn: GuardedProtocol) -> str | None:
        """Count a new connection in; or why it is refused."""
        key = conn.client_key
        if key is not None and self.per_client.get(key, 0) >= self.limits.max_per_client:
            return f"This address has {self.limits.max_per_client} connections open, the most allowed"
        if self.open >= self.limits.max_connections:
            if not self.idle:
                return "The server has as many connections open as it allows"
            victim = next(iter(self.idle))
            notices.log("evicted", logging.INFO, "at %d connections: closed the longest idle one", self.open)
            self.release(victim)
            victim.drop()
        conn.counted = True
        self.open += 1
        if key is not None:
            self.per_client[key] = self.per_client.get(key, 0) + 1
        self.idle[conn] = None
        return None

    def release(self, conn: GuardedProtocol) -> None:
        if not conn.counted:
            return
        conn.counted = False
        self.open -= 1
        self.idle.pop(conn, None)
        key = conn.client_key
        if key is not None:
            left = self.per_client[key] - 1
            if left:
                self.per_client[key] = left
            else:
                del self.per_client[key]


class GuardedProtocol(asyncio.Protocol):
    """One accepted connection: admitted (then everything goes to aiohttp's protocol) or
    refused with a 503. Busy while a request is in flight; idle connections may be evicted."""

    def __init__(self, guard: Guard, factory: Callable[[], asyncio.Protocol]) -> None:
        self._guard = guard
        self._factory = factory
        self._inner: asyncio.Protocol | None = None
        self._transport: asyncio.Transport | None = None
        self._header_timer: asyncio.TimerHandle | None = None
        self._linger_timer: asyncio.TimerHandle | None = None
        self.client_key: str | None = None
        self.counted = False
        self.in_flight = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        peer = transport.get_extra_info("peername")
        self.client_key = self._guard.limits.client_key(peer)
        refusal = self._guard.admit(self)
        if refusal is not None:
            self._refuse(refusal, peer)
            return
        self._arm_header_timer()
        self._inner = self._factory()
        self._inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        if self._inner is None:
            return  # a refused client's request: read only so that closing does not reset it
        if not self.in_flight and self._header_timer is None:
            self._arm_header_timer()  # the first bytes of the next request on a kept-alive connection
        self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self._inner.eof_received() if self._inner is not None else None

    def connection_lost(self, exc: Exception | None) -> None:
        self._guard.release(self)
        for timer in (self._header_timer, self._linger_timer):
            if timer is not None:
                timer.cancel()
        if self._linger_timer is not None:
            self._guard.lingering -= 1
            self._linger_timer = None
        if self._inner is not None:
            self._inner.connection_lost(exc)

    def pause_writing(self) -> None:
        if self._inner is not None:
            self._inner.pause_writing()

    def resume_writing(self) -> None:
        if self._inner is not None:
            self._inner.resume_writing()

    def request_started(self) -> None:
        self.in_flight += 1
        self._guard.idle.pop(self, None)
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def request_finished(self) -> None:
        self.in_flight -= 1
        if not self.in_flight and self.counted:
            self._guard.idle[self] = None  # the newest idle one: evicted last

    def drop(self) -> None:
        """Close the connection. An idle one's last answer may still be flushing to a client
        that does not read: closing would wait for it forever, so that is discarded."""
        if self._transport is not None and self._transport.get_write_buffer_size():
            self._transport.abort()
        elif self._transport is not None:
            self._transport.close()

    def _arm_header_timer(self) -> None:
        loop = asyncio.get_running_loop()
        self._header_timer = loop.call_later(self._guard.limits.header_timeout_s, self._header_timed_out)

    def _header_timed_out(self) -> None:
        self._header_timer = None
        if self.in_flight or self._transport is None or self._transport.is_closing():
            return
        peer = self._transport.get_extra_info("peername")
        timeout_s = self._guard.limits.header_timeout_s
        msg = "no request head from %s in %g s: closed"
        notices.log("header_timeout", logging.DEBUG, msg, peer and peer[0], timeout_s)
        self._guard.release(self)
        self.drop()

    def _refuse(self, message: str, peer: Any) -> None:
        assert self._transport is not None
        notices.log("refused", logging.INFO, "refused a connection from %s: %s", peer and peer[0], message)
        body = json.dumps({"error": {"code": "too_many_connections", "message": message}}).encode()
        headers = {"Content-Type": "application/json", "Retry-After": str(RETRY_AFTER_S)}
        self._transport.write(raw_response(503, body, headers))
        if self._guard.lingering >= MAX_LINGERING_REFUSALS or not self._transport.can_write_eof():
            self._transport.close()
            return
        self._guard.lingering += 1
        self._transport.write_eof()
        self._linger_timer = asyncio.get_running_loop().call_later(REFUSAL_LINGER_S, self._transport.close)


class GuardedEventLoop(asyncio.SelectorEventLoop):
    """The default event loop, except that the servers it creates for aiohttp guard their
    connections: ``web.run_app`` builds its sites itself, and their ``loop.create_server``
    call is the only place aiohttp lets anything stand between a socket and its protocol."""

    def __init__(self, guard: Guard) -> None:
        super().__init__()
        self.guard = guard

    async def create_server(
        self, protocol_factory: Callable[[], asyncio.BaseProtocol], *args: Any, **kwargs: Any
    ) -> asyncio.Server:
        if isinstance(protocol_factory, web.Server):
            protocol_factory = self.guard.wrap(protocol_factory)
        return await super().create_server(protocol_factory, *args, **kwargs)


def run_app_options(settings: Settings) -> dict[str, Any]:
    """What ``serve()`` adds to its ``web.run_app`` arguments: an event loop whose servers cap
    and time out connections per ``settings`` (after raising the open file limit)."""
    limits = Limits.from_settings(settings, raise_fd_limit())
    per_client = limits.max_per_client or "no limit"
    log.info("at most %d connections, %s per client address", limits.max_connections, per_client)
    return {"loop": GuardedEventLoop(Guard(limits))}


# ---- request bodies ------------------------------------------------------------------------


class BodyWatch:
    """Holds one request body to its deadlines: a byte every ``body_idle_timeout_s`` (time
    the server itself stopped reading does not count), and all of it within
    ``body_timeout_s`` plus one second per ``body_min_rate_bytes_per_s`` bytes received.
    On a miss: a 408 if no answer has begun, and the connection closed."""

    def __init__(self, request: web.Request, settings: Settings) -> None:
        self._request = request
        self._idle_s = settings.body_idle_timeout_s
        self._total_s = settings.body_timeout_s
        self._rate = settings.body_min_rate_bytes_per_s
        self._loop = asyncio.get_running_loop()
        self._started = self._progress_at = self._loop.time()
        self._received = request.content.total_bytes
        self._sent_before = request.writer.output_size  # a "100 Continue" may precede the body
        first_at = self._started + min(self._idle_s / CHECKS_PER_IDLE_WINDOW, self._total_s)
        self._timer = self._loop.call_at(first_at, self._check)

    def stop(self) -> None:
        self._timer.cancel()

    def _check(self) -> None:
        content, transport = self._request.content, self._request.transport
        if content.is_eof() or transport is None or transport.is_closing():
            return
        now = self._loop.time() + CLOCK_SLACK_S
        received = content.total_bytes
        if received != self._received or not transport.is_reading():
            self._received, self._progress_at = received, now
        idle_at = self._progress_at + self._idle_s
        total_at = self._started + self._total_s + (received / self._rate if self._rate else 0.0)
        if now >= idle_at:
            self._time_out(transport, f"no byte of it arrived for {self._idle_s:g} s")
        elif now >= total_at:
            took = now - self._started
            self._time_out(transport, f"{received} bytes in {took:.0f} s is too slow")
        else:
            # Checked a few times per idle window, so that a stall is seen soon after it began.
            next_at = min(idle_at, total_at, now + self._idle_s / CHECKS_PER_IDLE_WINDOW)
            self._timer = self._loop.call_at(next_at, self._check)

    def _time_out(self, transport: asyncio.Transport, reason: str) -> None:
        request = self._request
        err = BodyTimeout(f"The request body took too long: {reason}")
        where = (request.method, request.path, request.remote)
        notices.log("body_timeout", logging.INFO, "%s %s from %s: %s", *where, err)
        if request.writer.output_size == self._sent_before:
            resp = error_response(err, request)
            headers = {"Content-Type": resp.headers["Content-Type"]}
            if rid := request.get(REQUEST_ID_KEY):
                headers["X-Request-Id"] = rid
            assert isinstance(resp.body, bytes)
            transport.write(raw_response(err.status, resp.body, headers))
        # The handler's pending read raises it (and ends in an answer that is never sent),
        # then the closed connection cancels the handler like any client that went away.
        request.content.set_exception(err)
        transport.close()


@web.middleware
async def connection_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Outermost: marks the request's connection busy while it runs (so that it is never
    evicted) and holds the request body, if any, to its deadlines."""
    transport = request.transport
    conn = transport.get_protocol() if transport is not None else None
    guarded = conn if isinstance(conn, GuardedProtocol) else None
    if guarded is not None:
        guarded.request_started()
    watch = None
    if request.body_exists and not request.content.is_eof():
        watch = BodyWatch(request, request.app[SETTINGS])
    try:
        return await handler(request)
    finally:
        if watch is not None:
            watch.stop()
        if guarded is not None:
            guarded.request_finished()
