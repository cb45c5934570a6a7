"""A running server as a source: its HTTP API with a key, so that a command sees what that
key may see (an admin key sees every key's sessions with ``--all-keys``)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote, urlsplit

import aiohttp

from claude_server.manage.source import LoggedEvent, ManageError, turn_summary

# A server that does not answer within these is reported as unreachable, not waited for.
CONNECT_TIMEOUT_S = 5.0
REQUEST_TIMEOUT_S = 30.0
# The API's largest page of sessions, and of a session's turns.
SESSIONS_PAGE = 500
TURNS_PAGE = 100
# Events are read in chunks and framed here: a CLI line can be megabytes, past what
# aiohttp's readline() takes (128 KiB).
READ_CHUNK_BYTES = 64 * 1024


def check_url(url: str) -> str:
    """``url`` without a trailing slash; a ManageError (status 2) unless it is http(s)://host."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ManageError(f"--url must be http://host:port or https://host, got {url!r}", status=2)
    return url.rstrip("/")


class ServerSource:
    def __init__(self, url: str, api_key: str | None) -> None:
        self.url = check_url(url)
        self.description = f"server {self.url}"
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._http = aiohttp.ClientSession(
            headers=headers,
            timeout=aiohttp.ClientTimeout(total=None, connect=CONNECT_TIMEOUT_S, sock_read=REQUEST_TIMEOUT_S),
        )

    async def close(self) -> None:
        await self._http.close()

    def _unreachable(self, exc: Exception) -> ManageError:
        reason = str(exc) or type(exc).__name__
        if isinstance(exc, TimeoutError):
            reason = f"no answer within {REQUEST_TIMEOUT_S:g} s"
        return ManageError(f"cannot reach the server at {self.url}: {reason}")

    async def _refusal(self, resp: aiohttp.ClientResponse) -> ManageError:
        """One line for an error answer: the API's own message, and what to do about a 401."""
        try:
            body = await resp.json(content_type=None)
            error = body.get("error") if isinstance(body, dict) else None
            # The API's error shape: {"error": {"code": ..., "message": ...}}.
            ours = isinstance(error, dict) and "code" in error and "message" in error
            message = str(error["message"]) if ours and isinstance(error, dict) else None
        except (ValueError, aiohttp.ClientError):
            message = None
        if resp.status == 401:
            return ManageError(
                f"the server at {self.url} refused the key ({message or 'HTTP 401'}): give --api-key or set "
                "CLAUDE_SERVER_API_KEY"
            )
        if message is None:
            return ManageError(f"{self.url}{resp.url.path} answered HTTP {resp.status}, not as claude-server does")
        return ManageError(message if resp.status == 404 else f"the server refused ({resp.status}): {message}")

    async def _request(self, method: str, path: str, params: dict[str, str] | None = None) -> Any:
        """The JSON answer of one request (None for a 204); a ManageError otherwise."""
        try:
            async with self._http.request(method, self.url + path, params=params) as resp:
                if resp.status >= 400:
                    raise await self._refusal(resp)
                if resp.status == 204:
                    return None
                try:
                    return await resp.json(content_type=None)
                except ValueError:
                    raise ManageError(f"{self.url}{path} did not answer with JSON: is it a claude-server?") from None
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise self._unreachable(exc) from None

    @staticmethod
    def _scope(every_key: bool) -> dict[str, str]:
        return {"all": "true"} if every_key else {}

    async def health(self) -> dict[str, Any]:
        body = await self._request("GET", "/health")
        if not isinstance(body, dict) or "status" not in body:
            raise ManageError(f"{self.url}/health did not answer as claude-server does")
        return body

    async def list_sessions(self, *, limit: int, query: str | None, every_key: bool) -> list[dict[str, Any]]:
        sessions: list[dict[str, Any]] = []
        cursor = None
        while len(sessions) < limit:
            params = {"limit": str(min(limit - len(sessions), SESSIONS_PAGE)), **self._scope(every_key)}
            if query:
                params["q"] = query
            if cursor:
                params = {**params, "cursor": cursor}
                params.pop("q", None)  # the cursor keeps the filter
            page = await self._request("GET", "/api/sessions", params)
            sessions += page["sessions"]
            cursor = page.get("next_cursor")
            if not cursor:
                break
        return sessions

    async def session(self, session_id: str, *, every_key: bool) -> dict[str, Any]:
        body: dict[str, Any] = await self._request(
            "GET", f"/api/sessions/{quote(session_id, safe='')}", self._scope(every_key)
        )
        return body

    async def session_turns(self, session_id: str, *, every_key: bool) -> list[dict[str, Any]]:
        turns: list[dict[str, Any]] = []
        params = {"limit": str(TURNS_PAGE), **self._scope(every_key)}
        path = f"/api/sessions/{quote(session_id, safe='')}/messages"
        while True:
            page = await self._request("GET", path, params)
            turns += [turn_summary(t) for t in page["turns"]]
            if not page.get("next_cursor"):
                return turns
            params = {**params, "cursor": page["next_cursor"]}

    async def delete_session(self, session_id: str, *, every_key: bool) -> str | None:
        await self._request("DELETE", f"/api/sessions/{quote(session_id, safe='')}", self._scope(every_key))
        return None

    async def turn(self, turn_id: str, *, every_key: bool) -> dict[str, Any]:
        body: dict[str, Any] = await self._request(
            "GET", f"/api/turns/{quote(turn_id, safe='')}", self._scope(every_key)
        )
        return body

    async def events(self, turn_id: str, *, every_key: bool) -> AsyncIterator[LoggedEvent]:
        """The turn's event log as its SSE stream gives it: replayed, then followed live to
        the turn's end."""
        path = f"/api/turns/{quote(turn_id, safe='')}/events"
        try:
            async with self._http.get(
                self.url + path, params=self._scope(every_key), timeout=aiohttp.ClientTimeout(connect=CONNECT_TIMEOUT_S)
            ) as resp:
                if resp.status >= 400:
                    raise await self._refusal(resp)
                if resp.status == 204:
                    return
                async for item in _sse_events(resp):
                    yield item
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise self._unreachable(exc) from None

    async def stats(self, *, group_by: str, since: str | None) -> dict[str, Any]:
        params = {"group_by": group_by}
        if since is not None:
            params["from"] = since
        body: dict[str, Any] = await self._request("GET", "/api/stats", params)
        return body


async def _sse_events(resp: aiohttp.ClientResponse) -> AsyncIterator[LoggedEvent]:
    """The events of an SSE stream (comments, such as pings, skipped)."""
    buffer = b""
    fields: dict[str, list[bytes]] = {}
    async for chunk in resp.content.iter_chunked(READ_CHUNK_BYTES):
        buffer += chunk
        *lines, buffer = buffer.split(b"\n")
        for line in lines:
            line = line.removesuffix(b"\r")
            if line == b"":
                if "data" in fields:
                    yield _event(fields)
                fields = {}
            elif not line.startswith(b":"):
                name, _, value = line.partition(b":")
                fields.setdefault(name.decode(errors="replace"), []).append(value.removeprefix(b" "))


def _event(fields: dict[str, list[bytes]]) -> LoggedEvent:
    seq = None
    if "id" in fields:
        tail = fields["id"][-1].rpartition(b":")[2]
        seq = int(tail) if tail.isdigit() else None
    name = fields["event"][-1].decode(errors="replace") if "event" in fields else None
    return LoggedEvent(seq, name, b"\n".join(fields["data"]))
