"""`tescape nextflow run …`: the real `nextflow` with the rendered tescape config.

    nextflow -c <rendered config> [-c user configs…] run <pipeline> <args…>

The config goes into a temporary file that lives as long as the run. Ctrl-C reaches Nextflow
(same process group), which cancels its TES tasks itself; this process just waits for it.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path

from nextflow_plugin_shim.config import NextflowSettings, render_config


class NextflowNotFound(RuntimeError):
    pass


def find_nextflow(explicit: str | None = None) -> str:
    """`explicit`, else $NXF_EXECUTABLE, else `nextflow` on PATH."""
    candidate = explicit or os.environ.get("NXF_EXECUTABLE") or "nextflow"
    found = shutil.which(candidate)
    if found is None:
        raise NextflowNotFound(
            f"`{candidate}` not found: install Nextflow (https://www.nextflow.io/docs/latest/"
            "install.html: `curl -s https://get.nextflow.io | bash`, Java 17+) and put it on "
            "PATH, or pass --nextflow PATH. `tescape nextflow config` prints the configuration "
            "to use with a Nextflow started any other way."
        )
    return found


def nextflow_argv(executable: str, config_file: Path, args: Sequence[str]) -> list[str]:
    """Our config first, so a user's own `-c` files (later on the line) override it."""
    return [executable, "-c", str(config_file), *args]


def run_nextflow(
    settings: NextflowSettings, args: Sequence[str], executable: str | None = None
) -> int:
    binary = find_nextflow(executable)
    with tempfile.TemporaryDirectory(prefix="tescape-nextflow-") as tmp:
        config_file = Path(tmp) / "tescape.config"
        config_file.write_text(render_config(settings))
        proc = subprocess.Popen(nextflow_argv(binary, config_file, args))
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            return proc.wait()
        finally:
            signal.signal(signal.SIGINT, previous)
