"""The capsule store in S3 or an S3-compatible server: key k is object `<prefix>/k` in a bucket.

One boto3 client per store, created on first use and shared by every thread (boto3 clients are
thread-safe; sessions are not): botocore's "standard" retry mode, a connection pool of at least
16 so parallel chunk puts and gets do not queue for connections. A PUT is atomic in S3, so readers
never see a partial object. Errors other than "not found" become CapsuleStoreError.
"""

from __future__ import annotations

from typing import Any

from capsule_runtime.capsules.errors import CapsuleMissing, CapsuleStoreError
from capsule_runtime.capsules.keys import check_key
from capsule_runtime.staging.s3 import S3Config, SharedS3Client, error_code, is_not_found


class S3Store:
    def __init__(self, bucket: str, prefix: str = "", *, s3: S3Config | None = None):
        if not bucket:
            raise ValueError("S3Store needs a bucket")
        self.bucket = bucket
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        self.config = s3 or S3Config()
        self._client = SharedS3Client(self.config, min_pool=16)

    def describe(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"

    def client(self) -> Any:
        return self._client.get()

    def _object(self, key: str) -> str:
        return self.prefix + check_key(key)

    def _fail(self, what: str, key: str, exc: Exception) -> CapsuleStoreError:
        code = error_code(exc)
        detail = f"{code} {exc}" if code else (str(exc) or type(exc).__name__)
        return CapsuleStoreError(f"{self.describe()}: cannot {what} {key}: {detail}")

    def put(self, key: str, data: bytes | bytearray) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        name = self._object(key)
        try:
            self.client().put_object(Bucket=self.bucket, Key=name, Body=data)
        except (BotoCoreError, ClientError) as exc:
            raise self._fail("write", key, exc) from exc

    def get(self, key: str) -> bytes:
        from botocore.exceptions import BotoCoreError, ClientError

        name = self._object(key)
        try:
            response = self.client().get_object(Bucket=self.bucket, Key=name)
            data: bytes = response["Body"].read()
            return data
        except ClientError as exc:
            if is_not_found(exc):
                raise CapsuleMissing(f"{self.describe()}: no object {key}") from exc
            raise self._fail("read", key, exc) from exc
        except BotoCoreError as exc:
            raise self._fail("read", key, exc) from exc

    def exists(self, key: str) -> bool:
        from botocore.exceptions import BotoCoreError, ClientError

        name = self._object(key)
        try:
            self.client().head_object(Bucket=self.bucket, Key=name)
            return True
        except ClientError as exc:
            if is_not_found(exc):
                return False
            raise self._fail("check", key, exc) from exc
        except BotoCoreError as exc:
            raise self._fail("check", key, exc) from exc

    def list(self, prefix: str) -> list[str]:
        from botocore.exceptions import BotoCoreError, ClientError

        keys: list[str] = []
        try:
            pages = self.client().get_paginator("list_objects_v2")
            for page in pages.paginate(Bucket=self.bucket, Prefix=self.prefix + prefix):
                keys.extend(obj["Key"][len(self.prefix) :] for obj in page.get("Contents", []))
        except (BotoCoreError, ClientError) as exc:
            raise self._fail("list", prefix, exc) from exc
        return sorted(k for k in keys if k and not k.endswith("/"))

    def delete_prefix(self, prefix: str) -> int:
        from botocore.exceptions import BotoCoreError, ClientError

        keys = self.list(prefix)
        deleted = 0
        for start in range(0, len(keys), 1000):
            batch = [{"Key": self.prefix + k} for k in keys[start : start + 1000]]
            try:
                response = self.client().delete_objects(
                    Bucket=self.bucket, Delete={"Objects": batch, "Quiet": True}
                )
            except (BotoCoreError, ClientError) as exc:
                raise self._fail("delete", prefix, exc) from exc
            errors = response.get("Errors", [])
            if errors:
                first = errors[0]
                raise CapsuleStoreError(
                    f"{self.describe()}: cannot delete {first.get('Key')}: "
                    f"{first.get('Code')} {first.get('Message', '')}".rstrip()
                )
            deleted += len(batch)
        return deleted
