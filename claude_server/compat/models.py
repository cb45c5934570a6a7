"""The model names the compatible APIs accept, and the CLI ``--model`` each one runs.

Configured as ``alias=cli_model`` pairs (``CLAUDE_SERVER_COMPAT_MODELS``); an empty
``cli_model`` runs the CLI's own default model (no ``--model``).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from claude_server.errors import NotFound

DEFAULT_MODELS: tuple[str, ...] = (
    "claude-code=",
    "claude-code-opus=opus",
    "claude-code-sonnet=sonnet",
    "claude-code-haiku=haiku",
)
# An alias is what clients type; a CLI model name ends up in argv as --model=<name>.
ALIAS_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/-]{0,127}$")
CLI_MODEL_RE = re.compile(r"^(?:[A-Za-z0-9][A-Za-z0-9._:/\[\]-]{0,127})?$")


def parse_model_setting(text: str) -> tuple[str, ...]:
    """``alias=cli_model,...`` checked, as a tuple of ``alias=cli_model`` entries."""
    entries: list[str] = []
    seen: set[str] = set()
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        alias, sep, cli_model = (s.strip() for s in part.partition("="))
        if not sep:
            raise ValueError(f"{part!r} is not alias=cli_model (leave cli_model empty for the CLI's default)")
        if not ALIAS_RE.match(alias):
            raise ValueError(f"{alias!r} is not a model name (letters, digits, '.', '_', ':', '/', '-')")
        if not CLI_MODEL_RE.match(cli_model):
            raise ValueError(f"{cli_model!r} is not a CLI model name")
        if alias in seen:
            raise ValueError(f"{alias!r} is listed twice")
        seen.add(alias)
        entries.append(f"{alias}={cli_model}")
    if not entries:
        raise ValueError("name at least one model")
    return tuple(entries)


@dataclass(frozen=True)
class Model:
    id: str
    cli_model: str | None  # None: the CLI's default

    @property
    def display_name(self) -> str:
        return f"Claude Code ({self.cli_model})" if self.cli_model else "Claude Code"


class ModelMap:
    """The configured models, in the configured order."""

    def __init__(self, entries: Sequence[str]) -> None:
        self.models: dict[str, Model] = {}
        for entry in entries:
            alias, _, cli_model = entry.partition("=")
            self.models[alias] = Model(alias, cli_model or None)

    def all(self) -> list[Model]:
        return list(self.models.values())

    def get(self, name: str) -> Model:
        """The model a request names, or 404 ``model_not_found``."""
        found = self.models.get(name)
        if found is None:
            raise NotFound(
                f"The model {name!r} does not exist; use one of: {', '.join(self.models)}",
                code="model_not_found",
                field="model",
            )
        return found
