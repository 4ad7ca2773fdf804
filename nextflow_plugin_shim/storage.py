"""Where the harness's work directories live: a local path or an `s3://` prefix, addressed by the
strings Nextflow itself would put in a TES task (`Path.toUriString()`): a bare absolute path for a
local file, `s3://bucket/key` for an S3 object.

    store = WorkStore(s3_client=boto3.client("s3", endpoint_url=...))
    store.write_text("s3://b/work/ab/cd/.command.sh", "echo hi")
    store.list_files("/data/work/ab/cd")          # relative names of every file below, recursively
"""

from __future__ import annotations

import shutil
from pathlib import Path, PurePosixPath
from typing import Any


def is_s3(url: str) -> bool:
    return url.startswith("s3://")


def split_s3(url: str) -> tuple[str, str]:
    bucket, _, key = url[len("s3://") :].partition("/")
    if not bucket:
        raise ValueError(f"no bucket in {url!r}")
    return bucket, key


def join(base: str, *parts: str) -> str:
    """`base` / parts, for a local path or an s3:// URL."""
    if is_s3(base):
        return "/".join([base.rstrip("/"), *(p.strip("/") for p in parts)])
    return str(Path(base).joinpath(*parts))


def container_path(url: str) -> str:
    """What Nextflow's `Path.toString()` gives: the host path itself, or `/bucket/key` for S3.
    nf-ga4gh puts the remote bin scripts at exactly this path in the container."""
    if is_s3(url):
        bucket, key = split_s3(url)
        return f"/{bucket}/{key}"
    return url


class WorkStore:
    """Reads and writes files at local paths and s3:// URLs (boto3 client given by the caller)."""

    def __init__(self, s3_client: Any | None = None) -> None:
        self.s3 = s3_client

    def _client(self) -> Any:
        if self.s3 is None:
            raise ValueError("an s3:// work dir needs an S3 client (WorkStore(s3_client=...))")
        return self.s3

    def write_bytes(self, url: str, data: bytes) -> None:
        if is_s3(url):
            bucket, key = split_s3(url)
            self._client().put_object(Bucket=bucket, Key=key, Body=data)
            return
        path = Path(url)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)

    def write_text(self, url: str, text: str) -> None:
        self.write_bytes(url, text.encode())

    def read_bytes(self, url: str) -> bytes:
        if is_s3(url):
            bucket, key = split_s3(url)
            return bytes(self._client().get_object(Bucket=bucket, Key=key)["Body"].read())
        return Path(url).read_bytes()

    def read_text(self, url: str) -> str:
        return self.read_bytes(url).decode(errors="replace")

    def exists(self, url: str) -> bool:
        if is_s3(url):
            return self.is_file(url) or self.is_dir(url)
        return Path(url).exists()

    def is_file(self, url: str) -> bool:
        if not is_s3(url):
            return Path(url).is_file()
        bucket, key = split_s3(url)
        found = self._client().list_objects_v2(Bucket=bucket, Prefix=key, MaxKeys=1)
        return any(o["Key"] == key for o in found.get("Contents", []))

    def is_dir(self, url: str) -> bool:
        if not is_s3(url):
            return Path(url).is_dir()
        bucket, key = split_s3(url)
        found = self._client().list_objects_v2(
            Bucket=bucket, Prefix=key.rstrip("/") + "/", MaxKeys=1
        )
        return bool(found.get("Contents"))

    def list_files(self, url: str) -> list[str]:
        """Relative POSIX names of every file below `url` (recursively), sorted."""
        if not is_s3(url):
            root = Path(url)
            if not root.is_dir():
                return []
            return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())
        bucket, key = split_s3(url)
        prefix = key.rstrip("/") + "/"
        names: list[str] = []
        for page in (
            self._client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        ):
            names += [o["Key"][len(prefix) :] for o in page.get("Contents", [])]
        return sorted(n for n in names if n and not n.endswith("/"))

    def copy_tree(self, source: Path, dest: str) -> list[str]:
        """Upload a local file or directory to `dest`; return the URLs of the files written."""
        if source.is_file():
            self._put_file(source, dest)
            return [dest]
        written = []
        for path in sorted(source.rglob("*")):
            if path.is_file():
                target = join(dest, *PurePosixPath(path.relative_to(source)).parts)
                self._put_file(path, target)
                written.append(target)
        return written

    def _put_file(self, source: Path, dest: str) -> None:
        if is_s3(dest):
            bucket, key = split_s3(dest)
            self._client().upload_file(str(source), bucket, key)
            return
        Path(dest).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, dest)
