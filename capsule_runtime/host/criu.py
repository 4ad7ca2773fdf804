"""Host step: a CRIU ≥ 4.2 on PATH, where runc and podman look for `criu`. Stdlib only.

Why 4.2: CRIU 4.1 cannot dump a process with an INET socket on kernels ≥ 6.16, and Debian bookworm's
3.17 does not start at all on a 6.18 kernel. The step, fastest path first:

  1. a `criu` ≥ 4.2 is already on PATH (the distro's or ours)          → nothing to do
  2. the distro's candidate (`apt-cache policy criu`) is ≥ 4.2          → apt-get install criu
  3. a cached build of ours (`<cache>/<version>/criu`, sha256 checked)  → copy it to /usr/local/sbin
  4. else build the `criu` binary from Debian's source package of `sid`:
       - a temporary deb-src entry for `sid`, derived from the system's own apt sources (same URIs
         and Signed-By), in a private apt configuration: its own sources list, lists and cache
         directories, update hooks cleared. The system's apt state is never touched and the whole
         directory is removed afterwards, on failure too;
       - `apt-get source --download-only criu` (the .debian.tar.xz may answer 404 and make apt exit
         non-zero: only the .dsc and the orig tarball are needed); the orig tarball's sha256 is
         checked against the .dsc's Checksums-Sha256;
       - build dependencies from the system's own suite, `make -jN criu`, and the binary is
         installed as /usr/local/sbin/criu (first in root's PATH) and cached for the next run.

runc (and podman through it) runs `criu` from PATH: /usr/local/sbin comes before /usr/sbin, so ours
wins over an old distro package. The cache is `.cache/criu` in a source checkout (removed by
`make clean`, easy to keep in CI), else /var/cache/tescape/criu; `TESCAPE_CRIU_CACHE` overrides it.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import pwd
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

MIN_VERSION = (4, 2)
SOURCE_SUITE = "sid"
INSTALL_PATH = Path("/usr/local/sbin/criu")
# Where a `criu` may be when PATH (e.g. a non-root user's) lacks the sbin directories.
SBIN_DIRS = ("/usr/local/sbin", "/usr/sbin", "/sbin")

# Build dependencies (all from bookworm). The -dev packages pull in the runtime libraries.
BUILD_DEPS = [
    "build-essential",
    "libbsd-dev",
    "libcap-dev",
    "libgnutls28-dev",
    "libnet1-dev",
    "libnftables-dev",
    "libnl-3-dev",
    "libprotobuf-c-dev",
    "libprotobuf-dev",
    "pkgconf",
    "protobuf-c-compiler",
    "protobuf-compiler",
    "python3-protobuf",
    "xz-utils",
]
# What a cached binary needs at run time (the shared libraries `ldd criu` names) and to dump
# established TCP connections (CRIU locks the network with iptables by default).
RUNTIME_DEPS = [
    "libbsd0",
    "libgnutls30",
    "libnet1",
    "libnftables1",
    "libnl-3-200",
    "libprotobuf-c1",
    "libuuid1",
    "iptables",
]

Installer = Callable[[list[str]], None]


def say(msg: str) -> None:
    print(f"[tescape setup] criu: {msg}", flush=True)


class CriuSetupError(RuntimeError):
    """The step could not provide a CRIU ≥ 4.2; the message says what failed."""


# --- versions ----------------------------------------------------------------------------------


def parse_version(text: str) -> tuple[int, ...] | None:
    """The upstream version in `criu --version` output ("Version: 4.2.1"), a bare version, or a
    Debian version ("1:4.2.1-1+b1" → (4, 2, 1)); None when there is none."""
    match = re.search(r"Version:\s*(\S+)", text)
    token = match.group(1) if match else text.strip().split()[0] if text.strip() else ""
    token = token.split(":", 1)[-1]  # Debian epoch
    token = token.split("-", 1)[0] if "-" in token else token  # Debian revision
    numbers = re.match(r"\d+(?:\.\d+)*", token)
    if numbers is None:
        return None
    return tuple(int(part) for part in numbers.group(0).split("."))


def at_least(version: tuple[int, ...] | None, minimum: tuple[int, ...] = MIN_VERSION) -> bool:
    if version is None:
        return False
    width = max(len(version), len(minimum))
    pad = (0,) * width
    return (version + pad)[:width] >= (minimum + pad)[:width]


def format_version(version: tuple[int, ...] | None) -> str:
    return "none" if version is None else ".".join(str(part) for part in version)


def policy_candidate(policy_output: str) -> str | None:
    """The `Candidate:` of `apt-cache policy PKG`; None when apt has none."""
    match = re.search(r"^\s*Candidate:\s*(\S+)", policy_output, re.MULTILINE)
    if match is None or match.group(1) == "(none)":
        return None
    return match.group(1)


def find_criu() -> Path | None:
    """The `criu` runc would run: the first on PATH, else one in the usual sbin directories."""
    found = shutil.which("criu")
    if found is None:
        found = shutil.which("criu", path=os.pathsep.join(SBIN_DIRS))
    return Path(found) if found else None


def binary_version(path: Path) -> tuple[int, ...] | None:
    """`criu --version` of that binary; None when it does not run (e.g. a missing library)."""
    try:
        out = subprocess.run(
            [str(path), "--version"], capture_output=True, text=True, timeout=30, check=False
        )
    except OSError:
        return None
    if out.returncode != 0:
        return None
    return parse_version(out.stdout)


# --- apt sources -------------------------------------------------------------------------------


@dataclass(frozen=True)
class AptSource:
    """One apt source entry (deb822 stanza or one-line), as much of it as this step needs."""

    types: tuple[str, ...]
    uris: tuple[str, ...]
    suites: tuple[str, ...]
    components: tuple[str, ...]
    signed_by: str | None = None


def parse_deb822(text: str) -> list[dict[str, str]]:
    """Stanzas of a deb822 file (`*.sources`) as field → value; continuation lines are kept."""
    stanzas: list[dict[str, str]] = []
    current: dict[str, str] = {}
    last: str | None = None
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        if not line.strip():
            if current:
                stanzas.append(current)
            current, last = {}, None
            continue
        if line[0] in " \t" and last is not None:
            current[last] += "\n" + line.rstrip()
            continue
        key, sep, value = line.partition(":")
        if not sep:
            continue
        last = key.strip().lower()
        current[last] = value.strip()
    if current:
        stanzas.append(current)
    return stanzas


def sources_from_deb822(text: str) -> list[AptSource]:
    out = []
    for stanza in parse_deb822(text):
        if stanza.get("enabled", "yes").strip().lower() == "no":
            continue
        out.append(
            AptSource(
                types=tuple(stanza.get("types", "").split()),
                uris=tuple(stanza.get("uris", "").split()),
                suites=tuple(stanza.get("suites", "").split()),
                components=tuple(stanza.get("components", "").split()),
                signed_by=stanza.get("signed-by") or None,
            )
        )
    return out


def sources_from_one_line(text: str) -> list[AptSource]:
    """Entries of a one-line `sources.list`: `deb [opt=val ...] URI SUITE COMPONENT...`."""
    out = []
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        options: dict[str, str] = {}
        match = re.match(r"^(\S+)\s+\[([^\]]*)\]\s+(.*)$", line)
        if match:
            kind, opts, rest = match.groups()
            for opt in opts.split():
                key, _, value = opt.partition("=")
                options[key.lower()] = value
        else:
            kind, _, rest = line.partition(" ")
        words = rest.split()
        if kind not in ("deb", "deb-src") or len(words) < 2:
            continue
        out.append(
            AptSource(
                types=(kind,),
                uris=(words[0],),
                suites=(words[1],),
                components=tuple(words[2:]),
                signed_by=options.get("signed-by"),
            )
        )
    return out


def system_sources(etc: Path = Path("/etc/apt")) -> list[AptSource]:
    """Every enabled entry of the system's apt sources (sources.list and sources.list.d)."""
    out: list[AptSource] = []
    main = etc / "sources.list"
    if main.is_file():
        out += sources_from_one_line(main.read_text(errors="replace"))
    parts = etc / "sources.list.d"
    if parts.is_dir():
        for path in sorted(parts.iterdir()):
            if path.suffix == ".sources":
                out += sources_from_deb822(path.read_text(errors="replace"))
            elif path.suffix == ".list":
                out += sources_from_one_line(path.read_text(errors="replace"))
    return out


def os_codename(os_release: Path = Path("/etc/os-release")) -> str | None:
    try:
        text = os_release.read_text()
    except OSError:
        return None
    match = re.search(r"^VERSION_CODENAME=\"?([^\"\n]+)\"?$", text, re.MULTILINE)
    return match.group(1) if match else None


def archive_source(sources: list[AptSource], codename: str | None) -> AptSource:
    """The system's main Debian archive entry: a `deb` entry for the release's own suite (not its
    -security/-updates siblings), with the `main` component."""

    def is_main_suite(suite: str) -> bool:
        if codename is not None:
            return suite == codename
        return "-" not in suite and "/" not in suite

    for source in sources:
        if (
            "deb" in source.types
            and "main" in source.components
            and any(is_main_suite(suite) for suite in source.suites)
        ):
            return source
    raise CriuSetupError(
        f"no apt source for the Debian archive's suite {codename or '(unknown)'} with component "
        "'main' in /etc/apt: cannot derive a deb-src entry to fetch criu's source package"
    )


def render_source_entry(source: AptSource, suite: str) -> str:
    """A deb822 deb-src stanza for `suite` with the archive's URIs and Signed-By."""
    lines = [
        "Types: deb-src",
        f"URIs: {' '.join(source.uris)}",
        f"Suites: {suite}",
        "Components: main",
    ]
    if source.signed_by:  # a keyring's path, or an inline key on continuation lines
        separator = "" if source.signed_by.startswith("\n") else " "
        lines.append(f"Signed-By:{separator}{source.signed_by}")
    return "\n".join(lines) + "\n"


# --- the source package ------------------------------------------------------------------------


@dataclass(frozen=True)
class SourcePackage:
    """What a .dsc says: the version and the sha256 of each file it names."""

    version: str
    sha256: dict[str, str]

    def orig_tarball(self) -> str:
        for name in self.sha256:
            if ".orig.tar." in name:
                return name
        raise CriuSetupError(f"the .dsc of {self.version} names no orig tarball")


def parse_dsc(text: str) -> SourcePackage:
    """Parse a (possibly clear-signed) .dsc file."""
    if text.startswith("-----BEGIN PGP SIGNED MESSAGE-----"):
        _, _, text = text.partition("\n\n")  # armour header ends at the first blank line
        text = text.split("-----BEGIN PGP SIGNATURE-----", 1)[0]
    stanzas = parse_deb822(text)
    if not stanzas or "version" not in stanzas[0]:
        raise CriuSetupError("the .dsc has no Version field")
    fields = stanzas[0]
    sums: dict[str, str] = {}
    for line in fields.get("checksums-sha256", "").splitlines():
        parts = line.split()
        if len(parts) == 3:
            digest, _size, name = parts
            sums[name] = digest.lower()
    return SourcePackage(version=fields["version"], sha256=sums)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class PrivateApt:
    """apt-get with its own sources, lists and cache under `root`; the system's are not used.

    The system's apt.conf.d still applies (proxies, timeouts), except update hooks, which would
    otherwise run over our one-off index."""

    def __init__(self, root: Path, entry: str) -> None:
        self.root = root
        self.config = root / "apt.conf"
        (root / "sources.list.d").mkdir(parents=True)
        (root / "sources.list").write_text("")
        (root / "sources.list.d" / "tescape-criu-src.sources").write_text(entry)
        (root / "lists" / "partial").mkdir(parents=True)
        (root / "cache" / "archives" / "partial").mkdir(parents=True)
        self.config.write_text(
            "// tescape: a private apt for fetching one source package; removed after use\n"
            "#clear APT::Update::Pre-Invoke;\n"
            "#clear APT::Update::Post-Invoke;\n"
            "#clear APT::Update::Post-Invoke-Success;\n"
            f'Dir::Etc::sourcelist "{root / "sources.list"}";\n'
            f'Dir::Etc::sourceparts "{root / "sources.list.d"}";\n'
            f'Dir::State::Lists "{root / "lists"}";\n'
            f'Dir::Cache "{root / "cache"}";\n'
            'Dir::Cache::pkgcache "";\n'
            'Dir::Cache::srcpkgcache "";\n'
        )
        # apt downloads as the unprivileged `_apt` user where it can: let it write there.
        os.chmod(root, 0o755)
        for sub in ("lists/partial", "cache/archives/partial"):
            _give_to_apt_user(root / sub)

    def run(self, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive", LC_ALL="C")
        return subprocess.run(
            ["apt-get", "-q", "-c", str(self.config), *args],
            cwd=cwd,
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )


def _give_to_apt_user(path: Path) -> None:
    try:
        uid = pwd.getpwnam("_apt").pw_uid
    except KeyError:
        return
    os.chown(path, uid, -1)


def fetch_source(workdir: Path, suite: str = SOURCE_SUITE) -> tuple[SourcePackage, Path]:
    """Download criu's source package of `suite` into `workdir`; the orig tarball, verified."""
    entry = render_source_entry(archive_source(system_sources(), os_codename()), suite)
    os.chmod(workdir, 0o755)  # apt's `_apt` user must reach the directories it downloads into
    apt = PrivateApt(workdir / "apt", entry)
    say(f"fetching the index of deb-src {suite} (private apt state under {workdir})")
    update = apt.run("update")
    if update.returncode != 0:
        raise CriuSetupError(f"apt-get update for deb-src {suite} failed:\n{_tail(update)}")
    download = workdir / "download"
    download.mkdir()
    _give_to_apt_user(download)
    say(f"apt-get source --download-only criu ({suite})")
    got = apt.run("source", "--download-only", "criu", cwd=download)
    # The .debian.tar.xz may be missing (404), which makes apt exit non-zero: judge by the files.
    dscs = sorted(download.glob("criu_*.dsc"))
    if not dscs:
        raise CriuSetupError(f"apt-get source criu gave no .dsc:\n{_tail(got)}")
    package = parse_dsc(dscs[-1].read_text())
    orig = download / package.orig_tarball()
    if not orig.is_file():
        raise CriuSetupError(f"apt-get source criu gave no {orig.name}:\n{_tail(got)}")
    expected = package.sha256[orig.name]
    actual = sha256_file(orig)
    if actual != expected:
        raise CriuSetupError(f"{orig.name}: sha256 {actual} != {expected} in the .dsc")
    say(f"got criu {package.version}: {orig.name} (sha256 {actual[:16]}… matches the .dsc)")
    return package, orig


def build(orig: Path, workdir: Path) -> Path:
    """Unpack the orig tarball and `make criu`; the built binary."""
    src = workdir / "src"
    src.mkdir()
    subprocess.run(["tar", "-xf", str(orig), "-C", str(src)], check=True)
    trees = [p for p in src.iterdir() if (p / "Makefile").is_file()]
    if len(trees) != 1:
        raise CriuSetupError(f"{orig.name} did not unpack to one source tree: {trees}")
    jobs = os.cpu_count() or 1
    log = workdir / "make.log"
    say(f"building: make -j{jobs} criu (log: {log} while it runs)")
    with open(log, "w") as out:
        made = subprocess.run(
            ["make", f"-j{jobs}", "criu"],
            cwd=trees[0],
            stdout=out,
            stderr=subprocess.STDOUT,
            check=False,
        )
    if made.returncode != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-30:])
        raise CriuSetupError(f"make criu failed (exit {made.returncode}):\n{tail}")
    binary = trees[0] / "criu" / "criu"
    if not binary.is_file():
        raise CriuSetupError(f"make criu succeeded but {binary} is missing")
    return binary


# --- cache and install -------------------------------------------------------------------------


def cache_root() -> Path:
    override = os.environ.get("TESCAPE_CRIU_CACHE")
    if override:
        return Path(override)
    checkout = Path(__file__).resolve().parents[2]
    if (checkout / "pyproject.toml").is_file() and (checkout / "capsule_runtime").is_dir():
        return checkout / ".cache" / "criu"
    return Path("/var/cache/tescape/criu")


def cached_binaries(root: Path) -> list[tuple[tuple[int, ...], Path]]:
    """Cached builds ≥ MIN_VERSION whose recorded sha256 matches, newest first."""
    found = []
    if not root.is_dir():
        return []
    for entry in root.iterdir():
        binary, digest = entry / "criu", entry / "criu.sha256"
        version = parse_version(entry.name)
        if not (at_least(version) and binary.is_file() and digest.is_file()):
            continue
        if digest.read_text().split()[0] != sha256_file(binary):
            say(f"ignoring cached {binary}: its sha256 does not match {digest.name}")
            continue
        assert version is not None
        found.append((version, binary))
    return sorted(found, reverse=True)


def store_in_cache(binary: Path, version: str, root: Path) -> Path:
    target_dir = root / version
    target_dir.mkdir(parents=True, exist_ok=True)
    target = target_dir / "criu"
    _copy_atomically(binary, target)
    (target_dir / "criu.sha256").write_text(f"{sha256_file(target)}  criu\n")
    return target


def _copy_atomically(src: Path, dst: Path) -> None:
    tmp = dst.with_name(f".{dst.name}.{os.getpid()}.tmp")
    try:
        shutil.copyfile(src, tmp)
        os.chmod(tmp, 0o755)
        os.replace(tmp, dst)
    finally:
        tmp.unlink(missing_ok=True)


def install_binary(binary: Path, target: Path = INSTALL_PATH) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    _copy_atomically(binary, target)


@contextlib.contextmanager
def _locked(root: Path) -> Iterator[None]:
    """One setup at a time builds or installs (two `make test` runs side by side)."""
    root.mkdir(parents=True, exist_ok=True)
    with open(root / ".lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _tail(result: subprocess.CompletedProcess[str], lines: int = 20) -> str:
    text = (result.stdout or "") + (result.stderr or "")
    return "\n".join(text.splitlines()[-lines:])


def _report_check(path: Path) -> None:
    """`criu check` once, for the log; it does not fail the setup (`tescape doctor` reports it)."""
    out = subprocess.run(
        [str(path), "check"], capture_output=True, text=True, timeout=120, check=False
    )
    text = (out.stdout or "") + (out.stderr or "")
    lines = text.strip().splitlines()
    verdict = "Looks good." if "Looks good" in text else lines[-1] if lines else "(no output)"
    say(f"criu check: {verdict}" + ("" if out.returncode == 0 else f" (exit {out.returncode})"))


def _require_root(why: str) -> None:
    if os.geteuid() != 0:
        raise CriuSetupError(f"{why}: run the setup as root")


def ensure_criu(install: Installer, cache: Path | None = None) -> Path:
    """Make a CRIU ≥ 4.2 the `criu` on PATH; return its path. Raises CriuSetupError."""
    wanted = format_version(MIN_VERSION)
    current = find_criu()
    version = binary_version(current) if current else None
    if current is not None and at_least(version):
        say(f"{current} is {format_version(version)} (≥ {wanted}): nothing to do")
        return current
    if current is not None:
        say(f"{current} is {format_version(version)}, older than {wanted}")
    else:
        say(f"no criu on PATH; need ≥ {wanted}")

    policy = subprocess.run(
        ["apt-cache", "policy", "criu"], capture_output=True, text=True, check=False
    )
    candidate = policy_candidate(policy.stdout)
    if candidate is not None and at_least(parse_version(candidate)):
        say(f"the distro's candidate is {candidate}: apt-get install criu")
        install(["criu"])
        found = find_criu()
        if found is None or not at_least(binary_version(found)):
            raise CriuSetupError(f"installed the distro's criu {candidate}, but no criu ≥ {wanted}")
        return _installed(found)
    say(f"the distro's candidate is {candidate or 'none'}, older than {wanted}")

    cache = cache or cache_root()
    if _install_cached(install, cache):
        return _installed(INSTALL_PATH)
    _require_root(f"building criu and installing it into {INSTALL_PATH}")
    with _locked(cache):
        if _install_cached(install, cache):  # built meanwhile by a setup running beside this one
            return _installed(INSTALL_PATH)
        say(f"building criu from {SOURCE_SUITE}'s source package")
        started = time.monotonic()
        install(BUILD_DEPS)
        deps_done = time.monotonic()
        with tempfile.TemporaryDirectory(prefix="tescape-criu-") as tmp:
            package, orig = fetch_source(Path(tmp))
            fetched = time.monotonic()
            binary = build(orig, Path(tmp))
            built = time.monotonic()
            upstream = format_version(parse_version(package.version))
            if not at_least(binary_version(binary)):
                raise CriuSetupError(f"the built criu {package.version} is not ≥ {wanted}")
            cached_at = store_in_cache(binary, upstream, cache)
            install_binary(cached_at)
        say(
            f"built criu {upstream} in {built - started:.0f} s (build deps "
            f"{deps_done - started:.0f} s, source {fetched - deps_done:.0f} s, make "
            f"{built - fetched:.0f} s); cached at {cached_at}"
        )
    return _installed(INSTALL_PATH)


def _install_cached(install: Installer, cache: Path) -> bool:
    """Install the newest cached build that runs here; False when there is none."""
    for cached_version, binary in cached_binaries(cache):
        _require_root(f"installing the cached criu into {INSTALL_PATH}")
        install(RUNTIME_DEPS)
        if not at_least(binary_version(binary)):
            say(f"the cached {binary} does not run here; skipping it")
            continue
        install_binary(binary)
        say(f"installed cached criu {format_version(cached_version)} from {binary}")
        return True
    return False


def _installed(path: Path) -> Path:
    on_path = find_criu()
    if on_path is None or on_path.resolve() != path.resolve():
        say(f"warning: `criu` on this PATH is {on_path}, not {path}; runc runs the one on PATH")
    say(f"using {path} ({format_version(binary_version(path))})")
    _report_check(path)
    return path


def prepare(install: Installer) -> None:
    """The setup step (see capsule_runtime/host/setup.py)."""
    try:
        ensure_criu(install)
    except CriuSetupError as err:
        sys.exit(f"[tescape setup] criu: {err}")
