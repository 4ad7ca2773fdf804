"""`tescape nextflow …` and `tescape cromwell …`: the configuration that points a workflow manager
at a tescape server, and a way to run the real tool with it when it is installed."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from cromwell_backend.config import CromwellSettings
from cromwell_backend.config import render_config as render_cromwell
from nextflow_plugin_shim.config import (
    DEFAULT_CONTAINER,
    DEFAULT_POLL_INTERVAL,
    DEFAULT_QUEUE_SIZE,
    NextflowSettings,
)
from nextflow_plugin_shim.config import render_config as render_nextflow

_server = click.option(
    "--server",
    envvar="TESCAPE_SERVER",
    default="http://127.0.0.1:8000",
    show_default=True,
    help="tescape URL (or TESCAPE_SERVER)",
)
_output = click.option(
    "-o", "--output", type=click.Path(dir_okay=False), help="write to this file, not stdout"
)


def _emit(text: str, output: str | None) -> None:
    if output:
        Path(output).write_text(text)
        click.echo(f"wrote {output}", err=True)
    else:
        click.echo(text, nl=False)


# -- Nextflow ------------------------------------------------------------------------------------


def _nextflow_options(fn: Any) -> Any:
    options = [
        _server,
        click.option(
            "--work-dir", help="Nextflow work dir: an absolute path or s3://bucket/prefix"
        ),
        click.option(
            "--auth",
            type=click.Choice(["none", "basic", "bearer"]),
            default="none",
            show_default=True,
            help="how nf-ga4gh authenticates (the server's auth.mode)",
        ),
        click.option("--user", help="basic: the user name"),
        click.option(
            "--password-env",
            default="TESCAPE_PASSWORD",
            show_default=True,
            help="basic: the environment variable Nextflow reads the password from",
        ),
        click.option(
            "--token-env",
            default="TESCAPE_TOKEN",
            show_default=True,
            help="bearer: the environment variable Nextflow reads the token from",
        ),
        click.option("--queue-size", type=int, default=DEFAULT_QUEUE_SIZE, show_default=True),
        click.option("--poll-interval", default=DEFAULT_POLL_INTERVAL, show_default=True),
        click.option(
            "--container",
            default=DEFAULT_CONTAINER,
            show_default=True,
            help="default process container ('' for none)",
        ),
        click.option("--plugin-version", help="pin nf-ga4gh, e.g. 1.4.2"),
        click.option("--s3-endpoint", help="S3-compatible endpoint for an s3:// work dir"),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def _nextflow_settings(**kw: Any) -> NextflowSettings:
    work_dir = kw["work_dir"]
    if work_dir and not work_dir.startswith("s3://"):
        work_dir = str(Path(work_dir).resolve())
    try:
        return NextflowSettings(
            server=kw["server"],
            work_dir=work_dir,
            auth=kw["auth"],
            user=kw["user"],
            password_env=kw["password_env"],
            token_env=kw["token_env"],
            queue_size=kw["queue_size"],
            poll_interval=kw["poll_interval"],
            container=kw["container"] or None,
            plugin_version=kw["plugin_version"],
            s3_endpoint=kw["s3_endpoint"],
        )
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None


@click.group()
def nextflow() -> None:
    """Nextflow (nf-ga4gh) on this server."""


@nextflow.command("config")
@_nextflow_options
@_output
def nextflow_config(output: str | None, **kw: Any) -> None:
    """Print a nextflow.config for nf-ga4gh (use: nextflow -c FILE run …)."""
    _emit(render_nextflow(_nextflow_settings(**kw)), output)


@nextflow.command(
    "run",
    context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False},
)
@_nextflow_options
@click.option("--nextflow", "executable", help="the nextflow executable (default: on PATH)")
@click.argument("args", nargs=-1, type=click.UNPROCESSED, required=True)
def nextflow_run(executable: str | None, args: tuple[str, ...], **kw: Any) -> None:
    """Run `nextflow run ARGS…` with the tescape config, e.g.
    `tescape nextflow run --work-dir /data/work nf-core/demo -profile test`."""
    from nextflow_plugin_shim.launcher import NextflowNotFound, run_nextflow

    settings = _nextflow_settings(**kw)
    try:
        code = run_nextflow(settings, ["run", *args], executable)
    except NextflowNotFound as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(127)
    sys.exit(code)


# -- Cromwell ------------------------------------------------------------------------------------


def _cromwell_options(fn: Any) -> Any:
    options = [
        _server,
        click.option(
            "--root",
            default="cromwell-executions",
            show_default=True,
            help="execution root on the Cromwell host (a path, or s3://bucket/prefix)",
        ),
        click.option("--docker-root", default="/cromwell-executions", show_default=True),
        click.option("--concurrency", type=int, default=100, show_default=True),
        click.option("--poll-min", default="5 seconds", show_default=True),
        click.option("--poll-max", default="60 seconds", show_default=True),
        click.option("--token-env", help="bearer: the environment variable holding the token"),
        click.option("--docker", default="ubuntu:22.04", show_default=True, help="default image"),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def _cromwell_settings(**kw: Any) -> CromwellSettings:
    try:
        return CromwellSettings(
            server=kw["server"],
            root=kw["root"],
            docker_root=kw["docker_root"],
            concurrent_job_limit=kw["concurrency"],
            poll_min=kw["poll_min"],
            poll_max=kw["poll_max"],
            token_env=kw["token_env"],
            default_docker=kw["docker"],
        )
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None


@click.group()
def cromwell() -> None:
    """Cromwell (its TES backend) on this server."""


@cromwell.command("config")
@_cromwell_options
@_output
def cromwell_config(output: str | None, **kw: Any) -> None:
    """Print a Cromwell config (use: java -Dconfig.file=FILE -jar cromwell.jar run …)."""
    _emit(render_cromwell(_cromwell_settings(**kw)), output)


@cromwell.command(
    "run",
    context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False},
)
@_cromwell_options
@click.option("--jar", help="cromwell-<version>.jar (default: $CROMWELL_JAR)")
@click.option("--java", help="the java executable (default: on PATH)")
@click.argument("args", nargs=-1, type=click.UNPROCESSED, required=True)
def cromwell_run(jar: str | None, java: str | None, args: tuple[str, ...], **kw: Any) -> None:
    """Run `cromwell run ARGS…` with the tescape config, e.g.
    `tescape cromwell run --root /data/cromwell hello.wdl -i inputs.json`."""
    from cromwell_backend.launcher import CromwellNotFound, run_cromwell

    settings = _cromwell_settings(**kw)
    try:
        code = run_cromwell(settings, list(args), jar, java)
    except CromwellNotFound as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(127)
    sys.exit(code)


def register(group: click.Group) -> None:
    """Add these command groups to the `tescape` command."""
    group.add_command(nextflow)
    group.add_command(cromwell)
