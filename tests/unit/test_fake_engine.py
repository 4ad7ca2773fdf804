"""FakeEngine: podman's lifecycle semantics in memory (the same contract runs against real podman
in tests/integration/test_podman_engine.py), and ContainerSpec validation."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from capsule_runtime.engine import (
    TASK_LABEL,
    ContainerEngine,
    ContainerNotFound,
    ContainerSpec,
    ContainerState,
    EngineError,
    FakeEngine,
    FakeProcess,
    ImageNotFound,
    Mount,
    WaitTimeout,
)

IMAGE = "localhost/tescape-test/busybox:1"


def spec(*argv: str, task_id: str = "t1", **kw: object) -> ContainerSpec:
    return ContainerSpec(image=IMAGE, argv=argv, task_id=task_id, **kw)  # type: ignore[arg-type]


@pytest.fixture
def engine() -> FakeEngine:
    return FakeEngine(images=[IMAGE])


def test_is_a_container_engine(engine: FakeEngine) -> None:
    assert isinstance(engine, ContainerEngine)


# --- images -------------------------------------------------------------------------------------


def test_ensure_image_present_pullable_missing() -> None:
    engine = FakeEngine(images=["a:1"], pullable=["b:1"])
    assert engine.ensure_image("a:1").startswith("sha256:")
    assert engine.ensure_image("b:1") == engine.ensure_image("b:1")
    assert engine.pulls == ["b:1"]  # pulled once, then local
    with pytest.raises(ImageNotFound) as err:
        engine.ensure_image("c:1")
    assert "image not known" in err.value.stderr


def test_create_needs_a_local_image() -> None:
    with pytest.raises(ImageNotFound):
        FakeEngine(pullable=[IMAGE]).create(spec("true"))


# --- the default behaviour ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "code"),
    [(("true",), 0), (("false",), 1), (("sh", "-c", "exit 3"), 3), (("/bin/true",), 0)],
)
def test_exit_codes(engine: FakeEngine, argv: tuple[str, ...], code: int) -> None:
    cid = engine.run(spec(*argv))
    assert engine.wait(cid, timeout=0) == code
    info = engine.inspect(cid)
    assert (info.state, info.exit_code, info.pid) == (ContainerState.EXITED, code, None)


def test_echo_and_cat_use_the_stdio_files(engine: FakeEngine, tmp_path: Path) -> None:
    out, err = tmp_path / "out", tmp_path / "err"
    out.write_text("stale\n")
    engine.wait(engine.run(spec("echo", "hello", "world", stdout=out, stderr=err)))
    assert (out.read_text(), err.read_text()) == ("hello world\n", "")
    (tmp_path / "in").write_text("from stdin\n")
    engine.wait(engine.run(spec("cat", stdin=tmp_path / "in", stdout=out)))
    assert out.read_text() == "from stdin\n"


def test_missing_stdin_file_is_an_error(engine: FakeEngine, tmp_path: Path) -> None:
    with pytest.raises(EngineError, match="does not exist"):
        engine.create(spec("cat", stdin=tmp_path / "absent"))


def test_custom_behaviour_and_one_file_for_both_streams(tmp_path: Path) -> None:
    def behaviour(s: ContainerSpec) -> FakeProcess:
        return FakeProcess(7, stdout=b"out\n", stderr=b"err\n")

    engine = FakeEngine(behaviour, images=[IMAGE])
    both = tmp_path / "both"
    assert engine.wait(engine.run(spec("anything", stdout=both, stderr=both))) == 7
    assert both.read_text() == "out\nerr\n"


def test_out_of_memory(engine: FakeEngine) -> None:
    engine.set_behaviour(lambda s: FakeProcess(oom_killed=True))
    cid = engine.run(spec("hog"))
    assert engine.wait(cid) == 137
    assert engine.inspect(cid).oom_killed


# --- running containers: wait, stop, finish -------------------------------------------------------


def test_sleep_runs_until_stopped(engine: FakeEngine) -> None:
    cid = engine.run(spec("sleep", "600"))
    info = engine.inspect(cid)
    assert info.state is ContainerState.RUNNING and info.pid
    with pytest.raises(WaitTimeout):
        engine.wait(cid, timeout=0.01)
    engine.stop(cid, grace=1)
    assert engine.wait(cid) == 137  # PID 1 without a handler ignores SIGTERM
    engine.stop(cid)  # not running: fine


def test_stop_is_sigterm_for_a_process_that_handles_it(engine: FakeEngine) -> None:
    engine.set_behaviour(lambda s: FakeProcess(None))
    cid = engine.run(spec("server"))
    engine.stop(cid)
    assert engine.wait(cid) == 143


def test_finish_ends_a_running_container(engine: FakeEngine) -> None:
    cid = engine.run(spec("sleep", "600"))
    engine.finish(cid, 4)
    assert engine.wait(cid) == 4
    with pytest.raises(EngineError, match="not running"):
        engine.finish(cid, 0)


def test_wait_blocks_until_another_thread_stops_the_container(engine: FakeEngine) -> None:
    cid = engine.run(spec("sleep", "600"))
    codes: list[int] = []
    waiter = threading.Thread(target=lambda: codes.append(engine.wait(cid)))
    waiter.start()
    time.sleep(0.05)
    assert not codes
    engine.stop(cid)
    waiter.join(timeout=5)
    assert codes == [137]


def test_created_container_is_not_running_until_started(engine: FakeEngine) -> None:
    cid = engine.create(spec("sh", "-c", "exit 2"))
    assert engine.inspect(cid).state is ContainerState.CREATED
    with pytest.raises(WaitTimeout):
        engine.wait(cid, timeout=0)
    engine.start(cid)
    assert engine.wait(cid) == 2


# --- identity: names, labels, removal -------------------------------------------------------------


def test_names_labels_and_listing() -> None:
    mine = FakeEngine(images=[IMAGE], labels={"io.tescape.test-session": "s1"})
    cid = mine.create(spec("true", task_id="task-9", labels={"io.tescape.attempt": "a1"}))
    info = mine.inspect(cid)
    assert info.name.startswith("tescape-task-9-")
    assert info.labels == {
        TASK_LABEL: "task-9",
        "io.tescape.attempt": "a1",
        "io.tescape.test-session": "s1",
    }
    assert info.task_id == "task-9"
    assert mine.inspect(info.name).id == cid
    assert [c.id for c in mine.list_containers()] == [cid]
    mine.labels = {"io.tescape.test-session": "s2"}  # another session's view
    assert mine.list_containers() == []


def test_duplicate_name_is_refused(engine: FakeEngine) -> None:
    engine.create(spec("true", name="one"))
    with pytest.raises(EngineError, match="already in use"):
        engine.create(spec("true", name="one"))


def test_remove_is_idempotent_and_missing_containers_are_named(engine: FakeEngine) -> None:
    cid = engine.run(spec("sleep", "600"))
    engine.remove(cid)  # kills a running container
    engine.remove(cid)
    for call in (engine.inspect, engine.start, engine.wait, engine.stop):
        with pytest.raises(ContainerNotFound) as err:
            call(cid)
        assert "no such container" in err.value.stderr
    assert engine.list_containers() == []


def test_run_removes_a_container_that_fails_to_start(engine: FakeEngine) -> None:
    def broken(s: ContainerSpec) -> FakeProcess:
        raise EngineError("runc: exec failed", stderr="executable file not found in $PATH")

    engine.set_behaviour(broken)
    with pytest.raises(EngineError):
        engine.run(spec("no-such-command"))
    assert engine.list_containers() == []


# --- ContainerSpec validation ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"argv": ()}, "argv"),
        ({"task_id": ""}, "task_id"),
        ({"env": {"A=B": "x"}}, "environment"),
        ({"workdir": "relative"}, "workdir"),
        ({"cpu_cores": 0}, "cpu_cores"),
        ({"memory_bytes": 1024}, "memory_bytes"),
        ({"labels": {TASK_LABEL: "x"}}, TASK_LABEL),
    ],
)
def test_spec_validation(kwargs: dict[str, object], message: str) -> None:
    fields: dict[str, object] = {"image": IMAGE, "argv": ("true",), "task_id": "t", **kwargs}
    with pytest.raises(ValueError, match=message):
        ContainerSpec(**fields)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("host", "target"),
    [("relative", "/x"), ("/ok", "relative"), ("/a:b", "/x"), ("/ok", "/x,y")],
)
def test_mount_validation(host: str, target: str) -> None:
    with pytest.raises(ValueError):
        Mount(Path(host), target)


def test_spec_normalises_sequences() -> None:
    s = ContainerSpec(image=IMAGE, argv=["a", "b"], task_id="t", mounts=[Mount(Path("/x"), "/y")])  # type: ignore[arg-type]
    assert s.argv == ("a", "b") and s.mounts == (Mount(Path("/x"), "/y"),)
    assert s.all_labels == {TASK_LABEL: "t"}


def test_update_sets_new_limits_and_records_them(engine: FakeEngine) -> None:
    cid = engine.run(spec("sleep", "1", memory_bytes=64 * 2**20, cpu_cores=1))
    engine.update(cid, cpu_cores=2)
    assert engine.updates == [(cid, 2, None)]
    with pytest.raises(ContainerNotFound):
        engine.update("nope", memory_bytes=2**30)
