"""How an executor, and a whole attempt, ended on this instance (capsule_runtime/runner.py).

Typed values instead of sentinel exit codes: a container that left in a capsule is `Moved`, not
an exit code no process can have; a copy the gateway refused for good is `Superseded`, not a
report status. The runner matches on them, and mypy checks that every case is handled.

    executor:  Exited(code) | Cancelled() | Moved(capsule_id)
    attempt:   Finished(status, message) | Moved(capsule_id) | Superseded()
               | RestoreElsewhere(capsule_id, why)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

# What a finished attempt reports; `interrupted` (a move) is said by Moved.
FinalStatus = Literal["complete", "executor_error", "system_error", "canceled"]


@dataclass(frozen=True)
class Exited:
    """The executor's container exited with `code` (127 when it could not start)."""

    code: int


@dataclass(frozen=True)
class Cancelled:
    """The user cancelled, or the instance is shutting down, while the executor ran."""


@dataclass(frozen=True)
class Moved:
    """The container was checkpointed into capsule `capsule_id` and stopped here: the task goes
    on from that capsule elsewhere (the attempt reports `interrupted`)."""

    capsule_id: str


@dataclass(frozen=True)
class Finished:
    """The attempt ends here, with this report."""

    status: FinalStatus
    message: str | None = None


@dataclass(frozen=True)
class Superseded:
    """The gateway refused this attempt for good (another copy replaced it): nothing is reported,
    nothing is uploaded, the local copy is removed."""


@dataclass(frozen=True)
class RestoreElsewhere:
    """Restoring capsule `capsule_id` failed on this instance for a reason of this instance's
    (podman or CRIU, its disk, its images), not of the capsule: the attempt reports
    `interrupted` and the gateway tries the restore on another instance (`capsules.restore_tries`)
    instead of falling back to an older capsule or to the beginning."""

    capsule_id: str
    why: str


ExecutorEnd = Exited | Cancelled | Moved
AttemptEnd = Finished | Moved | Superseded | RestoreElsewhere
