"""StagingPolicy: which local paths and network addresses a task's URLs may reach.

- Local paths (bare absolute paths and file://) must lie inside `allowed_dirs`, checked after
  symlinks and `..` are resolved (like Funnel's AllowedDirs). No allowed_dirs: no local access.
  Nothing inside `denied_dirs` (tescape's own state and code, sent by the gateway, plus the
  agent's own folders) is ever reachable, even under an allowed parent; a directory used whole
  must not contain one (capsule_runtime.protocol.local_paths, the rules the gateway checks at
  create). `shared_dirs` are allowed too, and a path inside one named at the same container path
  is mounted in place instead of copied (capsule_runtime.protocol.shared_dirs).
- Instance-metadata addresses are never reachable: the whole link-local range (169.254.0.0/16,
  fe80::/10), AWS's IPv6 IMDS fd00:ec2::254, and the same addresses written as IPv4-mapped or NAT64
  IPv6. Host names are resolved first and every address they resolve to is checked.
- With `block_private_networks`, loopback, private and other non-global addresses are refused too.
- s3:// URLs must lie inside `s3_allowed` (None: any bucket) and never inside or above an
  `s3_denied` location (the capsule store): capsule_runtime.protocol.s3_paths, the rules the
  gateway checks at create, checked again before every S3 request a task's URL causes.

The address checks apply to http(s) URLs (every redirect hop included) and to the s3 endpoint URL.
`pin` resolves a host once and returns the address to connect to, so a second DNS answer (a
rebind between check and connect) is never used.
"""

from __future__ import annotations

import ipaddress
import os
import socket
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from capsule_runtime.protocol.local_paths import LocalPathRules
from capsule_runtime.protocol.s3_paths import S3Rules
from capsule_runtime.protocol.shared_dirs import mount_refusal
from capsule_runtime.staging.errors import AccessRefused, StagingError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str], list[str]]  # host name → its IP addresses, as strings

METADATA_NETWORKS = (
    ipaddress.ip_network("169.254.0.0/16"),  # IPv4 link-local: AWS, GCP, Azure, OpenStack IMDS
    ipaddress.ip_network("fe80::/10"),  # IPv6 link-local
    ipaddress.ip_network("fd00:ec2::254/128"),  # AWS IMDS over IPv6
)
NAT64 = ipaddress.ip_network("64:ff9b::/96")


def system_resolver(host: str) -> list[str]:
    """Every address `host` resolves to (IP literals resolve to themselves)."""
    try:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except OSError as exc:
        raise StagingError(f"cannot resolve host {host!r}: {exc}") from None
    return sorted({str(info[4][0]).split("%", 1)[0] for info in infos})


def embedded_ipv4(addr: IPAddress) -> IPAddress:
    """The IPv4 address inside an IPv4-mapped (::ffff:a.b.c.d) or NAT64 IPv6 address, else addr."""
    if isinstance(addr, ipaddress.IPv6Address):
        if addr.ipv4_mapped is not None:
            return addr.ipv4_mapped
        if addr in NAT64:
            return ipaddress.IPv4Address(int(addr) & 0xFFFFFFFF)
    return addr


def is_metadata(addr: IPAddress) -> bool:
    plain = embedded_ipv4(addr)
    return any(plain.version == net.version and plain in net for net in METADATA_NETWORKS)


def is_private(addr: IPAddress) -> bool:
    """Loopback, RFC 1918, ULA, CGNAT, unspecified (0.0.0.0 reaches this host) and so on."""
    return not embedded_ipv4(addr).is_global


@dataclass(frozen=True)
class StagingPolicy:
    allowed_dirs: tuple[Path, ...] = ()
    block_private_networks: bool = False
    resolver: Resolver = field(default=system_resolver, compare=False, repr=False)
    denied_dirs: tuple[Path, ...] = ()
    s3: S3Rules = field(default_factory=S3Rules)
    shared_dirs: tuple[Path, ...] = ()

    @classmethod
    def create(
        cls,
        allowed_dirs: Iterable[str | os.PathLike[str]] = (),
        block_private_networks: bool = False,
        resolver: Resolver = system_resolver,
        denied_dirs: Iterable[str | os.PathLike[str]] = (),
        s3_allowed: Iterable[str] | None = None,
        s3_denied: Iterable[str] = (),
        shared_dirs: Iterable[str | os.PathLike[str]] = (),
    ) -> StagingPolicy:
        rules = LocalPathRules.create(allowed_dirs, denied_dirs, shared_dirs)
        s3 = S3Rules.create(s3_allowed, s3_denied)
        return cls(rules.allowed, block_private_networks, resolver, rules.denied, s3, rules.shared)

    # -- s3 locations ---------------------------------------------------------------------------

    def check_s3(self, url: str) -> None:
        """Refuse an s3:// URL outside the allow-list, inside the capsule store or above it."""
        why = self.s3.refusal(url)
        if why is not None:
            raise AccessRefused(why)

    # -- local paths ----------------------------------------------------------------------------

    @property
    def rules(self) -> LocalPathRules:
        return LocalPathRules(self.allowed_dirs, self.denied_dirs, self.shared_dirs)

    def local_path(self, path: str) -> Path:
        """`path` with symlinks and `..` resolved, if that lies inside an allowed directory and
        outside every denied one."""
        why = self.rules.refusal(path)
        if why is not None:
            raise AccessRefused(why)
        return Path(os.path.realpath(path))

    def local_tree(self, path: str) -> Path:
        """As `local_path`, for a directory copied whole: it must not contain a denied one."""
        why = self.rules.tree_refusal(path)
        if why is not None:
            raise AccessRefused(why)
        return Path(os.path.realpath(path))

    def shared_mount(self, path: str, is_dir: bool) -> Path:
        """`path`, to be mounted from a shared directory at that same path: allowed, outside
        (and, a directory, not containing) every denied one, and reached without a symlink."""
        why = mount_refusal(path, is_dir, self.rules)
        if why is not None:
            raise AccessRefused(why)
        return Path(path)

    # -- network addresses ----------------------------------------------------------------------

    def check_url(self, url: str) -> None:
        """Refuse `url` if its host is, or resolves to, an address this policy forbids."""
        try:
            host = urlsplit(url).hostname
        except ValueError as exc:
            raise StagingError(f"{url}: malformed URL: {exc}") from None
        if not host:
            raise StagingError(f"{url}: the URL names no host")
        self.check_host(host, url)

    def pin(self, host: str, url: str | None = None) -> str:
        """The address to connect to for `host`: resolved once, every address checked, the
        first returned. The caller connects to it and never resolves `host` again."""
        addresses = self.check_host(host, url)
        if not addresses:
            raise StagingError(f"{url or host}: host {host!r} resolves to no address")
        return addresses[0]

    def check_host(self, host: str, url: str | None = None) -> list[str]:
        """Every address `host` resolves to, once each checked; AccessRefused if one is not
        allowed."""
        where = url or host
        addresses = self.resolver(host)
        for text in addresses:
            addr = ipaddress.ip_address(text)
            named = host if host == text else f"{host} resolves to {text}, which"
            if is_metadata(addr):
                raise AccessRefused(
                    f"{where}: {named} is an instance-metadata (link-local) address; "
                    "tasks may never reach it"
                )
            if self.block_private_networks and is_private(addr):
                raise AccessRefused(
                    f"{where}: {named} is a loopback or private address, and this worker blocks "
                    "private networks (storage.block_private_networks)"
                )
        return list(addresses)
