"""Local paths never reach tescape's own state or code: no local paths unless configured; the
data dir, the capsule store, the database, the install tree and the venv refused even under an
allowed parent, after symlinks and '..' (issue 10). Private state: files 0600, dirs 0700."""

from __future__ import annotations

import os
import stat
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import gateway
from capsule_runtime.capsules import FileStore
from capsule_runtime.protocol.local_paths import LocalPathRules, task_path_errors
from capsule_runtime.staging.errors import AccessRefused
from capsule_runtime.staging.local import LocalStorage
from capsule_runtime.staging.policy import StagingPolicy
from gateway.config import Config, load_config
from gateway.private_state import make_private
from tests.fixtures.documents import tes_task


@pytest.fixture
def host(tmp_path: Path) -> Path:
    """An allowed parent (`tmp_path/home`) holding the data dir and a user's files."""
    data = tmp_path / "home" / "tescape-data"
    data.mkdir(parents=True)
    (data / "tescape.db").write_bytes(b"SQLite format 3\x00")
    (data / "secret.key").write_text("k")
    (tmp_path / "home" / "mine").mkdir()
    (tmp_path / "home" / "mine" / "in.txt").write_text("input")
    return tmp_path / "home"


def policy(host: Path) -> StagingPolicy:
    return StagingPolicy.create([host], denied_dirs=[host / "tescape-data"])


# -- the rules ----------------------------------------------------------------------------------


def test_denied_dirs_are_refused_under_an_allowed_parent(host: Path) -> None:
    p = policy(host)
    assert p.local_path(str(host / "mine" / "in.txt")) == host / "mine" / "in.txt"
    for path in (
        host / "tescape-data",
        host / "tescape-data" / "tescape.db",
        host / "mine" / ".." / "tescape-data" / "secret.key",
        host / "tescape-data" / "new-output.txt",  # a write that does not exist yet
    ):
        with pytest.raises(AccessRefused, match="tescape's own state or code"):
            p.local_path(str(path))


def test_denied_dirs_are_refused_through_symlinks(host: Path) -> None:
    (host / "mine" / "db").symlink_to(host / "tescape-data" / "tescape.db")
    (host / "mine" / "state").symlink_to(host / "tescape-data")
    p = policy(host)
    for path in (host / "mine" / "db", host / "mine" / "state" / "secret.key"):
        with pytest.raises(AccessRefused, match=r"resolves to .*tescape's own state"):
            p.local_path(str(path))


def test_a_denied_dir_reached_through_a_symlinked_denial(tmp_path: Path) -> None:
    """The deny-list itself is resolved: a data dir configured through a link is still denied."""
    (tmp_path / "real").mkdir()
    (tmp_path / "alias").symlink_to(tmp_path / "real")
    p = StagingPolicy.create([tmp_path], denied_dirs=[tmp_path / "alias"])
    with pytest.raises(AccessRefused):
        p.local_path(str(tmp_path / "real" / "tescape.db"))


def test_a_directory_used_whole_must_not_contain_a_denied_one(host: Path) -> None:
    p = policy(host)
    assert p.local_tree(str(host / "mine")) == host / "mine"
    with pytest.raises(AccessRefused, match=r"contains .*tescape-data"):
        p.local_tree(str(host))


def test_an_allowed_dir_inside_a_denied_one_gives_nothing(host: Path) -> None:
    p = StagingPolicy.create([host / "tescape-data"], denied_dirs=[host / "tescape-data"])
    with pytest.raises(AccessRefused):
        p.local_path(str(host / "tescape-data" / "tescape.db"))


# -- staging ------------------------------------------------------------------------------------


def test_directory_input_holding_the_data_dir_is_refused(host: Path, tmp_path: Path) -> None:
    with pytest.raises(AccessRefused, match="contains"):
        LocalStorage(policy(host)).get(f"file://{host}/", tmp_path / "dest", "DIRECTORY")
    assert not (tmp_path / "dest").exists()


def test_symlink_in_a_directory_input_to_the_data_dir_is_refused(
    host: Path, tmp_path: Path
) -> None:
    (host / "mine" / "db").symlink_to(host / "tescape-data" / "tescape.db")
    (host / "other").mkdir()
    (host / "other" / "up").symlink_to(host)  # a parent of the data dir
    storage = LocalStorage(policy(host))
    for src in ("mine", "other"):
        with pytest.raises(AccessRefused, match="tescape"):
            storage.get(f"file://{host}/{src}/", tmp_path / src, "DIRECTORY")
    copied = [*(tmp_path / "mine").rglob("*"), *(tmp_path / "other").rglob("*")]
    assert not any(p.is_file() and p.read_bytes().startswith(b"SQLite") for p in copied)


def test_an_output_never_overwrites_state(host: Path, tmp_path: Path) -> None:
    src = tmp_path / "out.txt"
    src.write_text("overwrite")
    with pytest.raises(AccessRefused):
        LocalStorage(policy(host)).put(src, f"file://{host}/tescape-data/secret.key")
    assert (host / "tescape-data" / "secret.key").read_text() == "k"


# -- the gateway's check at create ----------------------------------------------------------------


def test_task_path_errors_name_each_field(host: Path) -> None:
    rules = LocalPathRules.create([host / "mine"], [host / "tescape-data"])
    task = {
        "inputs": [
            {"url": f"file://{host}/mine/in.txt", "path": "/in", "type": "FILE"},
            {"url": f"file://{host}/tescape-data/tescape.db", "path": "/db", "type": "FILE"},
            {"url": "s3://bucket/key", "path": "/s3", "type": "FILE"},
            {"content": "x", "path": "/c", "type": "FILE"},
            {"url": "file://elsewhere/etc/passwd", "path": "/h", "type": "FILE"},
        ],
        "outputs": [
            {"url": "/etc/cron.d/x", "path": "/o", "type": "FILE"},
            {"url": f"{host}/mine/out/", "path": "/d/", "type": "DIRECTORY"},
        ],
    }
    errors = {e.field: e.message for e in task_path_errors(tes_task(task), rules)}
    assert set(errors) == {"inputs[1].url", "inputs[4].url", "outputs[0].url"}
    assert "tescape's own state" in errors["inputs[1].url"]
    assert "naming a host" in errors["inputs[4].url"]
    assert "outside the directories tasks may use" in errors["outputs[0].url"]


def test_directory_and_wildcard_outputs_must_not_hold_the_data_dir(host: Path) -> None:
    rules = LocalPathRules.create([host], [host / "tescape-data"])
    task = {
        "outputs": [
            {"url": f"file://{host}", "path": "/d", "type": "DIRECTORY"},
            {"url": f"file://{host}/", "path": "/w/*.txt", "path_prefix": "/w", "type": "FILE"},
            {"url": f"file://{host}/mine/", "path": "/w/*.txt", "path_prefix": "/w"},
        ]
    }
    assert [e.field for e in task_path_errors(tes_task(task), rules)] == [
        "outputs[0].url",
        "outputs[1].url",
    ]


# -- configuration ------------------------------------------------------------------------------


def test_no_local_paths_by_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert load_config(environ={}).allowed_dirs == []
    assert Config(storage={"allowed_dirs": None}).allowed_dirs == []  # type: ignore[arg-type]


def test_denied_dirs_cover_state_and_code(tmp_path: Path) -> None:
    store = tmp_path / "capsules-elsewhere"
    db = tmp_path / "db" / "t.db"
    cfg = Config(
        data_dir=str(tmp_path / "data"),
        database={"url": f"sqlite:///{db}"},  # type: ignore[arg-type]
        capsules={"store": f"file://{store}"},  # type: ignore[arg-type]
    )
    denied = set(cfg.denied_dirs)
    install = Path(gateway.__file__).resolve().parent.parent
    expected = {tmp_path / "data", store, db, db.with_name("t.db-wal"), install}
    assert {str(p) for p in expected} <= denied
    if sys.prefix != sys.base_prefix:
        assert str(Path(sys.prefix).resolve()) in denied
    s3 = Config(data_dir=str(tmp_path), capsules={"store": "s3://b/p"})  # type: ignore[arg-type]
    assert not any(d.startswith("s3") for d in s3.denied_dirs)


# -- private state -------------------------------------------------------------------------------


@pytest.fixture
def umask_022() -> Iterator[None]:
    old = os.umask(0o022)
    yield
    os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_file_capsule_store_writes_private_files(tmp_path: Path, umask_022: None) -> None:
    store = FileStore(tmp_path / "store", fsync=False)
    store.put("tasks/t1/chunks/ab/cd", b"memory")
    assert mode(tmp_path / "store" / "tasks" / "t1" / "chunks" / "ab" / "cd") == 0o600
    for d in ("store", "store/tasks", "store/tasks/t1", "store/tasks/t1/chunks/ab"):
        assert mode(tmp_path / d) == 0o700, d


def test_make_private_tightens_existing_state(tmp_path: Path, umask_022: None) -> None:
    data = tmp_path / "data"
    (data / "logs").mkdir(parents=True)
    (data / "tescape.db").write_bytes(b"")
    (data / "secret.key").write_text("k")
    data.chmod(0o755)
    cfg = Config(data_dir=str(data))
    changed = make_private(cfg)
    assert {data, data / "logs", data / "tescape.db", data / "secret.key"} <= set(changed)
    assert mode(data) == mode(data / "logs") == 0o700
    assert mode(data / "tescape.db") == mode(data / "secret.key") == 0o600
    assert make_private(cfg) == []
    fresh = Config(data_dir=str(tmp_path / "new" / "data"))
    make_private(fresh)
    assert mode(tmp_path / "new" / "data") == 0o700


def test_the_working_directory_keeps_its_mode(
    tmp_path: Path, umask_022: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No data_dir configured: the state lives in the directory serve runs in (often a checkout
    or a home), whose own mode is left alone; the state in it is private all the same."""
    tmp_path.chmod(0o755)
    (tmp_path / "tescape.db").write_bytes(b"")
    monkeypatch.chdir(tmp_path)
    make_private(Config())
    assert mode(tmp_path) == 0o755 and mode(tmp_path / "tescape.db") == 0o600
