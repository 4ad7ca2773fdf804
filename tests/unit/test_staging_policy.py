"""StagingPolicy: allowed_dirs after symlinks and '..', metadata addresses always refused (names
resolved first), private networks refused only when asked."""

from __future__ import annotations

from pathlib import Path

import pytest

from capsule_runtime.staging.errors import AccessRefused, StagingError
from capsule_runtime.staging.policy import (
    Resolver,
    StagingPolicy,
    is_metadata,
    is_private,
    system_resolver,
)


def fake_resolver(table: dict[str, list[str]]) -> Resolver:
    def resolve(host: str) -> list[str]:
        return table[host] if host in table else system_resolver(host)

    return resolve


# -- local paths -------------------------------------------------------------------------------


def test_paths_inside_allowed_dirs(tmp_path: Path) -> None:
    data = tmp_path / "data"
    (data / "sub").mkdir(parents=True)
    policy = StagingPolicy.create([data])
    assert policy.local_path(str(data / "sub" / "f.txt")) == data / "sub" / "f.txt"
    assert policy.local_path(str(data)) == data


def test_paths_outside_are_refused_after_resolving(tmp_path: Path) -> None:
    data, other = tmp_path / "data", tmp_path / "data2"
    data.mkdir()
    other.mkdir()
    (data / "link").symlink_to(other)
    policy = StagingPolicy.create([data])
    for path in (
        other / "f",
        data / ".." / "data2" / "f",
        data / "link" / "f",
        Path("/etc/passwd"),
    ):
        with pytest.raises(AccessRefused, match="outside the directories tasks may use"):
            policy.local_path(str(path))


def test_an_allowed_dir_reached_through_a_symlink(tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "alias").symlink_to(real)
    policy = StagingPolicy.create([tmp_path / "alias"])
    assert policy.local_path(str(real / "x")) == real / "x"


def test_no_allowed_dirs_means_no_local_access() -> None:
    with pytest.raises(AccessRefused, match="none are configured"):
        StagingPolicy.create([]).local_path("/tmp/x")


def test_relative_paths_are_refused(tmp_path: Path) -> None:
    with pytest.raises(AccessRefused):
        StagingPolicy.create([tmp_path]).local_path("x/y")


# -- addresses ---------------------------------------------------------------------------------

METADATA = [
    "169.254.169.254",
    "169.254.0.1",
    "fd00:ec2::254",
    "fe80::1",
    "::ffff:169.254.169.254",
    "64:ff9b::a9fe:a9fe",
]


@pytest.mark.parametrize("addr", METADATA)
def test_metadata_addresses(addr: str) -> None:
    import ipaddress

    assert is_metadata(ipaddress.ip_address(addr))


@pytest.mark.parametrize(
    "url_host", ["169.254.169.254", "[fd00:ec2::254]", "[fe80::1]", "2852039166"]
)
def test_metadata_urls_are_always_refused(url_host: str) -> None:
    policy = StagingPolicy.create([], block_private_networks=False)
    with pytest.raises(AccessRefused, match="instance-metadata"):
        policy.check_url(f"http://{url_host}/latest/meta-data/")


def test_a_name_resolving_to_metadata_is_refused() -> None:
    policy = StagingPolicy.create(
        resolver=fake_resolver({"imds.example.test": ["93.184.216.34", "169.254.169.254"]})
    )
    with pytest.raises(AccessRefused, match=r"imds\.example\.test resolves to 169\.254\.169\.254"):
        policy.check_url("https://imds.example.test/x?y=1")


@pytest.mark.parametrize(
    "host",
    [
        "127.0.0.1",
        "10.1.2.3",
        "192.168.0.1",
        "172.16.5.4",
        "[::1]",
        "0.0.0.0",
        "100.64.0.1",
        "[fd12::1]",
    ],
)
def test_private_networks_blocked_only_when_asked(host: str) -> None:
    StagingPolicy.create(block_private_networks=False).check_url(f"http://{host}:8080/f")
    with pytest.raises(AccessRefused, match="block_private_networks"):
        StagingPolicy.create(block_private_networks=True).check_url(f"http://{host}:8080/f")


def test_public_addresses_pass_even_when_blocking() -> None:
    policy = StagingPolicy.create(
        block_private_networks=True, resolver=fake_resolver({"example.test": ["93.184.216.34"]})
    )
    policy.check_url("http://example.test/f")
    policy.check_url("http://8.8.8.8/f")


def test_localhost_by_name_is_private() -> None:
    with pytest.raises(AccessRefused):
        StagingPolicy.create(block_private_networks=True).check_url("http://localhost:1/")


def test_urls_without_a_host_or_unresolvable() -> None:
    policy = StagingPolicy.create()
    with pytest.raises(StagingError, match="names no host"):
        policy.check_url("http:///path")
    with pytest.raises(StagingError, match="cannot resolve"):
        policy.check_url("http://no-such-host.invalid/x")


def test_is_private_for_globals() -> None:
    import ipaddress

    assert not is_private(ipaddress.ip_address("93.184.216.34"))
    assert is_private(ipaddress.ip_address("::ffff:10.0.0.1"))
