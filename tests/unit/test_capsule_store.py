"""What is particular to FileStore and MemoryStore, and open_store's URLs. The behaviour every
store shares is in tests/contract/test_capsule_stores.py."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from capsule_runtime.capsules import (
    CapsuleMissing,
    CapsuleStore,
    CapsuleStoreError,
    FileStore,
    MemoryStore,
    S3Store,
    open_store,
)


def test_file_store_puts_atomically_and_hides_partial_files(tmp_path: Path) -> None:
    store = FileStore(tmp_path)
    store.put("t/a/1", b"one")
    (tmp_path / "t" / "a" / ".~tmp.123.2").write_bytes(b"partial")  # a put under way
    assert store.list("t/") == ["t/a/1"]
    assert store.describe() == f"file:{tmp_path}"
    store.put("t/a/1", b"two")
    assert store.get("t/a/1") == b"two"
    assert sorted(os.listdir(tmp_path / "t" / "a")) == [".~tmp.123.2", "1"]


def test_file_store_missing_and_failing(tmp_path: Path) -> None:
    store = FileStore(tmp_path, fsync=False)
    with pytest.raises(CapsuleMissing, match="no object t/x"):
        store.get("t/x")
    store.put("t/x", b"1")
    with pytest.raises(CapsuleMissing):
        store.get("t")  # a directory, not an object
    assert not store.exists("t")
    with pytest.raises(CapsuleStoreError):
        store.put("t/x/y", b"under a file")
    with pytest.raises(ValueError):
        store.get("../etc/passwd")


def test_file_store_list_is_a_string_prefix(tmp_path: Path) -> None:
    store = FileStore(tmp_path)
    for key in ("ab/1", "abc/2", "b/3", "ab/cd/4"):
        store.put(key, b"x")
    assert store.list("ab") == ["ab/1", "ab/cd/4", "abc/2"]
    assert store.list("ab/c") == ["ab/cd/4"]
    assert store.list("") == ["ab/1", "ab/cd/4", "abc/2", "b/3"]
    assert store.list("zz/") == []
    assert store.delete_prefix("ab/") == 2
    assert not (tmp_path / "ab").exists()  # empty folders go too
    assert store.list("") == ["abc/2", "b/3"]


def test_file_store_put_survives_a_concurrent_delete(tmp_path: Path) -> None:
    store = FileStore(tmp_path, fsync=False)
    stop = threading.Event()

    def deleter() -> None:
        while not stop.is_set():
            store.delete_prefix("t/")

    thread = threading.Thread(target=deleter)
    thread.start()
    try:
        for i in range(200):
            store.put(f"t/d{i % 3}/k", b"x")
    finally:
        stop.set()
        thread.join()


def test_memory_store() -> None:
    store = MemoryStore()
    store.put("a/b", bytearray(b"x"))
    assert store.get("a/b") == b"x" and store.puts == 1
    with pytest.raises(CapsuleMissing) as info:
        store.get("a/c")
    assert str(info.value) == "memory: no object a/c"
    assert isinstance(store, CapsuleStore)


def test_open_store_urls(tmp_path: Path) -> None:
    for url in (str(tmp_path), f"file://{tmp_path}", f"file://localhost{tmp_path}"):
        store = open_store({"url": url})
        assert isinstance(store, FileStore) and store.root == tmp_path
    s3 = open_store({"url": "s3://bucket/some/prefix/", "s3": {"region": "eu-west-1", "x": 1}})
    assert isinstance(s3, S3Store)
    assert s3.describe() == "s3://bucket/some/prefix/"
    assert s3.config.region == "eu-west-1"
    assert open_store({"url": "s3://bucket"}).describe() == "s3://bucket/"
    assert isinstance(open_store({"url": "memory:"}), MemoryStore)
    for bad in ("", "relative/dir", "http://x/y", "s3:///nobucket", "file://host/x"):
        with pytest.raises(ValueError):
            open_store({"url": bad})
