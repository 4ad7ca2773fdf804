"""The real Cromwell (its TES backend) through `tescape cromwell run` and a real `tescape serve`.
Runs with `pytest -m cromwell` (or in the whole suite) when CROMWELL_JAR names a Cromwell jar and
`java` is on PATH, and skips otherwise."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from tests.e2e.conftest import FileServer
from tests.fixtures.server import RunningServer

_jar = os.environ.get("CROMWELL_JAR")
pytestmark = [
    pytest.mark.cromwell,
    pytest.mark.slow,
    pytest.mark.timeout(900),
    pytest.mark.skipif(
        not (_jar and Path(_jar).is_file() and shutil.which("java")),
        reason="CROMWELL_JAR is not set to a Cromwell jar, or java is not on PATH",
    ),
]

WORKFLOW = """\
version 1.0

workflow wf {
  input {
    File remote
    File local
  }
  call fetch { input: remote = remote, local = local }
  scatter (part in fetch.parts) {
    call words { input: part = part }
  }
  call gather { input: words = flatten(words.words) }
  call fails { input: after = gather.n }
  output {
    Int n = gather.n
  }
}

task fetch {
  input {
    File remote
    File local
  }
  command <<<
    cat ~{remote} ~{local} > lines.txt
    split -l 2 lines.txt part_
  >>>
  output { Array[File] parts = glob("part_*") }
  runtime { docker: "ubuntu:22.04" }
}

task words {
  input { File part }
  command <<<
    for w in $(cat ~{part}); do echo "$w" > "word_$w.txt"; done
  >>>
  output { Array[File] words = glob("word_*.txt") }
  runtime { docker: "ubuntu:22.04" }
}

task gather {
  input { Array[File] words }
  command <<<
    cat ~{sep=" " words} | wc -l
  >>>
  output { Int n = read_int(stdout()) }
  runtime { docker: "ubuntu:22.04" }
}

task fails {
  input { Int after }
  command <<<
    echo oops >&2
    exit 3
  >>>
  runtime { docker: "ubuntu:22.04" }
}
"""


def test_cromwell_workflow_on_tescape(
    e2e_server: RunningServer, e2e_root: Path, http_files: FileServer
) -> None:
    project = e2e_root / f"real-cromwell-{uuid.uuid4().hex[:8]}"
    project.mkdir()
    (project / "wf.wdl").write_text(WORKFLOW)
    (http_files.root / "cromwell-remote.txt").write_text("alpha beta\ngamma\n")
    (project / "local.txt").write_text("delta epsilon\nzeta\n")
    (project / "inputs.json").write_text(
        json.dumps(
            {
                "wf.remote": f"{http_files.url}/cromwell-remote.txt",
                "wf.local": str(project / "local.txt"),
            }
        )
    )
    argv = [
        sys.executable,
        "-m",
        "gateway.cli",
        "cromwell",
        "run",
        "--server",
        e2e_server.url,
        "--root",
        str(project / "cromwell-executions"),
        "--poll-min",
        "1 seconds",
        "--poll-max",
        "5 seconds",
        str(project / "wf.wdl"),
        "--inputs",
        str(project / "inputs.json"),
        "--metadata-output",
        str(project / "metadata.json"),
    ]
    done = subprocess.run(argv, cwd=project, capture_output=True, text=True, timeout=900)
    metadata = json.loads((project / "metadata.json").read_text())
    # `fails` exits 3: its TES task is COMPLETE, Cromwell fails the call from the rc file
    assert done.returncode != 0 and metadata["status"] == "Failed", done.stdout[-6000:]
    calls = metadata["calls"]
    [fails] = calls["wf.fails"]
    assert fails["returnCode"] == 3 and fails["executionStatus"] == "Failed"
    [gather] = calls["wf.gather"]
    assert gather["executionStatus"] == "Done" and gather["outputs"]["n"] == 6
    assert len(calls["wf.words"]) == 2
    # tescape's cost metadata reaches Cromwell's call metadata
    assert gather.get("vmCostPerHour") is not None and gather.get("vmStartTime")
