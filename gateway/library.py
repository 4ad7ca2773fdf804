"""The Application Library service: apps by name, registry credentials, image archives.

A task's executor may name an app instead of an image; the dispatcher resolves it for the agent
(`library.resolve`) together with the credentials of the registries the task pulls from. An app
imported from an archive (`podman save` / `docker save` format) is stored by the gateway and
downloaded by each instance that needs it, so air-gapped sites run tasks without a registry.
"""

from __future__ import annotations

import hashlib
import json
import re
import tarfile
from collections.abc import Iterable
from pathlib import Path
from typing import IO, Any

from capsule_runtime.imageref import rewrite_image
from capsule_runtime.protocol.redact import remember_secret
from gateway.secrets import SecretBox
from gateway.store.apps import App, AppStore, registry_of
from gateway.tes.validation import IMAGE_FORBIDDEN

NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,127}$")


class LibraryError(ValueError):
    pass


def archive_image_ref(path: Path) -> str:
    """The image reference recorded in a docker-archive (manifest.json RepoTags) or oci-archive
    (index.json annotation org.opencontainers.image.ref.name)."""
    try:
        with tarfile.open(path) as tar:
            names = set(tar.getnames())
            if "manifest.json" in names:
                member = tar.extractfile("manifest.json")
                manifest = json.load(member) if member else []
                tags = [t for entry in manifest for t in (entry.get("RepoTags") or [])]
                if tags:
                    return str(tags[0])
            if "index.json" in names:
                member = tar.extractfile("index.json")
                index = json.load(member) if member else {}
                for m in index.get("manifests", []):
                    ref = m.get("annotations", {}).get("org.opencontainers.image.ref.name")
                    if ref:
                        return str(ref)
    except (tarfile.TarError, OSError, ValueError) as exc:
        raise LibraryError(f"not an image archive: {exc}") from None
    raise LibraryError("the archive names no image (no RepoTags / ref.name): save it with a tag")


class Library:
    def __init__(self, store: AppStore, secrets: SecretBox, archive_dir: Path):
        self.store = store
        self.secrets = secrets
        self.archive_dir = archive_dir

    def add(
        self, name: str, image: str, username: str | None = None, password: str | None = None
    ) -> App:
        if not NAME.match(name):
            raise LibraryError("app names are lowercase letters, digits, '.', '_' and '-'")
        if not image.strip():
            raise LibraryError("image must not be empty")
        if image.startswith("-") or IMAGE_FORBIDDEN.search(image):
            raise LibraryError(f"{image!r} is not an image reference")
        if (username is None) != (password is None):
            raise LibraryError("give both username and password, or neither")
        if username is not None and password is not None:
            self.store.put_credentials(registry_of(image), username, self.secrets.seal(password))
        return self.store.put(name, image)

    def archive_path(self, name: str) -> Path:
        return self.archive_dir / f"{name}.tar"

    def import_archive(self, name: str, chunks: Iterable[bytes]) -> App:
        if not NAME.match(name):
            raise LibraryError("app names are lowercase letters, digits, '.', '_' and '-'")
        self.archive_dir.mkdir(parents=True, exist_ok=True)
        final = self.archive_path(name)
        tmp = final.with_suffix(".upload")
        digest = hashlib.sha256()
        size = 0
        with open(tmp, "wb") as out:
            for chunk in chunks:
                digest.update(chunk)
                out.write(chunk)
                size += len(chunk)
        try:
            image = archive_image_ref(tmp)
        except LibraryError:
            tmp.unlink(missing_ok=True)
            raise
        tmp.replace(final)
        self.store.put(name, image)
        self.store.set_archive(name, digest.hexdigest(), size)
        found = self.store.get(name)
        assert found is not None
        return found

    def remove(self, name: str) -> bool:
        self.archive_path(name).unlink(missing_ok=True)
        return self.store.remove(name)

    def resolve(
        self, images: Iterable[str], rewrites: dict[str, str] | None = None
    ) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, str]]]:
        """For a task's executor images: the apps they name, and credentials for every registry
        they will pull from (after the rewrite rules the agent applies, so a rule pointing at a
        password-protected mirror gets that mirror's credentials)."""
        resolved: dict[str, dict[str, Any]] = {}
        registries: set[str] = set()
        for image in images:
            app = self.store.get(image) if NAME.match(image) else None
            ref = image
            if app is not None:
                ref = app.image
                resolved[image] = {"image": app.image, "archive_sha256": app.archive_sha256}
            registries.add(registry_of(rewrite_image(ref, rewrites or {})))
        creds: dict[str, dict[str, str]] = {}
        for registry in registries:
            found = self.store.credentials(registry)
            if found:
                password = self.secrets.open(found[1])
                remember_secret(password)  # masked wherever the gateway logs or records it
                creds[registry] = {"username": found[0], "password": password}
        return resolved, creds

    @staticmethod
    def public(app: App) -> dict[str, Any]:
        out: dict[str, Any] = {
            "name": app.name,
            "image": app.image,
            "created_time": app.created_time,
        }
        if app.archive_sha256:
            out["archive"] = {"sha256": app.archive_sha256, "size_bytes": str(app.archive_size)}
        return out


def stream_chunks(stream: IO[bytes], size: int = 1 << 20) -> Iterable[bytes]:
    while chunk := stream.read(size):
        yield chunk
