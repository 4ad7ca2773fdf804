"""Builds small images locally, without a registry: busybox `FROM scratch`, and Debian minbase.

For tests and for sites with no registry access. Both come from Debian packages only:

  busybox   the host's static /bin/busybox (Debian `busybox-static`) and one symlink per applet,
            plus /etc/passwd, /etc/group, /tmp, /root (about 1 s, 2 MB)
  debian    `debootstrap --variant=minbase --include=<packages> <suite>` from the host's own apt
            mirror, without apt lists, caches, docs, man pages and locales (about 25 s, 80 MB)

`ImageBuilder.ensure(recipe)` returns at once when the local store has the tag built from the same
recipe (the label `io.tescape.recipe` holds the recipe's hash); else it loads a cached
docker-archive `<cache_dir>/<name>-<hash>.tar`; else it builds, imports and saves that archive.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

from capsule_runtime.engine import launcher
from capsule_runtime.engine.errors import EngineError, ImageNotFound
from capsule_runtime.engine.podman_cli import PodmanCli

RECIPE_LABEL = "io.tescape.recipe"
_FORMAT = 1  # bump when the builders below change what they produce
_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_TRIM = (
    "var/cache/apt/archives/*.deb",
    "var/cache/apt/*.bin",
    "var/lib/apt/lists/*",
    "var/log/*",
    "usr/share/man/*",
    "usr/share/info/*",
    "usr/share/locale/*",
)


@dataclass(frozen=True)
class ImageRecipe:
    tag: str
    kind: Literal["busybox", "debian"]
    suite: str = "bookworm"
    packages: tuple[str, ...] = ()
    cmd: tuple[str, ...] = ("/bin/sh",)
    env: tuple[str, ...] = field(default=(f"PATH={_PATH}",))

    def digest(self) -> str:
        text = json.dumps({"format": _FORMAT, **asdict(self)}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    @property
    def slug(self) -> str:
        return re.sub(r"[^a-zA-Z0-9_.-]+", "_", self.tag)


def busybox_recipe(tag: str) -> ImageRecipe:
    return ImageRecipe(tag=tag, kind="busybox")


def debian_recipe(
    tag: str, suite: str = "bookworm", packages: tuple[str, ...] = ("procps",)
) -> ImageRecipe:
    return ImageRecipe(tag=tag, kind="debian", suite=suite, packages=packages, cmd=("/bin/bash",))


@dataclass(frozen=True)
class AptSource:
    uri: str
    keyring: Path | None


def host_debian_mirror(etc_apt: Path = Path("/etc/apt")) -> AptSource:
    """The main Debian archive this host's apt uses (never a name written in the project): a
    `deb` source with component `main` and a suite without a dash (not -security, -updates),
    preferring one signed by the Debian archive keyring over third-party repositories."""
    found: list[AptSource] = []
    for path in sorted((etc_apt / "sources.list.d").glob("*.sources")):
        for stanza in re.split(r"\n\s*\n", path.read_text()):
            fields = _deb822(stanza)
            if fields.get("enabled", "yes").lower() == "no":
                continue
            suites = fields.get("suites", "").split()
            if (
                "deb" in fields.get("types", "").split()
                and "main" in fields.get("components", "").split()
                and any("-" not in suite for suite in suites)
            ):
                keyring = fields.get("signed-by", "")
                uri = fields["uris"].split()[0]
                found.append(AptSource(uri, Path(keyring) if keyring.startswith("/") else None))
    lists = [etc_apt / "sources.list", *sorted((etc_apt / "sources.list.d").glob("*.list"))]
    pattern = re.compile(
        r"^\s*deb\s+(?:\[(?P<opts>[^\]]*)\]\s+)?(?P<uri>\S+)\s+(?P<suite>\S+)\s+(?P<comps>.*)$"
    )
    for path in lists:
        for line in path.read_text().splitlines() if path.is_file() else []:
            match = pattern.match(line)
            if match and "-" not in match["suite"] and "main" in match["comps"].split():
                signed = re.search(r"signed-by=(\S+)", match["opts"] or "")
                found.append(AptSource(match["uri"], Path(signed[1]) if signed else None))
    if not found:
        raise EngineError(f"no Debian archive found in {etc_apt}/sources.list(.d)")
    debian = [s for s in found if s.keyring is not None and "debian-archive" in s.keyring.name]
    return (debian or found)[0]


def _deb822(stanza: str) -> dict[str, str]:
    fields: dict[str, str] = {}
    key = None
    for line in stanza.splitlines():
        if line.startswith("#") or not line.strip():
            continue
        if line[0] in " \t" and key:
            fields[key] += " " + line.strip()
        elif ":" in line:
            key, value = line.split(":", 1)
            key = key.strip().lower()
            fields[key] = value.strip()
    return fields


class ImageBuilder:
    """Builds recipes into podman's local store, with an optional archive cache."""

    def __init__(
        self,
        cli: PodmanCli,
        cache_dir: Path | None = None,
        busybox: Path = launcher.DEFAULT_BUSYBOX,
    ) -> None:
        self.cli = cli
        self.cache_dir = cache_dir
        self.busybox = busybox
        self.last: dict[str, str] = {}  # tag -> "present" | "loaded" | "built" (for reports)

    def ensure(self, recipe: ImageRecipe) -> str:
        """The image id of `recipe.tag`, built from this very recipe."""
        digest = recipe.digest()
        with self._lock():
            image_id = self._present(recipe.tag, digest)
            if image_id:
                self.last[recipe.tag] = "present"
                return image_id
            archive = self._archive(recipe)
            if archive is not None and archive.is_file():
                self.cli.run("load", "--quiet", "--input", str(archive), timeout=600)
                image_id = self._present(recipe.tag, digest)
                if image_id:
                    self.last[recipe.tag] = "loaded"
                    return image_id
            image_id = self._build(recipe, digest)
            self.last[recipe.tag] = "built"
            if archive is not None:
                self._save(recipe, archive)
            return image_id

    def _present(self, tag: str, digest: str) -> str | None:
        fmt = '{{.Id}} {{index .Config.Labels "' + RECIPE_LABEL + '"}}'
        try:
            out = self.cli.run("image", "inspect", "--format", fmt, tag)
        except ImageNotFound:
            return None
        image_id, _, label = out.stdout.strip().partition(" ")
        return image_id if label == digest else None

    def _archive(self, recipe: ImageRecipe) -> Path | None:
        if self.cache_dir is None:
            return None
        return self.cache_dir / f"{recipe.slug}-{recipe.digest()}.tar"

    def _build(self, recipe: ImageRecipe, digest: str) -> str:
        with tempfile.TemporaryDirectory(prefix="tescape-image-") as tmp:
            rootfs_tar = Path(tmp) / "rootfs.tar"
            if recipe.kind == "busybox":
                write_busybox_rootfs(rootfs_tar, self.busybox)
            else:
                write_debian_rootfs(rootfs_tar, recipe.suite, recipe.packages, Path(tmp))
            changes = [
                f"CMD={json.dumps(list(recipe.cmd))}",
                "WORKDIR=/",
                f"LABEL={RECIPE_LABEL}={digest}",
                *(f"ENV={e}" for e in recipe.env),
            ]
            args = ["import", "--quiet"]
            for change in changes:
                args += ["--change", change]
            self.cli.run(*args, str(rootfs_tar), recipe.tag, timeout=600)
        image_id = self._present(recipe.tag, digest)
        if image_id is None:
            raise EngineError(f"built {recipe.tag} but cannot find it in the store")
        return image_id

    def _save(self, recipe: ImageRecipe, archive: Path) -> None:
        archive.parent.mkdir(parents=True, exist_ok=True)
        partial = archive.with_suffix(f".{os.getpid()}.partial")
        partial.unlink(missing_ok=True)
        self.cli.run(
            "save", "--format", "docker-archive", "--output", str(partial), recipe.tag, timeout=600
        )
        partial.replace(archive)
        for old in archive.parent.glob(f"{recipe.slug}-*.tar"):
            if old != archive:
                old.unlink(missing_ok=True)

    @contextlib.contextmanager
    def _lock(self) -> Iterator[None]:
        if self.cache_dir is None:
            yield
            return
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        with open(self.cache_dir / ".lock", "w") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)


def write_busybox_rootfs(dest: Path, busybox: Path = launcher.DEFAULT_BUSYBOX) -> None:
    """A tar of a busybox-only root filesystem, owned by root whoever runs this."""
    if not launcher.is_static_executable(busybox):
        raise EngineError(f"{busybox} is not a static executable: install busybox-static")
    applets = subprocess.run(
        [str(busybox), "--list-full"], capture_output=True, text=True, check=True, timeout=30
    ).stdout.split()
    now = int(time.time())

    def entry(name: str, kind: bytes, mode: int, **extra: object) -> tarfile.TarInfo:
        info = tarfile.TarInfo(name)
        info.type, info.mode, info.mtime = kind, mode, now
        for key, value in extra.items():
            setattr(info, key, value)
        return info

    files = {
        "etc/passwd": b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n",
        "etc/group": b"root:x:0:\nnogroup:x:65534:\n",
    }
    dirs = {"bin", "sbin", "usr", "usr/bin", "usr/sbin", "etc", "root", "tmp", "proc", "sys"}
    dirs |= {str(Path(a).parent) for a in applets}
    with tarfile.open(dest, "w") as tar:
        for d in sorted(dirs):
            mode = {"tmp": 0o1777, "root": 0o700}.get(d, 0o755)
            tar.addfile(entry(d, tarfile.DIRTYPE, mode))
        binary = busybox.read_bytes()
        tar.addfile(
            entry("bin/busybox", tarfile.REGTYPE, 0o755, size=len(binary)), io.BytesIO(binary)
        )
        for name, data in files.items():
            tar.addfile(entry(name, tarfile.REGTYPE, 0o644, size=len(data)), io.BytesIO(data))
        for applet in sorted(set(applets) - {"bin/busybox"}):
            tar.addfile(entry(applet, tarfile.SYMTYPE, 0o777, linkname="/bin/busybox"))


def write_debian_rootfs(
    dest: Path, suite: str, packages: tuple[str, ...], workdir: Path, timeout: float = 900
) -> None:
    """debootstrap minbase into `workdir`, trimmed, as a tar at `dest`. Needs root."""
    if shutil.which("debootstrap") is None:
        raise EngineError(
            "debootstrap not found: run python3 -m capsule_runtime.host.setup --profile test"
        )
    mirror = host_debian_mirror()
    root = workdir / "rootfs"
    argv = ["debootstrap", "--variant=minbase"]
    if packages:
        argv.append("--include=" + ",".join(packages))
    if mirror.keyring is not None and mirror.keyring.is_file():
        argv.append(f"--keyring={mirror.keyring}")
    argv += [suite, str(root), mirror.uri]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        log = root / "debootstrap" / "debootstrap.log"
        detail = log.read_text()[-4000:] if log.is_file() else done.stderr[-4000:]
        shutil.rmtree(root, ignore_errors=True)
        raise EngineError(
            "debootstrap failed", argv=argv, returncode=done.returncode, stderr=detail
        )
    for pattern in _TRIM:
        for path in root.glob(pattern):
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()
    for doc in (root / "usr/share/doc").glob("*/*"):
        if doc.name != "copyright":
            shutil.rmtree(doc) if doc.is_dir() and not doc.is_symlink() else doc.unlink()
    subprocess.run(
        [
            "tar",
            "--numeric-owner",
            "--xattrs",
            "--exclude=./dev/*",
            "-C",
            str(root),
            "-cf",
            str(dest),
            ".",
        ],
        check=True,
        capture_output=True,
        timeout=timeout,
    )
    shutil.rmtree(root)
