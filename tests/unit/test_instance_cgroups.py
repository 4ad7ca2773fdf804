"""A local instance's cgroup (gateway/providers/cgroups.py) on a fake cgroup file system, and the
rewrite of a checkpoint archive's cgroup parent (capsule_runtime/engine/cgroup_parent.py)."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

from capsule_runtime.engine.cgroup_parent import retarget, rewritable
from gateway.providers.cgroups import InstanceCgroup, why_unsupported

OLD = "/tescape/i-01m8kx9kxjnaw5rez8rfhmfn5k"
NEW = "/tescape/i-01m8kxas4xgaefqj5wq3h0y4m0"


def archive(tmp: Path, members: dict[str, bytes]) -> Path:
    path = tmp / "checkpoint.tar"
    with tarfile.open(path, "w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def read(path: Path) -> dict[str, bytes]:
    with tarfile.open(path) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar if m.isfile()}  # type: ignore[union-attr]


def test_retarget_rewrites_metadata_and_images_never_pages_or_files(tmp_path: Path) -> None:
    where = f"{OLD}/libpod-abc".encode()
    members = {
        "config.dump": b'{"cgroupParent":"' + OLD.encode() + b'","x":"' + where + b'"}',
        "spec.dump": b'{"cgroupsPath":"' + where + b'"}',
        "checkpoint/cgroup.img": b"\x00\x01" + where + b"\x02l" + where[1:],
        "checkpoint/pages-1.img": b"memory " + where,
        "rootfs-diff.tar": b"a file " + where,
    }
    path = archive(tmp_path, members)
    size = path.stat().st_size
    assert retarget(path, NEW) == 5
    after = read(path)
    assert path.stat().st_size == size
    assert after["spec.dump"] == members["spec.dump"].replace(OLD.encode(), NEW.encode())
    assert after["checkpoint/cgroup.img"].count(NEW[1:].encode()) == 2
    assert after["config.dump"].count(NEW.encode()) == 2
    assert after["checkpoint/pages-1.img"] == members["checkpoint/pages-1.img"]
    assert after["rootfs-diff.tar"] == members["rootfs-diff.tar"]
    with pytest.raises(ValueError, match="not a local instance"):
        retarget(path, "/machine.slice")


def test_rewritable_members() -> None:
    assert rewritable("config.dump") and rewritable("checkpoint/mountpoints-12.img")
    assert not rewritable("checkpoint/pages-3.img") and not rewritable("rootfs-diff.tar")


def test_instance_cgroup_v1_limits_and_removal(tmp_path: Path) -> None:
    for controller in ("memory", "cpu", "pids"):
        (tmp_path / controller).mkdir()
    group = InstanceCgroup("i-x", cpu_cores=1.5, ram_gb=0.25, root=tmp_path)
    group.create()
    assert group.parent == "/tescape/i-x"
    assert (tmp_path / "memory/tescape/i-x/memory.limit_in_bytes").read_text() == str(2**28)
    assert (tmp_path / "cpu/tescape/i-x/cpu.cfs_quota_us").read_text() == "150000"
    (tmp_path / "pids/tescape/i-x/libpod-1").mkdir(parents=True)  # what podman leaves
    for f in (tmp_path / "memory/tescape/i-x").iterdir():  # a real cgroup's files go with it
        f.unlink()
    for f in (tmp_path / "cpu/tescape/i-x").iterdir():
        f.unlink()
    group.remove()
    assert not (tmp_path / "memory/tescape/i-x").exists()
    assert not (tmp_path / "pids/tescape/i-x").exists()


def test_instance_cgroup_v2(tmp_path: Path) -> None:
    (tmp_path / "cgroup.controllers").write_text("cpuset cpu io memory pids\n")
    group = InstanceCgroup("i-y", cpu_cores=2, ram_gb=1, root=tmp_path)
    group.create()
    assert (tmp_path / "tescape/i-y/memory.max").read_text() == str(2**30)
    assert (tmp_path / "tescape/i-y/cpu.max").read_text() == "200000 100000"
    assert (tmp_path / "tescape/cgroup.subtree_control").read_text() == "+cpu +memory"


def test_unsupported_without_cgroupfs_manager(tmp_path: Path) -> None:
    conf = tmp_path / "containers.conf"
    conf.write_text('[engine]\ncgroup_manager = "systemd"\n')
    assert why_unsupported(tmp_path, conf) == "podman does not use the cgroupfs manager"
    assert why_unsupported(tmp_path, tmp_path / "missing") is not None
