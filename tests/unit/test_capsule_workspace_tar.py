"""tar_directory / extract_directory: a workspace round trip (modes, owners, mtimes, symlinks,
hard links, empty and nested directories, FIFOs), errors surfacing from the writing thread, and
archives that try to write outside the destination."""

from __future__ import annotations

import io
import os
import stat
import tarfile
import threading
from pathlib import Path

import pytest

from capsule_runtime.capsules import UnsafeArchive, extract_directory, tar_directory, workspace_tar


def snapshot(root: Path) -> dict[str, tuple[object, ...]]:
    out: dict[str, tuple[object, ...]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            st = p.lstat()
            rel = str(p.relative_to(root))
            kind = stat.S_IFMT(st.st_mode)
            content: object = None
            if stat.S_ISLNK(st.st_mode):
                content = os.readlink(p)
            elif stat.S_ISREG(st.st_mode):
                content = p.read_bytes()
            mtime = None if stat.S_ISLNK(st.st_mode) else int(st.st_mtime)
            out[rel] = (kind, stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, mtime, content)
    st = root.stat()
    out["."] = (stat.S_IMODE(st.st_mode), int(st.st_mtime))
    return out


def build(root: Path) -> None:
    (root / "nested" / "deeper").mkdir(parents=True)
    (root / "empty").mkdir()
    (root / "nested" / "deeper" / "data.bin").write_bytes(os.urandom(300_000))
    script = root / "run.sh"
    script.write_text("#!/bin/sh\necho hi\n")
    script.chmod(0o4755)
    (root / "secret").write_text("s")
    (root / "secret").chmod(0o600)
    os.symlink("nested/deeper/data.bin", root / "link")
    os.symlink("../outside/target", root / "nested" / "dangling")
    os.link(root / "secret", root / "nested" / "hardlink")
    os.mkfifo(root / "fifo")
    (root / "empty").chmod(0o1777)
    if os.geteuid() == 0:
        os.chown(root / "secret", 1234, 5678)
    for p in (root / "secret", root / "empty", root / "nested", root):
        os.utime(p, (1_600_000_000, 1_600_000_000))


def test_round_trip_keeps_the_tree(tmp_path: Path) -> None:
    src, dest = tmp_path / "src", tmp_path / "dest"
    src.mkdir()
    build(src)
    with tar_directory(src) as stream:
        extract_directory(stream, dest, keep_outside_symlinks=True)
    assert snapshot(dest) == snapshot(src)
    assert (dest / "secret").stat().st_ino == (dest / "nested" / "hardlink").stat().st_ino


def test_the_stream_is_a_plain_tar_with_numeric_owners(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("x")
    with tar_directory(tmp_path) as stream:
        data = stream.read()
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        members = tar.getmembers()
    assert [m.name for m in members] == [".", "f"]
    assert all(m.uname == "" and m.gname == "" for m in members)


def test_outside_symlinks_are_refused_by_default(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    os.symlink("/etc/passwd", src / "abs")
    with tar_directory(src) as stream, pytest.raises(UnsafeArchive, match="abs"):
        extract_directory(stream, tmp_path / "dest")


def test_an_error_in_the_writer_thread_surfaces(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "a").write_bytes(b"1" * 100_000)
    (tmp_path / "b").write_text("2")

    def explode(info: tarfile.TarInfo) -> tarfile.TarInfo:
        if info.name == "b":
            raise PermissionError("cannot read b")
        return info

    monkeypatch.setattr(workspace_tar, "_numeric", explode)
    stream = tar_directory(tmp_path)
    with pytest.raises(OSError, match="cannot read b"):
        stream.read()
    stream.close()  # reported once, on read


def test_closing_early_stops_the_writer(tmp_path: Path) -> None:
    (tmp_path / "big").write_bytes(bytes(8 << 20))
    before = threading.active_count()
    stream = tar_directory(tmp_path)
    assert len(stream.read(1000)) == 1000
    stream.close()
    assert threading.active_count() == before


def test_not_a_directory(tmp_path: Path) -> None:
    with pytest.raises(NotADirectoryError):
        tar_directory(tmp_path / "nope")


def evil_tar(*members: tuple[str, bytes, str | None]) -> io.BytesIO:
    """(name, type, linkname) members; regular files get 1 byte."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, kind, linkname in members:
            info = tarfile.TarInfo(name)
            info.type = kind
            if linkname is not None:
                info.linkname = linkname
            if kind == tarfile.REGTYPE:
                info.size = 1
                tar.addfile(info, io.BytesIO(b"x"))
            else:
                tar.addfile(info)
    out.seek(0)
    return out


@pytest.mark.parametrize(
    "members",
    [
        [("/etc/evil", tarfile.REGTYPE, None)],
        [("../evil", tarfile.REGTYPE, None)],
        [("a/../../evil", tarfile.REGTYPE, None)],
        [("l", tarfile.SYMTYPE, "/etc"), ("l/evil", tarfile.REGTYPE, None)],
        [("l", tarfile.SYMTYPE, "../.."), ("l/evil", tarfile.REGTYPE, None)],
        [("h", tarfile.LNKTYPE, "../outside/file")],
        [("h", tarfile.LNKTYPE, "/etc/passwd")],
        [("dev", tarfile.CHRTYPE, None)],
    ],
)
def test_escaping_members_are_refused(
    tmp_path: Path, members: list[tuple[str, bytes, str | None]]
) -> None:
    dest = tmp_path / "dest"
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "file").write_text("keep")
    with pytest.raises(UnsafeArchive):
        extract_directory(evil_tar(*members), dest)
    assert not (tmp_path / "evil").exists()
    assert (tmp_path / "outside" / "file").read_text() == "keep"


def test_a_kept_outside_symlink_is_never_followed(tmp_path: Path) -> None:
    dest = tmp_path / "dest"
    (tmp_path / "outside").mkdir()
    tar = evil_tar(
        ("l", tarfile.SYMTYPE, str(tmp_path / "outside")), ("l/evil", tarfile.REGTYPE, None)
    )
    with pytest.raises(UnsafeArchive, match="through a link"):
        extract_directory(tar, dest, keep_outside_symlinks=True)
    assert not (tmp_path / "outside" / "evil").exists()
    # a file member replacing a symlink does not write through it
    (tmp_path / "outside" / "victim").write_text("keep")
    tar = evil_tar(
        ("v", tarfile.SYMTYPE, str(tmp_path / "outside" / "victim")), ("v", tarfile.REGTYPE, None)
    )
    extract_directory(tar, tmp_path / "dest2", keep_outside_symlinks=True)
    assert (tmp_path / "outside" / "victim").read_text() == "keep"
    assert (tmp_path / "dest2" / "v").read_bytes() == b"x"
