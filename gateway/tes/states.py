"""Task states (client-facing) and attempt phases (internal), with their transition tables.

The tables are the specification: every state change in tescape is checked against them in one
place (`gateway.store.tasks.TaskStore.transition`), which applies it with a compare-and-swap and
records an event.

Example sequences a client can observe:

    QUEUED → INITIALIZING → RUNNING → COMPLETE
    QUEUED → INITIALIZING → RUNNING → EXECUTOR_ERROR          (non-zero exit)
    QUEUED → CANCELED                                         (cancelled before placement)
    QUEUED → INITIALIZING → RUNNING → CANCELING → CANCELED    (container stopped)

A migration (reclaim, cost, rightsizing, OOM, manual) never shows: the task stays RUNNING while
its attempts move through CHECKPOINTING → INTERRUPTED → RESTORING on another instance.
"""

from __future__ import annotations

from enum import StrEnum


class State(StrEnum):
    """TES 1.1 `tesState`. UNKNOWN, PAUSED and PREEMPTED exist on the wire but tescape never enters
    them: Nextflow and Cromwell poll PREEMPTED forever and py-tes 0.4.2 crashes on it."""

    UNKNOWN = "UNKNOWN"
    QUEUED = "QUEUED"
    INITIALIZING = "INITIALIZING"
    RUNNING = "RUNNING"
    PAUSED = "PAUSED"
    COMPLETE = "COMPLETE"
    EXECUTOR_ERROR = "EXECUTOR_ERROR"
    SYSTEM_ERROR = "SYSTEM_ERROR"
    CANCELED = "CANCELED"
    PREEMPTED = "PREEMPTED"
    CANCELING = "CANCELING"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL


TERMINAL: frozenset[State] = frozenset(
    {State.COMPLETE, State.EXECUTOR_ERROR, State.SYSTEM_ERROR, State.CANCELED}
)

# States tescape never enters (they exist in the spec only).
ILLEGAL: frozenset[State] = frozenset({State.UNKNOWN, State.PAUSED, State.PREEMPTED})

TRANSITIONS: dict[State, frozenset[State]] = {
    State.QUEUED: frozenset(
        {State.INITIALIZING, State.CANCELING, State.CANCELED, State.SYSTEM_ERROR}
    ),
    State.INITIALIZING: frozenset(
        {State.RUNNING, State.CANCELING, State.CANCELED, State.SYSTEM_ERROR, State.EXECUTOR_ERROR}
    ),
    State.RUNNING: frozenset(
        {State.COMPLETE, State.EXECUTOR_ERROR, State.SYSTEM_ERROR, State.CANCELING, State.CANCELED}
    ),
    State.CANCELING: frozenset({State.CANCELED}),
    State.COMPLETE: frozenset(),
    State.EXECUTOR_ERROR: frozenset(),
    State.SYSTEM_ERROR: frozenset(),
    State.CANCELED: frozenset(),
    State.UNKNOWN: frozenset(),
    State.PAUSED: frozenset(),
    State.PREEMPTED: frozenset(),
}


def can_transition(src: State, dst: State) -> bool:
    """True when the table allows `src` → `dst` (a state never transitions to itself)."""
    return dst in TRANSITIONS[src]


class AttemptPhase(StrEnum):
    """The internal life of one placement of a task on one instance (never shown as a TES state).

    Reference: MemVerge's job states (Floating = migrating, Capturing = checkpointing)."""

    PROVISIONING = "PROVISIONING"  # waiting for an instance
    STARTING = "STARTING"  # image pull, input staging
    RUNNING = "RUNNING"
    CHECKPOINTING = "CHECKPOINTING"
    INTERRUPTED = "INTERRUPTED"  # capsule stored, instance going away; next attempt restores
    RESTORING = "RESTORING"
    LOST = "LOST"  # instance died without a capsule
    DONE = "DONE"


PHASE_TRANSITIONS: dict[AttemptPhase, frozenset[AttemptPhase]] = {
    AttemptPhase.PROVISIONING: frozenset(
        {AttemptPhase.STARTING, AttemptPhase.RESTORING, AttemptPhase.LOST, AttemptPhase.DONE}
    ),
    AttemptPhase.STARTING: frozenset(
        {AttemptPhase.RUNNING, AttemptPhase.LOST, AttemptPhase.DONE, AttemptPhase.INTERRUPTED}
    ),
    AttemptPhase.RESTORING: frozenset(
        {AttemptPhase.RUNNING, AttemptPhase.LOST, AttemptPhase.DONE, AttemptPhase.INTERRUPTED}
    ),
    AttemptPhase.RUNNING: frozenset(
        {AttemptPhase.CHECKPOINTING, AttemptPhase.LOST, AttemptPhase.DONE}
    ),
    AttemptPhase.CHECKPOINTING: frozenset(
        {AttemptPhase.RUNNING, AttemptPhase.INTERRUPTED, AttemptPhase.LOST, AttemptPhase.DONE}
    ),
    AttemptPhase.INTERRUPTED: frozenset({AttemptPhase.DONE}),
    AttemptPhase.LOST: frozenset({AttemptPhase.DONE}),
    AttemptPhase.DONE: frozenset(),
}


def can_change_phase(src: AttemptPhase, dst: AttemptPhase) -> bool:
    return dst in PHASE_TRANSITIONS[src]


class MarketType(StrEnum):
    """Where an instance's capacity is bought (stored as these values in instances.market and
    attempts.market, and shown to clients in TaskLog metadata)."""

    SPOT = "spot"  # preemptible: cheaper, may be reclaimed with a short notice
    ON_DEMAND = "on-demand"


class CapsuleState(StrEnum):
    """A capsule row's state (capsules.state)."""

    COMPLETE = "complete"  # written and verified by its agent: a restore may use it
    CORRUPT = "corrupt"  # failed verification on a restore: never used again
    DELETED = "deleted"  # its task ended and the store's objects were removed
