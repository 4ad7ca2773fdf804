"""Moving bytes between task URLs and local paths: bare absolute paths, file://, http(s)://, s3://.

Every transfer streams (never a whole file in memory) and goes through a `TransferPolicy`: local
paths only inside `allowed_dirs` (like Funnel's AllowedDirs), instance-metadata addresses always
refused, loopback and private networks refused when `block_private_networks` is set.
"""

from __future__ import annotations

import ipaddress
import os
import shutil
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import requests

CHUNK = 1 << 20
Progress = Callable[[int], None]
METADATA_NETS = (
    ipaddress.ip_network("169.254.0.0/16"),  # link-local, AWS/GCP/Azure instance metadata
    ipaddress.ip_network("fd00:ec2::254/128"),  # AWS IMDS over IPv6
)


class TransferError(RuntimeError):
    """A transfer failed or was refused; the message is for the task's system_logs."""


@dataclass
class TransferPolicy:
    allowed_dirs: list[Path] = field(default_factory=list)
    block_private_networks: bool = False
    s3: dict[str, Any] = field(default_factory=dict)

    def local(self, path: str) -> Path:
        resolved = Path(os.path.realpath(path))
        for allowed in self.allowed_dirs:
            base = Path(os.path.realpath(allowed))
            if resolved == base or base in resolved.parents:
                return resolved
        dirs = ", ".join(str(d) for d in self.allowed_dirs) or "none"
        raise TransferError(f"{path} is outside the directories tasks may use ({dirs})")

    def host(self, url: str) -> None:
        host = urlparse(url).hostname
        if not host:
            raise TransferError(f"{url}: no host")
        try:
            infos = socket.getaddrinfo(host, None)
        except OSError as exc:
            raise TransferError(f"{url}: cannot resolve {host}: {exc}") from None
        for info in infos:
            addr = ipaddress.ip_address(info[4][0])
            if any(addr in net for net in METADATA_NETS):
                raise TransferError(f"{url}: instance-metadata addresses are never reachable")
            if self.block_private_networks and (addr.is_private or addr.is_loopback):
                raise TransferError(f"{url}: private and loopback addresses are blocked here")


def scheme_of(url: str) -> str:
    if url.startswith("/"):
        return "file"
    return urlparse(url).scheme.lower()


def local_path(url: str) -> str:
    return url if url.startswith("/") else unquote(urlparse(url).path)


class Transfers:
    def __init__(self, policy: TransferPolicy):
        self.policy = policy
        self._s3: Any = None

    # -- download -------------------------------------------------------------------------------

    def get(self, url: str, dest: Path, directory: bool, progress: Progress | None = None) -> None:
        scheme = scheme_of(url)
        dest.parent.mkdir(parents=True, exist_ok=True)
        if scheme == "file":
            src = self.policy.local(local_path(url))
            if not src.exists():
                raise TransferError(f"{url} does not exist")
            if src.is_dir():
                shutil.copytree(src, dest, symlinks=True, dirs_exist_ok=True)
            else:
                shutil.copyfile(src, dest)
        elif scheme in ("http", "https"):
            if directory:
                raise TransferError(f"{url}: DIRECTORY inputs over http(s) are not supported")
            self.policy.host(url)
            self._http_get(url, dest, progress)
        elif scheme == "s3":
            self._s3_get(url, dest, directory)
        else:
            raise TransferError(f"{url}: the {scheme}:// scheme is not supported by this worker")

    def _http_get(self, url: str, dest: Path, progress: Progress | None) -> None:
        try:
            with requests.get(url, stream=True, timeout=(10, 300)) as resp:
                if resp.status_code != 200:
                    raise TransferError(f"GET {url}: HTTP {resp.status_code}")
                with open(dest, "wb") as out:
                    for chunk in resp.iter_content(CHUNK):
                        out.write(chunk)
                        if progress:
                            progress(len(chunk))
        except requests.RequestException as exc:
            raise TransferError(f"GET {url}: {exc}") from None

    # -- upload ---------------------------------------------------------------------------------

    def put(self, src: Path, url: str, progress: Progress | None = None) -> None:
        scheme = scheme_of(url)
        if scheme == "file":
            dest = self.policy.local(local_path(url))
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, dest)
        elif scheme in ("http", "https"):
            self.policy.host(url)
            try:
                with open(src, "rb") as body:
                    resp = requests.put(url, data=body, timeout=(10, 300))
            except requests.RequestException as exc:
                raise TransferError(f"PUT {url}: {exc}") from None
            if resp.status_code >= 300:
                raise TransferError(f"PUT {url}: HTTP {resp.status_code}")
        elif scheme == "s3":
            bucket, key = self._bucket_key(url)
            try:
                self._client().upload_file(str(src), bucket, key, Config=self._transfer_config())
            except Exception as exc:
                raise TransferError(f"upload to {url}: {exc}") from None
        else:
            raise TransferError(f"{url}: the {scheme}:// scheme is not supported by this worker")
        if progress:
            progress(src.stat().st_size)

    # -- s3 -------------------------------------------------------------------------------------

    def _client(self) -> Any:
        if self._s3 is None:
            import boto3
            from botocore.config import Config

            cfg = self.policy.s3
            endpoint = cfg.get("endpoint_url")
            if endpoint:
                self.policy.host(endpoint)
            self._s3 = boto3.client(
                "s3",
                endpoint_url=endpoint,
                region_name=cfg.get("region") or "us-east-1",
                aws_access_key_id=cfg.get("access_key_id"),
                aws_secret_access_key=cfg.get("secret_access_key"),
                config=Config(
                    s3={"addressing_style": cfg.get("addressing_style", "auto")},
                    retries={"max_attempts": 5, "mode": "standard"},
                ),
            )
        return self._s3

    @staticmethod
    def _transfer_config() -> Any:
        from boto3.s3.transfer import TransferConfig

        return TransferConfig(multipart_threshold=16 * CHUNK, max_concurrency=8)

    @staticmethod
    def _bucket_key(url: str) -> tuple[str, str]:
        parsed = urlparse(url)
        if not parsed.netloc:
            raise TransferError(f"{url}: no bucket")
        return parsed.netloc, parsed.path.lstrip("/")

    def _s3_get(self, url: str, dest: Path, directory: bool) -> None:
        bucket, key = self._bucket_key(url)
        client = self._client()
        try:
            if not directory:
                client.download_file(bucket, key, str(dest), Config=self._transfer_config())
                return
            prefix = key.rstrip("/") + "/" if key else ""
            dest.mkdir(parents=True, exist_ok=True)
            found = False
            for page in client.get_paginator("list_objects_v2").paginate(
                Bucket=bucket, Prefix=prefix
            ):
                for obj in page.get("Contents", []):
                    rel = obj["Key"][len(prefix) :]
                    if not rel or rel.endswith("/"):
                        continue
                    target = dest / rel
                    target.parent.mkdir(parents=True, exist_ok=True)
                    client.download_file(bucket, obj["Key"], str(target))
                    found = True
            if not found:
                raise TransferError(f"{url}: no objects under this prefix")
        except TransferError:
            raise
        except Exception as exc:
            raise TransferError(f"download of {url}: {exc}") from None
