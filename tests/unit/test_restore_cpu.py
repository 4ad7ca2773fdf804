"""A capsule is restored only onto an instance whose CPU has the architecture and every feature
of the CPU it was taken on (gateway.scheduler.compat): a READY instance with room but a CPU
lacking one of them is passed over, and another instance is launched for the restore."""

from __future__ import annotations

from pathlib import Path

from capsule_runtime.protocol.messages import CapsuleReport, CpuProfile, Registration, Resources
from gateway.store.fleet import Instance
from tests.fixtures.world import World, running_with

RICH = CpuProfile(arch="x86_64", model="rich", flags=["avx512f", "sse2"])
POOR = CpuProfile(arch="x86_64", model="poor", flags=["sse2"])


def register(w: World, inst: Instance, cpu: CpuProfile) -> Instance:
    w.dispatch.register(
        inst,
        Registration(
            agent_version="t",
            hostname="h",
            capacity=Resources(cpu_cores=4, ram_gb=8, disk_gb=100),
            cpu=cpu,
        ),
    )
    found = w.fleet.instance(inst.id)
    assert found is not None and found.data.cpu == cpu
    return found


def test_a_restore_passes_over_a_cpu_without_the_capsules_features(tmp_path: Path) -> None:
    w = World(tmp_path)
    w.provider.max_instances = 3
    first, aid = running_with(w)
    first = register(w, first, RICH)
    task_id = w.fleet.attempt(aid).task_id  # type: ignore[union-attr]
    w.dispatch.capsule(
        first,
        aid,
        CapsuleReport(
            state="complete", capsule_id="c1", sequence=1, manifest_key="k", manifest_sha256="s"
        ),
    )
    w.report(first, aid, "interrupted")  # a move: the task restores elsewhere from c1

    poor = register(w, w.boot(), POOR)  # launched for the restore, but its CPU lacks avx512f
    w.scheduler.tick()
    assert w.poll(poor).assign == []
    w.scheduler.tick()  # said once, not at every tick
    [said] = [e for e in w.tasks.events(task_id) if e["kind"] == "incompatible_instance"]
    assert said["instance_id"] == poor.id and "lacks avx512f" in said["message"]
    rich_id = w.provider.launched[-1]
    assert rich_id != poor.id  # another instance is launched instead
    rich = w.fleet.instance(rich_id)
    assert rich is not None
    rich = register(w, rich, RICH)
    w.scheduler.tick()
    [restore] = w.poll(rich).assign
    assert restore.task_id == task_id and [r.capsule_id for r in restore.restore] == ["c1"]
