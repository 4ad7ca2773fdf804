"""Drive a TES server with py-tes 0.4.2 the way Snakemake and Toil do, and print a JSON summary.

Run with the interpreter of the py-tes 0.4.2 venv (tests/fixtures/pytes_venv.py), never the
project's: standard library and py-tes 0.4.2 only. Usage: python pytes042_driver.py SERVER_URL

py-tes 0.4.2 calls {url}/v1/tasks… only, reads the legacy service-info, sends
`Authorization: Basic None:None` when it has no credentials (requests encodes (None, None)), and
raises on any response key its attrs models do not know — so every call below that returns proves
the server's response shape. Any exception ends the script with a traceback and exit status 1.
"""

from __future__ import annotations

import json
import sys
import warnings
from typing import Any

import tes

VIEWS = ("MINIMAL", "BASIC", "FULL")


def plain(value: Any) -> Any:
    """A py-tes model's dict with datetimes as ISO strings, for the JSON summary."""
    return json.loads(json.dumps(value.as_dict(), default=lambda d: d.isoformat()))


def snakemake_task(i: int) -> tes.Task:
    """Roughly what snakemake-executor-plugin-tes builds: job script as content, files by URL."""
    return tes.Task(
        name=f"snakejob.rule_{i}",
        description="compat: py-tes 0.4.2",
        inputs=[
            tes.Input(path="/tmp/job.sh", content="#!/bin/sh\necho hello\n", type="FILE"),
            tes.Input(url="s3://bucket/in.txt", path="/data/in.txt", type="FILE", name="in"),
        ],
        outputs=[
            tes.Output(url="s3://bucket/out.txt", path="/data/out.txt", type="FILE", name="out")
        ],
        resources=tes.Resources(
            cpu_cores=1, ram_gb=1.0, disk_gb=2.0, preemptible=False, zones=["zone-a"]
        ),
        executors=[
            tes.Executor(
                image="python:3.11",
                command=["/bin/sh", "/tmp/job.sh"],
                workdir="/data",
                stdout="/data/stdout",
                stderr="/data/stderr",
                env={"SNAKEMAKE": "1"},
            )
        ],
        volumes=["/scratch"],
        tags={"workflow": "compat"},
    )


def main(url: str) -> dict[str, Any]:
    warnings.simplefilter("ignore")  # requests warns about (None, None) credentials
    client = tes.HTTPClient(url, timeout=10)
    summary: dict[str, Any] = {"version": tes.__version__}

    summary["service_info"] = plain(client.get_service_info())

    ids = [client.create_task(snakemake_task(i)) for i in range(5)]
    summary["created"] = ids
    summary["sent"] = plain(snakemake_task(0))

    summary["get"] = {view: plain(client.get_task(ids[0], view)) for view in VIEWS}

    summary["list"] = {}
    for view in VIEWS:
        seen: list[str] = []
        pages = 0
        token = None
        while pages < 10:  # 5 tasks at 2 a page: 3 pages
            page = client.list_tasks(view=view, page_size=2, page_token=token)
            pages += 1
            seen += [task.id for task in page.tasks]
            token = page.next_page_token
            if not token:
                break
        summary["list"][view] = {"ids": seen, "pages": pages}
    summary["list_full_first"] = plain(client.list_tasks(view="FULL", page_size=1).tasks[0])

    client.cancel_task(ids[0])
    summary["after_cancel"] = {view: plain(client.get_task(ids[0], view)) for view in VIEWS}
    summary["states"] = [client.get_task(i, "MINIMAL").state for i in ids]
    return summary


if __name__ == "__main__":
    json.dump(main(sys.argv[1]), sys.stdout, indent=1, sort_keys=True)
    sys.stdout.write("\n")
