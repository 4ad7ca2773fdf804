"""`tescape nextflow …` and `tescape cromwell …`: the rendered configurations, the example files in
configs/ (kept equal to what the commands print), and the launchers — with stand-in executables
where the real Nextflow or Cromwell is not installed."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest
from click.testing import CliRunner

from gateway.cli import main

REPO = Path(__file__).resolve().parents[2]

EXAMPLES = {
    "nextflow.config": ["nextflow", "config", "--work-dir", "/data/work"],
    "nextflow-s3.config": [
        "nextflow",
        "config",
        "--server",
        "https://tescape.example.org",
        "--work-dir",
        "s3://my-bucket/work",
        "--s3-endpoint",
        "https://s3.example.org",
        "--auth",
        "bearer",
    ],
    "cromwell.conf": ["cromwell", "config", "--root", "/data/cromwell-executions"],
    "cromwell-bearer.conf": [
        "cromwell",
        "config",
        "--server",
        "https://tescape.example.org",
        "--root",
        "/data/cromwell-executions",
        "--token-env",
        "TESCAPE_TOKEN",
    ],
}


def invoke(*args: str, env: dict[str, str] | None = None) -> str:
    result = CliRunner().invoke(main, list(args), env=env, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def balanced(text: str) -> bool:
    depth = 0
    for ch in text:
        depth += {"{": 1, "}": -1}.get(ch, 0)
        if depth < 0:
            return False
    return depth == 0


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_example_configs_are_what_the_commands_print(name: str) -> None:
    assert (REPO / "configs" / name).read_text() == invoke(*EXAMPLES[name])


def test_nextflow_config_for_a_local_work_dir(tmp_path: Path) -> None:
    text = invoke("nextflow", "config", "--server", "http://h:9000/", "--work-dir", str(tmp_path))
    assert "id 'nf-ga4gh'" in text and "executor = 'tes'" in text
    assert "endpoint = 'http://h:9000'" in text
    assert f"workDir = '{tmp_path}'" in text
    assert "queueSize = 100" in text and "pollInterval = '2 sec'" in text
    assert "aws {" not in text and "basicUsername" not in text and balanced(text)


def test_nextflow_config_auth_reads_secrets_from_the_environment() -> None:
    basic = invoke("nextflow", "config", "--auth", "basic", "--user", "alice")
    assert "basicUsername = 'alice'" in basic
    assert "basicPassword = System.getenv('TESCAPE_PASSWORD')" in basic
    bearer = invoke("nextflow", "config", "--auth", "bearer", "--token-env", "MY_TOKEN")
    assert "oauthToken = System.getenv('MY_TOKEN')" in bearer
    result = CliRunner().invoke(main, ["nextflow", "config", "--auth", "basic"])
    assert result.exit_code == 2 and "user name" in result.output


def test_nextflow_config_for_an_s3_work_dir() -> None:
    text = invoke(
        "nextflow", "config", "--work-dir", "s3://b/w", "--s3-endpoint", "http://127.0.0.1:8333"
    )
    assert "workDir = 's3://b/w'" in text
    assert "endpoint = 'http://127.0.0.1:8333'" in text and "s3PathStyleAccess = true" in text
    assert balanced(text)
    result = CliRunner().invoke(main, ["nextflow", "config", "--work-dir", "relative/dir"])
    assert result.exit_code == 0  # made absolute
    assert str(Path("relative/dir").resolve()) in result.output


def test_cromwell_config(tmp_path: Path) -> None:
    text = invoke("cromwell", "config", "--root", str(tmp_path), "--concurrency", "7")
    assert 'endpoint = "http://127.0.0.1:8000/v1/tasks"' in text
    assert f'root = "{tmp_path}"' in text and 'dockerRoot = "/cromwell-executions"' in text
    assert "concurrent-job-limit = 7" in text
    for key in ("min", "max", "multiplier", "randomization-factor"):
        assert f"          {key} = " in text  # Cromwell's backoff needs all four
    assert "bearer-token" not in text and balanced(text)
    s3 = invoke("cromwell", "config", "--root", "s3://b/cromwell", "--token-env", "TOK")
    assert 'root = "s3://b/cromwell"' in s3 and "bearer-token = ${?TOK}" in s3
    assert 's3 { auth = "default" }' in s3 and balanced(s3)


def fake_tool(path: Path, record: Path) -> Path:
    """An executable that records its argv and, for each config file it is given, the file."""
    path.write_text(
        "#!/bin/bash\n"
        f'printf "%s\\n" "$@" > {shlex.quote(str(record))}\n'
        'for a in "$@"; do case "$a" in -Dconfig.file=*) cat "${a#-Dconfig.file=}";; '
        '*.config) cat "$a";; esac; done >> '
        f"{shlex.quote(str(record))}\n"
        "exit 7\n"
    )
    path.chmod(0o755)
    return path


def test_nextflow_run_passes_the_config_and_the_exit_code(tmp_path: Path) -> None:
    record = tmp_path / "argv"
    nextflow = fake_tool(tmp_path / "nextflow", record)
    result = CliRunner().invoke(
        main,
        [
            *("nextflow", "run", "--nextflow", str(nextflow), "--work-dir", str(tmp_path / "w")),
            *("nf-core/demo", "-profile", "test", "--outdir", "res"),
        ],
    )
    assert result.exit_code == 7, result.output
    lines = record.read_text().splitlines()
    assert lines[0] == "-c" and lines[1].endswith("tescape.config")
    assert lines[2:7] == ["run", "nf-core/demo", "-profile", "test", "--outdir"]
    assert "executor = 'tes'" in record.read_text()


def test_nextflow_run_without_nextflow_says_how_to_get_it(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        main, ["nextflow", "run", "hello"], env={"PATH": str(tmp_path), "NXF_EXECUTABLE": ""}
    )
    assert result.exit_code == 127
    assert "nextflow" in result.output and "install" in result.output


def test_cromwell_run_passes_the_config(tmp_path: Path) -> None:
    record = tmp_path / "argv"
    java = fake_tool(tmp_path / "java", record)
    jar = tmp_path / "cromwell-92.jar"
    jar.write_bytes(b"PK")
    result = CliRunner().invoke(
        main,
        [
            *("cromwell", "run", "--java", str(java), "--jar", str(jar), "--root", str(tmp_path)),
            *("wf.wdl", "-i", "inputs.json"),
        ],
    )
    assert result.exit_code == 7, result.output
    lines = record.read_text().splitlines()
    assert lines[0].startswith("-Dconfig.file=") and lines[1:6] == [
        "-jar",
        str(jar),
        "run",
        "wf.wdl",
        "-i",
    ]
    assert "TesBackendLifecycleActorFactory" in record.read_text()
    missing = CliRunner().invoke(main, ["cromwell", "run", "wf.wdl"], env={"CROMWELL_JAR": ""})
    assert missing.exit_code == 127 and "CROMWELL_JAR" in missing.output
