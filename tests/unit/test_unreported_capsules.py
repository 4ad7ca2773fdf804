"""A capsule the agent stored but never reported is found when its attempt is lost, and the task
continues from it (gateway.scheduler.unreported)."""

from __future__ import annotations

from pathlib import Path

from capsule_runtime.capsules.keys import manifest_key
from capsule_runtime.capsules.manifest import Manifest
from capsule_runtime.capsules.store import MemoryStore
from gateway.scheduler import losses
from gateway.tes.states import CapsuleState, State
from tests.fixtures.world import World


def manifest(task_id: str, attempt_id: str, sequence: int) -> Manifest:
    return Manifest(
        capsule_id=f"{attempt_id}-{sequence}",
        task_id=task_id,
        attempt_id=attempt_id,
        sequence=sequence,
        created="2026-12-02T00:00:00Z",
        meta={"executor_index": 0, "reason": "gateway_lost"},
    )


def test_a_lost_attempts_unreported_capsule_is_restored_from(tmp_path: Path) -> None:
    w = World(tmp_path)
    t = w.submit()
    inst = w.boot()
    w.scheduler.tick()
    [a] = w.poll(inst).assign
    w.report(inst, a.attempt_id, "running")
    store = MemoryStore()
    store.put(manifest_key(t, a.attempt_id, 2), manifest(t, a.attempt_id, 2).to_bytes())
    # a manifest that names another task under this attempt's prefix is never taken
    store.put(manifest_key(t, a.attempt_id, 3), manifest("x", a.attempt_id, 3).to_bytes())
    store.put(manifest_key(t, a.attempt_id, 4), b"{half a manifest")
    w.scheduler.capsule_store_ = store
    losses.lose(w.scheduler, inst, "its agent stopped answering")
    [capsule] = w.fleet.capsules_of(t, {CapsuleState.COMPLETE})
    assert capsule.id == f"{a.attempt_id}-2"
    assert capsule.store_key == manifest_key(t, a.attempt_id, 2)
    recovery = w.fleet.attempts_of(t)[-1]
    assert recovery.reason == "lost" and recovery.data.restore is True
    assert w.state(t) is State.RUNNING
    assert [r.capsule_id for r in w.dispatch.restore_refs(t)] == [capsule.id]
