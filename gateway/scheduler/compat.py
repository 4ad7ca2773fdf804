"""Where a capsule can be restored: onto a CPU with the architecture and at least the
instruction-set features of the one it was taken on (CRIU refuses others, and a process that
chose AVX-512 at start would crash without it). Each agent registers its CPU profile
(capsule_runtime/host/cpu.py, kept as `Instance.data.cpu`); a capsule's CPU is that of the
instance its attempt ran on. An unknown profile on either side (an older agent) is not held
against an instance; the agent checks again before it unpacks anything, and a restore it refuses
is tried elsewhere (`capsules.restore_tries`)."""

from __future__ import annotations

from capsule_runtime.protocol.messages import CpuProfile
from gateway.store.fleet import FleetStore, Instance
from gateway.tes.states import CapsuleState


def capsule_cpu(fleet: FleetStore, task_id: str) -> CpuProfile | None:
    """The CPU the task's newest complete capsule was taken on; None when unknown."""
    capsules = fleet.capsules_of(task_id, {CapsuleState.COMPLETE})
    if not capsules or capsules[0].attempt_id is None:
        return None
    attempt = fleet.attempt(capsules[0].attempt_id)
    if attempt is None or attempt.instance_id is None:
        return None
    source = fleet.instance(attempt.instance_id)
    return source.data.cpu if source is not None else None


def restores_on(inst: Instance, taken_on: CpuProfile | None) -> bool:
    """Whether a capsule taken on `taken_on` can be restored on the instance."""
    here = inst.data.cpu
    return taken_on is None or here is None or here.runs(taken_on)
