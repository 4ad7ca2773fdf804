"""The release a user installs: a wheel built from this tree installs with `pip install` alone
into a fresh virtualenv (no source tree beside it), and `tescape serve` from it starts, migrates
its database, answers TES, serves the dashboard's pages and assets, and says its version."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import venv
from pathlib import Path

import requests

from gateway import __version__
from tests.fixtures.source import source_tree

REPO = Path(__file__).resolve().parents[2]


def run(cmd: list[str], **kw: object) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600, **kw)  # type: ignore[call-overload]
    assert done.returncode == 0, f"{cmd}: {done.stdout[-2000:]}\n{done.stderr[-4000:]}"
    return done


def test_the_wheel_installs_and_serves_on_its_own(tmp_path: Path) -> None:
    dist = tmp_path / "dist"
    tree = source_tree(tmp_path / "src")
    run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(dist), str(tree)])
    [wheel] = dist.glob("tescape-*.whl")
    assert wheel.name.startswith(f"tescape-{__version__}-")

    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    bin_dir = env_dir / "bin"
    run([str(bin_dir / "pip"), "install", "-q", str(wheel)])

    # the installed command, run from elsewhere: nothing of this tree on its path
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("TESCAPE_", "PYTHON"))}
    version = run([str(bin_dir / "tescape"), "--version"], cwd=tmp_path, env=clean)
    assert __version__ in version.stdout

    data = tmp_path / "data"
    cmd = [str(bin_dir / "tescape"), "serve", "--port", "0", "--data-dir", str(data)]
    with open(tmp_path / "serve.log", "w") as log:
        proc = subprocess.Popen(
            cmd, cwd=tmp_path, env=clean, stdout=subprocess.PIPE, stderr=log, text=True
        )
        try:
            assert proc.stdout is not None
            line = proc.stdout.readline()
            match = re.search(r"(http://\S+?)/ga4gh/tes/v1", line)
            assert match, f"{line!r}\n{(tmp_path / 'serve.log').read_text()}"
            url = match.group(1)
            info = requests.get(url + "/ga4gh/tes/v1/service-info", timeout=30).json()
            assert info["version"] == __version__
            tasks = requests.get(url + "/ga4gh/tes/v1/tasks", timeout=30)
            assert tasks.status_code == 200, tasks.text  # the database was migrated
            page = requests.get(url + "/ui/", timeout=30)
            assert page.status_code == 200, page.text[:500]  # no auth by default on loopback
            assets = re.findall(r'(?:href|src)="(/ui/static/[^"]+)"', page.text)
            assert len(assets) >= 2, page.text[:2000]  # the stylesheet and the script
            for asset in assets:
                assert requests.get(url + asset, timeout=30).status_code == 200, asset
        finally:
            proc.terminate()
            proc.wait(timeout=60)
    assert str(REPO) not in (tmp_path / "serve.log").read_text()
