"""Which buckets and key prefixes a task's s3:// URLs may name.

Task staging reads and writes s3:// URLs with the worker's S3 identity (`storage.s3`), which may
also reach the capsule store. So:

- The capsule store's location (`capsules.store: s3://bucket/prefix`) is never reachable by a
  task: no URL inside it, and no URL that would list or write a prefix covering it (an output
  `s3://bucket/` above the capsule prefix, a DIRECTORY input of the whole bucket).
- With an allow-list (`storage.s3.allowed`, or the creating user's own list in
  `storage.s3.allowed_by_user`), a URL must lie inside one of its `bucket` or `bucket/prefix`
  entries. No list: any other bucket.

Prefixes are compared whole segment by segment (`bucket/users/al` does not cover
`bucket/users/alice/x`), bucket names without regard to case (virtual-host addressing puts them in
a host name), and keys as S3 sees them and with empty segments collapsed. Keys with `.` or `..`
segments are refused: an HTTP layer between the worker and the store may normalise them.

The same rules run twice, like local paths: the gateway refuses a task at create (400, naming the
field), and the agent's StagingPolicy checks every URL again before it touches the store. A leaf:
the standard library only.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

from capsule_runtime.protocol.errors import FieldError
from capsule_runtime.protocol.tes import TesTask

CAPSULES = "the capsule store, which tasks may never use"
BUCKET = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,254}$")


@dataclass(frozen=True)
class S3Location:
    """A bucket and a key prefix as path segments ((): the whole bucket)."""

    bucket: str
    segments: tuple[str, ...] = ()

    @classmethod
    def parse(cls, entry: str) -> S3Location:
        """From `bucket`, `bucket/prefix` or `s3://bucket/prefix` (config entries)."""
        text = entry[5:] if entry.lower().startswith("s3://") else entry
        bucket, _, prefix = text.partition("/")
        if not BUCKET.match(bucket):
            raise ValueError(f"{entry!r} does not start with a bucket name")
        return cls(bucket.lower(), tuple(s for s in prefix.split("/") if s))

    def covers(self, other: S3Location) -> bool:
        """Whether `other` lies inside this location (or is it)."""
        n = len(self.segments)
        return self.bucket == other.bucket and other.segments[:n] == self.segments

    def overlaps(self, other: S3Location) -> bool:
        return self.covers(other) or other.covers(self)

    def __str__(self) -> str:
        return "/".join((self.bucket, *self.segments))


def url_locations(url: str) -> list[S3Location]:
    """The locations an s3:// URL may reach: its key as written and with empty segments
    collapsed (one location when they agree). Raises ValueError for a URL no rule can judge."""
    parts = urlsplit(url)
    bucket = parts.netloc
    if not BUCKET.match(bucket):
        raise ValueError(f"{url}: an s3 URL needs a plain bucket name (s3://bucket/key)")
    key = url.split("://", 1)[1][len(bucket) :].lstrip("/")
    raw = key.split("/")
    if any(s in (".", "..") for s in raw):
        raise ValueError(f"{url}: s3 keys with '.' or '..' segments are not supported")
    # a trailing "/" names the same prefix a listing would use; an empty key, the whole bucket
    written = tuple(raw[:-1] if raw and raw[-1] == "" else raw) if key else ()
    collapsed = tuple(s for s in raw if s)
    return list(
        dict.fromkeys((S3Location(bucket.lower(), written), S3Location(bucket.lower(), collapsed)))
    )


def parse_entries(entries: Iterable[str]) -> tuple[S3Location, ...]:
    return tuple(dict.fromkeys(S3Location.parse(e) for e in entries))


@dataclass(frozen=True)
class S3Rules:
    """`allowed` None: any bucket; else only inside these. `denied`: never, nor a URL covering
    one (the capsule store)."""

    allowed: tuple[S3Location, ...] | None = None
    denied: tuple[S3Location, ...] = ()

    @classmethod
    def create(cls, allowed: Iterable[str] | None = None, denied: Iterable[str] = ()) -> S3Rules:
        return cls(None if allowed is None else parse_entries(allowed), parse_entries(denied))

    def refusal(self, url: str) -> str | None:
        """Why a task may not use the s3:// `url` (read, list, write or stat), or None."""
        try:
            locations = url_locations(url)
        except ValueError as exc:
            return str(exc)
        for where in locations:
            for base in self.denied:
                if base.covers(where):
                    return f"{url} is inside s3://{base}: {CAPSULES}"
                if where.covers(base):
                    return f"{url} covers s3://{base}: {CAPSULES}"
            if self.allowed is not None and not any(a.covers(where) for a in self.allowed):
                allowed = ", ".join(str(a) for a in self.allowed) or "none"
                return (
                    f"{url} is outside the buckets and prefixes tasks may use "
                    f"(storage.s3.allowed: {allowed})"
                )
        return None


def task_s3_errors(task: TesTask, rules: S3Rules) -> list[FieldError]:
    """Every input and output URL of a (validated) task that names an s3 location the rules
    refuse."""
    errors = []
    for name, item in task.files():
        if item.url is None or item.url[:5].lower() != "s3://":
            continue
        why = rules.refusal(item.url)
        if why is not None:
            errors.append(FieldError(f"{name}.url", why))
    return errors
