"""Task URLs: schemes, local paths, s3 locations, child URLs; the router's unsupported schemes."""

from __future__ import annotations

import pytest

from capsule_runtime.staging import StagingPolicy, StorageRouter, UnsupportedScheme
from capsule_runtime.staging.errors import StagingError
from capsule_runtime.staging.urls import child_url, local_path, s3_location, scheme_of


def test_schemes() -> None:
    assert scheme_of("/data/x") == "file"
    assert scheme_of("file:///data/x") == "file"
    assert scheme_of("S3://b/k") == "s3"
    assert scheme_of("https://h/x?a=b") == "https"
    with pytest.raises(StagingError):
        scheme_of("relative/path")


def test_local_paths() -> None:
    assert local_path("/data/a b") == "/data/a b"
    assert local_path("file:///data/a%20b") == "/data/a b"
    assert local_path("file://localhost/data/x") == "/data/x"
    with pytest.raises(StagingError, match="naming a host"):
        local_path("file://otherhost/data/x")


def test_s3_locations_keep_keys_as_written() -> None:
    assert s3_location("s3://bucket/dir/a b?c#d") == ("bucket", "dir/a b?c#d")
    assert s3_location("s3://bucket") == ("bucket", "")
    assert s3_location("s3://bucket/") == ("bucket", "")
    with pytest.raises(StagingError):
        s3_location("s3:///key")


def test_child_urls() -> None:
    assert child_url("/out/dir", "a/b c") == "/out/dir/a/b c"
    assert child_url("file:///out/dir/", "a/b c") == "file:///out/dir/a/b%20c"
    assert child_url("s3://b/p", "a/b c") == "s3://b/p/a/b c"
    assert child_url("http://h/p?x=1", "a") == "http://h/p/a?x=1"
    assert child_url("s3://b/p", "") == "s3://b/p"


@pytest.mark.parametrize("url", ["gs://bucket/x", "ftp://host/x", "azure://c/x"])
def test_unsupported_schemes_are_named(url: str) -> None:
    router = StorageRouter(StagingPolicy.create())
    with pytest.raises(UnsupportedScheme, match="is not supported by this worker"):
        router.for_url(url)
