"""One contract for every capsule store — FileStore, MemoryStore, and S3Store against a real
SeaweedFS server (real access-key auth): put/get/exists/list/delete_prefix, overwrite, missing
keys, concurrent puts, and whole capsules written, restored incrementally, and found corrupt."""

from __future__ import annotations

import io
import random
import tarfile
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from capsule_runtime.capsules import (
    CapsuleCorrupt,
    CapsuleMissing,
    CapsuleStore,
    CapsuleStoreError,
    ChunkMissing,
    FileStore,
    Manifest,
    MemoryStore,
    PartSource,
    S3Store,
    chunk_key,
    delete_task_capsules,
    list_manifests,
    read_manifest,
    restore_part,
    verify_capsule,
    write_capsule,
)
from capsule_runtime.staging import S3Config
from tests.fixtures.seaweedfs import SeaweedS3, _seaweedfs  # noqa: F401

KiB, MiB = 1 << 10, 1 << 20
pytestmark = pytest.mark.timeout(180)


@dataclass
class Subject:
    store: CapsuleStore
    overwrite: Callable[[str, bytes], None]  # behind the store's back
    remove: Callable[[str], None]


@pytest.fixture(scope="module")
def bucket(seaweedfs: SeaweedS3) -> str:
    return seaweedfs.create_bucket(f"capsules-{uuid.uuid4().hex[:8]}")


@pytest.fixture(params=["file", "memory", "s3"])
def subject(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Subject]:
    if request.param == "file":
        fs = FileStore(tmp_path / "capsules")
        yield Subject(fs, fs.put, lambda k: (fs.root / k).unlink())
    elif request.param == "memory":
        ms = MemoryStore()
        yield Subject(
            ms,
            ms.objects.__setitem__,
            lambda k: ms.objects.pop(k),  # type: ignore[arg-type]
        )
    else:
        seaweedfs: SeaweedS3 = request.getfixturevalue("seaweedfs")
        name: str = request.getfixturevalue("bucket")
        prefix = f"run-{uuid.uuid4().hex[:8]}/capsules"
        s3 = S3Store(name, prefix, s3=S3Config.from_mapping(seaweedfs.s3_settings()))
        client = seaweedfs.client()
        yield Subject(
            s3,
            lambda k, b: client.put_object(Bucket=name, Key=f"{prefix}/{k}", Body=b),
            lambda k: client.delete_object(Bucket=name, Key=f"{prefix}/{k}"),
        )


def test_put_get_exists_overwrite(subject: Subject) -> None:
    store = subject.store
    assert not store.exists("t/a")
    payload = bytes(range(256)) * 1000
    store.put("t/a", payload)
    store.put("t/empty", b"")
    assert store.exists("t/a") and store.get("t/a") == payload
    assert store.get("t/empty") == b""
    store.put("t/a", b"second")
    assert store.get("t/a") == b"second"
    assert store.describe().split(":")[0] in ("file", "memory", "s3")


def test_missing_keys(subject: Subject) -> None:
    with pytest.raises(CapsuleMissing, match="t/nothing"):
        subject.store.get("t/nothing")
    assert not subject.store.exists("t/nothing")
    with pytest.raises(KeyError):  # CapsuleMissing is a KeyError
        subject.store.get("other/x")
    with pytest.raises(ValueError):
        subject.store.put("../x", b"")


def test_list_is_a_sorted_string_prefix(subject: Subject) -> None:
    store = subject.store
    for key in ("t1/b/2", "t1/a/1", "t1/a/10", "t10/x", "t2/y"):
        store.put(key, key.encode())
    assert store.list("t1/") == ["t1/a/1", "t1/a/10", "t1/b/2"]
    assert store.list("t1") == ["t1/a/1", "t1/a/10", "t1/b/2", "t10/x"]
    assert store.list("t1/a/1") == ["t1/a/1", "t1/a/10"]
    assert store.list("nope/") == []


def test_delete_prefix_counts_and_spares_the_rest(subject: Subject) -> None:
    store = subject.store
    keys = [f"t1/k/{i:04d}" for i in range(1050)]  # more than one S3 DeleteObjects batch
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda k: store.put(k, b"x"), keys))
    store.put("t10/keep", b"k")
    assert store.delete_prefix("t1/") == 1050
    assert store.list("t1/") == [] and store.get("t10/keep") == b"k"
    assert store.delete_prefix("t1/") == 0


def test_concurrent_puts(subject: Subject) -> None:
    store = subject.store
    blobs = {i: random.Random(i).randbytes(64 * KiB) for i in range(8)}

    def put(i: int) -> None:
        store.put(f"t/own/{i}", blobs[i % 8])
        store.put("t/shared", blobs[i % 8])  # everyone overwrites one key

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(put, range(64)))
    assert all(store.get(f"t/own/{i}") == blobs[i % 8] for i in range(64))
    assert store.get("t/shared") in blobs.values()  # whole, never torn
    assert len(store.list("t/own/")) == 64


def checkpoint(pages: bytes, core: bytes) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in (("core-1.img", core), ("pages-1.img", pages)):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def test_capsules_round_trip_incrementally_and_corruption_is_found(subject: Subject) -> None:
    store = subject.store
    rng = random.Random(11)
    pages = rng.randbytes(3 * MiB) + bytes(1 * MiB)
    first_tar = checkpoint(pages, b"a" * 100)
    chunk = 256 * KiB

    def write(seq: int, data: bytes, **kw: Any) -> Manifest:
        return write_capsule(
            store,
            task_id="task1",
            attempt_id="att1",
            sequence=seq,
            parts=[
                PartSource("checkpoint", lambda: io.BytesIO(data)),
                PartSource("config", lambda: io.BytesIO(b"{}"), tar=False),
            ],
            chunk_size=chunk,
            workers=4,
            **kw,
        )

    first = write(1, first_tar, meta={"podman": "4.3"})
    changed = bytearray(pages)
    changed[MiB : MiB + 100 * KiB] = rng.randbytes(100 * KiB)
    second_tar = checkpoint(bytes(changed), b"b" * 3000)
    second = write(2, second_tar, parent=first)
    assert second.reused_chunks >= len(second.part("checkpoint").chunks) - 3
    assert second.uploaded_bytes < 4 * chunk

    loaded = read_manifest(store, second.key, sha256=second.sha256)
    assert loaded.parent == first.capsule_id
    sink = io.BytesIO()
    assert restore_part(store, loaded, "checkpoint", sink) == len(second_tar)
    assert sink.getvalue() == second_tar
    verify_capsule(store, loaded)
    assert list_manifests(store, "task1") == [first.key, second.key]

    ref = loaded.part("checkpoint").chunks[3]
    key = chunk_key("task1", ref.sha256)
    subject.overwrite(key, b"\x28\xb5\x2f\xfd garbage")
    with pytest.raises(CapsuleCorrupt, match="chunk 3 of part checkpoint"):
        restore_part(store, loaded, "checkpoint", io.BytesIO())
    with pytest.raises(CapsuleCorrupt):
        verify_capsule(store, loaded)
    subject.remove(key)
    with pytest.raises(ChunkMissing, match="chunk 3 of part checkpoint missing"):
        restore_part(store, loaded, "checkpoint", io.BytesIO())

    assert delete_task_capsules(store, "task1") >= 2
    assert store.list("task1/") == []


def test_s3_errors_are_store_errors(seaweedfs: SeaweedS3, bucket: str) -> None:
    wrong = S3Store(
        bucket,
        "x",
        s3=S3Config.from_mapping({**seaweedfs.s3_settings(), "secret_access_key": "no"}),
    )
    with pytest.raises(CapsuleStoreError):
        wrong.put("t/a", b"1")
    with pytest.raises(CapsuleStoreError):
        wrong.list("t/")
