"""The two example task documents from CLIENTS.md, copied verbatim as Python literals.

`NEXTFLOW_TASK` is what nf-ga4gh ≥ 1.4 POSTs for a process with a local work dir; `CROMWELL_TASK`
what Cromwell's TES backend POSTs for a one-call WDL workflow. "6f3c…" abbreviates one UUID in
CLIENTS.md and stays abbreviated here (the server must take it as an opaque string).
"""

from __future__ import annotations

from typing import Any

NEXTFLOW_TASK: dict[str, Any] = {
    "name": "SAY_HELLO (1)",
    "inputs": [
        {
            "url": "/home/u/proj/work/3a/7f2c9e1b0d4a5c6e8f9a0b1c2d3e4f/.command.sh",
            "path": "/work/.command.sh",
            "type": "FILE",
        },
        {
            "url": "/home/u/proj/work/3a/7f2c9e1b0d4a5c6e8f9a0b1c2d3e4f/.command.run",
            "path": "/work/.command.run",
            "type": "FILE",
        },
        {"url": "/home/u/proj/data/hello.txt", "path": "/work/hello.txt", "type": "FILE"},
    ],
    "outputs": [
        {
            "url": "/home/u/proj/work/3a/7f2c9e1b0d4a5c6e8f9a0b1c2d3e4f/.command.out",
            "path": "/work/.command.out",
        },
        {
            "url": "/home/u/proj/work/3a/7f2c9e1b0d4a5c6e8f9a0b1c2d3e4f/.command.err",
            "path": "/work/.command.err",
        },
        {
            "url": "/home/u/proj/work/3a/7f2c9e1b0d4a5c6e8f9a0b1c2d3e4f/.exitcode",
            "path": "/work/.exitcode",
        },
        {
            "url": "/home/u/proj/work/3a/7f2c9e1b0d4a5c6e8f9a0b1c2d3e4f/out.txt",
            "path": "/work/out.txt",
            "type": "FILE",
        },
    ],
    "resources": {
        "cpu_cores": 2,
        "ram_gb": 4.0,
        "disk_gb": 10.0,
        "backend_parameters_strict": False,
    },
    "executors": [
        {
            "image": "ubuntu:22.04",
            "command": [
                "bash",
                "-o",
                "pipefail",
                "-c",
                "bash /work/.command.run 2>&1 | tee /work/.command.log",
            ],
            "workdir": "/work",
        }
    ],
}

CROMWELL_TASK: dict[str, Any] = {
    "name": "hello.greet",
    "description": (
        "6f3c2a4e-1b2d-4e5f-8a9b-0c1d2e3f4a5b:BackendJobDescriptorKey_CommandCallNode_hello.greet:-1:1"
    ),
    "inputs": [
        {
            "name": "hello.greet.name_file.0",
            "url": "/data/inputs/name.txt",
            "path": "/cromwell-executions/hello/6f3c…/call-greet/inputs/data/inputs/name.txt",
            "type": "FILE",
        },
        {
            "name": "commandScript",
            "url": "/data/cromwell-executions/hello/6f3c…/call-greet/execution/script",
            "path": "/cromwell-executions/hello/6f3c…/call-greet/execution/script",
            "type": "FILE",
        },
    ],
    "outputs": [
        {
            "name": "rc",
            "url": "/data/cromwell-executions/hello/6f3c…/call-greet/execution/rc",
            "path": "/cromwell-executions/hello/6f3c…/call-greet/execution/rc",
            "type": "FILE",
        },
        # CLIENTS.md abbreviates the next two as {"name": "stdout", "…": "likewise"} and
        # {"name": "stderr", "…": "likewise"}; they are expanded here following the `rc` entry.
        {
            "name": "stdout",
            "url": "/data/cromwell-executions/hello/6f3c…/call-greet/execution/stdout",
            "path": "/cromwell-executions/hello/6f3c…/call-greet/execution/stdout",
            "type": "FILE",
        },
        {
            "name": "stderr",
            "url": "/data/cromwell-executions/hello/6f3c…/call-greet/execution/stderr",
            "path": "/cromwell-executions/hello/6f3c…/call-greet/execution/stderr",
            "type": "FILE",
        },
        {
            "name": "hello.greet.output.0",
            "url": "/data/cromwell-executions/hello/6f3c…/call-greet/execution/greeting.txt",
            "path": "/cromwell-executions/hello/6f3c…/call-greet/execution/greeting.txt",
            "type": "FILE",
        },
    ],
    "resources": {
        "cpu_cores": 1,
        "ram_gb": 2.0,
        "disk_gb": 10.0,
        "preemptible": False,
        "backend_parameters": {
            "internal_path_prefix": "/data/cromwell-executions/hello/6f3c…/call-greet/tes_task"
        },
    },
    "executors": [
        {
            "image": "ubuntu:22.04",
            "command": [
                "/bin/bash",
                "/cromwell-executions/hello/6f3c…/call-greet/execution/script",
            ],
            "stdout": "/cromwell-executions/hello/6f3c…/call-greet/execution/stdout",
            "stderr": "/cromwell-executions/hello/6f3c…/call-greet/execution/stderr",
        }
    ],
    "tags": {"workflow_id": "6f3c…", "root_workflow_id": "6f3c…", "parent_workflow_id": None},
}
