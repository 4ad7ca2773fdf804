"""A capsule is restored only onto an instance that can restore it (gateway.scheduler.compat): a
CPU with the architecture and every feature of the CPU it was taken on, a CRIU and a kernel no
older. A READY instance with room that cannot is passed over, said in the task's events, and
another instance is launched for the restore."""

from __future__ import annotations

from pathlib import Path

from capsule_runtime.protocol.messages import (
    CapsuleReport,
    CpuProfile,
    HostVersions,
    Registration,
    Resources,
)
from gateway.store.fleet import Instance
from tests.fixtures.world import World, running_with

RICH = CpuProfile(arch="x86_64", model="rich", flags=["avx512f", "sse2"])
POOR = CpuProfile(arch="x86_64", model="poor", flags=["sse2"])


def register(
    w: World, inst: Instance, cpu: CpuProfile | None = None, host: HostVersions | None = None
) -> Instance:
    w.dispatch.register(
        inst,
        Registration(
            agent_version="t",
            hostname="h",
            capacity=Resources(cpu_cores=4, ram_gb=8, disk_gb=100),
            cpu=cpu,
            host=host,
        ),
    )
    found = w.fleet.instance(inst.id)
    assert found is not None and found.data.cpu == cpu and found.data.host == host
    return found


def moved(w: World, cpu: CpuProfile | None = None, host: HostVersions | None = None) -> str:
    """A task that ran on an instance with `cpu` and `host`, left capsule c1 and moved: it
    waits to be restored elsewhere. Its id."""
    w.provider.max_instances = 3
    first, aid = running_with(w)
    first = register(w, first, cpu, host)
    w.dispatch.capsule(
        first,
        aid,
        CapsuleReport(
            state="complete", capsule_id="c1", sequence=1, manifest_key="k", manifest_sha256="s"
        ),
    )
    w.report(first, aid, "interrupted")  # a move: the task restores elsewhere from c1
    return w.fleet.attempt(aid).task_id  # type: ignore[union-attr]


def test_a_restore_passes_over_a_cpu_without_the_capsules_features(tmp_path: Path) -> None:
    w = World(tmp_path)
    task_id = moved(w, cpu=RICH)

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


def test_a_restore_passes_over_an_older_criu_and_says_so(tmp_path: Path) -> None:
    new = HostVersions(kernel="6.1.0-18-amd64", criu="4.2.1", podman="4.3.1")
    w = World(tmp_path)
    task_id = moved(w, host=new)
    older = register(w, w.boot(), host=new.model_copy(update={"criu": "4.1"}))
    w.scheduler.tick()
    w.scheduler.tick()
    assert w.poll(older).assign == []
    [said] = [e for e in w.tasks.events(task_id) if e["kind"] == "incompatible_instance"]
    assert said["instance_id"] == older.id and "CRIU 4.1 is older" in said["message"]
    newer = w.fleet.instance(w.provider.launched[-1])
    assert newer is not None and newer.id != older.id  # another instance is launched instead
    newer = register(w, newer, host=new)
    w.scheduler.tick()
    [restore] = w.poll(newer).assign
    assert restore.task_id == task_id
