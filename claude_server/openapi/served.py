"""The document as it is served: generated on first request (the route table is fixed once
the app runs), then the same bytes and ETag for the app's life, also gzipped (175 KB of
JSON are 20 KB so)."""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import json
from dataclasses import dataclass

from aiohttp import web

from claude_server.openapi.build import build_document


@dataclass(frozen=True)
class Served:
    body: bytes
    gzipped: bytes
    etag: str

    @property
    def gzip_etag(self) -> str:
        """The gzipped body's own ETag (a strong ETag names one representation)."""
        return self.etag[:-1] + '-gzip"'


def serve(router: web.UrlDispatcher) -> Served:
    body = json.dumps(build_document(router), ensure_ascii=False, separators=(",", ":")).encode()
    return Served(body, gzip.compress(body, mtime=0), '"' + hashlib.sha256(body).hexdigest()[:32] + '"')


class OpenApiDocument:
    """One app's document, built at most once."""

    def __init__(self) -> None:
        self._served: Served | None = None
        self._lock = asyncio.Lock()

    async def get(self, router: web.UrlDispatcher) -> Served:
        # Building took 75-250 ms here: in a thread, so the loop goes on.
        async with self._lock:
            if self._served is None:
                self._served = await asyncio.to_thread(serve, router)
        return self._served
