"""Webhooks: which URLs may receive them, how a body is signed, and one HTTP attempt.

A webhook URL is given by whoever submits a task, so the server must not become a way to
reach what only it can reach (its own loopback, the private network, a cloud's metadata
address). ``check_url`` refuses such a URL when it is submitted; but a name can resolve
to a public address then and to 127.0.0.1 at delivery (DNS rebinding), so the connector
of every delivery checks again where it actually connects: its resolver refuses a name
with any non-public address, and its socket factory refuses to open a socket to one
(literal addresses never reach a resolver). The connection goes to the checked address
while TLS (SNI, certificate) and ``Host`` keep the name. Redirects are never followed:
a 3xx could point anywhere.

Nothing here raises to the deliverer: every way an attempt can fail becomes a short
readable ``error`` of its ``Attempt``.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import ipaddress
import socket
import time
from dataclasses import dataclass

import aiohttp
from aiohappyeyeballs import AddrInfoType
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver
from yarl import URL

try:
    from claude_server import __version__

    USER_AGENT = f"claude-server/{__version__}"
except ImportError:  # pragma: no cover - the package always has one
    USER_AGENT = "claude-server"

MAX_URL_CHARS = 2048
# What is read of a receiver's answer (and thrown away) before the connection is let go.
MAX_RESPONSE_BYTES = 64 * 1024
EVENT = "task.finished"

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_CGNAT = ipaddress.ip_network("100.64.0.0/10")
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


class WebhookRefused(ValueError):
    """A URL that webhooks may not be sent to; the message says why."""


class AddressNotPublic(OSError):
    """Raised inside the connector, where aiohttp expects an OSError."""

    def __init__(self, address: str) -> None:
        super().__init__(f"address {address} is not public")
        self.address = address


@dataclass(frozen=True)
class Attempt:
    """What one attempt came to: ``ok`` is a 2xx answer."""

    status_code: int | None
    error: str | None
    duration_ms: float
    ok: bool


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The signature header's value: HMAC-SHA256 of ``"<timestamp>." + body``. The
    timestamp is inside the MAC so that a captured request cannot be replayed later."""
    mac = hmac.new(secret.encode(), str(timestamp).encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def is_public(address: IPAddress) -> bool:
    """Whether an address is on the public internet, with the IPv6 forms that carry an
    IPv4 address (mapped, NAT64, 6to4) judged by that address."""
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return is_public(address.ipv4_mapped)
        if address in _NAT64:
            return is_public(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF))
        if address.sixtofour is not None:
            return is_public(address.sixtofour)
        if address.is_site_local:
            return False
    elif address in _CGNAT:
        return False
    return address.is_global and not (
        address.is_multicast
        or address.is_private
        or address.is_loopback
        or address.is_link_local
        or address.is_unspecified
        or address.is_reserved
    )


def _address(text: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def _refuse_non_public(addresses: list[str]) -> None:
    for text in addresses:
        address = _address(text.split("%", 1)[0])
        if address is None or not is_public(address):
            raise AddressNotPublic(text)


def _parse(url: str) -> URL:
    """The URL as aiohttp will read it, if it is one webhooks may go to at all."""
    if len(url) > MAX_URL_CHARS:
        raise WebhookRefused(f"webhook URL is longer than {MAX_URL_CHARS} characters")
    try:
        parsed = URL(url)
        parsed.port  # noqa: B018 - an invalid port raises here
    except (ValueError, TypeError) as exc:
        raise WebhookRefused(f"webhook URL is not valid: {exc}") from None
    if parsed.scheme not in ("http", "https"):
        raise WebhookRefused("webhook URL must be http:// or https://")
    if not parsed.host:
        raise WebhookRefused("webhook URL has no host")
    return parsed


async def check_url(url: str, allow_private: bool) -> None:
    """Refuse (``WebhookRefused``) a URL that is not http(s) with a host, is too long, names
    a host that does not resolve, or, unless ``allow_private``, whose host is or resolves to
    any non-public address."""
    parsed = _parse(url)
    host = parsed.host
    assert host is not None
    literal = _address(host.split("%", 1)[0]) is not None
    if literal:
        addresses = [host]
    else:
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(host, parsed.port, type=socket.SOCK_STREAM)
        except (socket.gaierror, UnicodeError):
            raise WebhookRefused(f"webhook host {host} does not resolve") from None
        addresses = [str(info[4][0]) for info in infos]
        if not addresses:
            raise WebhookRefused(f"webhook host {host} does not resolve")
    if allow_private:
        return
    try:
        _refuse_non_public(addresses)
    except AddressNotPublic as exc:
        raise WebhookRefused(
            f"webhook {exc}" if literal else f"webhook host {host} resolves to {exc.address}, which is not public"
        ) from None


def redacted(url: str) -> str:
    """The URL for a log line: scheme, host, port and path; no credentials, no query."""
    try:
        parsed = URL(url)
        if parsed.is_absolute():
            parsed = parsed.with_user(None)
        return str(parsed.with_query(None).with_fragment(None))
    except (ValueError, TypeError):
        return "(invalid URL)"


class PublicResolver(AbstractResolver):
    """The default resolver, refusing a name with any non-public address unless allowed."""

    def __init__(self, allow_private: bool) -> None:
        self._inner = DefaultResolver()
        self.allow_private = allow_private

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = await self._inner.resolve(host, port, family)
        if not self.allow_private:
            _refuse_non_public([result["host"] for result in results])
        return results

    async def close(self) -> None:
        await self._inner.close()


def public_connector(resolver: PublicResolver, limit: int) -> aiohttp.TCPConnector:
    """A connector that resolves every connection anew and connects to public addresses
    only (unless the resolver allows private ones). The caller closes the resolver."""

    def open_socket(info: AddrInfoType) -> socket.socket:
        family, type_, proto, _, address = info
        if not resolver.allow_private:
            _refuse_non_public([str(address[0])])
        return socket.socket(family=family, type=type_, proto=proto)

    return aiohttp.TCPConnector(resolver=resolver, use_dns_cache=False, limit=limit, socket_factory=open_socket)


def new_session(connector: aiohttp.TCPConnector) -> aiohttp.ClientSession:
    """The deliveries' session: no cookies (a receiver's cookie must not travel with other
    tasks' deliveries to the same host) and no proxy from the environment."""
    return aiohttp.ClientSession(connector=connector, cookie_jar=aiohttp.DummyCookieJar(), trust_env=False)


def _connect_error(exc: aiohttp.ClientConnectorError) -> str:
    cause = exc.os_error
    if isinstance(cause, AddressNotPublic):
        return str(cause)
    if isinstance(exc, aiohttp.ClientConnectorDNSError):
        return "host does not resolve"
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        return f"TLS certificate refused: {exc.certificate_error}"
    if isinstance(exc, aiohttp.ClientConnectorSSLError):
        return "TLS handshake failed"
    if isinstance(cause, ConnectionRefusedError):
        return "connection refused"
    return f"cannot connect: {cause.strerror or cause or type(cause).__name__}"


def _error_text(exc: BaseException, timeout_s: float) -> str:
    if isinstance(exc, TimeoutError):
        return f"timed out after {timeout_s:g}s"
    if isinstance(exc, aiohttp.ClientConnectorError):
        return _connect_error(exc)
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return "server disconnected without an answer"
    if isinstance(exc, aiohttp.InvalidURL):
        return "invalid URL"
    text = str(exc)
    return f"{type(exc).__name__}: {text}"[:300] if text else type(exc).__name__


async def deliver_once(
    session: aiohttp.ClientSession, url: str, body: bytes, secret: str | None, delivery_id: str, timeout_s: float
) -> Attempt:
    """POST the body once. The session's connector decides which addresses are allowed
    (``public_connector``); this never raises, except ``CancelledError``."""
    started = time.monotonic()
    status: int | None = None
    error: str | None = None
    try:
        target = _parse(url)
        timestamp = int(time.time())
        headers = {
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
            "X-Claude-Server-Event": EVENT,
            "X-Claude-Server-Delivery": delivery_id,
            "X-Claude-Server-Timestamp": str(timestamp),
        }
        if secret:
            headers["X-Claude-Server-Signature"] = sign(secret, timestamp, body)
        async with asyncio.timeout(timeout_s):
            async with session.post(
                target,
                data=body,
                headers=headers,
                allow_redirects=False,
                timeout=aiohttp.ClientTimeout(total=timeout_s),
            ) as response:
                status = response.status
                if 300 <= status < 400:
                    location = response.headers.get("Location", "")[:300]
                    error = f"redirect to {redacted(location) if location else '(nowhere)'} not followed"
                read = 0
                while read < MAX_RESPONSE_BYTES:
                    chunk = await response.content.read(MAX_RESPONSE_BYTES - read)
                    if not chunk:
                        break
                    read += len(chunk)
    except WebhookRefused as exc:
        error = str(exc)
    except (aiohttp.ClientError, OSError, TimeoutError, ValueError) as exc:
        # A 2xx stays a success when only the reading of its body failed; a redirect
        # keeps its own error.
        if error is None and not _success(status):
            error = _error_text(exc, timeout_s)
    duration_ms = round((time.monotonic() - started) * 1000, 1)
    return Attempt(status_code=status, error=error, duration_ms=duration_ms, ok=_success(status))


def _success(status: int | None) -> bool:
    return status is not None and 200 <= status < 300
