"""The web app's pages and assets: hashed URLs, cache headers, ETags and 304s, gzip, the CSP,
no key for the page while the API still needs one, and the size of the chat page."""

from __future__ import annotations

import gzip
import hashlib
import re
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient

from claude_server.app import create_app
from claude_server.config import Settings
from claude_server.web.assets import AssetError, Assets
from claude_server.web.pages import Pages, TemplateError
from claude_server.web.serving import accepts_gzip, site

ROOT = Path(__file__).resolve().parent.parent
OPERATOR = "op-secret-for-webapp-tests"
ASSET_RE = re.compile(r'(?:src|href)="(/assets/[^"]+)"')
BUDGET_BYTES = 500 * 1024


@pytest.fixture
async def keyed(aiohttp_client, settings: Settings) -> TestClient:  # type: ignore[no-untyped-def]
    return await aiohttp_client(create_app(replace(settings, api_keys=(OPERATOR,))))


async def test_the_page_loads_without_a_key_while_the_api_needs_one(keyed: TestClient) -> None:
    page = await keyed.get("/")
    assert page.status == 200
    assert page.content_type == "text/html"
    assert page.headers["Cache-Control"] == "no-cache"
    assert (await keyed.get("/api/sessions")).status == 401
    assert (await keyed.get("/api/keys")).status == 401
    assert (await keyed.get("/docs")).status == 200
    # Only those paths: a near miss is an API path like any other.
    assert (await keyed.get("/docsx")).status == 401
    assert (await keyed.get("/index.html")).status == 401


async def test_the_pages_csp_allows_no_inline_script_or_style(keyed: TestClient) -> None:
    for path in ("/", "/docs"):
        resp = await keyed.get(path)
        csp = resp.headers["Content-Security-Policy"]
        directives = dict(d.strip().split(" ", 1) for d in csp.split(";"))
        assert directives["script-src"] == "'self'"
        assert directives["style-src"] == "'self'"
        assert directives["default-src"] == "'none'"
        assert directives["frame-ancestors"] == "'none'"
        assert directives["base-uri"] == "'none'"
        assert "unsafe" not in csp
        html = await resp.text()
        # No inline script or style, no handler attributes, in the page itself.
        assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", html)
        assert "<style" not in html and " style=" not in html
        assert not re.search(r"\son[a-z]+=", html)
        assert resp.headers["X-Frame-Options"] == "DENY"


async def test_every_asset_a_page_names_is_served_under_its_content_hash(keyed: TestClient) -> None:
    for path in ("/", "/docs"):
        html = await (await keyed.get(path)).text()
        urls = ASSET_RE.findall(html)
        assert urls
        for url in urls:
            resp = await keyed.get(url, headers={"Accept-Encoding": "identity"})
            assert resp.status == 200, url
            body = await resp.read()
            digest = hashlib.sha256(body).hexdigest()[:10]
            assert f".{digest}." in url
            assert resp.headers["Cache-Control"] == "public, max-age=31536000, immutable"
            assert resp.headers["ETag"] == f'"{digest}"'
            assert "Content-Encoding" not in resp.headers


async def test_modules_import_each_other_by_hashed_urls(keyed: TestClient) -> None:
    html = await (await keyed.get("/")).text()
    (app_js,) = [u for u in ASSET_RE.findall(html) if "/app." in u and u.endswith(".js")]
    seen, todo = set(), [app_js]
    while todo:
        url = todo.pop()
        if url in seen:
            continue
        seen.add(url)
        body = await (await keyed.get(url)).text()
        assert not re.search(r"""from\s*["']\.""", body), url
        todo.extend(re.findall(r"""(?:from\s*|import\s*\(\s*)["'](/assets/[^"']+)["']""", body))
    names = {u.rsplit("/", 1)[1].split(".")[0] for u in seen}
    assert {"app", "api", "sse", "chat", "transcript", "markdown", "marked", "purify", "uPlot"} <= names


async def test_a_held_copy_gets_304_and_gzip_is_a_representation_of_its_own(keyed: TestClient) -> None:
    url = site().assets.url("vendor/marked/marked.esm.js")
    plain = await keyed.get(url, headers={"Accept-Encoding": "identity"})
    packed = await keyed.get(url, headers={"Accept-Encoding": "gzip, deflate"}, auto_decompress=False)
    assert packed.headers["Content-Encoding"] == "gzip"
    assert packed.headers["Vary"] == "Accept-Encoding"
    assert gzip.decompress(await packed.read()) == await plain.read()
    assert packed.headers["ETag"] != plain.headers["ETag"]
    again = await keyed.get(url, headers={"If-None-Match": plain.headers["ETag"], "Accept-Encoding": "identity"})
    assert again.status == 304
    assert await again.read() == b""
    assert again.headers["Cache-Control"] == "public, max-age=31536000, immutable"
    gz_again = await keyed.get(url, headers={"If-None-Match": packed.headers["ETag"], "Accept-Encoding": "gzip"})
    assert gz_again.status == 304
    # Another ETag (an older file) gets the file.
    assert (await keyed.get(url, headers={"If-None-Match": '"0000000000"'})).status == 200
    refused = await keyed.get(url, headers={"Accept-Encoding": "gzip;q=0"}, auto_decompress=False)
    assert "Content-Encoding" not in refused.headers


async def test_an_unknown_asset_is_a_404_in_the_error_shape(keyed: TestClient) -> None:
    for path in (
        "/assets/app.0000000000.js",
        "/assets/app.js",
        "/assets/vendor/nothing.css",
        "/assets/../api/sessions",
    ):
        resp = await keyed.get(path)
        assert resp.status in (401, 404), path
        if resp.status == 404:
            assert (await resp.json())["error"]["code"] in ("asset_not_found", "not_found")
    resp = await keyed.get("/assets/app.js")
    assert resp.status == 404
    assert (await resp.json())["error"]["code"] == "asset_not_found"


def test_the_chat_page_downloads_less_than_500_kb_compressed() -> None:
    pages = site()
    html = pages.html["index"].decode()
    total = len(gzip.compress(pages.html["index"]))
    counted: set[str] = set()
    for url in ASSET_RE.findall(html):
        asset = pages.assets.find(url.removeprefix("/assets/"))
        assert asset is not None
        graph = pages.assets.module_graph(asset.name) if asset.name.endswith(".js") else [asset]
        total += sum(a.transfer_size for a in graph if a.name not in counted)
        counted.update(a.name for a in graph)
    # Every module the page can load is counted, the charts' library included.
    assert {"app.js", "chat.js", "vendor/marked/marked.esm.js", "vendor/uplot/uPlot.esm.js"} <= counted
    assert total < BUDGET_BYTES, total


@pytest.mark.parametrize(
    ("header", "expected"),
    [("gzip", True), ("br, gzip;q=0.5", True), ("*", True), ("gzip;q=0", False), ("identity", False), ("", False)],
)
def test_accept_encoding(header: str, expected: bool) -> None:
    assert accepts_gzip(header) is expected


def test_a_module_importing_a_missing_file_stops_the_start(tmp_path: Path) -> None:
    (tmp_path / "a.js").write_text('import { x } from "./missing.js";\n')
    with pytest.raises(AssetError, match="missing.js"):
        Assets.load(tmp_path)


def test_an_import_cycle_stops_the_start(tmp_path: Path) -> None:
    (tmp_path / "a.js").write_text('import "./b.js";\n')
    (tmp_path / "b.js").write_text('import "./a.js";\n')
    with pytest.raises(AssetError, match="cycle"):
        Assets.load(tmp_path)


def test_a_change_in_an_imported_module_changes_the_importers_url(tmp_path: Path) -> None:
    (tmp_path / "a.js").write_text('import { b } from "./b.js";\n')
    (tmp_path / "b.js").write_text("export const b = 1;\n")
    before = Assets.load(tmp_path).url("a.js")
    (tmp_path / "b.js").write_text("export const b = 2;\n")
    after = Assets.load(tmp_path)
    assert after.url("a.js") != before
    assert after.url("b.js") in after.by_name["a.js"].body.decode()


def test_a_template_naming_a_missing_asset_stops_the_start(tmp_path: Path) -> None:
    static, templates = tmp_path / "static", tmp_path / "templates"
    static.mkdir()
    templates.mkdir()
    (templates / "index.html").write_text('<script src="{{ asset "gone.js" }}"></script>')
    with pytest.raises(TemplateError, match="gone.js"):
        Pages.load(Assets.load(static), templates)


def test_the_vendored_files_are_those_package_json_pins() -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "vendor_assets.py"), "--check"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
