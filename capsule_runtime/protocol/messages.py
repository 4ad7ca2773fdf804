"""The agent protocol: what the gateway and a worker agent (capsule_runtime) say to each other.

A leaf (pydantic and the standard library), so an agent installs without the gateway. Exchanges,
all JSON over HTTP with the instance's own bearer token:

    agent → POST /agent/v1/register   Registration            → {}
    agent → POST /agent/v1/poll       Poll (heartbeat)        → Orders   (long poll)
    agent → POST /agent/v1/attempts/<id>/report  AttemptReport → {}
    agent → PUT  /agent/v1/attempts/<id>/streams/<executor>/<stdout|stderr>   full stream bytes
    agent → GET  /agent/v1/apps/<name>/archive   an imported image archive (Application Library)
    agent → POST /agent/v1/instances/<id>/notice  Notice → {}   (a Spot interruption notice)
    agent → POST /agent/v1/attempts/<id>/capsules  CapsuleReport  → {}   (a capsule written,
                                                   a checkpoint failed, a capsule found corrupt)

Migration, as the agent sees it: an Orders.checkpoint entry with `stop` → the attempt's container
is checkpointed into a capsule (CapsuleReport "complete"), stopped, and the attempt reported
"interrupted"; the gateway then assigns a new attempt of the same task, with `restore` naming
the capsules to restore from (newest first), to another instance.

Fencing: each attempt id is the token of one placement. A message about an attempt is accepted
only from the instance it was assigned to, while it is that task's newest attempt and not yet
settled; anything else (a superseded attempt, another instance's attempt, a register from an
instance the gateway gave up on) is answered 409 with a JSON error, and the agent stops that
attempt's work instead of retrying. An attempt the agent still lists in `Poll.running` after the
gateway gave up on it gets a cancel order.

Delivery: an Assignment is sent again on every poll until the agent lists its attempt in
`Poll.running`; a CheckpointOrder or ResizeOrder until the agent lists its id in
`Poll.received`. The agent ignores an order it holds already. Reports carry a `report_id`: one
sent again (its answer was lost) is answered the same and not applied twice.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_serializer

from capsule_runtime.protocol.resources import Resources
from capsule_runtime.protocol.tes import TesTask

AGENT_API = "/agent/v1"


class Message(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CpuProfile(Message):
    """A CPU as a restore cares about it (capsule_runtime/host/cpu.py): a capsule restores
    only onto the same architecture with at least the features it was taken with."""

    arch: str = Field(default="", max_length=32)
    model: str = Field(default="", max_length=256)
    flags: list[str] = Field(default_factory=list, max_length=1024)

    def runs(self, taken_on: CpuProfile) -> bool:
        """Whether a process dumped on `taken_on` can be restored on this CPU (an unknown
        side, e.g. an older agent's, is not held against it)."""
        if not self.arch or not taken_on.arch:
            return True
        return self.arch == taken_on.arch and set(taken_on.flags) <= set(self.flags)

    def missing(self, taken_on: CpuProfile) -> list[str]:
        """The features `taken_on` has and this CPU lacks."""
        return sorted(set(taken_on.flags) - set(self.flags))


def version_key(version: str) -> tuple[int, ...]:
    """'4.2.1' → (4, 2, 1); '6.1.0-18-amd64' → (6, 1, 0): the leading numbers only."""
    out: list[int] = []
    for part in version.replace("-", ".").split("."):
        if not part.isdigit():
            break
        out.append(int(part))
    return tuple(out)


class HostVersions(Message):
    """What else a restore depends on beyond the CPU: the kernel the processes ran on, and the
    CRIU and podman that dumped and exported them (capsule_runtime/host/versions.py). An
    unknown side ("", an older agent) is not held against anyone."""

    kernel: str = Field(default="", max_length=128)
    criu: str = Field(default="", max_length=64)
    podman: str = Field(default="", max_length=64)

    def refusal(self, taken_on: HostVersions) -> str | None:
        """Why a capsule taken on `taken_on` may not be restored here, or None: CRIU reads
        images of its own and older versions only; a kernel older than the dump's may lack
        what the processes used; podman imports only its own major version's exports."""
        if self.criu and taken_on.criu and version_key(self.criu) < version_key(taken_on.criu):
            return f"CRIU {self.criu} is older than the {taken_on.criu} the capsule was dumped with"
        here_k, then_k = version_key(self.kernel)[:2], version_key(taken_on.kernel)[:2]
        if here_k and then_k and here_k < then_k:
            return (
                f"kernel {self.kernel} is older than the {taken_on.kernel} the capsule's "
                "processes ran on"
            )
        here_p, then_p = version_key(self.podman)[:1], version_key(taken_on.podman)[:1]
        if here_p and then_p and here_p != then_p:
            return f"podman {self.podman} cannot import the export of podman {taken_on.podman}"
        return None


class Registration(Message):
    agent_version: str
    hostname: str
    capacity: Resources  # what the machine has
    facts: list[dict[str, Any]] = Field(default_factory=list)  # doctor findings
    cpu: CpuProfile | None = None  # None: an agent older than the profile
    host: HostVersions | None = None  # kernel, CRIU, podman; None: an older agent


class Registered(Message):
    """The gateway's answer to a registration. `token`: the instance's own credential from now
    on, when it registered with a one-time registration token (a cloud instance's user-data
    carries only that, and it is useless once used); None: keep the token it has."""

    token: str | None = None


class TaskSettings(Message):
    """How the agent should run one task, decided by the gateway's config."""

    log_tail_bytes: int = 65536
    allowed_dirs: list[str] = Field(default_factory=list)
    # tescape's own state and code (data dir, capsule store, install tree, venv): never reachable
    # by a task's local paths, even under an allowed parent
    denied_dirs: list[str] = Field(default_factory=list)
    # storage.shared_dirs: a task's path inside one, named at that same path, is bind-mounted
    # read-write instead of copied (capsule_runtime.protocol.shared_dirs)
    shared_dirs: list[str] = Field(default_factory=list)
    block_private_networks: bool = False
    # `bucket` or `bucket/prefix` entries s3:// URLs must lie inside (None: any bucket), and the
    # locations no s3:// URL may reach or cover (the capsule store)
    s3_allowed: list[str] | None = None
    s3_denied: list[str] = Field(default_factory=list)
    image_rewrites: dict[str, str] = Field(default_factory=dict)
    # executor image name → {"image": ref, "archive_sha256": hex | None} for Application Library
    # apps; an app with an archive is fetched from GET /agent/v1/apps/<name>/archive
    apps: dict[str, dict[str, Any]] = Field(default_factory=dict)
    # registry host → {"username", "password"} for the registries this task pulls from
    registry_credentials: dict[str, dict[str, str]] = Field(default_factory=dict)
    # registry hosts pulled from without TLS verification (plain HTTP or a self-signed certificate)
    insecure_registries: list[str] = Field(default_factory=list)
    s3: dict[str, Any] = Field(default_factory=dict)


class CapsuleSettings(Message):
    """Where and how this task's capsules are written (the gateway's `capsules` config and the
    task's backend_parameters)."""

    store: str = ""  # a directory, file:///dir or s3://bucket/prefix; "" = checkpoints disabled
    s3: dict[str, Any] = Field(default_factory=dict)
    interval_seconds: float = 0.0  # periodic checkpoints; 0 = none
    tcp_established: bool = False
    file_locks: bool = False
    chunk_mib: int = 4
    compression_level: int = 1
    workers: int = 4
    # "export": podman's export archive is streamed whole; "images": CRIU's pages images are
    # stored while CRIU writes them, podman exports the rest (checkpointing._image_chunks)
    checkpoint_via: Literal["export", "images"] = "images"
    store_wait_seconds: float = 300.0  # a restore waits this long for an unreachable store
    # Encryption at rest: {} or {"mode": "none"}; {"mode": "key", "key": base64 master key}
    # (capsule_runtime/capsules/crypto.py). Never logged.
    encryption: dict[str, Any] = Field(default_factory=dict, repr=False)


class CapsuleRef(Message):
    capsule_id: str
    sequence: int
    manifest_key: str
    manifest_sha256: str


class Assignment(Message):
    attempt_id: str
    task_id: str
    task: TesTask  # the normalised TES task document (sent as its `wire()` form: no nulls)
    task_log: dict[str, Any] | None = None  # the TaskLog so far, continued by this attempt
    settings: TaskSettings = Field(default_factory=TaskSettings)
    capsules: CapsuleSettings = Field(default_factory=CapsuleSettings)
    # Restore from the first usable capsule (newest first); none usable → start from scratch.
    restore: list[CapsuleRef] = Field(default_factory=list)
    next_sequence: int = 1  # the sequence number of this task's next capsule
    # The container's CPU/memory limits, {"cpu_cores": …, "ram_gb": …}: what a size move
    # (rightsizing, OOM protection) gave it, else the task's resources, else the instance's
    # size. A restored container gets them applied in place.
    limits: dict[str, float] | None = None
    # True while the task has restore tries left (`capsules.restore_tries`): a restore that fails
    # for this instance's reasons is reported `interrupted` (reason `restore_failed`) to be tried
    # on another instance; False: fall back to older capsules, then to the beginning
    restore_elsewhere: bool = False

    @field_serializer("task")
    def _task_as_sent(self, task: TesTask) -> dict[str, Any]:
        return task.wire()


class CheckpointOrder(Message):
    attempt_id: str
    request_id: str
    stop: bool = False  # True: migrate (checkpoint, stop, report "interrupted")
    reason: str = "manual"


class Notice(Message):
    """An interruption notice the agent's watcher saw: terminate | stop | hibernate | rebalance,
    with the time AWS gives (the deadline; for rebalance, when it was recommended)."""

    kind: str
    time: str = ""


class Poll(Message):
    running: list[str] = Field(default_factory=list)  # attempt ids the agent is running
    # ids of the checkpoint and resize orders the agent holds for attempts it still runs
    # (CheckpointOrder.request_id, ResizeOrder.order_id), and the attempt ids it is cancelling:
    # acknowledgements (an acknowledged cancel no longer cuts the long poll short)
    received: list[str] = Field(default_factory=list)
    # attempt id → what its running container uses now: {"cpu_cores", "memory_bytes",
    # "memory_limit_bytes"} (capsule_runtime/usage.py), for rightsizing and OOM protection
    usage: dict[str, dict[str, float | int | None]] = Field(default_factory=dict)
    wait_seconds: float = Field(default=10.0, ge=0, le=60)


class ResizeOrder(Message):
    """New CPU/memory limits for an attempt's running container, set in place (its instance has
    room for them): rightsizing or OOM protection without a migration."""

    attempt_id: str
    cpu_cores: float | None = None
    ram_gb: float | None = None
    order_id: str = ""


class Orders(Message):
    assign: list[Assignment] = Field(default_factory=list)
    cancel: list[str] = Field(default_factory=list)  # attempt ids to stop (outputs not uploaded)
    checkpoint: list[CheckpointOrder] = Field(default_factory=list)
    resize: list[ResizeOrder] = Field(default_factory=list)
    shutdown: bool = False


AttemptStatus = Literal[
    "initializing",
    "restoring",
    "running",
    "complete",
    "executor_error",
    "system_error",
    "canceled",
    "interrupted",  # checkpointed into a capsule and stopped: the task continues elsewhere
]


class AttemptReport(Message):
    """The attempt's status and its whole TaskLog so far (the agent owns its content)."""

    status: AttemptStatus
    task_log: dict[str, Any]
    message: str | None = None
    report_id: str | None = None  # unique per report, the same on every resend of it
    # why an `interrupted` attempt left its instance, when not for the move it was asked for:
    # `restore_failed` (its restore failed there; the next attempt restores elsewhere)
    reason: str | None = Field(default=None, max_length=64)


# complete | failed: a checkpoint's outcome; corrupt: a capsule a restore refused; restored: the
# restore that worked (with its durations); none_usable: no capsule worked, the task restarts
CapsuleState = Literal["complete", "failed", "corrupt", "restored", "none_usable"]
CAPSULE_ID = r"^[A-Za-z0-9._-]+$"
NO_NUL = r"^[^\x00]*$"


class CapsuleReport(Message):
    """A checkpoint's outcome ("complete" or "failed"), or a capsule a restore found "corrupt"."""

    # ids, numbers and keys fit their columns (capsules.id is 64 characters, sequence an int32,
    # sizes an int64, no NUL in PostgreSQL text): anything else is a 400, not a database error
    state: CapsuleState
    capsule_id: str = Field(min_length=1, max_length=64, pattern=CAPSULE_ID)
    sequence: int = Field(default=0, ge=0, le=2**31 - 1)
    request_id: str | None = None  # the CheckpointOrder it answers; None: periodic
    stop: bool = False
    reason: str = "periodic"
    manifest_key: str | None = Field(default=None, max_length=4096, pattern=NO_NUL)
    manifest_sha256: str | None = Field(default=None, max_length=64, pattern=NO_NUL)
    parent: str | None = Field(default=None, min_length=1, max_length=64, pattern=CAPSULE_ID)
    size_bytes: int = Field(default=0, ge=0, le=2**63 - 1)  # uncompressed
    stored_bytes: int = 0  # compressed, the whole capsule
    uploaded_bytes: int = 0  # compressed, written by this capsule (the rest was stored already)
    uploaded_chunks: int = 0
    reused_chunks: int = 0
    seconds: dict[str, float] = Field(default_factory=dict)  # step durations
    error: str | None = None
    report_id: str | None = None  # unique per report, the same on every resend of it
