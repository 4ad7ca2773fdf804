"""StorageRouter: the storage for a URL's scheme, built on first use; unknown schemes refused."""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping

from capsule_runtime.staging.errors import UnsupportedScheme
from capsule_runtime.staging.local import LocalStorage
from capsule_runtime.staging.policy import StagingPolicy
from capsule_runtime.staging.s3 import S3Config, S3Storage
from capsule_runtime.staging.storage import Storage
from capsule_runtime.staging.urls import scheme_of
from capsule_runtime.staging.web import HttpStorage

SUPPORTED = ("file", "http", "https", "s3")


class StorageRouter:
    def __init__(
        self,
        policy: StagingPolicy,
        s3: S3Config | None = None,
        extra: Mapping[str, Storage] | None = None,
    ):
        """`extra` adds storages by scheme (e.g. {"memory": MemoryStorage()} in tests)."""
        self.policy = policy
        self.s3_config = s3 or S3Config()
        self._lock = threading.Lock()
        self._built: dict[str, Storage] = dict(extra or {})
        self._web: HttpStorage | None = None
        self._factories: dict[str, Callable[[], Storage]] = {
            "file": lambda: LocalStorage(policy),
            "http": self._http,
            "https": self._http,
            "s3": lambda: S3Storage(policy, self.s3_config),
        }

    def _http(self) -> Storage:
        # called with the lock held: http and https share one HttpStorage (one session per thread)
        if self._web is None:
            self._web = HttpStorage(self.policy)
        return self._web

    @property
    def schemes(self) -> list[str]:
        return sorted({*self._factories, *self._built})

    def for_url(self, url: str) -> Storage:
        scheme = scheme_of(url)
        with self._lock:
            storage = self._built.get(scheme)
            if storage is None:
                factory = self._factories.get(scheme)
                if factory is None:
                    raise UnsupportedScheme(
                        f"{url}: the {scheme}:// scheme is not supported by this worker "
                        f"(supported: bare paths, {', '.join(s + '://' for s in self.schemes)})"
                    )
                storage = self._built[scheme] = factory()
            return storage

    def close(self) -> None:
        with self._lock:
            built = list({id(s): s for s in self._built.values()}.values())
        for storage in built:
            close = getattr(storage, "close", None)
            if close is not None:
                close()
