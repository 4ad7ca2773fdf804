"""Restore fallbacks on a real agent runner (capsule_runtime.runner.TaskRun) with real podman and
CRIU, without a gateway: a recording client stands in for it.

A counter task is checkpointed twice while it runs (sequences 1 and 2), then migrated (3). A new
attempt restores with the capsules newest first:
- capsule 3 has a corrupt chunk → it is reported corrupt and never restored; capsule 2 is, and
  since a capsule's files and memory are from the same instant, the counter file still reads
  1..N with no gap and no repeat;
- every capsule corrupt → the task starts again from the beginning, said in system_logs.
"""

from __future__ import annotations

import base64
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from capsule_runtime.capsules.keys import chunk_key
from capsule_runtime.capsules.pipeline import read_manifest
from capsule_runtime.capsules.store import FileStore
from capsule_runtime.engine.podman import PodmanEngine
from capsule_runtime.protocol.messages import (
    Assignment,
    CapsuleRef,
    CapsuleSettings,
    CheckpointOrder,
    TaskSettings,
)
from capsule_runtime.runner import TaskRun
from tests.fixtures.documents import tes_task
from tests.fixtures.recorder import Recorder
from tests.fixtures.waiting import wait_for

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="CRIU needs root")

COUNTER = (
    "i=0; while [ $i -lt $1 ]; do i=$((i+1)); echo $i >> /work/count; echo $i; sleep 0.1; done"
)
N = 50


@pytest.fixture
def engine() -> Iterator[PodmanEngine]:
    engine = PodmanEngine(labels={"io.tescape.test": f"restore-{os.getpid()}"})
    yield engine
    for info in engine.list_containers():
        engine.remove(info.id)


# encrypted at rest, as the gateway's default configuration has it
ENCRYPTION = {"mode": "key", "key": base64.b64encode(b"k" * 32).decode()}


def assignment(
    tmp: Path, attempt: str, image: str, restore: list[CapsuleRef] | None = None, seq: int = 1
) -> Assignment:
    out = tmp / "out"
    return Assignment(
        attempt_id=attempt,
        task_id="t-restore",
        task=tes_task(
            {
                "executors": [
                    {"image": image, "command": ["sh", "-c", COUNTER, "counter", str(N)]},
                ],
                "outputs": [{"path": "/work/count", "url": f"file://{out}/count", "type": "FILE"}],
            }
        ),
        settings=TaskSettings(allowed_dirs=[str(tmp)]),
        capsules=CapsuleSettings(store=str(tmp / "store"), encryption=ENCRYPTION),
        restore=restore or [],
        next_sequence=seq,
    )


def count_file(tmp: Path) -> Path:
    return tmp / "tasks" / "t-restore" / "work" / "fs" / "work" / "count"


def wait_count(tmp: Path, at_least: int) -> None:
    def reached() -> bool:
        try:
            return len(count_file(tmp).read_text().split()) >= at_least
        except OSError:
            return False

    wait_for(f"the counter to reach {at_least}", reached, 60, every=0.05)


def three_capsules(tmp: Path, engine: PodmanEngine, image: str) -> list[CapsuleRef]:
    """Run the counter; checkpoint at ~5 and ~10 (leave running), migrate at ~15."""
    client = Recorder()
    run = TaskRun(assignment(tmp, "a1", image), client, tmp / "w1", engine, tasks_dir=tmp / "tasks")  # type: ignore[arg-type]
    run.start()
    for at, stop in ((5, False), (10, False), (15, True)):
        wait_count(tmp, at)
        run.checkpoint(CheckpointOrder(attempt_id="a1", request_id=f"r{at}", stop=stop))
    run.join(timeout=60)
    assert client.reports[-1].status == "interrupted", client.reports[-1]
    done = [c for c in client.capsules if c.state == "complete"]
    assert [c.sequence for c in done] == [1, 2, 3], client.capsules
    assert not count_file(tmp).exists()  # the instance's copy is gone
    refs = [
        CapsuleRef(
            capsule_id=c.capsule_id,
            sequence=c.sequence,
            manifest_key=c.manifest_key or "",
            manifest_sha256=c.manifest_sha256 or "",
        )
        for c in done
    ]
    return refs[::-1]  # newest first, as the gateway sends them


def corrupt_one_chunk_only_in(
    store: FileStore, newest: CapsuleRef, older: list[CapsuleRef], part: str | None = None
) -> None:
    """Damage one chunk the newest capsule has and the older ones do not: its first, or with
    `part`, the middle one of that part's own chunks."""
    manifest = read_manifest(store, newest.manifest_key)
    assert manifest.encryption is not None  # the sealed chunk fails its tag
    shared = {
        c.sha256
        for ref in older
        for part in read_manifest(store, ref.manifest_key).parts
        for c in part.chunks
    }
    own = [
        c.sha256
        for p in manifest.parts
        if part in (None, p.name)
        for c in p.chunks
        if c.sha256 not in shared and not c.zero
    ]
    assert own, "the newest capsule has no chunk of its own"
    path = store.root / chunk_key(manifest.task_id, own[0 if part is None else len(own) // 2])
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def restore_run(
    tmp: Path, engine: PodmanEngine, image: str, refs: list[CapsuleRef]
) -> tuple[Recorder, Any]:
    client = Recorder()
    run = TaskRun(
        assignment(tmp, "a2", image, restore=refs, seq=4),
        client,  # type: ignore[arg-type]
        tmp / "w2",
        engine,
        tasks_dir=tmp / "tasks",
    )
    thread = threading.Thread(target=run.run)
    thread.start()
    thread.join(timeout=120)
    assert not thread.is_alive()
    return client, run


def test_corrupt_newest_capsule_falls_back_to_the_previous_one(
    tmp_path: Path, engine: PodmanEngine, busybox_image: str
) -> None:
    refs = three_capsules(tmp_path, engine, busybox_image)
    store = FileStore(tmp_path / "store")
    corrupt_one_chunk_only_in(store, refs[0], refs[1:])
    client, _ = restore_run(tmp_path, engine, busybox_image, refs)
    final = client.reports[-1]
    assert final.status == "complete", final
    assert [c.state for c in client.capsules if c.state == "corrupt"] == ["corrupt"]
    assert client.capsules[0].capsule_id == refs[0].capsule_id
    assert final.task_log["metadata"]["restored_from"] == refs[1].capsule_id
    assert [c.state for c in client.capsules] == ["corrupt", "restored"]
    numbers = [int(x) for x in (tmp_path / "out" / "count").read_text().split()]
    assert numbers == list(range(1, N + 1))  # files and memory from the same instant
    assert not any("from the beginning" in s for s in final.task_log["system_logs"])


def test_a_container_chunk_corrupt_midway_through_the_fifo_falls_back_to_the_previous_one(
    tmp_path: Path, engine: PodmanEngine, busybox_image: str
) -> None:
    """The container part reaches podman through a FIFO as its chunks arrive (restore_fifo):
    a chunk that fails its check midway leaves podman a broken archive, the capsule is reported
    corrupt, and the previous one is restored (through the FIFO as well)."""
    refs = three_capsules(tmp_path, engine, busybox_image)
    store = FileStore(tmp_path / "store")
    corrupt_one_chunk_only_in(store, refs[0], refs[1:], part="container")
    client, _ = restore_run(tmp_path, engine, busybox_image, refs)
    final = client.reports[-1]
    assert final.status == "complete", final
    assert [c.state for c in client.capsules] == ["corrupt", "restored"]
    assert final.task_log["metadata"]["restored_from"] == refs[1].capsule_id
    assert "fifo_head" in (client.capsules[1].seconds or {})  # podman 4.3.1 read a FIFO
    numbers = [int(x) for x in (tmp_path / "out" / "count").read_text().split()]
    assert numbers == list(range(1, N + 1))


def test_no_usable_capsule_restarts_from_scratch(
    tmp_path: Path, engine: PodmanEngine, busybox_image: str
) -> None:
    refs = three_capsules(tmp_path, engine, busybox_image)
    store = FileStore(tmp_path / "store")
    for ref in refs:  # every manifest damaged: none may be restored
        path = store.root / ref.manifest_key
        path.write_bytes(path.read_bytes().replace(b'"sequence"', b'"sequencE"'))
    client, _ = restore_run(tmp_path, engine, busybox_image, refs)
    final = client.reports[-1]
    assert final.status == "complete", final
    assert [c.state for c in client.capsules] == ["corrupt"] * 3 + ["none_usable"]
    assert any("from the beginning" in s for s in final.task_log["system_logs"])
    numbers = [int(x) for x in (tmp_path / "out" / "count").read_text().split()]
    assert numbers == list(range(1, N + 1))


def test_a_stdout_swapped_for_a_host_link_is_never_mounted_by_a_restore(
    tmp_path: Path, engine: PodmanEngine, busybox_image: str
) -> None:
    """The task replaces its own stdout file with a link to a host file, then is migrated: the
    capsule's workspace comes back with that link where podman takes the stdout bind mount's
    source. Restoring it would mount the host file into the task (which then writes into it);
    the capsule is refused instead (reported unusable, said in system_logs) and the task starts
    again."""
    victim = tmp_path / "victim"  # an empty host file (CRIU wants the size it dumped)
    victim.write_text("")
    swap = (
        f"rm /work/o; ln -s {victim} /work/o; touch /work/ready; "
        "i=0; while [ $i -lt 40 ]; do i=$((i+1)); sleep 0.1; done; echo pwned"
    )

    def attempt(attempt_id: str, restore: list[CapsuleRef], seq: int) -> Assignment:
        return Assignment(
            attempt_id=attempt_id,
            task_id="t-restore",
            task=tes_task(
                {
                    "executors": [
                        {"image": busybox_image, "command": ["sh", "-c", swap], "stdout": "/work/o"}
                    ],
                    "volumes": ["/work"],
                }
            ),
            settings=TaskSettings(allowed_dirs=[str(tmp_path / "allowed")]),
            capsules=CapsuleSettings(store=str(tmp_path / "store"), encryption=ENCRYPTION),
            restore=restore,
            next_sequence=seq,
        )

    ready = tmp_path / "tasks" / "t-restore" / "work" / "fs" / "work" / "ready"
    first: Any = Recorder()
    run = TaskRun(
        attempt("a1", [], 1), first, tmp_path / "w1", engine, tasks_dir=tmp_path / "tasks"
    )
    run.start()
    wait_for(
        "the task to get ready",
        lambda: ready.exists() and any(r.status == "running" for r in first.reports),
        60,
        every=0.05,
    )
    run.checkpoint(CheckpointOrder(attempt_id="a1", request_id="r1", stop=True))
    run.join(timeout=60)
    assert first.reports[-1].status == "interrupted", first.reports[-1]
    [done] = [c for c in first.capsules if c.state == "complete"]
    ref = CapsuleRef(
        capsule_id=done.capsule_id,
        sequence=done.sequence,
        manifest_key=done.manifest_key or "",
        manifest_sha256=done.manifest_sha256 or "",
    )
    second: Any = Recorder()
    run2 = TaskRun(
        attempt("a2", [ref], 2), second, tmp_path / "w2", engine, tasks_dir=tmp_path / "tasks"
    )
    thread = threading.Thread(target=run2.run)
    thread.start()
    thread.join(timeout=120)
    assert not thread.is_alive()
    final = second.reports[-1]
    assert victim.read_text() == ""
    lines = final.task_log["system_logs"]
    assert [c.state for c in second.capsules] == ["corrupt", "none_usable"], lines
    lines = final.task_log["system_logs"]
    assert any("is a symlink in the task's directory" in line for line in lines), lines
    assert final.status == "complete", final
    assert "pwned" not in str(final.task_log)
