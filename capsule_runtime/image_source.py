"""Where an executor's image comes from on a worker: an Application Library app (whose image
archive the gateway may hold), the rewrite rules, and a registry pull with that registry's
credentials. The runner calls `prepare_image` once per executor image; it returns the local
reference to run.

    ref = prepare_image(engine, "bwa", settings, client, work_dir / "images")

The steps, in order:

    1. app          settings.apps["bwa"] → its image reference; an app with an archive whose image
                    is not in the local store: download the archive from the gateway (sha256
                    checked), `podman load` it, delete it
    2. rewrite      settings.image_rewrites (mirrors for offline sites and tests)
    3. pull         only when the reference is not in the local store (podman's store is the
                    instance's image cache: a second task with the same image pulls nothing, and
                    one that asks while the first is pulling waits for it), with the credentials
                    of the reference's registry, without TLS verification for the registries in
                    settings.insecure_registries

Credentials never reach argv or logs. podman 4.3 has no way to read `--creds` from stdin, and
`podman login --password-stdin` would leave them in the host's shared auth file; instead each pull
that needs them gets its own containers-auth.json (mode 0600, created by mkstemp) through
`--authfile`, removed as soon as the pull ends.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from capsule_runtime.client import DownloadCorrupt, GatewayClient, GatewayUnreachable
from capsule_runtime.engine.errors import EngineError, ImageNotFound, RegistryAuthFailed
from capsule_runtime.engine.protocol import ContainerEngine
from capsule_runtime.imageref import rewrite_image
from capsule_runtime.protocol.messages import TaskSettings

log = logging.getLogger(__name__)
_PLAIN_HTTP = "server gave HTTP response to HTTPS client"


class ArchiveError(EngineError):
    """An app's image archive could not be downloaded, verified or loaded."""


def registry_of(image: str) -> str:
    """The registry host of an image reference, as docker/podman read it. The same rule as the
    gateway's `gateway.store.apps.registry_of`, which picks the credentials a task gets (a test
    keeps the two equal; the agent does not import the gateway's store)."""
    first, sep, _ = image.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost"):
        return first
    return "docker.io"


def prepare_image(
    engine: ContainerEngine,
    image: str,
    settings: TaskSettings,
    client: GatewayClient,
    cache_dir: Path,
) -> str:
    """Make an executor's `image` available locally; return the reference to run.
    Raises ImageNotFound, RegistryAuthFailed, ArchiveError (all EngineError)."""
    ref = image
    app = settings.apps.get(image)
    if app is not None:
        ref = str(app["image"])
        sha256 = app.get("archive_sha256")
        if sha256 and not engine.has_image(ref):
            load_app_archive(engine, image, ref, str(sha256), client, cache_dir)
    ref = rewrite_image(ref, settings.image_rewrites)
    if engine.has_image(ref):
        return ref
    cache_dir.mkdir(parents=True, exist_ok=True)
    with _file_lock(cache_dir / f"pull-{hashlib.sha256(ref.encode()).hexdigest()[:16]}.lock"):
        if not engine.has_image(ref):  # another task here may have pulled it while we waited
            pull(engine, ref, settings, cache_dir)
    return ref


def load_app_archive(
    engine: ContainerEngine,
    name: str,
    ref: str,
    sha256: str,
    client: GatewayClient,
    cache_dir: Path,
) -> None:
    """Download app `name`'s archive and load it, so that `ref` is in the local store. One
    download at a time per archive on this instance: a second task waits, then finds the image."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    archive = cache_dir / f"{sha256}.tar"
    with _file_lock(cache_dir / f"{sha256}.lock"):
        if engine.has_image(ref):
            return
        log.info("downloading the image archive of app %s (%s)", name, ref)
        try:
            client.download_app_archive(name, archive, sha256)
        except (GatewayUnreachable, DownloadCorrupt, OSError) as exc:
            raise ArchiveError(
                f"cannot download the image archive of app {name!r}: {exc}"
            ) from None
        try:
            loaded = engine.load_archive(archive)
        except EngineError as exc:
            raise ArchiveError(
                f"cannot load the image archive of app {name!r}",
                argv=exc.argv,
                returncode=exc.returncode,
                stderr=exc.stderr or exc.message,
            ) from None
        finally:
            archive.unlink(missing_ok=True)
        if ref not in loaded and not engine.has_image(ref):
            raise ArchiveError(
                f"the image archive of app {name!r} holds {', '.join(loaded) or 'no tagged image'}"
                f", not {ref}"
            )


def pull(engine: ContainerEngine, ref: str, settings: TaskSettings, cache_dir: Path) -> None:
    """Pull `ref` with its registry's credentials (if the gateway sent any); name the failure."""
    registry = registry_of(ref)
    creds = settings.registry_credentials.get(registry)
    tls_verify = registry not in settings.insecure_registries
    user = f" as {creds['username']!r}" if creds else ""
    log.info("pulling %s from %s%s%s", ref, registry, user, "" if tls_verify else " (insecure)")
    try:
        with auth_file(registry, creds, cache_dir) as path:
            engine.ensure_image(ref, auth_file=path, tls_verify=tls_verify)
    except RegistryAuthFailed as exc:
        if creds:
            why = (
                f"registry {registry} refused the credentials of user {creds['username']!r} for "
                f"{ref}: wrong username or password, or no access to this repository"
            )
        else:
            why = (
                f"registry {registry} requires credentials for {ref} and none are configured: "
                f"add them with `tescape apps add NAME {ref} --username USER --password-stdin`"
            )
        raise RegistryAuthFailed(
            why, argv=exc.argv, returncode=exc.returncode, stderr=exc.stderr
        ) from None
    except ImageNotFound as exc:
        raise ImageNotFound(
            f"image {ref} not found (registry {registry})",
            argv=exc.argv,
            returncode=exc.returncode,
            stderr=exc.stderr,
        ) from None
    except EngineError as exc:
        if tls_verify and _PLAIN_HTTP in exc.stderr:
            raise EngineError(
                f"registry {registry} speaks plain HTTP: list it in the gateway's "
                "images.insecure_registries to pull from it",
                argv=exc.argv,
                returncode=exc.returncode,
                stderr=exc.stderr,
            ) from None
        raise


@contextlib.contextmanager
def auth_file(
    registry: str, creds: Mapping[str, Any] | None, directory: Path
) -> Iterator[Path | None]:
    """A containers-auth.json holding only `registry`'s credentials, mode 0600, removed on exit;
    None without credentials (podman then falls back to the host's own login, if any)."""
    if not creds:
        yield None
        return
    directory.mkdir(parents=True, exist_ok=True)
    token = base64.b64encode(f"{creds['username']}:{creds['password']}".encode()).decode()
    fd, name = tempfile.mkstemp(prefix=".auth-", suffix=".json", dir=directory)  # mode 0600
    try:
        with os.fdopen(fd, "w") as f:
            json.dump({"auths": {registry: {"auth": token}}}, f)
        yield Path(name)
    finally:
        Path(name).unlink(missing_ok=True)


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    with open(path, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)
