"""The named failures of capsules: a key that is not there, a store that fails, a capsule whose
bytes are wrong, and a write that did not complete."""

from __future__ import annotations


class CapsuleMissing(KeyError):
    """A key is not in the capsule store."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else "capsule object missing"


class CapsuleStoreError(RuntimeError):
    """The capsule store failed (I/O error, S3 error after botocore's retries)."""


class CapsuleCorrupt(Exception):
    """A capsule's bytes do not match its manifest: bad manifest digest, a chunk whose size or
    sha256 differs, a zstd frame that does not decode, or (as ChunkMissing) an absent chunk."""


class ChunkMissing(CapsuleCorrupt, CapsuleMissing):
    """A chunk named by a manifest is not in the store; both a CapsuleCorrupt and a
    CapsuleMissing, so either `except` catches it."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "chunk missing"


class CapsuleWriteError(Exception):
    """write_capsule failed (reading a part, compressing, or the store); no manifest was written.
    The cause is chained (`__cause__`)."""
