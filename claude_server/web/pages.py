"""The web app's HTML pages, rendered once at start with the hashed URLs of their assets."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from claude_server.web.assets import Assets

TEMPLATE_DIR = Path(__file__).resolve().parent / "templates"
# `{{ asset "app.css" }}` in a template becomes the hashed URL of static/app.css.
PLACEHOLDER_RE = re.compile(r"""\{\{\s*asset\s+"([^"]+)"\s*\}\}""")

# Scripts and styles only from the server's own files: no inline script or style, no eval.
# Images may be data: URIs (Swagger UI's icons) and blob: URLs (a downloaded file's preview).
# connect-src 'self': the page talks to this server only. No framing, no <base>, forms post here.
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
    "font-src 'self'; connect-src 'self'; manifest-src 'self'; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'"
)
PAGE_HEADERS = {
    "Content-Security-Policy": CSP,
    "Cache-Control": "no-cache",
    "Cross-Origin-Opener-Policy": "same-origin",
}
ASSET_CACHE_CONTROL = "public, max-age=31536000, immutable"


class TemplateError(Exception):
    """A template names an asset that does not exist."""


@dataclass(frozen=True)
class Pages:
    """The rendered pages, by name (``index``, ``docs``)."""

    assets: Assets
    html: dict[str, bytes]

    @classmethod
    def load(cls, assets: Assets, root: Path = TEMPLATE_DIR) -> Pages:
        html = {p.stem: render(p.read_text(), assets).encode() for p in sorted(root.glob("*.html"))}
        return cls(assets, html)


def render(template: str, assets: Assets) -> str:
    """``template`` with each asset placeholder replaced by the asset's hashed URL."""

    def url(match: re.Match[str]) -> str:
        name = match.group(1)
        try:
            return assets.url(name)
        except KeyError:
            raise TemplateError(f"the template names {name!r}, which is not in the static folder") from None

    return PLACEHOLDER_RE.sub(url, template)
