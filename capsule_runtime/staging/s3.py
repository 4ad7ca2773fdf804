"""s3:// storage through boto3: an object is a file, a prefix is a directory.

Connection settings (endpoint URL, region, credentials, addressing style, retries) and transfer
tuning come from `S3Config`; credentials left unset fall back to boto3's own chain (environment,
~/.aws, instance profile). The endpoint URL is checked against the staging policy before the
first request, and every task URL against its s3 rules (allow-list, never the capsule store's
bucket/prefix nor a prefix above it) before any request for it. All transfers of one
`S3Storage` share one s3transfer `TransferManager`: multipart above `multipart_threshold`, parts
and files in parallel up to `max_concurrency`, every part streamed from or to disk. A prefix is
downloaded object by object into a tree; keys that would land outside the destination (`..`,
absolute) are refused.
"""

from __future__ import annotations

import contextlib
import posixpath
import threading
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Future
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Literal

from capsule_runtime.protocol.tes import FileType
from capsule_runtime.staging.errors import SourceMissing, StagingError
from capsule_runtime.staging.policy import StagingPolicy
from capsule_runtime.staging.progress import ByteCallback
from capsule_runtime.staging.storage import Stat
from capsule_runtime.staging.urls import s3_location

MiB = 1 << 20


@dataclass(frozen=True)
class S3Config:
    endpoint_url: str | None = None  # None: AWS
    region: str | None = None
    access_key_id: str | None = None
    secret_access_key: str | None = None
    session_token: str | None = None
    addressing_style: Literal["auto", "path", "virtual"] = "auto"
    max_attempts: int = 5  # botocore "standard" retries, per request
    connect_timeout: float = 10.0
    read_timeout: float = 120.0
    multipart_threshold: int = 16 * MiB
    multipart_chunksize: int = 16 * MiB
    max_concurrency: int = 8

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> S3Config:
        """From the gateway's `storage.s3` settings: unknown keys and nulls are ignored."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known and v is not None})


def s3_client(cfg: S3Config, min_pool: int = 10) -> Any:
    """A boto3 S3 client for `cfg`: its own session (thread-safe to share), botocore's standard
    retries, a connection pool sized for `max_concurrency` parallel transfers."""
    import boto3
    from botocore.config import Config

    session = boto3.session.Session(
        aws_access_key_id=cfg.access_key_id,
        aws_secret_access_key=cfg.secret_access_key,
        aws_session_token=cfg.session_token,
        region_name=cfg.region or None,
    )
    return session.client(
        "s3",
        endpoint_url=cfg.endpoint_url,
        config=Config(
            region_name=cfg.region or "us-east-1",
            s3={"addressing_style": cfg.addressing_style},
            retries={"max_attempts": cfg.max_attempts, "mode": "standard"},
            connect_timeout=cfg.connect_timeout,
            read_timeout=cfg.read_timeout,
            max_pool_connections=max(min_pool, cfg.max_concurrency * 2),
        ),
    )


class SharedS3Client:
    """One boto3 S3 client, made on first use and shared by every thread (boto3 clients are
    thread-safe; sessions are not). The staging storage and the capsule store both hold one;
    `before` runs once, ahead of the first connection (the staging policy's endpoint check)."""

    def __init__(
        self, config: S3Config, min_pool: int, before: Callable[[], None] | None = None
    ) -> None:
        self.config, self.min_pool, self.before = config, min_pool, before
        self._lock = threading.Lock()
        self._client: Any = None

    @property
    def made(self) -> bool:
        return self._client is not None

    def get(self) -> Any:
        with self._lock:
            if self._client is None:
                if self.before is not None:
                    self.before()
                self._client = s3_client(self.config, self.min_pool)
            return self._client


class _Progress:
    """An s3transfer subscriber that forwards byte counts to a ByteCallback."""

    def __init__(self, callback: ByteCallback):
        self._callback = callback

    def on_queued(self, future: Any, **kwargs: Any) -> None:
        pass

    def on_progress(self, future: Any, bytes_transferred: int, **kwargs: Any) -> None:
        self._callback(bytes_transferred)

    def on_done(self, future: Any, **kwargs: Any) -> None:
        pass


def _describe(exc: Exception) -> str:
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        err = response.get("Error", {})
        code, message = err.get("Code", "?"), err.get("Message", "")
        return f"{code} {message}".strip()
    return str(exc) or type(exc).__name__


def error_code(exc: Exception) -> str:
    """The S3 error code of a botocore ClientError ("" for anything else)."""
    response = getattr(exc, "response", None)
    return str(response.get("Error", {}).get("Code", "")) if isinstance(response, dict) else ""


def is_not_found(exc: Exception) -> bool:
    """Whether S3 answered that the object (or bucket) does not exist."""
    return error_code(exc) in ("404", "NoSuchKey", "NotFound")


def tree_path(prefix: str, key: str) -> str | None:
    """The relative path of `key` below `prefix`, or None for the prefix's own folder marker.
    Raises StagingError for a key that would leave the destination directory."""
    rel = key[len(prefix) :]
    if not rel.strip("/"):
        return None
    norm = posixpath.normpath(rel)
    if rel.startswith("/") or norm == ".." or norm.startswith("../"):
        raise StagingError(f"object key {key!r} would be written outside the input directory")
    return norm


class S3Storage:
    def __init__(self, policy: StagingPolicy, config: S3Config | None = None):
        self.policy = policy
        self.config = config or S3Config()
        self._lock = threading.Lock()
        self._client = SharedS3Client(self.config, min_pool=10, before=self._check_endpoint)
        self._manager: Any = None

    # -- boto3 ----------------------------------------------------------------------------------

    def client(self) -> Any:
        return self._client.get()

    def _check_endpoint(self) -> None:
        if self.config.endpoint_url:
            self.policy.check_url(self.config.endpoint_url)

    def _transfers(self) -> Any:
        client = self.client()
        with self._lock:
            if self._manager is None:
                from boto3.s3.transfer import TransferConfig, create_transfer_manager

                cfg = self.config
                config = TransferConfig(
                    multipart_threshold=cfg.multipart_threshold,
                    multipart_chunksize=cfg.multipart_chunksize,
                    max_concurrency=cfg.max_concurrency,
                    num_download_attempts=cfg.max_attempts,
                    use_threads=True,
                    preferred_transfer_client="classic",
                )
                self._manager = create_transfer_manager(client, config)
            return self._manager

    def close(self) -> None:
        with self._lock:
            manager, self._manager = self._manager, None
        if manager is not None:
            manager.shutdown()

    @contextlib.contextmanager
    def _errors(self, what: str) -> Iterator[None]:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            yield
        except StagingError:
            raise
        except ClientError as exc:
            if is_not_found(exc):
                raise SourceMissing(f"{what}: not found") from None
            raise StagingError(f"{what}: {_describe(exc)}") from None
        except (BotoCoreError, OSError) as exc:
            raise StagingError(f"{what}: {exc}") from None

    @staticmethod
    def _subscribers(progress: ByteCallback | None) -> list[Any]:
        return [_Progress(progress)] if progress is not None else []

    # -- listing --------------------------------------------------------------------------------

    def _objects(self, bucket: str, prefix: str) -> Iterator[dict[str, Any]]:
        paginator = self.client().get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
            yield from page.get("Contents", [])

    def _has_prefix(self, bucket: str, prefix: str) -> bool:
        page = self.client().list_objects_v2(Bucket=bucket, Prefix=prefix, MaxKeys=1)
        return bool(page.get("Contents"))

    # -- Storage --------------------------------------------------------------------------------

    def stat(self, url: str) -> Stat | None:
        self.policy.check_s3(url)
        bucket, key = s3_location(url)
        with self._errors(f"stat {url}"):
            if key and not key.endswith("/"):
                try:
                    head = self.client().head_object(Bucket=bucket, Key=key)
                    return Stat(is_dir=False, size=int(head["ContentLength"]))
                except Exception as exc:
                    if not is_not_found(exc):
                        raise
            prefix = key.rstrip("/") + "/" if key else ""
            return Stat(is_dir=True, size=None) if self._has_prefix(bucket, prefix) else None

    def get(
        self, url: str, dest: Path, kind: FileType, progress: ByteCallback | None = None
    ) -> int:
        self.policy.check_s3(url)
        bucket, key = s3_location(url)
        with self._errors(url):
            if kind == "FILE" and key and not key.endswith("/"):
                try:
                    return self._get_object(bucket, key, dest, progress)
                except SourceMissing:
                    if not self._has_prefix(bucket, key + "/"):
                        raise SourceMissing(f"{url}: no such object or prefix") from None
            return self._get_tree(url, bucket, key.rstrip("/") + "/" if key else "", dest, progress)

    def _get_object(self, bucket: str, key: str, dest: Path, progress: ByteCallback | None) -> int:
        with self._errors(f"s3://{bucket}/{key}"):
            future = self._transfers().download(
                bucket, key, str(dest), subscribers=self._subscribers(progress)
            )
            future.result()
        return dest.stat().st_size

    def _get_tree(
        self, url: str, bucket: str, prefix: str, dest: Path, progress: ByteCallback | None
    ) -> int:
        dest.mkdir(parents=True, exist_ok=True)
        futures: list[Future[Any]] = []
        total = 0
        found = False
        try:
            for obj in self._objects(bucket, prefix):
                found = True
                rel = tree_path(prefix, obj["Key"])
                if rel is None:
                    continue
                target = dest / rel
                if obj["Key"].endswith("/"):  # a folder marker: an empty directory
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                futures.append(
                    self._transfers().download(
                        bucket, obj["Key"], str(target), subscribers=self._subscribers(progress)
                    )
                )
                total += int(obj.get("Size", 0))
            for future in futures:
                future.result()
        except BaseException:
            for future in futures:
                future.cancel()
            raise
        if not found:
            raise SourceMissing(f"{url}: no objects under this prefix")
        return total

    def put(self, src: Path, url: str, progress: ByteCallback | None = None) -> int:
        self.policy.check_s3(url)
        bucket, key = s3_location(url)
        if not key or key.endswith("/"):
            raise StagingError(f"{url}: an s3 URL for a file must name an object key")
        with self._errors(url):
            future = self._transfers().upload(
                str(src), bucket, key, subscribers=self._subscribers(progress)
            )
            future.result()
        return src.stat().st_size
