"""Progress on long CLI operations: a bar while `tescape apps import` uploads an archive, drawn
on a terminal only (a pty here), never into a pipe or a log."""

from __future__ import annotations

import io
import json
import os
import pty
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import requests

from tests.fixtures.server import RunningServer


def archive(path: Path, tag: str, pad_bytes: int) -> Path:
    """A `docker save`-shaped archive with `pad_bytes` of layer data, so the upload takes a
    few chunks."""
    with tarfile.open(path, "w") as tar:
        for name, data in (
            ("manifest.json", json.dumps([{"Config": "c.json", "RepoTags": [tag], "Layers": []}])),
            ("pad", "x" * pad_bytes),
        ):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data.encode()))
    return path


def run_on_a_terminal(args: list[str]) -> tuple[int, str, str]:
    """Run with stderr on a pseudo-terminal (stdout a pipe); its exit code, stdout, terminal."""
    master, slave = pty.openpty()
    env = {**os.environ, "COLUMNS": "100", "TERM": "xterm-256color"}
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=slave, env=env, text=True)
    os.close(slave)
    seen = b""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # the other end closed: the process is gone
            break
        if not chunk:
            break
        seen += chunk
    os.close(master)
    out = proc.stdout.read() if proc.stdout else ""
    return proc.wait(timeout=60), out, seen.decode(errors="replace")


def test_apps_import_shows_an_upload_bar_on_a_terminal_only(
    sqlite_server: RunningServer, tmp_path: Path
) -> None:
    """(The apps are removed at the end: other tests list the shared server's apps.)"""
    try:
        _import_twice(sqlite_server, tmp_path)
    finally:
        for name in ("big", "big2"):
            requests.delete(f"{sqlite_server.url}/api/v1/apps/{name}", timeout=10)


def _import_twice(sqlite_server: RunningServer, tmp_path: Path) -> None:
    tar = archive(tmp_path / "big.tar", "localhost/big:1", 8 * 2**20)
    cmd = [sys.executable, "-m", "gateway.cli", "apps", "import", "big", str(tar)]
    cmd += ["--server", sqlite_server.url]
    code, out, terminal = run_on_a_terminal(cmd)
    assert code == 0, terminal
    assert "big → localhost/big:1" in out
    assert "uploading big.tar" in terminal and "MB" in terminal, terminal
    piped = subprocess.run(
        [*cmd[:5], "big2", str(tar), "--server", sqlite_server.url],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert piped.returncode == 0, piped.stderr
    assert piped.stderr == "" and "\x1b[" not in piped.stdout
