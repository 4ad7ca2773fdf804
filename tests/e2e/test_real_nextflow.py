"""The real `nextflow` (with nf-ga4gh) through `tescape nextflow run` and a real `tescape serve`.
Runs with `pytest -m nextflow` (or in the whole suite) when `nextflow` is on PATH — Nextflow
fetches the nf-ga4gh plugin itself unless NXF_PLUGINS_DIR already has it — and skips otherwise."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from tests.fixtures.server import RunningServer

pytestmark = [
    pytest.mark.nextflow,
    pytest.mark.slow,
    pytest.mark.timeout(900),
    pytest.mark.skipif(shutil.which("nextflow") is None, reason="nextflow is not on PATH"),
]

MAIN_NF = r'''
params.input = "${projectDir}/numbers.txt"
params.outdir = "${projectDir}/results"

process SPLIT {
    container 'ubuntu:22.04'
    input:
    path numbers
    output:
    path 'chunk_*'
    script:
    "split -l 4 ${numbers} chunk_"
}

process SQUARE {
    container 'ubuntu:22.04'
    input:
    path chunk
    output:
    path "${chunk}.sq"
    script:
    """
    while read n; do echo \$((n * n)); done < ${chunk} > ${chunk}.sq
    """
}

process REPORT {
    container 'ubuntu:22.04'
    publishDir params.outdir, mode: 'copy'
    input:
    path squares
    output:
    path 'total.txt'
    path 'report'
    script:
    """
    summarise.sh ${squares} > total.txt
    mkdir -p report
    cp ${squares} report/
    """
}

workflow {
    SPLIT(file(params.input)) | flatten | SQUARE | collect | REPORT
}
'''


def test_nextflow_pipeline_on_tescape(e2e_server: RunningServer, e2e_root: Path) -> None:
    project = e2e_root / f"real-nf-{uuid.uuid4().hex[:8]}"
    (project / "bin").mkdir(parents=True)
    (project / "main.nf").write_text(MAIN_NF)
    (project / "numbers.txt").write_text("".join(f"{n}\n" for n in (3, 1, 4, 1, 5, 9, 2, 6, 5, 3)))
    script = project / "bin" / "summarise.sh"
    script.write_text('#!/bin/bash\ns=0; for n in $(cat "$@"); do s=$((s + n)); done; echo $s\n')
    script.chmod(0o755)
    argv = [
        sys.executable,
        "-m",
        "gateway.cli",
        "nextflow",
        "run",
        "--server",
        e2e_server.url,
        "--work-dir",
        str(project / "work"),
        "--poll-interval",
        "1 sec",
        str(project / "main.nf"),
        "-ansi-log",
        "false",
    ]
    env = {**os.environ, "NXF_HOME": os.environ.get("NXF_HOME", str(Path.home() / ".nextflow"))}
    done = subprocess.run(argv, cwd=project, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-6000:]
    assert (project / "results" / "total.txt").read_text().strip() == "207"
    assert sorted(p.name for p in (project / "results" / "report").iterdir()) == [
        "chunk_aa.sq",
        "chunk_ab.sq",
        "chunk_ac.sq",
    ]
