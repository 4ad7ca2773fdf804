"""Real Snakemake (snakemake-executor-plugin-tes 0.1.3, py-tes 0.4.2) through a real
`tescape serve`: a Snakefile of a few rules with real file inputs and outputs, every job running
`snakemake` inside a locally built image (tests/fixtures/snakemake_env.py).

How the files travel (read from the plugin's and Snakemake 9's source): the plugin declares no
shared file system, so Snakemake refuses to run without a default storage provider — S3 here
(SeaweedFS, reached from the containers through a relay on the podman bridge). Every job downloads
its inputs from, and uploads its outputs to, that storage from inside the container; the TES task
carries only the job script, as an inline `content` input. A rule with a `local(...)` file is run
on the Snakemake host itself, not through TES (Snakemake's Job.is_local), so the plugin's
`file://` inputs and outputs are never used with Snakemake ≥ 8.
"""

from __future__ import annotations

import os
import subprocess
import threading
import time
import uuid
from pathlib import Path

import pytest
import requests

from capsule_runtime.engine import PodmanEngine
from tests.e2e.interruption import interrupt_task_instance
from tests.fixtures.seaweedfs import SeaweedS3
from tests.fixtures.server import RunningServer
from tests.fixtures.snakemake_env import (  # noqa: F401
    _snakemake_image,
    _snakemake_python,
    bridge_gateway,
    bridge_relay,
)

# a cold run builds the job image (about 2 minutes) before Snakemake's minute
pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

SNAKEFILE = """\
SAMPLES = ["a", "b"]

localrules: all

rule all:
    input:
        "results/summary.tsv",

rule upper:
    input:
        "data/{sample}.txt",
    output:
        "upper/{sample}.txt",
    shell:
        "sleep 10; tr a-z A-Z < {input} > {output}"

rule count:
    input:
        "upper/{sample}.txt",
    output:
        "counts/{sample}.txt",
    shell:
        "wc -w < {input} | tr -d ' ' > {output}"

rule summary:
    input:
        counts=expand("counts/{sample}.txt", sample=SAMPLES),
        upper=expand("upper/{sample}.txt", sample=SAMPLES),
    output:
        "results/summary.tsv",
    shell:
        "paste {input.counts} > {output}; head -q -n 1 {input.upper} >> {output}"
"""


# The reclaimed job sleeps 10 s, the notice is 5 s: the instance dies before the job could end
# where it is, so the job must move (from its capsule, or from the beginning when the checkpoint
# could not finish in time). With a long notice a job whose checkpoint fails (connections CRIU was
# not asked to keep) may simply finish on the doomed instance, which is right but proves nothing.
NOTICE_SECONDS = 5


class Reclaimer(threading.Thread):
    """Mid-run, reclaims the instance of the first Snakemake job seen RUNNING (a Spot notice;
    the instance dies at the deadline): the workflow must not notice."""

    def __init__(self, server: RunningServer):
        super().__init__(daemon=True)
        self.server = server
        self.stop = threading.Event()
        self.victim: tuple[str, str] | None = None  # (task id, instance id)
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            while not self.stop.is_set() and self.victim is None:
                listed = requests.get(
                    f"{self.server.tes}/tasks",
                    params={"name_prefix": "snakejob.upper", "state": "RUNNING"},
                    timeout=10,
                ).json()
                for task in listed.get("tasks", []):
                    self.victim = (
                        task["id"],
                        interrupt_task_instance(self.server, task["id"], NOTICE_SECONDS),
                    )
                    return
                self.stop.wait(0.2)
        except BaseException as exc:  # reported by the test
            self.error = exc


def test_snakemake_workflow_completes_on_tescape(
    e2e_server: RunningServer,
    e2e_root: Path,
    seaweedfs: SeaweedS3,
    podman_engine: PodmanEngine,
    busybox_image: str,
    snakemake_python: Path,
    snakemake_image: str,
) -> None:
    workdir = e2e_root / f"smk-{uuid.uuid4().hex[:8]}"
    workdir.mkdir(parents=True)
    (workdir / "Snakefile").write_text(SNAKEFILE)
    bucket = seaweedfs.create_bucket(f"smk-{uuid.uuid4().hex[:8]}")
    s3 = seaweedfs.client()
    s3.put_object(Bucket=bucket, Key="run/data/a.txt", Body=b"one two three\n")
    s3.put_object(Bucket=bucket, Key="run/data/b.txt", Body=b"four five\n")

    gateway = bridge_gateway(podman_engine, busybox_image)
    with bridge_relay(gateway, ("127.0.0.1", seaweedfs.port)) as relay:
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "SNAKEMAKE_"))},
            "SNAKEMAKE_STORAGE_S3_ENDPOINT_URL": relay.url,
            "SNAKEMAKE_STORAGE_S3_ACCESS_KEY": seaweedfs.access_key,
            "SNAKEMAKE_STORAGE_S3_SECRET_KEY": seaweedfs.secret_key,
            "HOME": str(workdir),  # Snakemake's caches, not the user's
        }
        argv = [
            str(snakemake_python),
            "-m",
            "snakemake",
            "--executor",
            "tes",
            "--tes-url",
            e2e_server.url,
            "--container-image",
            snakemake_image,
            "--default-storage-provider",
            "s3",
            "--default-storage-prefix",
            f"s3://{bucket}/run",
            "--jobs",
            "4",
            "--seconds-between-status-checks",
            "1",
            "--printshellcmds",
        ]
        reclaim = Reclaimer(e2e_server)
        reclaim.start()
        started = time.monotonic()
        done = subprocess.run(
            argv, cwd=workdir, env=env, capture_output=True, text=True, timeout=400
        )
        elapsed = time.monotonic() - started
        reclaim.stop.set()
        reclaim.join(timeout=30)
    log = f"{done.stdout}\n{done.stderr}"
    assert done.returncode == 0, f"snakemake failed after {elapsed:.0f} s:\n{log[-8000:]}"

    def s3_text(key: str) -> str:
        return s3.get_object(Bucket=bucket, Key=f"run/{key}")["Body"].read().decode()

    assert s3_text("upper/a.txt") == "ONE TWO THREE\n"
    assert s3_text("counts/b.txt") == "2\n"
    assert s3_text("results/summary.tsv").splitlines() == ["3\t2", "ONE TWO THREE", "FOUR FIVE"]

    # the job on the reclaimed instance went on elsewhere (from its capsule, or from the
    # beginning when its container held connections CRIU was not asked to keep)
    assert reclaim.error is None, reclaim.error
    assert reclaim.victim is not None, "no Snakemake job was seen running to reclaim"
    task_id, victim = reclaim.victim
    attempts = requests.get(f"{e2e_server.url}/api/v1/tasks/{task_id}/attempts", timeout=10)
    moved = attempts.json()["attempts"]
    assert len(moved) >= 2 and moved[-1]["instance_id"] != victim, moved
    assert requests.get(f"{e2e_server.tes}/tasks/{task_id}", timeout=10).json()["state"] == (
        "COMPLETE"
    )

    # every job ran as a TES task (only this test names tasks snakejob.*), carrying only its job
    # script as inline content at /tmp/run_snakemake.sh
    tasks = requests.get(
        f"{e2e_server.tes}/tasks",
        params={"view": "FULL", "name_prefix": "snakejob."},
        timeout=10,
    ).json()["tasks"]
    rules = sorted(t["name"].split(".")[1] for t in tasks)
    assert rules == ["count", "count", "summary", "upper", "upper"], log[-4000:]
    assert all(t["state"] == "COMPLETE" for t in tasks)
    for task in tasks:
        [script] = task["inputs"]
        assert (
            script["path"] == "/tmp/run_snakemake.sh" and "python -m snakemake" in script["content"]
        )
        assert task["executors"][0]["command"] == ["/bin/bash", "/tmp/run_snakemake.sh"]
