"""The capsule manifest: which parts a capsule has, and the ordered chunks of each part.

A manifest is JSON (pydantic v2 models below), written as the capsule's last object. Its own
sha256 is what the gateway records to trust it later (`read_manifest(..., sha256=...)`).
Unknown fields are ignored when reading, so a newer agent may add some; an incompatible layout
gets a new `format` number, which older readers refuse.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    SerializerFunctionWrapHandler,
    model_serializer,
)

from capsule_runtime.capsules.keys import chunk_key, manifest_key, task_prefix

__all__ = [
    "FORMAT",
    "ChunkRef",
    "Manifest",
    "Part",
    "chunk_key",
    "known_chunks",
    "manifest_key",
    "manifest_sha256",
    "rfc3339_now",
    "task_prefix",
]

FORMAT = 1  # plain chunks: id = sha256 of the bytes, stored as the zstd frame
ENCRYPTED_FORMAT = 2  # sealed chunks (crypto.py): id = HMAC, stored AES-256-GCM; `encryption` set
FORMATS = (FORMAT, ENCRYPTED_FORMAT)


class _Model(BaseModel):
    model_config = ConfigDict(extra="ignore")


class ChunkRef(_Model):
    # The chunk's id and object name: the sha256 of the uncompressed bytes (format 1), or their
    # HMAC-SHA256 under the capsule chain's name key (format 2, encrypted)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    size: int = Field(ge=0)  # uncompressed
    stored_size: int = Field(ge=0)  # the object's length in the store (zstd frame, sealed or not)
    # all zero bytes: a reader writes `size` zeros without fetching (frames.py). The object is
    # still stored once under its id, so readers that ignore the mark restore it too. Written
    # only when true, so manifests without zero chunks are byte-for-byte what they were.
    zero: bool = False

    @model_serializer(mode="wrap")
    def _omit_false_zero(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        data: dict[str, Any] = handler(self)
        if not data.get("zero"):
            data.pop("zero", None)
        return data


class Part(_Model):
    name: str = Field(min_length=1)
    chunks: list[ChunkRef] = Field(default_factory=list)
    size: int = Field(default=0, ge=0)  # sum of the chunks' sizes


class Manifest(_Model):
    format: int = FORMAT
    capsule_id: str
    task_id: str
    attempt_id: str
    sequence: int = Field(ge=0)
    created: str  # RFC 3339, UTC
    parent: str | None = None  # the capsule_id this one was written against
    parts: list[Part] = Field(default_factory=list)
    size_bytes: int = 0  # uncompressed, all parts
    stored_bytes: int = 0  # compressed, all parts (reused chunks included)
    uploaded_bytes: int = 0  # compressed bytes this capsule wrote (new chunks only)
    uploaded_chunks: int = 0
    reused_chunks: int = 0  # already in the store (parent, `known`, or earlier in this capsule)
    zero_chunks: int = 0  # all zero bytes: neither hashed nor compressed (ChunkRef.zero)
    raw_chunks: int = 0  # did not compress when sampled: stored as a raw zstd frame (frames.py)
    fast_chunks: int = 0  # compressed little when sampled: at zstd's fast level (frames.py)
    meta: dict[str, Any] = Field(default_factory=dict)  # versions, runner state, options
    timings: dict[str, float] = Field(default_factory=dict)  # seconds
    # format 2: {scheme, wrapper, key_id, wrapped}: the chain's data key, wrapped (crypto.py)
    encryption: dict[str, Any] | None = None

    _sha256: str | None = PrivateAttr(default=None)

    @property
    def key(self) -> str:
        """The manifest's key in the store."""
        return manifest_key(self.task_id, self.attempt_id, self.sequence)

    @property
    def sha256(self) -> str | None:
        """The sha256 of the manifest bytes as last serialised (to_bytes) or read; else None."""
        return self._sha256

    def part(self, name: str) -> Part:
        for part in self.parts:
            if part.name == name:
                return part
        raise KeyError(f"capsule {self.capsule_id} has no part {name!r}")

    def chunk_sizes(self) -> dict[str, int]:
        """sha256 → stored size of every chunk of every part."""
        return {c.sha256: c.stored_size for p in self.parts for c in p.chunks}

    def to_bytes(self) -> bytes:
        """The JSON document; its sha256 becomes `self.sha256`."""
        data = self.model_dump_json().encode()
        self._sha256 = manifest_sha256(data)
        return data

    @classmethod
    def from_bytes(cls, data: bytes, sha256: str | None = None) -> Manifest:
        """Parse; pydantic's ValidationError on a bad document. Remembers the bytes' sha256."""
        manifest = cls.model_validate_json(data)
        manifest._sha256 = sha256 or manifest_sha256(data)
        return manifest


def manifest_sha256(manifest_bytes: bytes) -> str:
    return hashlib.sha256(manifest_bytes).hexdigest()


def known_chunks(manifests: Iterable[Manifest]) -> dict[str, int]:
    """sha256 → stored size over several manifests: a `known` argument for write_capsule."""
    known: dict[str, int] = {}
    for m in manifests:
        known.update(m.chunk_sizes())
    return known


def rfc3339_now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
