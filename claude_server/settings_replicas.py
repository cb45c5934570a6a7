"""The settings of a server that is one of several replicas on one database."""

from __future__ import annotations

from claude_server.settings_values import Option, _http_url, _seconds

GROUP = "server"

REPLICA_OPTIONS: tuple[Option, ...] = (
    Option(
        "replica_id",
        "--replica-id",
        "CLAUDE_SERVER_REPLICA_ID",
        "",
        str,
        "this server's name among the replicas on one database (default: host name and port); setting it "
        "lets several servers share one SQLite file on one machine",
        GROUP,
        default_text="",
    ),
    Option(
        "advertise_url",
        "--advertise-url",
        "CLAUDE_SERVER_ADVERTISE_URL",
        "",
        _http_url,
        "the URL other replicas reach this one at (default: http://<host>:<port>)",
        GROUP,
        default_text="",
    ),
    Option(
        "lease_seconds",
        "--lease-seconds",
        "CLAUDE_SERVER_LEASE_SECONDS",
        30.0,
        _seconds,
        "a replica whose heartbeat is older than this is gone: its turns are marked interrupted",
        GROUP,
    ),
)
