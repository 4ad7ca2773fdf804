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
  is HMAC-SHA256(name key, plaintext): stable for equal bytes within the chain (deduplication
  survives), meaningless to anyone without the key (a plain sha256 would let a lister confirm
  guessed content, or see equal content across tasks).
- a stored chunk is `nonce (12 random bytes) ‖ AES-256-GCM(encryption key, zstd frame)`, with
  the chunk id as associated data: a chunk moved under another name, a flipped bit or a chunk
  from another key fails its tag (CapsuleCorrupt). After decrypting, the reader checks the zstd
  frame and recomputes the id from the plaintext, as it checks the sha256 of plain capsules.

Unencrypted capsules (format 1, chunk id = sha256) are still written with `mode: none` and read
by every reader; encrypted ones are format 2, which readers older than this module refuse.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
from pathlib import Path
from typing import Any, Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from capsule_runtime.capsules.errors import CapsuleCorrupt

SCHEME = "aes-256-gcm+hmac-sha256"
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


def _hmac(key: bytes, data: bytes) -> str:
    return hmac.new(key, data, hashlib.sha256).hexdigest()


class ChunkCodec(Protocol):
    """How chunks are named and stored: plain (sha256, the zstd frame as is) or sealed."""

    encrypted: bool

    def chunk_id(self, raw: bytes) -> str: ...

    def seal(self, chunk_id: str, frame: bytes) -> bytes: ...

    def open(self, chunk_id: str, stored: bytes, where: str) -> bytes: ...


class PlainCodec:
    encrypted = False

    def chunk_id(self, raw: bytes) -> str:
        return hashlib.sha256(raw).hexdigest()

    def seal(self, chunk_id: str, frame: bytes) -> bytes:
        return frame

    def open(self, chunk_id: str, stored: bytes, where: str) -> bytes:
        return stored


class SealedCodec:
    """Chunks of one data key: ids keyed by HMAC, bodies sealed by AES-256-GCM (see module)."""

    encrypted = True

    def __init__(self, data_key: bytes):
        if len(data_key) != KEY_BYTES:
            raise ValueError(f"a capsule data key has {KEY_BYTES} bytes")
        self._name_key = hmac.new(data_key, b"tescape chunk name", hashlib.sha256).digest()
        enc_key = hmac.new(data_key, b"tescape chunk encryption", hashlib.sha256).digest()
        self._aead = AESGCM(enc_key)

    def chunk_id(self, raw: bytes) -> str:
        return _hmac(self._name_key, raw)

    def seal(self, chunk_id: str, frame: bytes) -> bytes:
        nonce = os.urandom(NONCE_BYTES)
        return nonce + self._aead.encrypt(nonce, frame, chunk_id.encode())

    def open(self, chunk_id: str, stored: bytes, where: str) -> bytes:
        if len(stored) < OVERHEAD:
            raise CapsuleCorrupt(f"{where} is too short to be a sealed chunk ({len(stored)} B)")
        try:
            frame: bytes = self._aead.decrypt(
                stored[:NONCE_BYTES], stored[NONCE_BYTES:], chunk_id.encode()
            )
        except InvalidTag:
            raise CapsuleCorrupt(
                f"{where} fails its authentication tag (tampered, or sealed with another key)"
            ) from None
        return frame


def new_data_key() -> bytes:
    return os.urandom(KEY_BYTES)


def encryption_record(wrapper: KeyWrapper, wrapped: str) -> dict[str, Any]:
    """The manifest's `encryption` field for a data key wrapped by `wrapper`."""
    return {"scheme": SCHEME, "wrapper": wrapper.name, "key_id": wrapper.key_id, "wrapped": wrapped}


def unwrap_record(record: dict[str, Any], wrapper: KeyWrapper | None, task_id: str) -> bytes:
    """The data key of a manifest's `encryption` record; CapsuleKeyError saying why not."""
    if record.get("scheme") != SCHEME:
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
