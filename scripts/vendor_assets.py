"""Copy the web app's third-party files from node_modules (pinned in package.json) into the
package, where they are committed: installing the server needs no npm and no build step.

    .venv/bin/python scripts/vendor_assets.py           # copy (after `npm ci` or an upgrade)
    .venv/bin/python scripts/vendor_assets.py --check   # exit 1 if a copy differs

Source-map comments are dropped (the maps are not shipped); nothing else is changed.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NODE_MODULES = ROOT / "node_modules"
VENDOR = ROOT / "claude_server" / "web" / "static" / "vendor"

# The languages code blocks are highlighted in (a grammar is 0.2-4 KB compressed).
HIGHLIGHT_LANGUAGES = (
    "bash", "css", "diff", "dockerfile", "go", "ini", "javascript", "json", "markdown",
    "plaintext", "python", "rust", "shell", "sql", "typescript", "xml", "yaml",
)  # fmt: skip
# package -> (folder under vendor/, files to copy from the package's folder)
FILES: dict[str, tuple[str, tuple[str, ...]]] = {
    "@highlightjs/cdn-assets": (
        "highlight",
        (
            "es/core.min.js",
            *(f"es/languages/{lang}.min.js" for lang in HIGHLIGHT_LANGUAGES),
            "styles/github.min.css",
            "styles/github-dark.min.css",
            "LICENSE",
        ),
    ),
    "marked": ("marked", ("lib/marked.esm.js", "LICENSE")),
    "dompurify": ("dompurify", ("dist/purify.es.mjs", "LICENSE")),
    "uplot": ("uplot", ("dist/uPlot.esm.js", "dist/uPlot.min.css", "LICENSE")),
    "swagger-ui-dist": (
        "swagger-ui",
        ("swagger-ui-bundle.js", "swagger-ui-bundle.js.LICENSE.txt", "swagger-ui.css", "LICENSE", "NOTICE"),
    ),
}
SOURCE_MAP_RE = re.compile(rb"\n?(//# sourceMappingURL=[^\n]*|/\*# sourceMappingURL=[^\n]*?\*/)\s*$")


def vendored() -> dict[Path, bytes]:
    """Every file as it belongs under vendor/, read from node_modules."""
    out: dict[Path, bytes] = {}
    for package, (folder, files) in FILES.items():
        source = NODE_MODULES / package
        if not source.is_dir():
            sys.exit(f"{source} is missing: run `npm ci` (make setup) first")
        version = json.loads((source / "package.json").read_text())["version"]
        for name in files:
            body = SOURCE_MAP_RE.sub(b"\n", (source / name).read_bytes())
            out[VENDOR / folder / Path(name).name] = body
        out[VENDOR / folder / "VERSION"] = f"{package} {version}\n".encode()
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="only compare; exit 1 if a copy differs")
    args = parser.parse_args()
    wanted = vendored()
    present = {p for p in VENDOR.rglob("*") if p.is_file()} if VENDOR.exists() else set()
    stale = sorted(present - set(wanted))
    differ = sorted(p for p, body in wanted.items() if not p.exists() or p.read_bytes() != body)
    if args.check:
        for path in [*differ, *stale]:
            print(f"differs from node_modules: {path.relative_to(ROOT)}", file=sys.stderr)
        return 1 if differ or stale else 0
    for path in stale:
        path.unlink()
    for path in differ:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(wanted[path])
    print(f"{len(differ)} file(s) written, {len(stale)} removed, under {VENDOR.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
