"""Kernel, CRIU and podman versions a restore depends on (HostVersions): every capsule records
those it was taken with, the agent refuses a restore its own would fail (before unpacking), and
the scheduler passes over an instance that would, saying so in the task's events."""

from __future__ import annotations

from pathlib import Path

import pytest

from capsule_runtime import checkpointing
from capsule_runtime.capsules.manifest import Manifest
from capsule_runtime.host.versions import host_versions
from capsule_runtime.protocol.messages import (
    CapsuleReport,
    HostVersions,
    Registration,
    Resources,
    version_key,
)
from gateway.store.fleet import Instance
from tests.fixtures.world import World, running_with

NEW = HostVersions(kernel="6.1.0-18-amd64", criu="4.2.1", podman="4.3.1")


def test_version_keys_are_the_leading_numbers() -> None:
    assert version_key("4.2.1") == (4, 2, 1)
    assert version_key("6.1.0-18-amd64") == (6, 1, 0, 18)
    assert version_key("6.18.44-fc-v1045") == (6, 18, 44)
    assert version_key("") == ()


@pytest.mark.parametrize(
    ("here", "why"),
    [
        (NEW, None),
        (NEW.model_copy(update={"criu": "4.3"}), None),  # newer CRIU reads older images
        (NEW.model_copy(update={"kernel": "6.12.0"}), None),
        (NEW.model_copy(update={"criu": "4.1.1"}), "CRIU 4.1.1 is older than the 4.2.1"),
        (NEW.model_copy(update={"kernel": "5.10.0-28-amd64"}), "kernel 5.10.0-28-amd64 is older"),
        (NEW.model_copy(update={"podman": "5.2.0"}), "podman 5.2.0 cannot import"),
        (HostVersions(), None),  # an older agent: nothing known, nothing held against it
    ],
)
def test_what_a_host_can_restore(here: HostVersions, why: str | None) -> None:
    said = here.refusal(NEW)
    assert (said is None) if why is None else (said is not None and why in said)


def test_this_machine_knows_its_versions() -> None:
    mine = host_versions()
    assert mine.kernel and mine.criu and mine.podman  # the test profile installs both


def test_the_agent_refuses_a_capsule_its_criu_cannot_read() -> None:
    taken = NEW.model_copy(update={"criu": "9.0"})
    capsule = Manifest(
        capsule_id="c1",
        task_id="t",
        attempt_id="a",
        sequence=1,
        created="2026-12-03T00:00:00Z",
        meta={"host": taken.model_dump()},
    )
    checkpointing.check_host(capsule, NEW.model_copy(update={"criu": "9.0.1"}))
    older = r"CRIU 4\.2\.1 is older than the 9\.0"
    with pytest.raises(checkpointing.IncompatibleHost, match=older):
        checkpointing.check_host(capsule, NEW)
    old = capsule.model_copy(update={"meta": {}})  # from an agent before the versions
    checkpointing.check_host(old, NEW)


def register(w: World, inst: Instance, host: HostVersions) -> Instance:
    w.dispatch.register(
        inst,
        Registration(
            agent_version="t",
            hostname="h",
            capacity=Resources(cpu_cores=4, ram_gb=8, disk_gb=100),
            host=host,
        ),
    )
    found = w.fleet.instance(inst.id)
    assert found is not None and found.data.host == host
    return found


def test_a_restore_passes_over_an_older_criu_and_says_so(tmp_path: Path) -> None:
    w = World(tmp_path)
    w.provider.max_instances = 3
    first, aid = running_with(w)
    first = register(w, first, NEW)
    task_id = w.fleet.attempt(aid).task_id  # type: ignore[union-attr]
    w.dispatch.capsule(
        first,
        aid,
        CapsuleReport(
            state="complete", capsule_id="c1", sequence=1, manifest_key="k", manifest_sha256="s"
        ),
    )
    w.report(first, aid, "interrupted")  # a move: the task restores elsewhere from c1
    older = register(w, w.boot(), NEW.model_copy(update={"criu": "4.1"}))
    w.scheduler.tick()
    w.scheduler.tick()
    assert w.poll(older).assign == []
    [said] = [e for e in w.tasks.events(task_id) if e["kind"] == "incompatible_instance"]
    assert said["instance_id"] == older.id and "CRIU 4.1 is older" in said["message"]
    newer = w.fleet.instance(w.provider.launched[-1])
    assert newer is not None and newer.id != older.id  # another instance is launched instead
    newer = register(w, newer, NEW)
    w.scheduler.tick()
    [restore] = w.poll(newer).assign
    assert restore.task_id == task_id
