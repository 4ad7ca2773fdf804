"""`tescape cromwell run WORKFLOW.wdl …`: Cromwell's single-workflow mode with the rendered
tescape backend config:

    java -Dconfig.file=<rendered config> -jar $CROMWELL_JAR run WORKFLOW.wdl [-i inputs.json] …
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path

from cromwell_backend.config import CromwellSettings, render_config


class CromwellNotFound(RuntimeError):
    pass


def find_cromwell(jar: str | None = None, java: str | None = None) -> tuple[str, str]:
    """(java executable, cromwell jar): `jar` or $CROMWELL_JAR; `java` or $JAVA or `java`."""
    jar = jar or os.environ.get("CROMWELL_JAR")
    if not jar or not Path(jar).is_file():
        raise CromwellNotFound(
            "no Cromwell jar: download cromwell-<version>.jar from "
            "https://github.com/broadinstitute/cromwell/releases and set CROMWELL_JAR (or pass "
            "--jar). `tescape cromwell config` prints the configuration to use with a Cromwell "
            "started any other way."
        )
    java_bin = shutil.which(java or os.environ.get("JAVA") or "java")
    if java_bin is None:
        raise CromwellNotFound("`java` not found: Cromwell needs Java 17 or newer on PATH")
    return java_bin, str(Path(jar).resolve())


def cromwell_argv(java: str, jar: str, config_file: Path, args: Sequence[str]) -> list[str]:
    return [java, f"-Dconfig.file={config_file}", "-jar", jar, "run", *args]


def run_cromwell(
    settings: CromwellSettings,
    args: Sequence[str],
    jar: str | None = None,
    java: str | None = None,
) -> int:
    java_bin, jar_path = find_cromwell(jar, java)
    with tempfile.TemporaryDirectory(prefix="tescape-cromwell-") as tmp:
        config_file = Path(tmp) / "tescape.conf"
        config_file.write_text(render_config(settings))
        proc = subprocess.Popen(cromwell_argv(java_bin, jar_path, config_file, args))
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            return proc.wait()
        finally:
            signal.signal(signal.SIGINT, previous)
