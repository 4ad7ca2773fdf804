"""Realistic task rows for seeding: what Nextflow, Cromwell and Snakemake submit (CLIENTS.md), and
the TaskLogs, tags, attempts, instances and events tescape keeps for them once they have run.

`TaskFactory.batch` returns ready-to-insert row tuples for a run of consecutive `seq` values. It is
deterministic for a given seed and cheap per row: each client's document is normalised once with
the server's own `parse_task`, and rows differ only by substituted strings (work dir hash, sample,
user, workflow id) and by their logs.
"""

from __future__ import annotations

import base64
import hashlib
import json
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from capsule_runtime.protocol.tasklog import initial_task_log
from gateway.tes.backend_parameters import BackendParameters
from gateway.tes.validation import TaskLimits, parse_task

TASK_COLUMNS = (
    "seq",
    "id",
    "owner",
    "name",
    "state",
    "creation_time",
    "updated_time",
    "spec",
    "logs",
    "version",
)
TAG_COLUMNS = ("task_seq", "key", "value")
INSTANCE_COLUMNS = (
    "id",
    "provider",
    "instance_type",
    "market",
    "zone",
    "state",
    "price_per_hour",
    "token_sha256",
    "created_time",
    "updated_time",
    "last_heartbeat",
    "data",
)
ATTEMPT_COLUMNS = (
    "id",
    "task_id",
    "number",
    "instance_id",
    "phase",
    "reason",
    "market",
    "instance_type",
    "zone",
    "price_per_hour",
    "start_time",
    "end_time",
    "data",
)
EVENT_COLUMNS = (  # the id is the database's own sequence
    "task_id",
    "attempt_id",
    "instance_id",
    "time",
    "kind",
    "from_state",
    "to_state",
    "phase",
    "message",
    "data",
)

# Seeded history: task `seq` was created at T0 + seq * SPACING (1M tasks span ~29 days).
T0 = datetime(2026, 10, 1, tzinfo=UTC).timestamp()
SPACING = 2.5

# What a store that has run for a while holds, newest and oldest alike.
STATE_MIX = (
    ("COMPLETE", 860),
    ("EXECUTOR_ERROR", 50),
    ("SYSTEM_ERROR", 10),
    ("CANCELED", 30),
    ("RUNNING", 30),
    ("INITIALIZING", 5),
    ("QUEUED", 15),
)
USERS = (
    ("alice", 30),
    ("bob", 18),
    ("chen", 12),
    ("dmitri", 9),
    ("esther", 7),
    ("farid", 6),
    ("grace", 5),
    ("hiro", 4),
    ("ines", 3),
    ("jonas", 2),
    ("kwame", 2),
    ("lena", 1),
    ("mateo", 1),
)
CROMWELL_OWNER = "svc-cromwell"
INSTANCE_TYPES = (
    ("m6i.large", 0.0384),
    ("m6i.xlarge", 0.0768),
    ("m6i.2xlarge", 0.1536),
    ("r6i.2xlarge", 0.2016),
    ("c6i.4xlarge", 0.2720),
    ("r6i.4xlarge", 0.4032),
)
ZONES = ("us-east-1a", "us-east-1b", "us-east-1c", "us-east-1d", "us-east-1f")
TASKS_PER_INSTANCE = 16

_GLOB = re.compile(r"\*(\{[^}]*\}\*)?")
_B32 = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", "0123456789abcdefghjkmnpqrstvwxyz")


def make_id(ms: int, rand80: int) -> str:
    """The same 26-character id `gateway.store.ids.new_id` makes, for a given time and entropy."""
    raw = ((ms << 80) | rand80).to_bytes(20, "big")
    return base64.b32encode(raw).decode()[-26:].translate(_B32)


def rfc3339(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="microseconds")


def _table(pairs: Sequence[tuple[str, int]]) -> list[str]:
    """A lookup table: index it with randrange(len) to draw by weight in O(1)."""
    out: list[str] = []
    for value, weight in pairs:
        out += [value] * weight
    return out


def _uuid(n: int) -> str:
    h = hashlib.md5(f"workflow-{n}".encode()).hexdigest()
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-a{h[17:20]}-{h[20:32]}"


# -- what clients submit (client form; normalised once below) -----------------------------------

# nf-core/rnaseq-like processes: (process path, image, cpus, ram, extra inputs, output globs)
NF_PROCESSES = (
    (
        "NFCORE_RNASEQ:RNASEQ:FASTQ_QC_TRIM_FILTER_SETSTRANDEDNESS:FASTQ_FASTQC_UMITOOLS_TRIMGALORE:"
        "FASTQC",
        "quay.io/biocontainers/fastqc:0.12.1--hdfd78af_0",
        6,
        36.0,
        ("@S@_1.fastq.gz", "@S@_2.fastq.gz"),
        ("*.html", "*.zip"),
    ),
    (
        "NFCORE_RNASEQ:RNASEQ:FASTQ_QC_TRIM_FILTER_SETSTRANDEDNESS:FASTQ_FASTQC_UMITOOLS_TRIMGALORE:"
        "TRIMGALORE",
        "quay.io/biocontainers/trim-galore:0.6.7--hdfd78af_0",
        12,
        72.0,
        ("@S@_1.fastq.gz", "@S@_2.fastq.gz"),
        ("*{3prime,5prime,trimmed,val}*.fq.gz", "*report.txt"),
    ),
    (
        "NFCORE_RNASEQ:RNASEQ:ALIGN_STAR:STAR_ALIGN",
        "quay.io/biocontainers/mulled-v2-1fa26d1ce03c295fe2fdcf85831a92fbcbd7e8c2:"
        "1df389393721fc66f3fd8778ad938ac711951107-0",
        12,
        72.0,
        ("@S@_1_val_1.fq.gz", "@S@_2_val_2.fq.gz", "star/", "genes.gtf"),
        ("*Aligned*.bam", "*Log.final.out", "*SJ.out.tab"),
    ),
    (
        "NFCORE_RNASEQ:RNASEQ:QUANTIFY_SALMON:SALMON_QUANT",
        "quay.io/biocontainers/salmon:1.10.1--h7e5ed60_0",
        6,
        36.0,
        ("@S@.Aligned.toTranscriptome.out.bam", "genome.transcripts.fa", "genes.gtf"),
        ("@S@/", "*info.json"),
    ),
    (
        "NFCORE_RNASEQ:RNASEQ:BAM_SORT_STATS_SAMTOOLS:SAMTOOLS_SORT",
        "quay.io/biocontainers/samtools:1.17--h00cdaf9_0",
        6,
        36.0,
        ("@S@.Aligned.out.bam",),
        ("*.bam",),
    ),
)


def _nextflow(process: tuple[Any, ...]) -> dict[str, Any]:
    name, image, cpus, ram, inputs, globs = process
    work = "/home/@U@/projects/rnaseq/work/@H2@/@H30@"
    doc: dict[str, Any] = {
        "name": f"{name} (@S@)",
        "inputs": [
            {"url": f"{work}/.command.sh", "path": "/work/.command.sh", "type": "FILE"},
            {"url": f"{work}/.command.run", "path": "/work/.command.run", "type": "FILE"},
        ]
        + [
            {
                "url": f"/home/@U@/projects/rnaseq/data/{f}",
                "path": f"/work/{f}",
                "type": "DIRECTORY" if f.endswith("/") else "FILE",
            }
            for f in inputs
        ],
        "outputs": [
            {"url": f"{work}/{f}", "path": f"/work/{f}"}
            for f in (".command.out", ".command.err", ".exitcode")
        ]
        + [
            {"url": work, "path": f"/work/{g}", "path_prefix": "/work", "type": "FILE"}
            for g in globs
        ],
        "resources": {
            "cpu_cores": cpus,
            "ram_gb": ram,
            "disk_gb": 50.0,
            "backend_parameters_strict": False,
        },
        "executors": [
            {
                "image": image,
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
    return doc


CROMWELL_CALLS = (
    ("germline.BwaMem", "us.gcr.io/broad-gotc-prod/samtools-bwa:1.0.0-0.7.17-1661351120", 16, 14.0),
    ("germline.MarkDuplicates", "us.gcr.io/broad-gotc-prod/picard-cloud:2.26.10", 2, 7.5),
    ("germline.BaseRecalibrator", "us.gcr.io/broad-gatk/gatk:4.5.0.0", 2, 6.0),
    ("germline.HaplotypeCaller", "us.gcr.io/broad-gatk/gatk:4.5.0.0", 2, 6.5),
)


def _cromwell(call: tuple[Any, ...]) -> dict[str, Any]:
    name, image, cpus, ram = call
    short = name.split(".")[1]
    root = f"/cromwell-executions/germline/@WF@/call-{short}/shard-@N@"
    host = "/data" + root
    return {
        "name": name,
        "description": f"@WF@:BackendJobDescriptorKey_CommandCallNode_{name}:@N@:1",
        "inputs": [
            {
                "name": f"{name}.input_bam.0",
                "url": "/data/inputs/@S@.unmapped.bam",
                "path": f"{root}/inputs/data/inputs/@S@.unmapped.bam",
                "type": "FILE",
            },
            {
                "name": f"{name}.ref_fasta.0",
                "url": "/data/references/Homo_sapiens_assembly38.fasta",
                "path": f"{root}/inputs/data/references/Homo_sapiens_assembly38.fasta",
                "type": "FILE",
            },
            {
                "name": "commandScript",
                "url": f"{host}/execution/script",
                "path": f"{root}/execution/script",
                "type": "FILE",
            },
        ],
        "outputs": [
            {
                "name": n,
                "url": f"{host}/execution/{f}",
                "path": f"{root}/execution/{f}",
                "type": "FILE",
            }
            for n, f in (
                ("rc", "rc"),
                ("stdout", "stdout"),
                ("stderr", "stderr"),
                (f"{name}.output.0", "@S@.out.bam"),
            )
        ],
        "resources": {
            "cpu_cores": cpus,
            "ram_gb": ram,
            "disk_gb": 100.0,
            "preemptible": True,
            "backend_parameters": {"internal_path_prefix": f"{host}/tes_task"},
        },
        "executors": [
            {
                "image": image,
                "command": ["/bin/bash", f"{root}/execution/script"],
                "stdout": f"{root}/execution/stdout",
                "stderr": f"{root}/execution/stderr",
            }
        ],
        "tags": {"workflow_id": "@WF@", "root_workflow_id": "@RWF@", "parent_workflow_id": None},
    }


SNAKEMAKE_SCRIPT = (
    '#!/bin/sh\n# properties = {"type": "single", "rule": "bwa_map", "local": false, '
    '"input": ["data/genome.fa", "data/samples/@S@.fastq"], "output": '
    '["mapped_reads/@S@.bam"], "wildcards": {"sample": "@S@"}, "params": {}, "log": [], '
    '"threads": 8, "resources": {"mem_mb": 8000, "disk_mb": 10000}, "jobid": @N@, '
    '"cluster": {}}\ncd /workdir && python -m snakemake --snakefile Snakefile '
    "--target-jobs 'bwa_map:sample=@S@' --allowed-rules bwa_map --cores all --attempt 1 "
    "--force-use-threads --wait-for-files data/genome.fa data/samples/@S@.fastq --force "
    "--target-files-omit-workdir-adjustment --keep-storage-local-copies --max-inputsize-mb 0 "
    "--rerun-triggers mtime params software-env code input --conda-frontend mamba "
    "--shared-fs-usage none --wrapper-prefix https://github.com/snakemake/snakemake-wrappers/"
    "raw/ --latency-wait 5 --scheduler greedy --local-storage-prefix .snakemake/storage "
    "--default-resources base64//dG1wZGlyPXN5c3RlbV90bXBkaXI= --mode remote\n"
)


def _snakemake() -> dict[str, Any]:
    return {
        "name": "snakejob.bwa_map.@N@.sh",
        "inputs": [
            {"url": "/home/@U@/smk/data/genome.fa", "path": "/workdir/data/genome.fa"},
            {
                "url": "/home/@U@/smk/data/samples/@S@.fastq",
                "path": "/workdir/data/samples/@S@.fastq",
            },
            {"content": SNAKEMAKE_SCRIPT, "path": "/workdir/run_snakemake.sh"},
        ],
        "outputs": [
            {"url": "/home/@U@/smk/mapped_reads/@S@.bam", "path": "/workdir/mapped_reads/@S@.bam"}
        ],
        "resources": {"cpu_cores": 8, "ram_gb": 8.0, "disk_gb": 10.0},
        "executors": [
            {
                "image": "snakemake/snakemake:v8.20.5",
                "command": ["/bin/sh", "/workdir/run_snakemake.sh"],
                "workdir": "/workdir",
            }
        ],
    }


@dataclass(frozen=True)
class Template:
    """One client's task document with @X@ placeholders, as sent and as the server stores it."""

    client: str
    raw: str  # what the client POSTs (JSON, placeholders unfilled)
    stored: str  # parse_task's normalised document (JSON, placeholders unfilled)
    name: str | None
    initial_logs: str  # the TaskLogs a task starts with (JSON)
    outputs: tuple[tuple[str, str], ...]  # (url, path) of each declared output, as stored
    tags: tuple[tuple[str, str], ...]


def _template(client: str, doc: dict[str, Any]) -> Template:
    parsed = parse_task(doc, TaskLimits(), BackendParameters())
    stored = parsed.task
    return Template(
        client=client,
        raw=json.dumps(doc, separators=(",", ":")),
        stored=json.dumps(stored, separators=(",", ":")),
        name=stored.get("name"),
        initial_logs=json.dumps([initial_task_log(parsed.model)], separators=(",", ":")),
        outputs=tuple((o["url"], o["path"]) for o in stored.get("outputs", [])),
        tags=tuple(stored.get("tags", {}).items()),
    )


TEMPLATES: dict[str, list[Template]] = {
    "nextflow": [_template("nextflow", _nextflow(p)) for p in NF_PROCESSES],
    "cromwell": [_template("cromwell", _cromwell(c)) for c in CROMWELL_CALLS],
    "snakemake": [_template("snakemake", _snakemake())],
}
CLIENT_MIX = (("nextflow", 55), ("cromwell", 35), ("snakemake", 10))

# Executor output tails as the agent keeps them (a few hundred bytes to a few KiB).
_TOOL_LINES = (
    "Started analysis of @S@_1.fastq.gz",
    "Approx {p}% complete for @S@_1.fastq.gz",
    "Analysis complete for @S@_1.fastq.gz",
    "{t} INFO  MarkDuplicates - Read {n} records. Last read position: chr1:{n}",
    "{t} INFO  ProgressMeter - chr1:{n}  {p}.2  {n}  {p}.0",
    "[M::mem_process_seqs] Processed {n} reads in {p}.245 CPU sec, {p}.112 real sec",
    "{t} ..... started mapping",
    "{t} ..... finished mapping",
    "[bam_sort_core] merging from {p} files and 6 in-memory blocks...",
    "[2026-10-02 10:11:12.345] [jointLog] [info] Computed {n} rich equivalence classes",
)
_OOM = (
    "java.lang.OutOfMemoryError: Java heap space\n\tat htsjdk.samtools.BAMRecordCodec.decode"
    "(BAMRecordCodec.java:282)\n"
)


def _tail(rng: random.Random, lines: int) -> str:
    out = []
    for _ in range(lines):
        line = _TOOL_LINES[rng.randrange(len(_TOOL_LINES))]
        out.append(
            line.replace("{p}", str(rng.randrange(100)))
            .replace("{n}", str(rng.randrange(10**8)))
            .replace("{t}", "Oct 02 10:11:12")
        )
    return "\n".join(out) + "\n"


def _fill(text: str, subs: dict[str, str]) -> str:
    for key, value in subs.items():
        if key in text:
            text = text.replace(key, value)
    return text


@dataclass
class Rows:
    tasks: list[tuple[Any, ...]] = field(default_factory=list)
    tags: list[tuple[Any, ...]] = field(default_factory=list)
    instances: list[tuple[Any, ...]] = field(default_factory=list)
    attempts: list[tuple[Any, ...]] = field(default_factory=list)
    events: list[tuple[Any, ...]] = field(default_factory=list)


class TaskFactory:
    """Deterministic rows: the same (seed, first_seq) always gives the same batch."""

    def __init__(self, seed: int = 20261122):
        self.seed = seed
        self.states = _table(STATE_MIX)
        self.users = _table(USERS)
        self.clients = _table(CLIENT_MIX)
        self.tails = [_tail(random.Random(seed + i), 4 + i % 30) for i in range(64)]

    def batch(self, first_seq: int, count: int) -> Rows:
        """Rows for tasks first_seq .. first_seq + count - 1."""
        rng = random.Random(self.seed * 1_000_003 + first_seq)
        rows = Rows()
        instance: tuple[str, str, float, str] = ("", "", 0.0, "")
        for seq in range(first_seq, first_seq + count):
            if (seq - first_seq) % TASKS_PER_INSTANCE == 0:  # the next instance of the fleet
                instance = self._instance(rng, seq, rows)
            self._task(rng, seq, instance, rows)
        return rows

    def _instance(self, rng: random.Random, seq: int, rows: Rows) -> tuple[str, str, float, str]:
        itype, price = INSTANCE_TYPES[rng.randrange(len(INSTANCE_TYPES))]
        inst_id = f"i-{seq:017x}"
        zone = ZONES[rng.randrange(len(ZONES))]
        created = T0 + seq * SPACING
        rows.instances.append(
            (
                inst_id,
                "aws",
                itype,
                "spot",
                zone,
                "terminated",
                price,
                hashlib.sha256(inst_id.encode()).hexdigest(),
                rfc3339(created - 60),
                rfc3339(created + 6 * 3600),
                rfc3339(created + 6 * 3600),
                '{"ami":"ami-0c7217cdde317cfec","capsule_runtime":"0.1.0"}',
            )
        )
        return inst_id, itype, price, zone

    def _task(
        self, rng: random.Random, seq: int, instance: tuple[str, str, float, str], rows: Rows
    ) -> None:
        created = T0 + seq * SPACING
        task_id = make_id(int(created * 1000), rng.getrandbits(80))
        client = self.clients[rng.randrange(len(self.clients))]
        tmpls = TEMPLATES[client]
        tmpl = tmpls[rng.randrange(len(tmpls))]
        user = self.users[rng.randrange(len(self.users))]
        owner = CROMWELL_OWNER if client == "cromwell" else user
        sample = f"SAMPLE_{rng.randrange(5000):04d}"
        wf = (seq // 2000) * 6 + rng.randrange(6)  # ~6 Cromwell workflows in flight
        h = f"{rng.getrandbits(128):032x}"
        subs = {
            "@U@": user,
            "@S@": sample,
            "@H2@": h[:2],
            "@H30@": h[2:],
            "@WF@": _uuid(wf),
            "@RWF@": _uuid(wf - wf % 3),
            "@N@": str(seq % 997),
        }
        spec = _fill(tmpl.stored, subs)
        state = self.states[rng.randrange(len(self.states))]
        events: list[tuple[Any, ...]] = []

        def event(
            when: float,
            kind: str,
            src: str | None = None,
            dst: str | None = None,
            phase: str | None = None,
            message: str | None = None,
            data: str | None = None,
            attempt: str | None = None,
        ) -> None:
            inst = instance[0] if attempt else None
            events.append(
                (task_id, attempt, inst, rfc3339(when), kind, src, dst, phase, message, data)
            )

        event(created, "created", dst="QUEUED")
        version = 0
        updated = created
        logs = tmpl.initial_logs
        if state == "CANCELED":
            updated = created + 30 + rng.random() * 600
            event(updated, "state", "QUEUED", "CANCELED", message=f"cancelled by {owner}")
            logs = '[{"logs":[],"outputs":[]}]'
            version = 1
        elif state != "QUEUED":
            version, updated, logs = self._run(
                rng, seq, task_id, state, tmpl, subs, instance, event, rows
            )
        rows.tasks.append(
            (
                seq,
                task_id,
                owner,
                _fill(tmpl.name, subs) if tmpl.name else None,
                state,
                rfc3339(created),
                rfc3339(updated),
                spec,
                logs,
                version,
            )
        )
        for key, value in tmpl.tags:
            rows.tags.append((seq, key, _fill(value, subs)))
        rows.events += events

    def _run(
        self,
        rng: random.Random,
        seq: int,
        task_id: str,
        state: str,
        tmpl: Template,
        subs: dict[str, str],
        instance: tuple[str, str, float, str],
        event: Any,
        rows: Rows,
    ) -> tuple[int, float, str]:
        """A task that was placed: its attempt(s), events and TaskLog. Returns (version,
        updated time, logs JSON)."""
        inst_id, itype, price, zone = instance
        created = T0 + seq * SPACING
        t_start = created + 5 + rng.random() * 120
        t_exec = t_start + 20 + rng.random() * 40
        t_end = t_exec + 30 + rng.random() * 7200
        attempt = make_id(int(t_start * 1000), rng.getrandbits(80))
        migrated = state in ("COMPLETE", "EXECUTOR_ERROR") and rng.random() < 0.04
        meta = {
            "instance_id": inst_id,
            "instance_type": itype,
            "market": "spot",
            "zone": zone,
            "attempts": "2" if migrated else "1",
            "vm_price_per_hour_usd": f"{price:.6f}",
        }
        tl: dict[str, Any] = {"logs": [{"exit_code": -1}], "outputs": []}
        tl.update(start_time=rfc3339(t_start), metadata=meta)
        where = f"placed on {inst_id} ({itype} spot {zone})"
        event(t_start, "state", "QUEUED", "INITIALIZING", message=where, attempt=attempt)
        event(
            t_start + 1,
            "phase",
            phase="STARTING",
            message="PROVISIONING → STARTING",
            attempt=attempt,
        )
        version, updated, phase, end_time = 1, t_start, "STARTING", None
        if state != "INITIALIZING":
            event(t_exec, "phase", phase="RUNNING", message="STARTING → RUNNING", attempt=attempt)
            event(t_exec, "state", "INITIALIZING", "RUNNING", attempt=attempt)
            version, updated, phase = 2, t_exec, "RUNNING"
            tl["logs"] = [{"start_time": rfc3339(t_exec), "exit_code": -1}]
        if state == "SYSTEM_ERROR":
            tl["system_logs"] = [
                f"instance {inst_id} lost: no heartbeat for 60 s; no capsule to restore from"
            ]
            phase, updated = "LOST", t_end
        elif state in ("COMPLETE", "EXECUTOR_ERROR"):
            code = 0 if state == "COMPLETE" else rng.choice((1, 2, 137, 143))
            sample = subs["@S@"]
            tl["logs"][0].update(
                end_time=rfc3339(t_end),
                exit_code=code,
                stdout=self.tails[rng.randrange(len(self.tails))].replace("@S@", sample),
                stderr="" if code == 0 else _OOM,
            )
            outputs = []
            for url, path in tmpl.outputs:
                for k in range(2 if "*" in path else 1):
                    real = _GLOB.sub(f"{sample}_{k}", path)
                    outputs.append(
                        {
                            "url": _fill(url + real[5:] if "*" in path else url, subs),
                            "path": _fill(real, subs),
                            "size_bytes": str(rng.randrange(2, 4 * 10**9)),
                        }
                    )
            tl["outputs"] = outputs
            phase, updated = "DONE", t_end + 15
            if migrated:
                event(
                    (t_exec + t_end) / 2,
                    "phase",
                    phase="CHECKPOINTING",
                    message="spot interruption notice: checkpointing",
                    data='{"reason":"reclaim"}',
                    attempt=attempt,
                )
        if phase in ("DONE", "LOST"):
            end_time = rfc3339(updated)
            tl["end_time"] = end_time
            event(updated, "phase", phase=phase, message=f"RUNNING → {phase}", attempt=attempt)
            event(updated, "state", "RUNNING", state, attempt=attempt)
            version = 3
        rows.attempts.append(
            (
                attempt,
                task_id,
                1,
                inst_id,
                phase,
                "first",
                "spot",
                itype,
                zone,
                price,
                rfc3339(t_start),
                end_time,
                None,
            )
        )
        if migrated:
            rows.attempts.append(
                (
                    make_id(int(t_end * 1000), rng.getrandbits(80)),
                    task_id,
                    2,
                    inst_id,
                    "DONE",
                    "reclaim",
                    "spot",
                    itype,
                    zone,
                    price,
                    rfc3339((t_exec + t_end) / 2 + 90),
                    end_time,
                    f'{{"capsule_bytes":{rng.randrange(10**8, 10**10)}}}',
                )
            )
        return version, updated, json.dumps([tl], separators=(",", ":"), ensure_ascii=False)


# Where the client bodies' local paths lie (Nextflow and Snakemake work dirs under /home/<user>,
# Cromwell's /data root): the servers under test allow them, or every create would be a 400.
CLIENT_ALLOWED_DIRS = ["/home", "/data"]
SERVER_CONFIG: dict[str, Any] = {"storage": {"allowed_dirs": CLIENT_ALLOWED_DIRS}}


def client_bodies(count: int, seed: int = 7) -> list[str]:
    """`count` POST bodies in the client mix, exactly as the clients send them (Cromwell's null
    tag included), each with its own work dir and sample."""
    rng = random.Random(seed)
    clients = _table(CLIENT_MIX)
    users = _table(USERS)
    out = []
    for n in range(count):
        tmpls = TEMPLATES[clients[rng.randrange(len(clients))]]
        body = tmpls[rng.randrange(len(tmpls))].raw
        h = f"{rng.getrandbits(128):032x}"
        wf = 10**9 + n // 50
        for key, value in {
            "@U@": users[rng.randrange(len(users))],
            "@S@": f"SAMPLE_{rng.randrange(5000):04d}",
            "@H2@": h[:2],
            "@H30@": h[2:],
            "@WF@": _uuid(wf),
            "@RWF@": _uuid(wf),
            "@N@": str(n % 997),
        }.items():
            body = body.replace(key, value)
        out.append(body)
    return out
