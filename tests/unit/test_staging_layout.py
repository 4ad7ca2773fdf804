"""The host layout: anchors, mount planning (few mounts, image directories kept visible, nothing
refused that clients send), container ↔ host paths, symlink resolution that stays in the tree."""

from __future__ import annotations

import os
import posixpath
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from capsule_runtime.staging.errors import StagingError
from capsule_runtime.staging.layout import (
    CORE_DIRS,
    IMAGE_DIRS,
    KERNEL_DIRS,
    Anchor,
    Layout,
    MountPoint,
    anchors_of,
    inside,
    normalise,
    plan_mounts,
)
from tests.fixtures.documents import tes_task

EX: dict[str, Any] = {"image": "ubuntu:22.04", "command": ["true"]}
CROMWELL = "/cromwell-executions/hello/6f3c2a4e/call-greet"


def mounts_of(task: dict[str, Any]) -> list[MountPoint]:
    return plan_mounts(anchors_of(tes_task(task)))


def test_nextflow_task_is_one_mount() -> None:
    work = "/home/u/proj/work/3a/7f2c"
    task = {
        "inputs": [
            {"url": f"{work}/.command.sh", "path": "/work/.command.sh", "type": "FILE"},
            {"url": f"{work}/.command.run", "path": "/work/.command.run", "type": "FILE"},
            {"url": "/home/u/proj/data/hello.txt", "path": "/work/hello.txt", "type": "FILE"},
        ],
        "outputs": [
            {"url": f"{work}/.exitcode", "path": "/work/.exitcode", "type": "FILE"},
            {"url": work, "path": "/work/*.csv", "path_prefix": "/work", "type": "FILE"},
        ],
        "executors": [{**EX, "workdir": "/work"}],
    }
    assert mounts_of(task) == [MountPoint("/work")]


def test_cromwell_task_is_one_mount_at_the_call_directory() -> None:
    task = {
        "inputs": [
            {"url": "/data/in.txt", "path": f"{CROMWELL}/inputs/data/inputs/name.txt"},
            {"url": "/d/script", "path": f"{CROMWELL}/execution/script"},
        ],
        "outputs": [{"url": "/d/rc", "path": f"{CROMWELL}/execution/rc", "type": "FILE"}],
        "executors": [
            {
                **EX,
                "stdout": f"{CROMWELL}/execution/stdout",
                "stderr": f"{CROMWELL}/execution/stderr",
            }
        ],
    }
    assert mounts_of(task) == [MountPoint(CROMWELL)]


def test_lots_of_inputs_make_one_mount() -> None:
    inputs = [
        {"url": f"/src/{i}/f.txt", "path": f"{CROMWELL}/inputs/{i:05x}/f{i}.txt", "type": "FILE"}
        for i in range(2500)
    ]
    assert mounts_of({"inputs": inputs, "executors": [EX]}) == [MountPoint(f"{CROMWELL}/inputs")]


def test_one_mount_per_ordinary_top_level_directory() -> None:
    task = {
        "inputs": [
            {"url": "/x", "path": "/home/u/proj/bin/tool", "type": "FILE"},
            {"url": "/x", "path": "/work/a", "type": "FILE"},
            {"url": "s3://b/ref/", "path": "/data/ref", "type": "DIRECTORY"},
        ],
        "volumes": ["/data/scratch"],
        "executors": [EX],
    }
    assert mounts_of(task) == [
        MountPoint("/data"),
        MountPoint("/home/u/proj/bin"),
        MountPoint("/work"),
    ]


def test_image_directories_get_file_mounts_and_their_own_directory_mounts() -> None:
    task = {
        "inputs": [
            {"url": "/x", "path": "/usr/local/bin/tool", "type": "FILE"},
            {"url": "/x", "path": "/opt/ref", "type": "DIRECTORY"},
            {"url": "/x", "path": "/opt/ref/extra.txt", "type": "FILE"},
            {"url": "/x", "path": "/script.sh", "type": "FILE"},
        ],
        "outputs": [{"url": "/x", "path": "/var/log/app.log", "type": "FILE"}],
        "executors": [EX],
    }
    assert mounts_of(task) == [
        MountPoint("/opt/ref"),
        MountPoint("/script.sh", is_file=True),
        MountPoint("/usr/local/bin/tool", is_file=True),
        MountPoint("/var/log/app.log", is_file=True),
    ]


@pytest.mark.parametrize(
    "anchor",
    [
        Anchor("/proc/self/x", False),
        Anchor("/dev/shm", True),
        Anchor("/sys/fs", True),
        Anchor("/", True),
        Anchor("/usr", True),
        Anchor("/etc", True),
    ],
)
def test_refused_anchors(anchor: Anchor) -> None:
    with pytest.raises(StagingError):
        plan_mounts([anchor])


def test_a_volume_over_opt_is_allowed() -> None:
    assert plan_mounts([Anchor("/opt", True)]) == [MountPoint("/opt")]


def test_workdir_is_not_an_anchor() -> None:
    assert mounts_of({"executors": [{**EX, "workdir": "/usr/src/app"}]}) == []


def test_wildcard_output_anchors_its_literal_base() -> None:
    task = {"outputs": [{"url": "s3://b/o", "path": "/out/*/x[0-9].txt", "path_prefix": "/out"}]}
    assert anchors_of(tes_task(task)) == [Anchor("/out", True)]


def test_normalise() -> None:
    assert normalise("//work//a/./b/") == "/work/a/b"
    assert normalise("/") == "/"
    with pytest.raises(StagingError):
        normalise("work/a")
    with pytest.raises(StagingError):
        normalise("/work/../etc")


# -- properties of the plan ------------------------------------------------------------------

ORDINARY = ["work", "data", "home", "tmp", "u", "a", "b", "ref", "cromwell-executions", "x.txt"]
NAMES = st.sampled_from([*ORDINARY, *sorted(IMAGE_DIRS)])
PATHS = st.lists(NAMES, min_size=1, max_size=5).map(lambda parts: "/" + "/".join(parts))
ANCHORS = st.lists(st.builds(Anchor, PATHS, st.booleans()), min_size=1, max_size=30)


def _allowed(a: Anchor) -> bool:
    parts = a.path.strip("/").split("/")
    return parts[0] not in KERNEL_DIRS and not (
        a.is_dir and len(parts) == 1 and parts[0] in CORE_DIRS
    )


@settings(max_examples=50, deadline=None)
@given(ANCHORS)
def test_plan_covers_every_anchor_with_few_disjoint_mounts(anchors: list[Anchor]) -> None:
    anchors = [a for a in anchors if _allowed(a)]
    points = plan_mounts(anchors)
    dirs = [p.container for p in points if not p.is_file]
    # every anchor is covered: the directory it needs, or the file itself (a file mount, or a
    # directory mount when the same path was also declared a directory)
    for a in anchors:
        needed = a.path if a.is_dir else posixpath.dirname(a.path)
        covered = any(inside(needed, d) or inside(a.path, d) for d in dirs)
        assert covered or MountPoint(a.path, True) in points
    # mounts never nest, and none hides /, the kernel's or a core image directory
    for p in points:
        assert not any(inside(p.container, d) and p.container != d for d in dirs)
        top = p.container.strip("/").split("/")[0]
        assert p.container != "/" and top not in KERNEL_DIRS
        assert not (not p.is_file and p.container == f"/{top}" and top in CORE_DIRS)
    # ordinary top-level directories get one directory mount each
    ordinary = {p.container.split("/")[1] for p in points if not p.is_file}
    ordinary -= IMAGE_DIRS
    assert sum(1 for d in dirs if d.split("/")[1] in ordinary) == len(ordinary)
    assert len(points) == len(set(points))


@settings(max_examples=50, deadline=None)
@given(ANCHORS, st.lists(NAMES, max_size=3))
def test_host_path_is_the_same_through_any_mount(anchors: list[Anchor], tail: list[str]) -> None:
    fs = Path("/ws/fs")
    layout = Layout(fs, plan_mounts([a for a in anchors if _allowed(a)]))
    for mount in layout.mounts():
        path = posixpath.join(mount.container, *tail)
        rel = os.path.relpath(path, mount.container)
        through_mount = mount.host if rel == "." else mount.host / rel
        assert layout.tree_path(path) == through_mount
        assert fs in layout.tree_path(path).parents
        assert layout.mount_for(path) is not None


# -- symlink resolution ------------------------------------------------------------------------


def test_resolve_follows_symlinks_inside_the_tree(tmp_path: Path) -> None:
    layout = Layout(tmp_path / "fs", [MountPoint("/work")])
    work = layout.tree_path("/work")
    (work / "real").mkdir(parents=True)
    (work / "real" / "f.txt").write_text("x")
    (work / "rel").symlink_to("real")
    (work / "abs").symlink_to("/work/real")
    (work / "up").symlink_to("../../../../work/real")
    for name in ("rel", "abs", "up"):
        assert layout.resolve(f"/work/{name}/f.txt") == work / "real" / "f.txt"


def test_resolve_never_leaves_the_tree(tmp_path: Path) -> None:
    layout = Layout(tmp_path / "fs", [MountPoint("/work")])
    work = layout.tree_path("/work")
    work.mkdir(parents=True)
    (work / "passwd").symlink_to("/etc/passwd")
    (work / "escape").symlink_to(str(tmp_path.parent.parent.parent) + "/etc/passwd")
    (work / "loop").symlink_to("loop")
    assert layout.resolve("/work/passwd") == tmp_path / "fs" / "etc" / "passwd"
    resolved = layout.resolve("/work/escape")
    assert resolved is not None and (tmp_path / "fs") in resolved.parents
    assert layout.resolve("/work/loop") is None


def test_mount_points_avoid_colons_and_commas() -> None:
    anchors = [Anchor("/data/run:1/a,b/x.txt", False), Anchor("/data/run:1/y", True)]
    assert plan_mounts(anchors) == [MountPoint("/data")]
    with pytest.raises(StagingError, match="cannot be mounted"):
        plan_mounts([Anchor("/we:ird/x", False)])
    with pytest.raises(StagingError, match="cannot be mounted"):
        plan_mounts([Anchor("/usr/local/bin/a:b", False)])
