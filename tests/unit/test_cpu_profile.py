"""The CPU profile a capsule records and a restore checks (capsule_runtime/host/cpu.py): parsed
from /proc/cpuinfo on x86 and arm64; a restore onto a CPU that lacks a feature the capsule's
processes were dumped with is refused with the features named (and, with restore tries left,
tried on another instance instead of starting over)."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from capsule_runtime import checkpointing
from capsule_runtime.capsules.manifest import Manifest
from capsule_runtime.engine.fake import FakeEngine
from capsule_runtime.host.cpu import cpu_profile
from capsule_runtime.protocol.messages import (
    Assignment,
    CapsuleSettings,
    CpuProfile,
)
from capsule_runtime.runner import TaskRun
from tests.fixtures import capsule_runs
from tests.fixtures.documents import tes_task
from tests.fixtures.recorder import Recorder

X86 = """processor\t: 0
vendor_id\t: GenuineIntel
model name\t: Intel(R) Xeon(R) Platinum 8375C CPU @ 2.90GHz
flags\t\t: fpu sse sse2 avx avx2 avx512f

processor\t: 1
model name\t: Intel(R) Xeon(R) Platinum 8375C CPU @ 2.90GHz
flags\t\t: fpu sse sse2 avx avx2 avx512f
"""
ARM = """processor\t: 0
BogoMIPS\t: 243.75
Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics
CPU implementer\t: 0x41
"""


def test_x86_and_arm_profiles_are_read(tmp_path: Path) -> None:
    (tmp_path / "x86").write_text(X86)
    (tmp_path / "arm").write_text(ARM)
    x86 = cpu_profile(tmp_path / "x86")
    assert x86.model.startswith("Intel(R) Xeon(R) Platinum 8375C")
    assert x86.flags == sorted(["fpu", "sse", "sse2", "avx", "avx2", "avx512f"])
    assert "atomics" in cpu_profile(tmp_path / "arm").flags
    assert cpu_profile(tmp_path / "absent").flags == []


def test_a_cpu_runs_what_a_subset_of_its_features_was_dumped_with() -> None:
    big = CpuProfile(arch="x86_64", flags=["avx", "avx2", "avx512f", "sse2"])
    small = CpuProfile(arch="x86_64", flags=["avx", "avx2", "sse2"])
    assert big.runs(small) and not small.runs(big)
    assert small.missing(big) == ["avx512f"]
    assert not CpuProfile(arch="aarch64").runs(CpuProfile(arch="x86_64"))
    assert small.runs(CpuProfile())  # an older agent's capsule: not held against it


def manifest(cpu: CpuProfile | None) -> Manifest:
    return Manifest(
        capsule_id="c1",
        task_id="t",
        attempt_id="a",
        sequence=1,
        created="2026-12-03T00:00:00Z",
        meta={"cpu": cpu.model_dump()} if cpu else {},
    )


def test_the_check_names_what_is_missing() -> None:
    here = CpuProfile(arch="x86_64", model="small", flags=["sse2"])
    checkpointing.check_cpu(manifest(None), here)
    checkpointing.check_cpu(manifest(CpuProfile(arch="x86_64", flags=["sse2"])), here)
    with pytest.raises(checkpointing.IncompatibleCpu, match=r"lacks features.*avx512f"):
        checkpointing.check_cpu(
            manifest(CpuProfile(arch="x86_64", model="big", flags=["sse2", "avx512f"])), here
        )
    with pytest.raises(checkpointing.IncompatibleCpu, match="taken on aarch64"):
        checkpointing.check_cpu(manifest(CpuProfile(arch="aarch64")), here)


def test_a_capsule_from_a_richer_cpu_is_restored_elsewhere(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The capsule is taken on a CPU with one feature more than this one: the restore here is
    refused before anything is unpacked, and the task goes elsewhere (never from scratch)."""
    here = cpu_profile()
    richer = here.model_copy(update={"flags": [*here.flags, "tescape_test_feature"]})
    monkeypatch.setattr(checkpointing, "cpu_profile", lambda: richer)
    settings = CapsuleSettings(store=str(tmp_path / "store"))
    task = {"executors": [{"image": "img", "command": ["sleep", "1000"]}]}
    engine = FakeEngine(images=["img"])
    first = Assignment(attempt_id="a1", task_id="t1", task=tes_task(task), capsules=settings)
    ref = capsule_runs.one_capsule(first, engine, tmp_path / "w1")
    monkeypatch.setattr(checkpointing, "cpu_profile", lambda: here)
    second = Assignment(
        attempt_id="a2",
        task_id="t1",
        task=tes_task(task),
        capsules=settings,
        restore=[ref],
        next_sequence=2,
        restore_elsewhere=True,
    )
    client = Recorder()
    run = TaskRun(second, client, tmp_path / "w2", engine)  # type: ignore[arg-type]
    thread = threading.Thread(target=run.run)
    thread.start()
    thread.join(timeout=30)
    [left] = [r for r in client.reports if r.status == "interrupted"]
    assert left.reason == "restore_failed"
    assert "tescape_test_feature" in (left.message or "")
