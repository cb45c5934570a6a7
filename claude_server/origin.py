"""Which browsers may use the server: a Host check against DNS rebinding, and, while the server
is open (no API key exists), an Origin check that keeps other web pages off it.

The server runs the Claude Code CLI, which runs Bash as the server's user, for whoever sends
a request; any web page the user visits can send one to ``127.0.0.1``. Two ways in:

- **Cross-origin requests.** A page on ``https://evil.example`` POSTs to
  ``http://127.0.0.1:3000/api/claude``. Without a CORS grant it cannot read the answer, but a
  "simple" request (a form, or ``fetch`` with ``Content-Type: text/plain``) is sent without a
  preflight, and the CLI runs anyway. With the CORS origins at ``*`` even the preflight passed.
- **DNS rebinding.** ``evil.example`` first resolves to the attacker's server, then to
  ``127.0.0.1``: the page's requests become same-origin for the browser (no CORS at all) and
  reach this server with ``Host: evil.example``.

``origin_middleware`` refuses, in this order:

1. A ``Host`` that is not one of the server's names (``allows_host``): 421
   ``host_not_allowed``. IP literals pass: rebinding needs a name the attacker controls, and a
   browser sends an address as Host only to that address. No Host (HTTP/1.0) passes too:
   browsers always send one.
2. A CORS preflight from an origin that is not listed in ``CLAUDE_SERVER_CORS_ORIGINS``: 403
   ``cross_origin_refused``, so that no preflight gets a grant the request itself would not.
3. While no key exists, a request from a page of another origin: an ``Origin`` that is
   neither listed nor the server's own, or ``Sec-Fetch-Site: cross-site`` or ``same-site``
   (a page on another port of ``localhost`` is same-site, and still another origin). Top-level
   GET navigations pass (their answer goes to the user, not to the page that linked, and no
   GET changes anything). Requests without these headers (curl, the SDKs, Open WebUI's pipe,
   which calls from its server) pass. With a key configured every request needs the key, and
   a page can only send one after a preflight, which only listed origins pass.

``*`` in the CORS origins lists no origin while the server is open: it would let every page
in (``cli.check_exposure`` refuses to start so configured).
"""

from __future__ import annotations

import ipaddress
import logging
import re
import socket
from collections.abc import Iterable
from dataclasses import dataclass

from aiohttp import hdrs, web

from claude_server.appkeys import AUTHENTICATOR
from claude_server.config import ConfigError, Settings
from claude_server.errors import ApiError
from claude_server.middleware import Handler
from claude_server.quiet_log import RateLimitedLog, one_line

log = logging.getLogger(__name__)
notices = RateLimitedLog(log)

ANY = "*"
LOOPBACK_NAMES = frozenset({"localhost"})
# What Docker names the host inside its containers (Open WebUI's, say). No public name can
# look like it: ICANN reserved .internal for private use.
DOCKER_HOST_NAMES = frozenset({"host.docker.internal"})
WILDCARD_ADDRESSES = frozenset({"", "0.0.0.0", "::"})
# Sec-Fetch-Site values of a request a page of another origin started (the other two are
# same-origin and none: the user typed the address or followed a bookmark).
OTHER_ORIGIN_SITES = frozenset({"cross-site", "same-site"})
HOST_PATTERN_RE = re.compile(r"\.?[a-z0-9_-]+(\.[a-z0-9_-]+)*")
ORIGIN_RE = re.compile(r"[a-z][a-z0-9+.-]*://[^/?#\s]+")
HOSTS_SETTING = "CLAUDE_SERVER_ALLOWED_HOSTS (--allowed-hosts)"
ORIGINS_SETTING = "CLAUDE_SERVER_CORS_ORIGINS (--cors-origins)"


class HostNotAllowed(ApiError):
    """The request names a host this server does not answer to (DNS rebinding, or a proxy)."""

    status = 421
    code = "host_not_allowed"


class CrossOriginRefused(ApiError):
    """A web page of another origin, not listed, asks an open server (or asks for a grant)."""

    status = 403
    code = "cross_origin_refused"


def host_name(value: str) -> str:
    """The name in a Host header: lowercase, without port, brackets or trailing dot; "" when
    the header is not a host (refused)."""
    value = value.strip().lower()
    if value.startswith("["):
        end = value.find("]")
        rest = value[end + 1 :]
        if end < 0 or (rest and not (rest[0] == ":" and rest[1:].isdigit())):
            return ""
        return value[1:end]
    name, colon, port = value.partition(":")
    if colon and (":" in port or not port.isdigit()):
        return ""
    return name.rstrip(".")


def is_ip_literal(name: str) -> bool:
    try:
        ipaddress.ip_address(name.split("%")[0])  # an IPv6 zone (fe80::1%eth0) is no part of it
    except ValueError:
        return False
    return True


def machine_names() -> set[str]:
    """The names this machine calls itself. ``getfqdn`` may ask the resolver: called once, at
    start, and only when the server listens beyond loopback."""
    return {name.lower().rstrip(".") for name in (socket.gethostname(), socket.getfqdn()) if name}


def listens_beyond_loopback(host: str) -> bool:
    """False when ``host`` (the listening address) is loopback only, so that no other
    machine's name can lead to it."""
    if host in LOOPBACK_NAMES:
        return False
    try:
        return not ipaddress.ip_address(host).is_loopback
    except ValueError:
        return True  # a name, or a wildcard


@dataclass(frozen=True)
class OriginPolicy:
    """The Host names and the CORS origins of one server."""

    any_host: bool
    host_names: frozenset[str]
    host_suffixes: tuple[str, ...]  # ".example.com": it and every name under it
    cors_origins: frozenset[str]
    cors_any: bool

    @classmethod
    def of(cls, settings: Settings, own_names: Iterable[str] | None = None) -> OriginPolicy:
        """The policy of ``settings``. When the server listens beyond loopback, the machine's
        names (``own_names``, by default ``machine_names()``) and Docker's name for the host are
        allowed too. Raises ConfigError for an allowed host that is no name."""
        patterns = [p.strip().lower().rstrip(".") for p in settings.allowed_hosts]
        for pattern in patterns:
            if pattern != ANY and not HOST_PATTERN_RE.fullmatch(pattern) and not is_ip_literal(pattern.strip("[]")):
                raise ConfigError(
                    f"{HOSTS_SETTING} {pattern!r}: not a host name; give names without scheme or port "
                    "(chat.example.com), .example.com for a domain and its subdomains, or * for any"
                )
        listen = settings.host.strip().lower().strip("[]")
        names = {*LOOPBACK_NAMES, *(p for p in patterns if not p.startswith("."))}
        if listens_beyond_loopback(listen):
            names.update(DOCKER_HOST_NAMES, machine_names() if own_names is None else own_names)
        if listen not in WILDCARD_ADDRESSES:
            names.add(listen.rstrip("."))
        origins = frozenset(o for o in settings.cors_origins if o != ANY)
        for origin in origins:
            if not ORIGIN_RE.fullmatch(origin):
                # aiohttp_cors compares origins as strings: a path or a trailing slash never matches.
                log.warning(
                    "%s %r never matches: an origin is scheme://host[:port], nothing after", ORIGINS_SETTING, origin
                )
        return cls(
            any_host=ANY in patterns,
            host_names=frozenset(names),
            host_suffixes=tuple(p for p in patterns if p.startswith(".")),
            cors_origins=origins,
            cors_any=ANY in settings.cors_origins,
        )

    def allows_host(self, name: str) -> bool:
        """True when the server answers to ``name`` (as ``host_name`` returns it)."""
        if self.any_host or name in self.host_names:
            return True
        if not name:
            return False
        if is_ip_literal(name):
            return True
        return any(name.endswith(suffix) or name == suffix[1:] for suffix in self.host_suffixes)

    def lists(self, origin: str) -> bool:
        """True when ``origin`` is listed by name. ``*`` is not a name: it counts only once a key
        exists (``origin_middleware``)."""
        return origin in self.cors_origins


ORIGIN_POLICY = web.AppKey("ORIGIN_POLICY", OriginPolicy)


def same_origin(origin: str, host: str | None) -> bool:
    """True when ``origin`` is the server's own as the request reached it: browsers write the
    Origin's host and port as they wrote Host (lowercase, default port left out). The scheme is
    not compared: behind a TLS proxy the server does not know it."""
    scheme, sep, authority = origin.partition("://")
    return bool(sep) and host is not None and scheme in ("http", "https") and authority == host.strip().lower()


def other_origin(request: web.Request, origin: str | None) -> str | None:
    """Why ``request`` looks started by a page of another origin (not listed), or None."""
    if origin is not None:
        return None if same_origin(origin, request.headers.get(hdrs.HOST)) else f"origin {one_line(origin)}"
    site = request.headers.get("Sec-Fetch-Site", "").strip().lower()
    if site not in OTHER_ORIGIN_SITES:
        return None
    navigation = request.method in ("GET", "HEAD") and request.headers.get("Sec-Fetch-Mode") == "navigate"
    return None if navigation else f"Sec-Fetch-Site: {site}"


def is_preflight(request: web.Request) -> bool:
    return request.method == hdrs.METH_OPTIONS and hdrs.ACCESS_CONTROL_REQUEST_METHOD in request.headers


async def keys_configured(request: web.Request) -> bool:
    return await request.app[AUTHENTICATOR].keys_configured()


def refuse_origin(request: web.Request, reason: str, preflight: bool) -> CrossOriginRefused:
    notices.log(
        "cross_origin", logging.INFO, "refused %s %s from a web page (%s)", request.method, request.path, reason
    )
    how = (
        f"To allow a frontend on another origin, list it in {ORIGINS_SETTING}, "
        "and create an API key (claude-server keys create) for its requests to send."
    )
    if preflight:
        return CrossOriginRefused(f"Cross-origin requests from {reason} are not allowed. {how}")
    return CrossOriginRefused(
        f"Requests from web pages of other origins ({reason}) are refused while the server has no API key. {how}"
    )


@web.middleware
async def origin_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Refuse foreign Host names (421) and, as the module docstring says, pages of other
    origins (403). Inside ``error_middleware``, which renders these in the route's shape."""
    policy = request.app[ORIGIN_POLICY]
    host = request.headers.get(hdrs.HOST)
    if host is not None and not policy.allows_host(host_name(host)):
        shown = one_line(host)
        notices.log("host_not_allowed", logging.INFO, "refused %s %s for Host %s", request.method, request.path, shown)
        raise HostNotAllowed(
            f"This server does not answer to the host {shown!r}. If that is its name, add it to {HOSTS_SETTING} "
            "(comma-separated; * for any host, behind a proxy that rewrites Host)."
        )
    origin = request.headers.get(hdrs.ORIGIN)
    if origin is not None and policy.lists(origin):
        return await handler(request)
    if is_preflight(request):
        if origin is not None and policy.cors_any and await keys_configured(request):
            return await handler(request)
        raise refuse_origin(request, f"origin {one_line(origin or '(none)')}", preflight=True)
    reason = other_origin(request, origin)
    if reason is not None and not await keys_configured(request):
        raise refuse_origin(request, reason, preflight=False)
    return await handler(request)
