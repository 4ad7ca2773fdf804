"""The Nextflow configuration that points nf-ga4gh at tescape (`tescape nextflow config`).

    text = render_config(NextflowSettings(server="http://127.0.0.1:8000", work_dir="/data/work"))

nf-ga4gh reads `tes.endpoint` (it calls `{endpoint}/v1/tasks…`, which tescape serves), and for
authentication `tes.basicUsername`/`tes.basicPassword` (HTTP Basic), `tes.oauthToken` (sent as
`Authorization: Bearer …`, tescape's bearer mode) or `tes.apiKeyParamName`/`tes.apiKey`. Secrets
are never written into the file: the config reads them from environment variables when Nextflow
starts (`System.getenv(...)`).

Work directories: a local path needs tescape on the same machine (or a shared file system) and the
path inside its `storage.allowed_dirs`; an `s3://` work dir needs the same bucket in tescape's
`storage.s3` and Nextflow's own `aws` settings (rendered here when an S3 endpoint is given).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

AuthMode = Literal["none", "basic", "bearer"]

DEFAULT_SERVER = "http://127.0.0.1:8000"
# tescape answers a task GET in about a millisecond and its scheduler is woken by every create, so
# Nextflow can keep many tasks in flight and poll often without loading it.
DEFAULT_QUEUE_SIZE = 100
DEFAULT_POLL_INTERVAL = "2 sec"
DEFAULT_CONTAINER = "ubuntu:22.04"


@dataclass(frozen=True)
class NextflowSettings:
    server: str = DEFAULT_SERVER
    work_dir: str | None = None
    auth: AuthMode = "none"
    user: str | None = None  # basic: the user name (the password comes from password_env)
    password_env: str = "TESCAPE_PASSWORD"
    token_env: str = "TESCAPE_TOKEN"  # bearer: the variable holding the token
    queue_size: int = DEFAULT_QUEUE_SIZE
    poll_interval: str = DEFAULT_POLL_INTERVAL
    container: str | None = DEFAULT_CONTAINER  # nf-ga4gh refuses a process without a container
    plugin_version: str | None = None  # e.g. "1.4.2"; None: the newest Nextflow can find
    s3_endpoint: str | None = None  # an S3-compatible endpoint for an s3:// work dir
    s3_path_style: bool = True

    def __post_init__(self) -> None:
        if self.auth == "basic" and not self.user:
            raise ValueError("basic authentication needs a user name")
        if self.queue_size < 1:
            raise ValueError("queue size must be at least 1")
        if self.work_dir is not None and not (
            self.work_dir.startswith("s3://") or Path(self.work_dir).is_absolute()
        ):
            raise ValueError(f"work dir must be an absolute path or s3:// URL: {self.work_dir}")


def _q(value: str) -> str:
    """A Groovy single-quoted string literal."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _env(name: str) -> str:
    return f"System.getenv({_q(name)})"


def render_config(s: NextflowSettings) -> str:
    """The text of a nextflow.config for `nextflow -c FILE run …`."""
    plugin = "nf-ga4gh" + (f"@{s.plugin_version}" if s.plugin_version else "")
    lines = [
        "// Nextflow on tescape through nf-ga4gh (written by `tescape nextflow config`).",
        "// Use: nextflow -c THIS_FILE run <pipeline> [-profile …]",
        "",
        "plugins {",
        f"    id {_q(plugin)}",
        "}",
        "",
        "process {",
        "    executor = 'tes'",
    ]
    if s.container:
        lines.append(f"    container = {_q(s.container)}  // a default; processes set their own")
    lines += [
        "}",
        "",
        "tes {",
        f"    endpoint = {_q(s.server.rstrip('/'))}  // nf-ga4gh calls {{endpoint}}/v1/tasks",
    ]
    if s.auth == "basic":
        assert s.user is not None
        lines += [
            f"    basicUsername = {_q(s.user)}",
            f"    basicPassword = {_env(s.password_env)}",
        ]
    elif s.auth == "bearer":
        lines.append(f"    oauthToken = {_env(s.token_env)}  // sent as Authorization: Bearer")
    lines += [
        "}",
        "",
        "executor {",
        f"    queueSize = {s.queue_size}  // tasks in flight at once",
        f"    pollInterval = {_q(s.poll_interval)}  // one GET per task per interval",
        "}",
    ]
    if s.work_dir:
        lines += ["", f"workDir = {_q(s.work_dir)}"]
    if s.work_dir and s.work_dir.startswith("s3://"):
        lines += [
            "",
            "// Nextflow writes .command.* into the s3:// work dir itself; tescape's storage.s3",
            "// must reach the same bucket.",
            "aws {",
            "    accessKey = System.getenv('AWS_ACCESS_KEY_ID')",
            "    secretKey = System.getenv('AWS_SECRET_ACCESS_KEY')",
        ]
        if s.s3_endpoint:
            lines += [
                "    client {",
                f"        endpoint = {_q(s.s3_endpoint)}",
                f"        s3PathStyleAccess = {'true' if s.s3_path_style else 'false'}",
                "    }",
            ]
        lines.append("}")
    return "\n".join(lines) + "\n"
