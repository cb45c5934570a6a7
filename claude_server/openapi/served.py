"""The document as it is served: generated on first request (the route table is fixed once
the app runs), then the same bytes and ETag for the app's life."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

from aiohttp import web

from claude_server.openapi.build import build_document


@dataclass(frozen=True)
class Served:
    body: bytes
    etag: str


class OpenApiDocument:
    """One app's document, built at most once."""

    def __init__(self) -> None:
        self._served: Served | None = None

    def get(self, router: web.UrlDispatcher) -> Served:
        if self._served is None:
            body = json.dumps(build_document(router), ensure_ascii=False, separators=(",", ":")).encode()
            self._served = Served(body, '"' + hashlib.sha256(body).hexdigest()[:32] + '"')
        return self._served
