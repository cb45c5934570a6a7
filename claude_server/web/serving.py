"""How one asset is answered: the encoding, the ETag, and 304 for a copy the browser holds.
No aiohttp here: the route renders the ``Reply``."""

from __future__ import annotations

import functools
from dataclasses import dataclass

from claude_server.web.assets import Asset, Assets
from claude_server.web.pages import ASSET_CACHE_CONTROL, Pages


@dataclass(frozen=True)
class Reply:
    status: int
    body: bytes
    headers: dict[str, str]


@functools.cache
def site() -> Pages:
    """The pages and their assets, read and compressed once per process (about 0.35 s, most of
    it gzipping the Swagger UI bundle)."""
    return Pages.load(Assets.load())


def accepts_gzip(accept_encoding: str) -> bool:
    """Whether ``Accept-Encoding`` allows gzip (``gzip;q=0`` refuses it)."""
    for part in accept_encoding.split(","):
        coding, _, params = part.strip().partition(";")
        if coding.strip().lower() in ("gzip", "*"):
            q = params.strip().lower()
            return not (q.startswith("q=") and _zero(q[2:]))
    return False


def _zero(value: str) -> bool:
    try:
        return float(value) == 0
    except ValueError:
        return False


def asset_reply(asset: Asset, accept_encoding: str, if_none_match: str) -> Reply:
    """The asset gzipped when the client takes it and that is smaller; 304 when the client's
    ``If-None-Match`` names this representation's ETag (or ``*``)."""
    gz = asset.gzipped is not None and accepts_gzip(accept_encoding)
    etag = asset.gzip_etag if gz else asset.etag
    headers = {
        "Content-Type": asset.content_type
        if not asset.content_type.startswith("text/")
        else f"{asset.content_type}; charset=utf-8",
        "Cache-Control": ASSET_CACHE_CONTROL,
        "ETag": etag,
        "Vary": "Accept-Encoding",
    }
    held = {t.strip().removeprefix("W/") for t in if_none_match.split(",") if t.strip()}
    if etag in held or "*" in held:
        return Reply(304, b"", {k: v for k, v in headers.items() if k != "Content-Type"})
    if gz:
        headers["Content-Encoding"] = "gzip"
        assert asset.gzipped is not None
        return Reply(200, asset.gzipped, headers)
    return Reply(200, asset.body, headers)
