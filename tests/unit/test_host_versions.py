"""Kernel, CRIU and podman versions a restore depends on (HostVersions): every capsule records
those it was taken with, the agent refuses a restore its own would fail (before unpacking), and
the scheduler passes over an instance that would (tests/unit/test_restore_cpu.py)."""

from __future__ import annotations

import pytest

from capsule_runtime import checkpointing
from capsule_runtime.capsules.manifest import Manifest
from capsule_runtime.host.versions import host_versions
from capsule_runtime.protocol.messages import (
    HostVersions,
    version_key,
)

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
