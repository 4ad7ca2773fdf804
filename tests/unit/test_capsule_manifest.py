"""The manifest model and the key layout: round trip, digests, validation, unsafe ids refused."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from capsule_runtime.capsules import ChunkRef, Manifest, Part, manifest_sha256
from capsule_runtime.capsules.keys import (
    attempt_prefix,
    check_key,
    chunk_key,
    is_manifest_key,
    manifest_key,
    task_prefix,
)
from capsule_runtime.capsules.manifest import known_chunks, rfc3339_now

SHA_A, SHA_B = "a" * 64, "0b" + "1" * 62


def sample() -> Manifest:
    return Manifest(
        capsule_id="c1",
        task_id="t1",
        attempt_id="a1",
        sequence=3,
        created=rfc3339_now(),
        parent="c0",
        parts=[
            Part(
                name="checkpoint",
                chunks=[ChunkRef(sha256=SHA_A, size=10, stored_size=4)] * 2,
                size=20,
            ),
            Part(name="config", chunks=[ChunkRef(sha256=SHA_B, size=5, stored_size=9)], size=5),
        ],
        size_bytes=25,
        stored_bytes=17,
        uploaded_bytes=13,
        uploaded_chunks=2,
        reused_chunks=1,
        meta={"criu": "4.2.1", "runner": {"executor": 0}},
        timings={"total": 1.5},
    )


def test_round_trip_keeps_everything_and_the_digest() -> None:
    m = sample()
    assert m.sha256 is None
    data = m.to_bytes()
    assert m.sha256 == manifest_sha256(data)
    back = Manifest.from_bytes(data)
    assert back == m and back.sha256 == m.sha256
    assert back.key == "t1/a1/000003/manifest.json"
    assert back.part("config").size == 5
    assert back.chunk_sizes() == {SHA_A: 4, SHA_B: 9}
    assert known_chunks([back, sample()]) == {SHA_A: 4, SHA_B: 9}
    with pytest.raises(KeyError):
        back.part("rootfs")
    assert m.created.endswith("Z") and "T" in m.created


def test_unknown_fields_are_ignored_and_bad_values_refused() -> None:
    doc = json.loads(sample().to_bytes())
    doc["future_field"] = {"x": 1}
    assert Manifest.from_bytes(json.dumps(doc).encode()).capsule_id == "c1"
    doc["parts"][0]["chunks"][0]["sha256"] = "XYZ"
    with pytest.raises(ValidationError):
        Manifest.from_bytes(json.dumps(doc).encode())
    with pytest.raises(ValidationError):
        ChunkRef(sha256=SHA_A, size=-1, stored_size=0)


def test_key_layout() -> None:
    assert task_prefix("t1") == "t1/"
    assert chunk_key("t1", SHA_B) == f"t1/chunks/0b/{SHA_B}.zst"
    assert manifest_key("t1", "att_01", 7) == "t1/att_01/000007/manifest.json"
    assert attempt_prefix("t1", "a") == "t1/a/"
    assert is_manifest_key(manifest_key("t1", "a", 1))
    assert not is_manifest_key(chunk_key("t1", SHA_A))


@pytest.mark.parametrize("bad", ["", ".", "..", "a/b", "/a", "a b", "x" * 201, "-a", "é"])
def test_unsafe_ids_are_refused(bad: str) -> None:
    with pytest.raises(ValueError):
        task_prefix(bad)
    with pytest.raises(ValueError):
        manifest_key("t", bad, 1)


def test_other_key_checks() -> None:
    with pytest.raises(ValueError):
        chunk_key("t", "abc")
    with pytest.raises(ValueError):
        manifest_key("t", "chunks", 1)  # would collide with the chunk folder
    with pytest.raises(ValueError):
        manifest_key("t", "a", 1_000_000)
    for bad in ("", "/a", "a//b", "a/../b", "a/./b", "a/", "a\\b", "a/.~tmp.x"):
        with pytest.raises(ValueError):
            check_key(bad)
    assert check_key("a/b.c/d") == "a/b.c/d"
