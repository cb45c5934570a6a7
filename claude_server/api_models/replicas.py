"""The replicas that share the database, as ``GET /api/admin/replicas`` lists them."""

from __future__ import annotations

from pydantic import ConfigDict, Field

from claude_server.api_models.base import ApiModel


class ReplicaInfo(ApiModel):
    """The replica this server is, as /health names it."""

    id: str = Field(description="CLAUDE_SERVER_REPLICA_ID, or host name and port")
    server_id: str = Field(description="This run of it (host, pid and a random part)")
    advertise_url: str


class ReplicaTurn(ApiModel):
    turn_id: str
    session_id: str | None
    status: str
    started_at: str


class Replica(ApiModel):
    server_id: str
    replica_id: str
    advertise_url: str
    started_at: str
    heartbeat_at: str
    self_: bool = Field(alias="self", description="Whether it is the replica that answered")
    turns: list[ReplicaTurn] = Field(description="Its unfinished turns (running or queued)")


class ReplicaList(ApiModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "lease_seconds": 30.0,
                    "data": [
                        {
                            "server_id": "host-a:4121:1f2e3d4c",
                            "replica_id": "host-a:3000",
                            "advertise_url": "http://host-a:3000",
                            "started_at": "2026-12-02T19:00:00.000Z",
                            "heartbeat_at": "2026-12-02T19:30:00.000Z",
                            "self": True,
                            "turns": [],
                        }
                    ],
                }
            ]
        }
    )

    lease_seconds: float
    data: list[Replica] = Field(description="The live replicas: heartbeat within the lease")
