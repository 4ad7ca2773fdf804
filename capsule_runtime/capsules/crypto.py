"""Capsule encryption at rest: a data key per task, wrapped by a master key, AES-256-GCM chunks.

A capsule holds a process's whole memory, so a store readable by others (a shared bucket, a
backup) must learn nothing from it. With encryption on (`capsules.encryption.mode: key`):

- each task's capsule chain has a random 256-bit **data key**; the first capsule makes it, later
  capsules written against a parent reuse it (so they keep deduplicating against the parent's
  chunks). The manifest carries it wrapped (`Encryption.wrapped_key`) by a **KeyWrapper**: today
  `LocalKeyWrapper` (AES-256-GCM under the gateway's master key, bound to the task id), later a
  KMS one; the manifest names the wrapper and the master key's id, so a wrong key is reported as
  such and not as a damaged chunk.
- two subkeys come from the data key (HMAC-SHA256 as a KDF): a **name key** and an
  **encryption key**. A chunk's id — its object name and the `sha256` field of its ChunkRef —
  is a keyed hash of the plaintext under the name key: stable for equal bytes within the chain
  (deduplication survives), meaningless to anyone without the key (a plain sha256 would let a
  lister confirm guessed content, or see equal content across tasks). The manifest's `scheme`
  says which: `aes-256-gcm+blake3` (keyed BLAKE3, 32 bytes; new chains since 2026-12-03: about
  2.5 times less CPU per byte than HMAC-SHA256 on this machine's SHA extensions, and the id is
  computed for every byte of every capsule and of every restore) or `aes-256-gcm+hmac-sha256`
  (chains begun before; still read, and continued under their own scheme so they keep
  deduplicating).
- a stored chunk is `nonce (12 random bytes) ‖ AES-256-GCM(encryption key, zstd frame)`, with
  the chunk id as associated data: a chunk moved under another name, a flipped bit or a chunk
  from another key fails its tag (CapsuleCorrupt). The tag is what a reader checks: binding
  the id, it says that a holder of the data key sealed exactly these bytes under this id, so the
  id is not computed again from the plaintext (as a plain capsule's sha256 is: it is all a plain
  chunk has). A frame of raw blocks (incompressible memory) is decrypted straight into the
  chunk's bytes (`open_raw`: no frame copy, no zstd); the tag is checked before they are used.

Unencrypted capsules (format 1, chunk id = sha256) are still written with `mode: none` and read
by every reader; encrypted ones are format 2, which readers older than this module refuse.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import blake3
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from capsule_runtime.capsules.errors import CapsuleCorrupt
from capsule_runtime.capsules.frames import raw_payload
from capsule_runtime.capsules.heap import uninitialized

SCHEME = "aes-256-gcm+blake3"  # what a new chain is written with
SCHEME_HMAC = "aes-256-gcm+hmac-sha256"  # chains begun before 2026-12-03: read and continued
SCHEMES = (SCHEME, SCHEME_HMAC)
NONCE_BYTES = 12
TAG_BYTES = 16
OVERHEAD = NONCE_BYTES + TAG_BYTES  # bytes a sealed chunk adds to its zstd frame
KEY_BYTES = 32


class CapsuleKeyError(CapsuleCorrupt):
    """The capsule's data key cannot be unwrapped here: no key is configured, another master key
    wrote it, or the wrapper is unknown. The capsule is unusable on this agent (a CapsuleCorrupt,
    so the restore falls back to another capsule), and the message says which key it needs."""


class KeyWrapper(Protocol):
    """Wraps and unwraps data keys. `name` goes into the manifest (`local`, later `kms`);
    `key_id` names the master key (never the key itself). `context` (the task id) is bound to
    the wrapped key: a manifest copied to another task does not unwrap."""

    name: str
    key_id: str

    def wrap(self, data_key: bytes, context: str) -> str: ...

    def unwrap(self, wrapped: str, context: str) -> bytes: ...


class LocalKeyWrapper:
    """Data keys wrapped by AES-256-GCM under a 256-bit master key held by the gateway (and
    handed to its agents in CapsuleSettings). `wrapped` = base64(nonce ‖ ciphertext ‖ tag)."""

    name = "local"

    def __init__(self, master_key: bytes):
        if len(master_key) != KEY_BYTES:
            raise ValueError(f"a capsule master key has {KEY_BYTES} bytes, not {len(master_key)}")
        self._aead = AESGCM(master_key)
        self.key_id = _hmac(master_key, b"tescape capsule master key id")[:16]

    def wrap(self, data_key: bytes, context: str) -> str:
        nonce = os.urandom(NONCE_BYTES)
        sealed = self._aead.encrypt(nonce, data_key, _wrap_aad(context))
        return base64.b64encode(nonce + sealed).decode()

    def unwrap(self, wrapped: str, context: str) -> bytes:
        try:
            blob = base64.b64decode(wrapped, validate=True)
            return self._aead.decrypt(blob[:NONCE_BYTES], blob[NONCE_BYTES:], _wrap_aad(context))
        except (ValueError, InvalidTag) as exc:
            raise CapsuleKeyError(
                f"the capsule's data key does not unwrap with master key {self.key_id}"
            ) from exc


def _wrap_aad(context: str) -> bytes:
    return b"tescape capsule data key\0" + context.encode()


def _hmac(key: bytes, data: Data) -> str:
    return hmac.new(key, data, hashlib.sha256).hexdigest()


# A chunk's bytes as the pipelines pass them: bytes, or a read-only view of a larger buffer
# (follow_pages hands out slices of what it read, uncopied).
Data = bytes | memoryview
# A zstd frame: one buffer, or pieces to be concatenated (frames.raw_frame_pieces).
Frame = Data | Sequence[Data]


class ChunkCodec(Protocol):
    """How chunks are named and stored: plain (sha256, the zstd frame as is) or sealed."""

    encrypted: bool

    def chunk_id(self, raw: Data) -> str: ...

    def seal(self, chunk_id: str, frame: Frame) -> bytes | bytearray: ...

    def open(self, chunk_id: str, stored: bytes, where: str) -> bytes: ...

    def open_raw(self, chunk_id: str, stored: bytes, where: str) -> bytearray | None: ...


class PlainCodec:
    encrypted = False

    def chunk_id(self, raw: Data) -> str:
        return hashlib.sha256(raw).hexdigest()

    def seal(self, chunk_id: str, frame: Frame) -> bytes | bytearray:
        return b"".join(_pieces(frame))

    def open(self, chunk_id: str, stored: bytes, where: str) -> bytes:
        return stored

    def open_raw(self, chunk_id: str, stored: bytes, where: str) -> bytearray | None:
        return None  # a plain chunk is decoded by zstd and checked by its sha256


def _pieces(frame: Frame) -> Sequence[Data]:
    return [frame] if isinstance(frame, bytes | bytearray | memoryview) else frame


_GCM_SLACK = 15  # update_into wants room for a block more than it is given, less one byte


class SealedCodec:
    """Chunks of one data key: ids keyed by BLAKE3 (or HMAC-SHA256 for `SCHEME_HMAC` chains),
    bodies sealed by AES-256-GCM (see module)."""

    encrypted = True

    def __init__(self, data_key: bytes, scheme: str = SCHEME):
        if len(data_key) != KEY_BYTES:
            raise ValueError(f"a capsule data key has {KEY_BYTES} bytes")
        if scheme not in SCHEMES:
            raise CapsuleKeyError(f"unknown capsule encryption scheme {scheme!r}")
        self.scheme = scheme
        label = b"tescape chunk name" if scheme == SCHEME_HMAC else b"tescape chunk name blake3"
        self._name_key = hmac.new(data_key, label, hashlib.sha256).digest()
        self._enc_key = hmac.new(data_key, b"tescape chunk encryption", hashlib.sha256).digest()
        self._aead = AESGCM(self._enc_key)

    def chunk_id(self, raw: Data) -> str:
        if self.scheme == SCHEME_HMAC:
            return _hmac(self._name_key, raw)
        # blake3 releases the GIL for large inputs, as hashlib does
        return blake3.blake3(raw, key=self._name_key).hexdigest()

    def seal(self, chunk_id: str, frame: Frame) -> bytes | bytearray:
        """`nonce ‖ AES-256-GCM(frame) ‖ tag`, the same bytes AESGCM.encrypt gives, encrypted
        piece by piece into one buffer: no joined frame, no concatenation with the nonce."""
        pieces = _pieces(frame)
        size = sum(len(p) for p in pieces)
        out = uninitialized(NONCE_BYTES + size + max(TAG_BYTES, _GCM_SLACK))  # written whole
        nonce = os.urandom(NONCE_BYTES)
        out[:NONCE_BYTES] = nonce
        encryptor = Cipher(algorithms.AES(self._enc_key), modes.GCM(nonce)).encryptor()
        encryptor.authenticate_additional_data(chunk_id.encode())
        view = memoryview(out)
        pos = NONCE_BYTES
        for piece in pieces:
            if len(piece):
                pos += encryptor.update_into(piece, view[pos : pos + len(piece) + _GCM_SLACK])
        encryptor.finalize()
        view[pos : pos + TAG_BYTES] = encryptor.tag
        view.release()
        del out[pos + TAG_BYTES :]
        return out

    def open(self, chunk_id: str, stored: bytes, where: str) -> bytes:
        _check_sealed_length(stored, where)
        view = memoryview(stored)  # the ciphertext is not copied out of `stored`
        try:
            frame: bytes = self._aead.decrypt(
                bytes(view[:NONCE_BYTES]), view[NONCE_BYTES:], chunk_id.encode()
            )
        except InvalidTag:
            raise _bad_tag(where) from None
        return frame

    def open_raw(self, chunk_id: str, stored: bytes, where: str) -> bytearray | None:
        """The chunk's bytes when its frame is raw_frame's layout (stored uncompressed),
        decrypted straight into them, its tag checked; None when it is another frame (then
        `open` and zstd). CapsuleCorrupt as `open`."""
        _check_sealed_length(stored, where)
        view = memoryview(stored)
        end = len(view) - TAG_BYTES
        decryptor = Cipher(
            algorithms.AES(self._enc_key), modes.GCM(bytes(view[:NONCE_BYTES]))
        ).decryptor()
        decryptor.authenticate_additional_data(chunk_id.encode())
        at = NONCE_BYTES

        def read(n: int, into: memoryview) -> None:  # raw_payload stays within the frame
            nonlocal at
            decryptor.update_into(view[at : at + n], into)
            at += n

        out = raw_payload(read, end - NONCE_BYTES)
        if out is None:
            return None
        try:
            decryptor.finalize_with_tag(bytes(view[end:]))
        except InvalidTag:
            raise _bad_tag(where) from None
        return out


def _check_sealed_length(stored: bytes, where: str) -> None:
    if len(stored) < OVERHEAD:
        raise CapsuleCorrupt(f"{where} is too short to be a sealed chunk ({len(stored)} B)")


def _bad_tag(where: str) -> CapsuleCorrupt:
    return CapsuleCorrupt(
        f"{where} fails its authentication tag (tampered, or sealed with another key)"
    )


def new_data_key() -> bytes:
    return os.urandom(KEY_BYTES)


def encryption_record(wrapper: KeyWrapper, wrapped: str) -> dict[str, Any]:
    """The manifest's `encryption` field for a data key wrapped by `wrapper` (a new chain)."""
    return {"scheme": SCHEME, "wrapper": wrapper.name, "key_id": wrapper.key_id, "wrapped": wrapped}


def sealed_codec(record: dict[str, Any], wrapper: KeyWrapper | None, task_id: str) -> SealedCodec:
    """The codec of a manifest's `encryption` record (its data key, its scheme)."""
    return SealedCodec(unwrap_record(record, wrapper, task_id), str(record["scheme"]))


def unwrap_record(record: dict[str, Any], wrapper: KeyWrapper | None, task_id: str) -> bytes:
    """The data key of a manifest's `encryption` record; CapsuleKeyError saying why not."""
    if record.get("scheme") not in SCHEMES:
        raise CapsuleKeyError(f"unknown capsule encryption scheme {record.get('scheme')!r}")
    key_id = record.get("key_id")
    if wrapper is None:
        raise CapsuleKeyError(
            f"the capsule is encrypted (master key {key_id}) but no capsule key is configured "
            "here (capsules.encryption)"
        )
    if record.get("wrapper") != wrapper.name or key_id != wrapper.key_id:
        raise CapsuleKeyError(
            f"the capsule is encrypted with {record.get('wrapper')} key {key_id}, this agent "
            f"has {wrapper.name} key {wrapper.key_id} (was capsules.encryption.key_file "
            "replaced?)"
        )
    return wrapper.unwrap(str(record.get("wrapped", "")), task_id)


# -- master keys and settings ----------------------------------------------------------------


def load_or_create_master_key(path: Path) -> bytes:
    """The 32-byte master key in `path` (base64, or 32 raw bytes); created (0600) if absent."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass  # another process made it first
        else:
            with os.fdopen(fd, "wb") as f:
                f.write(base64.b64encode(new_data_key()) + b"\n")
                f.flush()
                os.fsync(f.fileno())
    return read_master_key(path)


def read_master_key(path: Path) -> bytes:
    data = path.read_bytes()
    if len(data) == KEY_BYTES:
        return data
    try:
        key = base64.b64decode(data.strip(), validate=True)
    except ValueError:
        key = b""
    if len(key) != KEY_BYTES:
        raise ValueError(f"{path}: a capsule master key is 32 bytes, raw or base64-encoded")
    return key


def wrapper_from_settings(settings: dict[str, Any]) -> KeyWrapper | None:
    """The KeyWrapper of CapsuleSettings.encryption (`{"mode": "key", "key": base64}`); None
    for `{}` or mode none. ValueError for a mode this agent does not know."""
    mode = settings.get("mode", "none")
    if mode == "none":
        return None
    if mode == "key":
        return LocalKeyWrapper(base64.b64decode(str(settings.get("key", "")), validate=True))
    raise ValueError(f"capsule encryption mode {mode!r} is not supported by this agent")
