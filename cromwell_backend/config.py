"""The Cromwell configuration that points its TES backend at tescape (`tescape cromwell config`).

    text = render_config(CromwellSettings(server="http://127.0.0.1:8000", root="/data/cromwell"))

Keys of Cromwell's TES backend (TesConfiguration, Cromwell 87 to 92):
  endpoint                     the task collection: {server}/v1/tasks
  root / dockerRoot            execution directories on the Cromwell host / inside containers;
                               a local `root` needs tescape on the same machine (or a shared file
                               system) with `root` inside its `storage.allowed_dirs`
  concurrent-job-limit         jobs in flight at once
  poll-backoff                 min, max, multiplier, randomization-factor of the status polls
  execute-or-recover-backoff   the same for create/reconnect
  use_tes_11_preview_backend_parameters
                               send runtime attributes as TES 1.1 backend_parameters
  bearer-token                 sent as `Authorization: Bearer …` (tescape's bearer mode); Cromwell
                               has no HTTP Basic for TES
  filesystems                  local (and http, so `http(s)://` inputs pass straight to TES)

tescape returns `logs[0].start_time` and `logs[0].metadata.vm_price_per_hour_usd` as soon as a
task runs, so Cromwell stops fetching the FULL view on every poll after the first ones.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

DEFAULT_SERVER = "http://127.0.0.1:8000"
DEFAULT_DOCKER_ROOT = "/cromwell-executions"


@dataclass(frozen=True)
class CromwellSettings:
    server: str = DEFAULT_SERVER
    root: str = "cromwell-executions"
    docker_root: str = DEFAULT_DOCKER_ROOT
    concurrent_job_limit: int = 100
    poll_min: str = "5 seconds"
    poll_max: str = "60 seconds"
    poll_multiplier: float = 1.1
    token_env: str | None = None  # bearer: the environment variable holding the token
    default_docker: str = "ubuntu:22.04"
    preemptible: bool = False
    backend_name: str = "TES"

    def __post_init__(self) -> None:
        if self.concurrent_job_limit < 1:
            raise ValueError("concurrent job limit must be at least 1")
        if not self.docker_root.startswith("/"):
            raise ValueError("dockerRoot must be an absolute path")

    @property
    def endpoint(self) -> str:
        return self.server.rstrip("/") + "/v1/tasks"

    @property
    def is_s3(self) -> bool:
        return self.root.startswith("s3://")


def _s(value: str) -> str:
    """A HOCON quoted string (JSON string syntax is valid HOCON)."""
    return json.dumps(value)


def render_config(s: CromwellSettings) -> str:
    root = s.root if s.is_s3 else str(Path(s.root).resolve())
    lines = [
        "# Cromwell on tescape through its TES backend (written by `tescape cromwell config`).",
        "# Use: java -Dconfig.file=THIS_FILE -jar cromwell.jar run workflow.wdl -i inputs.json",
        'include required(classpath("application"))',
        "",
        "backend {",
        f"  default = {_s(s.backend_name)}",
        "  providers {",
        f"    {s.backend_name} {{",
        '      actor-factory = "cromwell.backend.impl.tes.TesBackendLifecycleActorFactory"',
        "      config {",
        f"        endpoint = {_s(s.endpoint)}",
        f"        root = {_s(root)}",
        f"        dockerRoot = {_s(s.docker_root)}",
        f"        concurrent-job-limit = {s.concurrent_job_limit}",
        "        use_tes_11_preview_backend_parameters = true",
        "        poll-backoff {",
        f"          min = {_s(s.poll_min)}",
        f"          max = {_s(s.poll_max)}",
        f"          multiplier = {s.poll_multiplier}",
        "          randomization-factor = 0.5",
        "        }",
        "        execute-or-recover-backoff {",
        '          min = "3 seconds"',
        '          max = "30 seconds"',
        "          multiplier = 1.1",
        "          randomization-factor = 0.5",
        "        }",
    ]
    if s.token_env:
        lines.append(f"        bearer-token = ${{?{s.token_env}}}")
    lines += ["        filesystems {"]
    if s.is_s3:
        lines += ['          s3 { auth = "default" }']
    else:
        lines += ["          local { }"]
    lines += [
        "          http { }",
        "        }",
        "        default-runtime-attributes {",
        "          cpu: 1",
        '          memory: "2 GB"',
        '          disk: "10 GB"',
        f"          preemptible: {'true' if s.preemptible else 'false'}",
        "          failOnStderr: false",
        "          continueOnReturnCode: 0",
        f"          docker: {_s(s.default_docker)}",
        "        }",
        "      }",
        "    }",
        "  }",
        "}",
        "",
        "engine {",
        "  filesystems {",
        "    local { enabled: true }",
        "    http { enabled: true }",
        "  }",
        "}",
    ]
    if s.is_s3:
        lines += [
            "",
            "# The s3:// root: Cromwell's AWS filesystem reads credentials the default AWS way",
            "# (environment, ~/.aws); tescape's storage.s3 must reach the same bucket.",
            "aws {",
            '  application-name = "cromwell"',
            '  auths = [{ name = "default", scheme = "default" }]',
            '  region = "us-east-1"',
            "  region = ${?AWS_REGION}",
            "}",
        ]
    return "\n".join(lines) + "\n"
