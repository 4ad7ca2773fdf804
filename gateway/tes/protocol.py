"""The agent protocol: what the gateway and a worker agent (capsule_runtime) say to each other.

A leaf like the rest of gateway.tes, so an agent installs with pydantic alone. Exchanges, all JSON
over HTTP with the instance's own bearer token:

    agent → POST /agent/v1/register   Registration            → {}
    agent → POST /agent/v1/poll       Poll (heartbeat)        → Orders   (long poll)
    agent → POST /agent/v1/attempts/<id>/report  AttemptReport → {}
    agent → PUT  /agent/v1/attempts/<id>/streams/<executor>/<stdout|stderr>   full stream bytes
    agent → GET  /agent/v1/apps/<name>/archive   an imported image archive (Application Library)
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

AGENT_API = "/agent/v1"


class Message(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Capacity(Message):
    cpu_cores: float
    ram_gb: float
    disk_gb: float


class Registration(Message):
    agent_version: str
    hostname: str
    capacity: Capacity
    facts: list[dict[str, Any]] = Field(default_factory=list)  # doctor findings


class TaskSettings(Message):
    """How the agent should run one task, decided by the gateway's config."""

    log_tail_bytes: int = 65536
    allowed_dirs: list[str] = Field(default_factory=list)
    block_private_networks: bool = False
    image_rewrites: dict[str, str] = Field(default_factory=dict)
    # executor image name → {"image": ref, "archive_sha256": hex | None} for Application Library
    # apps; an app with an archive is fetched from GET /agent/v1/apps/<name>/archive
    apps: dict[str, dict[str, Any]] = Field(default_factory=dict)
    # registry host → {"username", "password"} for the registries this task pulls from
    registry_credentials: dict[str, dict[str, str]] = Field(default_factory=dict)
    # registry hosts pulled from without TLS verification (plain HTTP or a self-signed certificate)
    insecure_registries: list[str] = Field(default_factory=list)
    s3: dict[str, Any] = Field(default_factory=dict)


class Assignment(Message):
    attempt_id: str
    task_id: str
    task: dict[str, Any]  # the normalised TES task document
    task_log: dict[str, Any] | None = None  # the TaskLog so far, continued by this attempt
    settings: TaskSettings = Field(default_factory=TaskSettings)


class Poll(Message):
    running: list[str] = Field(default_factory=list)  # attempt ids the agent is running
    wait_seconds: float = Field(default=10.0, ge=0, le=60)


class Orders(Message):
    assign: list[Assignment] = Field(default_factory=list)
    cancel: list[str] = Field(default_factory=list)  # attempt ids to stop (outputs not uploaded)
    shutdown: bool = False


AttemptStatus = Literal[
    "initializing", "running", "complete", "executor_error", "system_error", "canceled"
]


class AttemptReport(Message):
    """The attempt's status and its whole TaskLog so far (the agent owns its content)."""

    status: AttemptStatus
    task_log: dict[str, Any]
    message: str | None = None
