"""Reloading configuration while the server runs (``SIGHUP``, ``POST /api/admin/reload``).

The providers file is read again; a file with an error is refused as a whole, with the
reason, and the providers stay as they were. Running turns are never touched: a provider a
reload removes keeps serving the turns that run on it, and its sessions fail over on their
next turn. No aiohttp here.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from claude_server.provider_file import ProviderFileError, load_providers
from claude_server.providers import Providers

log = logging.getLogger(__name__)


class ReloadRefused(Exception):
    """The new configuration has an error; nothing of it was applied."""


class Reloader:
    def __init__(self, providers_file: str, environ: Mapping[str, str], providers: Providers | None) -> None:
        self.providers_file = providers_file
        self.environ = environ
        self.providers = providers

    def reload(self) -> dict[str, Any]:
        """Apply the configuration as it is now; what changed. Raises ReloadRefused."""
        changes: dict[str, Any] = {"providers": None}
        if self.providers is not None:
            try:
                fresh = load_providers(Path(self.providers_file), self.environ)
            except ProviderFileError as exc:
                raise ReloadRefused(str(exc)) from None
            changes["providers"] = self.providers.reload(fresh)
        log.info("configuration reloaded: %s", changes)
        return changes
