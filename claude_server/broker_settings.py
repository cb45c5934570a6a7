"""What the broker needs to know of the server's settings. No aiohttp here."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass

from claude_server.config import Settings


@dataclass(frozen=True)
class BrokerSettings:
    """What the broker needs to know of the server's settings."""

    claude_bin: str = "claude"
    environ: Mapping[str, str] = dataclasses.field(default_factory=dict, repr=False)
    child_env: tuple[str, ...] = ()
    turn_timeout_s: float = 3600.0
    inactivity_timeout_s: float = 600.0
    queue_timeout_s: float = 60.0
    warm_idle_timeout_s: float = 300.0
    max_warm: int = 8
    permission_timeout_s: float = 600.0
    server_id: str = ""
    replica_name: str = ""  # "": the server id
    replica_url: str = ""
    lease_s: float = 30.0
    shared: bool = False  # a named replica: other live servers may share the database

    @classmethod
    def of(cls, settings: Settings, server_id: str) -> BrokerSettings:
        return cls(
            claude_bin=settings.claude_bin,
            environ=settings.environ,
            child_env=settings.child_env,
            turn_timeout_s=settings.turn_timeout_s,
            inactivity_timeout_s=settings.inactivity_timeout_s,
            queue_timeout_s=settings.queue_timeout_s,
            warm_idle_timeout_s=settings.warm_idle_timeout_s,
            max_warm=settings.max_warm,
            permission_timeout_s=settings.permission_timeout_s,
            server_id=server_id,
            replica_name=settings.replica_name,
            replica_url=settings.replica_url,
            lease_s=settings.lease_seconds,
            shared=bool(settings.replica_id),
        )
