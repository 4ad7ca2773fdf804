"""What an attempt row's and an instance row's `data` column holds, typed.

The column stays the JSON object it always was (same keys, same values), so rows written before
these models, and the migrations that made them, keep working: a model is read from the row's
JSON and written back as `dump()` — only the keys that were set, so a key never written stays
absent (readers treat absent and null alike). Keys these models do not name (from an older or a
newer gateway) are kept: read, carried along and written back unchanged (`extra="allow"`), never
an error.

Every key, and why it exists, is documented on its field. Attempt data changes only through
`FleetStore.update_attempt_data` / `write_attempt_data` (a compare-and-swap on the attempt row),
whose keyword arguments are `AttemptChanges`: each one a field of `AttemptData`, None removes it.
"""

from __future__ import annotations

from typing import Any, TypedDict

from pydantic import BaseModel, ConfigDict, Field, field_validator

from capsule_runtime.protocol.messages import CpuProfile, HostVersions
from capsule_runtime.protocol.resources import Resources
from gateway.providers.base import Offer


class Data(BaseModel):
    """A JSON object kept in a `data` column: immutable, unknown keys kept."""

    model_config = ConfigDict(extra="allow", frozen=True)

    def dump(self) -> dict[str, Any]:
        """The JSON object to store: the keys that were set (read or given), as JSON values."""
        return self.model_dump(mode="json", exclude_unset=True)


# -- attempts -------------------------------------------------------------------------------


class Limits(Data):
    """What an attempt's container may use, set by a size move (rightsizing, OOM protection):
    it replaces the task's own `resources` for that attempt and those after it. A limit not
    given falls back to the task's request."""

    cpu_cores: float | None = None
    ram_gb: float | None = None
    disk_gb: float | None = None


class RecoveryPlan(Data):
    """Where an unplaced attempt goes (market/policy.py's `recovery_plan`, or a move's chosen
    offer): made once and kept, so every tick places the attempt the same way."""

    offer: Offer | None = None  # the offer to place it on; None: anywhere that fits
    zone_matters: bool = False  # only that offer's zone will do (next_zone, a move's target)
    strategy: str | None = None  # the recovery strategy that made the plan (for the record)


class NoticeBudgetNote(Data):
    """Why the notice budget planner asked for a capsule (gateway/scheduler/notice_budget.py):
    the notice capsule it predicted if none were taken now, against the budget."""

    predicted_s: float | None = None  # the notice capsule's predicted time without this one
    budget_s: float | None = None  # margin times the provider's notice
    since_capsule_s: float | None = None  # since the task's newest capsule (or its start)
    upload_bytes: int | None = None  # the new bytes that capsule would store


class CheckpointRequest(Data):
    """A checkpoint or migration asked of a running attempt (gateway.migration), until its
    agent answers or the checkpoint deadline passes; one at a time per attempt."""

    id: str  # the order's id (CheckpointOrder.request_id): the agent's answer names it
    stop: bool = False  # stop the container after the capsule: a migration
    reason: str = "manual"  # manual | reclaim | cost | rightsize | oom | …
    target: str | None = None  # the READY instance a migration was asked to go to
    requested: str | None = None  # when it was asked (RFC 3339)
    plan: Offer | None = None  # where the restore goes (cost and size moves)
    limits: Limits | None = None  # what the restored container may use (size moves)
    sent: str | None = None  # when the order went out (the checkpoint deadline counts from it)
    delivered: bool = False  # the agent listed it as received: stop sending it
    notice_budget: NoticeBudgetNote | None = None  # the planner's reason (reason notice_budget)


class Migration(Data):
    """A migration whose capsule is complete, between that capsule and the attempt's
    interrupted report: what the restore attempt it causes takes over."""

    reason: str | None = None  # the request's reason: the restore attempt's reason
    target: str | None = None
    plan: Offer | None = None
    limits: Limits | None = None


class ResizeRequest(Data):
    """New limits for a running container, grown in place (no move), until its agent lists the
    order as received."""

    cpu_cores: float | None = None
    ram_gb: float | None = None
    reason: str | None = None  # rightsize | oom
    id: str | None = None  # the order's id (ResizeOrder.order_id), fixed when first sent
    sent: str | bool | None = None  # when it was first sent (False: not yet)
    delivered: bool = False


class UsageSample(Data):
    """One usage sample an agent's poll carried (capsule_runtime/usage.py), with when the
    gateway received it: input of rightsizing, OOM protection and the dashboards."""

    time: str | None = None  # received (RFC 3339)
    cpu_cores: float | None = None
    memory_bytes: int | float | None = None
    memory_limit_bytes: int | float | None = None


class CapsuleProfile(Data):
    """What the notice budget planner knows of the task's capsules on this attempt
    (gateway/scheduler/notice_budget.py): what a notice capsule would carry."""

    since: str | None = None  # the newest capsule's start, or the restore (RFC 3339): dirt counts
    size_bytes: int | float | None = None  # the newest capsule's size (memory and files)
    stored_bytes: int | float | None = None  # what storing it all anew costs (the newest's)
    dirty_bps: float | None = None  # new stored bytes per second between capsules


class NoticePrediction(Data):
    """The notice budget planner's prediction at a reclaim notice, kept until the notice
    capsule's report compares it with the time it took (a `notice_budget` event)."""

    heard: str  # when the notice was heard (RFC 3339)
    deadline: str  # the notice's deadline, as given
    notice_s: float  # the notice's length from `heard`
    budget_s: float  # margin times notice_s
    predicted_s: float | None = None  # None: nothing known of the task's size
    size_bytes: int | None = None
    upload_bytes: int | None = None
    basis: str | None = None  # capsule | usage | request | limit: what the size came from
    requested: bool = False  # the migration order was taken (else a capsule was under way)


class AttemptData(Data):
    """`attempts.data`."""

    # -- set when the attempt is created (a recovery or a migration's restore) --
    restore: bool = False  # start from the task's newest capsule, not from the beginning
    exclude: list[str] = Field(default_factory=list)  # instances it must not go to (it left)
    target: str | None = None  # the instance a migration asked for, when it has room
    migrations: int = 0  # moves of the task so far with its state kept (shown to the client)
    plan: RecoveryPlan | None = None  # where the scheduler places it (made once, kept)
    limits: Limits | None = None  # its container's limits, when a size move set them
    # -- the assignment's delivery (gateway.dispatch; deadlines in gateway.scheduler.deadlines)
    sent: str | None = None  # when its assignment first went to the agent
    delivered: str | None = None  # when the agent acknowledged it (listed it or reported)
    # -- orders while it runs --
    checkpoint: CheckpointRequest | None = None  # a checkpoint or migration in progress
    migrate: Migration | None = None  # its migration capsule is complete: it leaves
    resize: ResizeRequest | None = None  # new limits to apply in place
    usage: list[UsageSample] = Field(default_factory=list)  # newest samples, oldest first
    # -- the notice budget planner (gateway/scheduler/notice_budget.py) --
    capsule_profile: CapsuleProfile | None = None  # what its notice capsule would carry
    notice_prediction: NoticePrediction | None = None  # at a notice, until its capsule ends
    # instances a restore passed over (their CPU or versions, gateway.scheduler.compat), said once
    passed_over: list[str] = Field(default_factory=list)
    # no offered instance type could restore its capsule (said once in the task's events)
    no_compatible_offer: bool = False


class AttemptChanges(TypedDict, total=False):
    """Keyword arguments of `update_attempt_data`: fields of AttemptData to set (None: remove
    the key)."""

    restore: bool | None
    exclude: list[str] | None
    target: str | None
    migrations: int | None
    plan: RecoveryPlan | None
    limits: Limits | None
    sent: str | None
    delivered: str | None
    checkpoint: CheckpointRequest | None
    migrate: Migration | None
    resize: ResizeRequest | None
    usage: list[UsageSample] | None
    capsule_profile: CapsuleProfile | None
    notice_prediction: NoticePrediction | None
    passed_over: list[str] | None
    no_compatible_offer: bool | None


def changed(data: AttemptData, changes: AttemptChanges) -> AttemptData:
    """`data` with `changes` applied (a change to None removes its key), validated."""
    unknown = set(changes) - set(AttemptData.model_fields)
    if unknown:
        raise TypeError(f"not attempt data fields: {sorted(unknown)}")
    kept = {k: v for k, v in changes.items() if v is not None}
    raw = data.model_copy(update=kept).dump()
    for key, value in changes.items():
        if value is None:
            raw.pop(key, None)
    return AttemptData.model_validate(raw)


# -- instances ------------------------------------------------------------------------------


class Interruption(Data):
    """A Spot interruption notice (from the agent or the provider): the instance takes no new
    work and its tasks move before `deadline`."""

    action: str  # terminate | stop | hibernate
    deadline: str  # RFC 3339


class Lost(Data):
    """Why and when the scheduler gave the instance up (gateway.scheduler.losses): its live
    attempts are settled once its machine is confirmed stopped, or once its agent must have
    stopped them itself."""

    why: str = "its agent stopped answering"
    reason: str = "lost"  # the recovery attempts' reason: lost | reclaim
    at: str | None = None  # RFC 3339


class InstanceData(Data):
    """`instances.data`."""

    # what the scheduler plans with: the offer's size at launch, then the smaller of that and
    # what the agent measured when it registered
    capacity: Resources | None = None
    # what the agent said when it registered
    hostname: str | None = None
    agent_version: str | None = None
    facts: list[dict[str, Any]] = Field(default_factory=list)  # doctor findings
    # when its agent last registered: attempts sent before it no longer run (deadlines)
    registered: str | None = None
    interruption: Interruption | None = None  # a reclaim notice: draining
    # its CPU (the agent's registration): a capsule restores only onto a CPU with at least the
    # features of the one it was taken on
    cpu: CpuProfile | None = None
    host: HostVersions | None = None  # its kernel, CRIU and podman (the agent's registration)
    lost: Lost | None = None  # given up on: its tasks wait until its machine is stopped

    @field_validator("capacity", mode="before")
    @classmethod
    def _sizes_missing_are_zero(cls, value: Any) -> Any:
        """A size an old row does not name counts as none (as before these models)."""
        if isinstance(value, dict):
            return {"cpu_cores": 0.0, "ram_gb": 0.0, "disk_gb": 0.0, **value}
        return value
