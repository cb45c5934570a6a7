"""The web app's static files: read once at start, named by their content, compressed once.

Every file under ``static/`` is served as ``/assets/<name>.<hash>.<ext>`` (``vendor/`` paths
keep their folders), where the hash covers the file's bytes, so a URL never changes meaning and
a browser may keep it for a year. The app's own ES modules import each other by relative
names (``./api.js``); those names are rewritten to the hashed URLs, so a module's hash covers
the hashes of what it imports (a change anywhere gives new URLs all the way up to the page).
"""

from __future__ import annotations

import gzip
import hashlib
import mimetypes
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

STATIC_DIR = Path(__file__).resolve().parent / "static"
URL_PREFIX = "/assets/"
HASH_CHARS = 10
# Smaller files gain nothing from gzip once headers are counted.
GZIP_MIN_BYTES = 512
# Level 9 costs about a quarter more time than 6 at start (measured: 0.35 s against 0.28 s for
# every file, the Swagger UI bundle most of it) and saves 2-3 % of the bytes.
GZIP_LEVEL = 9
# A relative import in one of the app's own modules: `from "./x.js"`, `import "./x.js"`, `import("./x.js")`.
IMPORT_RE = re.compile(r"""(\bfrom\s*|\bimport\s*\(?\s*)(["'])(\.{1,2}/[^"'\s]+)\2""")
# The same import once rewritten: `from "/assets/x.3f2a9c1b0d.js"`.
HASHED_IMPORT_RE = re.compile(r"""(\bfrom\s*|\bimport\s*\(?\s*)(["'])(/assets/[^"'\s]+)\2""")
TYPES = {
    ".js": "text/javascript",
    ".mjs": "text/javascript",
    ".css": "text/css",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".txt": "text/plain",
    ".map": "application/json",
}


@dataclass(frozen=True)
class Asset:
    """One file as served: its bytes (and gzipped bytes when that is smaller), its type, its ETag."""

    name: str  # its path under static/, "vendor/marked/marked.esm.js"
    url: str
    body: bytes
    gzipped: bytes | None
    content_type: str
    etag: str  # strong, quoted; the gzipped body's has "-gz" added inside the quotes

    @property
    def gzip_etag(self) -> str:
        return self.etag[:-1] + '-gz"'

    @property
    def transfer_size(self) -> int:
        """Bytes on the wire for a browser that accepts gzip."""
        return len(self.gzipped) if self.gzipped is not None else len(self.body)


class AssetError(Exception):
    """The static folder is inconsistent (an import of a file that does not exist, a cycle)."""


class Assets:
    """Every static file, by its hashed URL and by its name."""

    def __init__(self, by_name: dict[str, Asset]) -> None:
        self.by_name = by_name
        self.by_url = {a.url.removeprefix(URL_PREFIX): a for a in by_name.values()}

    @classmethod
    def load(cls, root: Path = STATIC_DIR) -> Assets:
        sources = {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}
        built: dict[str, Asset] = {}

        def build(name: str, chain: tuple[str, ...]) -> Asset:
            if name in built:
                return built[name]
            if name in chain:
                raise AssetError(f"import cycle: {' -> '.join((*chain, name))}")
            body = sources[name]
            if _is_own_module(name):
                body = _rewrite_imports(name, body, lambda dep: build(dep, (*chain, name)).url, sources)
            built[name] = _asset(name, body)
            return built[name]

        for name in sources:
            build(name, ())
        return cls(built)

    def url(self, name: str) -> str:
        """The hashed URL of the file at ``name`` under static/ (KeyError if there is none)."""
        return self.by_name[name].url

    def find(self, tail: str) -> Asset | None:
        """The asset served at ``/assets/<tail>``, or None."""
        return self.by_url.get(tail)

    def module_graph(self, name: str) -> list[Asset]:
        """``name`` and every module it imports, statically or dynamically, each once."""
        seen: dict[str, Asset] = {}
        todo = [name]
        while todo:
            current = todo.pop()
            if current in seen:
                continue
            asset = self.by_name[current]
            seen[current] = asset
            if _is_own_module(current):
                for match in HASHED_IMPORT_RE.finditer(asset.body.decode()):
                    found = self.find(match.group(3).removeprefix(URL_PREFIX))
                    if found is not None:
                        todo.append(found.name)
        return list(seen.values())


def _is_own_module(name: str) -> bool:
    return name.endswith(".js") and not name.startswith("vendor/")


def _rewrite_imports(name: str, body: bytes, url_of: Callable[[str], str], sources: dict[str, bytes]) -> bytes:
    here = PurePosixPath(name).parent

    def replace(match: re.Match[str]) -> str:
        target = _normalise(here / match.group(3))
        if target not in sources:
            raise AssetError(f"{name} imports {match.group(3)}, which is not in the static folder")
        return f"{match.group(1)}{match.group(2)}{url_of(target)}{match.group(2)}"

    return IMPORT_RE.sub(replace, body.decode()).encode()


def _normalise(path: PurePosixPath) -> str:
    parts: list[str] = []
    for part in path.parts:
        if part == "..":
            if not parts:
                raise AssetError(f"{path} leads outside the static folder")
            parts.pop()
        elif part not in (".", ""):
            parts.append(part)
    return "/".join(parts)


def _asset(name: str, body: bytes) -> Asset:
    digest = hashlib.sha256(body).hexdigest()[:HASH_CHARS]
    path = PurePosixPath(name)
    hashed = path.with_name(f"{path.stem}.{digest}{path.suffix}").as_posix()
    content_type = TYPES.get(path.suffix) or mimetypes.guess_type(path.name)[0] or _untyped(path)
    packed = gzip.compress(body, GZIP_LEVEL, mtime=0) if len(body) >= GZIP_MIN_BYTES else None
    if packed is not None and len(packed) >= len(body):
        packed = None
    return Asset(name, URL_PREFIX + hashed, body, packed, content_type, f'"{digest}"')


def _untyped(path: PurePosixPath) -> str:
    # LICENSE, NOTICE: text without a suffix.
    return "text/plain" if not path.suffix else "application/octet-stream"
