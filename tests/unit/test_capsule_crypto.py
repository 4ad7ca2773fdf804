"""Capsules encrypted at rest (capsule_runtime/capsules/crypto.py): exact round trip, nothing of
the plaintext in the store (bytes or names), incremental reuse within a task's chain, tampering
and wrong keys detected clearly, and unencrypted capsules still read."""

from __future__ import annotations

import base64
import hashlib
import hmac
import io
import random
import struct
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import zstandard
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from capsule_runtime.capsules import (
    CapsuleCorrupt,
    FileStore,
    Manifest,
    PartSource,
    chunk_key,
    read_manifest,
    restore_part,
    verify_capsule,
    write_capsule,
)
from capsule_runtime.capsules.crypto import (
    OVERHEAD,
    SCHEME,
    SCHEME_HMAC,
    CapsuleKeyError,
    LocalKeyWrapper,
    SealedCodec,
    load_or_create_master_key,
    read_master_key,
    sealed_codec,
    wrapper_from_settings,
)
from capsule_runtime.capsules.frames import raw_frame, raw_frame_pieces, raw_payload
from capsule_runtime.capsules.manifest import ENCRYPTED_FORMAT, FORMAT

KiB, MiB = 1 << 10, 1 << 20
CHUNK = 64 * KiB
SECRET = b"the-process-holds-this-secret-0123456789" * 50


def memory_tar(rng: random.Random, pages: bytes) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in (("core-1.img", SECRET), ("pages-1.img", pages)):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


@pytest.fixture
def store(tmp_path: Path) -> FileStore:
    return FileStore(tmp_path / "capsules")


@pytest.fixture
def keys() -> LocalKeyWrapper:
    return LocalKeyWrapper(bytes(range(32)))


@pytest.fixture
def data() -> bytes:
    rng = random.Random(3)
    return memory_tar(rng, rng.randbytes(512 * KiB) + bytes(256 * KiB))


def write(store: FileStore, data: bytes, seq: int = 1, **kw: Any) -> Manifest:
    return write_capsule(
        store,
        task_id="task1",
        attempt_id="att1",
        sequence=seq,
        parts=[PartSource("container", lambda: io.BytesIO(data))],
        chunk_size=CHUNK,
        workers=2,
        **kw,
    )


def restore(store: FileStore, m: Manifest, keys: LocalKeyWrapper | None) -> bytes:
    sink = io.BytesIO()
    restore_part(store, m, "container", sink, keys=keys)
    return sink.getvalue()


def stored_objects(store: FileStore) -> dict[str, bytes]:
    return {key: store.get(key) for key in store.list("task1/")}


def test_round_trip_and_nothing_plain_in_the_store(
    store: FileStore, keys: LocalKeyWrapper, data: bytes
) -> None:
    m = write(store, data, keys=keys)
    assert m.format == ENCRYPTED_FORMAT and m.encryption is not None
    assert m.encryption["key_id"] == keys.key_id and "wrapped" in m.encryption
    loaded = read_manifest(store, m.key, sha256=m.sha256)
    assert restore(store, loaded, keys) == data
    verify_capsule(store, loaded, keys=keys)
    plain_shas = set()
    for piece in range(0, len(data), 4 * KiB):
        plain_shas.add(hashlib.sha256(data[piece : piece + 4 * KiB]).hexdigest())
    objects = stored_objects(store)
    for key, blob in objects.items():
        assert SECRET[:40] not in blob  # neither the bytes...
        if key != m.key:
            assert len(blob) >= OVERHEAD
    for part in m.parts:
        for ref in part.chunks:
            # ...nor names that are plaintext hashes (a lister could confirm guessed content)
            assert ref.sha256 != hashlib.sha256(_chunk_bytes(data, m, ref.sha256)).hexdigest()
            assert chunk_key("task1", ref.sha256) in objects


def _chunk_bytes(data: bytes, m: Manifest, chunk_id: str) -> bytes:
    offset = 0
    for ref in m.parts[0].chunks:
        if ref.sha256 == chunk_id:
            return data[offset : offset + ref.size]
        offset += ref.size
    raise AssertionError(chunk_id)


def test_a_later_capsule_reuses_the_chain_key_and_uploads_only_changes(
    store: FileStore, keys: LocalKeyWrapper, data: bytes
) -> None:
    first = write(store, data, keys=keys)
    changed = bytearray(data)
    changed[300 * KiB : 302 * KiB] = b"\x01" * (2 * KiB)
    second = write(store, bytes(changed), seq=2, parent=first, keys=keys)
    assert second.encryption == first.encryption  # the same wrapped data key
    assert second.reused_chunks > 0
    assert second.uploaded_chunks <= 3, second.uploaded_chunks
    assert restore(store, read_manifest(store, second.key), keys) == bytes(changed)
    # another task's chain (or a new one) has its own key: equal bytes, other names
    other = write_capsule(
        store,
        task_id="task2",
        attempt_id="att1",
        sequence=1,
        parts=[PartSource("container", lambda: io.BytesIO(data))],
        chunk_size=CHUNK,
        keys=keys,
    )
    assert other.encryption != first.encryption
    assert not {c.sha256 for c in other.parts[0].chunks} & {c.sha256 for c in first.parts[0].chunks}


def test_a_tampered_chunk_is_corrupt(store: FileStore, keys: LocalKeyWrapper, data: bytes) -> None:
    m = write(store, data, keys=keys)
    key = chunk_key("task1", m.parts[0].chunks[1].sha256)
    blob = bytearray(store.get(key))
    blob[len(blob) // 2] ^= 0x01
    store.put(key, bytes(blob))
    with pytest.raises(CapsuleCorrupt, match="authentication tag"):
        restore(store, read_manifest(store, m.key), keys)
    # a chunk swapped for another chunk of the same capsule fails too (its name is its AAD)
    store.put(key, store.get(chunk_key("task1", m.parts[0].chunks[0].sha256)))
    with pytest.raises(CapsuleCorrupt, match="authentication tag"):
        verify_capsule(store, read_manifest(store, m.key), keys=keys)


def test_a_wrong_or_missing_key_fails_clearly(
    store: FileStore, keys: LocalKeyWrapper, data: bytes
) -> None:
    m = write(store, data, keys=keys)
    other = LocalKeyWrapper(b"\x07" * 32)
    with pytest.raises(CapsuleKeyError, match=f"encrypted with local key {keys.key_id}"):
        restore(store, read_manifest(store, m.key), other)
    with pytest.raises(CapsuleKeyError, match="no capsule key is configured"):
        restore(store, read_manifest(store, m.key), None)
    # a forged key id does not help: the wrapped key itself does not open
    forged = read_manifest(store, m.key)
    assert forged.encryption is not None
    forged.encryption["key_id"] = other.key_id
    with pytest.raises(CapsuleKeyError, match="does not unwrap"):
        restore(store, forged, other)
    # a manifest copied to another task does not unwrap there either
    moved = read_manifest(store, m.key).model_copy(update={"task_id": "task2"})
    with pytest.raises(CapsuleKeyError, match="does not unwrap"):
        restore(store, moved, keys)


def test_unencrypted_capsules_still_read_and_a_new_key_starts_a_new_chain(
    store: FileStore, keys: LocalKeyWrapper, data: bytes
) -> None:
    old = write(store, data)  # as written before encryption (or with mode none)
    assert old.format == FORMAT and old.encryption is None
    assert (
        old.parts[0].chunks[0].sha256
        == hashlib.sha256(data[: old.parts[0].chunks[0].size]).hexdigest()
    )
    loaded = read_manifest(store, old.key, sha256=old.sha256)
    assert restore(store, loaded, keys) == data  # a key configured now does not matter
    assert restore(store, loaded, None) == data
    # the next capsule of that task is encrypted: a new chain, nothing reused from the clear one
    nxt = write(store, data, seq=2, parent=loaded, keys=keys)
    assert nxt.encryption is not None and nxt.encryption != old.encryption
    assert not {c.sha256 for c in nxt.parts[0].chunks} & {c.sha256 for c in old.parts[0].chunks}
    assert restore(store, read_manifest(store, nxt.key), keys) == data


def test_a_manifest_whose_format_and_encryption_disagree_is_corrupt(
    store: FileStore, keys: LocalKeyWrapper, data: bytes
) -> None:
    m = write(store, data, keys=keys)
    doc = m.model_dump()
    doc["format"] = FORMAT  # an attacker hoping the chunks are taken as plain
    store.put(m.key, Manifest.model_validate(doc).to_bytes())
    with pytest.raises(CapsuleCorrupt, match="disagree"):
        read_manifest(store, m.key)


def test_master_key_files(tmp_path: Path) -> None:
    path = tmp_path / "state" / "capsule.key"
    key = load_or_create_master_key(path)
    assert len(key) == 32 and path.stat().st_mode & 0o777 == 0o600
    assert load_or_create_master_key(path) == key  # kept, not replaced
    raw = tmp_path / "raw.key"
    raw.write_bytes(b"\x05" * 32)
    assert read_master_key(raw) == b"\x05" * 32
    bad = tmp_path / "bad.key"
    bad.write_text("too short")
    with pytest.raises(ValueError, match="32 bytes"):
        read_master_key(bad)
    settings = {"mode": "key", "key": base64.b64encode(key).decode()}
    wrapper = wrapper_from_settings(settings)
    assert wrapper is not None and wrapper.key_id == LocalKeyWrapper(key).key_id
    assert wrapper_from_settings({}) is None and wrapper_from_settings({"mode": "none"}) is None
    with pytest.raises(ValueError, match="not supported"):
        wrapper_from_settings({"mode": "kms"})


def test_a_replaced_master_key_starts_a_new_chain(
    store: FileStore, keys: LocalKeyWrapper, data: bytes
) -> None:
    first = write(store, data, keys=keys)
    new_keys = LocalKeyWrapper(b"\x09" * 32)
    second = write(store, data, seq=2, parent=read_manifest(store, first.key), keys=new_keys)
    assert second.encryption is not None and second.encryption["key_id"] == new_keys.key_id
    assert second.parent == first.capsule_id and second.uploaded_chunks > 0
    assert restore(store, read_manifest(store, second.key), new_keys) == data
    with pytest.raises(CapsuleKeyError):
        restore(store, read_manifest(store, first.key), new_keys)


def _as_hmac_chain(store: FileStore, m: Manifest, keys: LocalKeyWrapper, data: bytes) -> Manifest:
    """`m` rewritten as a chain begun before 2026-12-03 would have stored it: the same data key,
    scheme aes-256-gcm+hmac-sha256, chunk ids HMAC-SHA256 under that scheme's name key."""
    assert m.encryption is not None and m.encryption["scheme"] == SCHEME
    record = {**m.encryption, "scheme": SCHEME_HMAC}
    codec = sealed_codec(record, keys, "task1")
    store.delete_prefix("task1/")
    return _rewrite(store, m, record, codec, data)


def _rewrite(
    store: FileStore, m: Manifest, record: dict[str, Any], codec: Any, data: bytes
) -> Manifest:
    parts = []
    offset = 0
    for ref in m.parts[0].chunks:
        raw = data[offset : offset + ref.size]
        offset += ref.size
        chunk_id = codec.chunk_id(raw)
        sealed = codec.seal(chunk_id, zstandard.ZstdCompressor().compress(raw))
        store.put(chunk_key("task1", chunk_id), sealed)
        parts.append({**ref.model_dump(), "sha256": chunk_id, "stored_size": len(sealed)})
    document = m.model_dump()
    document.update(encryption=record, capsule_id="old-chain")
    document["parts"][0]["chunks"] = parts
    old = Manifest.model_validate(document)
    store.put(m.key, old.to_bytes())
    return read_manifest(store, m.key)


def test_new_chains_name_chunks_by_keyed_blake3(
    store: FileStore, keys: LocalKeyWrapper, data: bytes
) -> None:
    m = write(store, data, keys=keys)
    assert m.encryption is not None and m.encryption["scheme"] == SCHEME == "aes-256-gcm+blake3"
    codec = sealed_codec(m.encryption, keys, "task1")
    first = m.parts[0].chunks[0]
    assert first.sha256 == codec.chunk_id(data[: first.size])
    assert len(first.sha256) == 64  # the same key shape as sha256's
    hmac_codec = SealedCodec(bytes(32), SCHEME_HMAC)
    assert SealedCodec(bytes(32)).chunk_id(b"x") != hmac_codec.chunk_id(b"x")


def test_chains_begun_with_hmac_ids_are_read_and_continued_under_their_scheme(
    store: FileStore, keys: LocalKeyWrapper, data: bytes
) -> None:
    old = _as_hmac_chain(store, write(store, data, keys=keys), keys, data)
    assert old.encryption is not None and old.encryption["scheme"] == SCHEME_HMAC
    assert restore(store, old, keys) == data
    verify_capsule(store, old, keys=keys)
    changed = bytearray(data)
    changed[300 * KiB : 302 * KiB] = b"\x02" * (2 * KiB)
    later = write(store, bytes(changed), seq=2, parent=old, keys=keys)
    assert later.encryption == old.encryption  # the same scheme and data key: deduplicated
    assert later.reused_chunks > 0 and later.uploaded_chunks <= 3
    assert restore(store, read_manifest(store, later.key), keys) == bytes(changed)


def test_an_unknown_scheme_is_a_clear_key_error(
    store: FileStore, keys: LocalKeyWrapper, data: bytes
) -> None:
    m = write(store, data, keys=keys)
    assert m.encryption is not None
    with pytest.raises(CapsuleKeyError, match="unknown capsule encryption scheme 'rot13'"):
        sealed_codec({**m.encryption, "scheme": "rot13"}, keys, "task1")


@pytest.mark.parametrize("pieces", [[b""], [b"abc"], [b"a" * 100, b"", memoryview(b"xyz" * 7)]])
def test_seal_in_pieces_is_aes_gcm_of_the_joined_frame(pieces: list[bytes | memoryview]) -> None:
    codec = SealedCodec(bytes(range(32)))
    sealed = codec.seal("chunk-id", pieces)
    joined = b"".join(pieces)
    assert len(sealed) == len(joined) + OVERHEAD
    enc_key = hmac.new(bytes(range(32)), b"tescape chunk encryption", hashlib.sha256).digest()
    nonce = bytes(sealed[:12])
    assert bytes(sealed[12:]) == AESGCM(enc_key).encrypt(nonce, joined, b"chunk-id")
    assert codec.open("chunk-id", bytes(sealed), "here") == joined
    with pytest.raises(CapsuleCorrupt, match="authentication tag"):
        codec.open("other-id", bytes(sealed), "here")


@pytest.mark.parametrize("size", [0, 1, 128 * KiB, 128 * KiB + 1, 4 * MiB + 3])
def test_open_raw_decrypts_a_raw_frame_straight_into_its_bytes(size: int) -> None:
    codec = SealedCodec(bytes(range(32)))
    data = random.Random(size).randbytes(size)
    sealed = bytes(codec.seal("id", raw_frame_pieces(data)))
    out = codec.open_raw("id", sealed, "here")
    assert isinstance(out, bytearray) and out == data
    assert zstandard.ZstdDecompressor().decompress(codec.open("id", sealed, "here")) == data


def test_open_raw_leaves_compressed_frames_to_zstd_and_refuses_what_fails_its_tag() -> None:
    codec = SealedCodec(bytes(range(32)))
    data = b"abc" * 50_000
    packed = codec.seal("id", zstandard.ZstdCompressor().compress(data))
    assert codec.open_raw("id", bytes(packed), "here") is None
    sealed = bytearray(codec.seal("id", raw_frame_pieces(random.Random(1).randbytes(300_000))))
    with pytest.raises(CapsuleCorrupt, match="authentication tag"):
        codec.open_raw("another-id", bytes(sealed), "here")  # moved under another name
    for at in (20, 200_000, len(sealed) - 3):  # the frame's header, a payload byte, the tag
        flipped = bytes(sealed[:at]) + bytes([sealed[at] ^ 0x10]) + bytes(sealed[at + 1 :])
        with pytest.raises(CapsuleCorrupt, match="authentication tag"):
            # a header that no longer reads as a raw frame is left to `open`, which fails too
            if codec.open_raw("id", flipped, "here") is None:
                codec.open("id", flipped, "here")
    short = bytes(sealed[:-40]) + bytes(sealed[-16:])  # cut short: no longer a whole raw frame
    assert codec.open_raw("id", short, "here") is None
    with pytest.raises(CapsuleCorrupt, match="authentication tag"):
        codec.open("id", short, "here")
    with pytest.raises(CapsuleCorrupt, match="too short"):
        codec.open_raw("id", bytes(sealed[:20]), "here")


def test_raw_payload_refuses_frames_not_in_raw_frames_layout() -> None:
    def reader(frame: bytes) -> Callable[[int, memoryview], None]:
        at = 0

        def read(n: int, into: memoryview) -> None:
            nonlocal at
            into[:n] = frame[at : at + n]
            at += n

        return read

    frame = raw_frame(b"x" * 200_000)
    assert raw_payload(reader(frame), len(frame)) == b"x" * 200_000
    assert raw_payload(reader(frame + b"\0"), len(frame) + 1) is None  # bytes after the last
    bigger = frame[:5] + struct.pack("<Q", 200_001) + frame[13:]  # sizes that do not add up
    assert raw_payload(reader(bigger), len(bigger)) is None
    packed = zstandard.ZstdCompressor().compress(b"x" * 200_000)
    assert raw_payload(reader(packed), len(packed)) is None
