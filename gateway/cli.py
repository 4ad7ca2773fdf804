"""The `tescape` command line: `serve` starts the gateway; the other commands configure it or talk
to a running one (`--server URL` or `TESCAPE_SERVER`)."""

from __future__ import annotations

import getpass
import json
import logging
import os
import resource
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

import click
import requests
from rich import box
from rich.console import Console
from rich.table import Column, Table
from rich.text import Text

from gateway import __version__
from gateway.agent_wheel import AgentWheelError
from gateway.agent_wheel import load as load_agent_wheel
from gateway.cli_complete import task_ids
from gateway.cli_logs import register as register_log_commands
from gateway.cli_market import register as register_market_commands
from gateway.cli_output import exit_code_for, id_column, print_json, text_column
from gateway.cli_progress import UploadReader, uploading, waiting
from gateway.cli_submit import read_task_file
from gateway.cli_submit import register as register_submit_command
from gateway.cli_workflows import register as register_workflow_commands
from gateway.config import Config, ConfigError, load_config, s3_notes

console = Console()
err_console = Console(stderr=True)

log = logging.getLogger(__name__)


def _overrides(**flags: Any) -> dict[str, Any]:
    """CLI flags → the top config layer (only flags the user actually gave)."""
    out: dict[str, Any] = {}
    mapping = {
        "host": ("server", "host"),
        "port": ("server", "port"),
        "threads": ("server", "threads"),
        "db_url": ("database", "url"),
        "data_dir": ("data_dir",),
        "provider": ("providers", "default"),
    }
    for flag, path in mapping.items():
        value = flags.get(flag)
        if value is None:
            continue
        node = out
        for part in path[:-1]:
            node = node.setdefault(part, {})
        node[path[-1]] = str(Path(value).resolve()) if flag == "data_dir" else value
    return out


def _load(config_file: str | None, **flags: Any) -> Config:
    try:
        return load_config(config_file, _overrides(**flags))
    except ConfigError as exc:
        err_console.print(f"[red]error:[/red] {exc}")
        sys.exit(2)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="tescape")
def main() -> None:
    """tescape: a GA4GH TES 1.1 server that keeps tasks alive on Spot capacity."""


config_option = click.option(
    "--config", "config_file", type=click.Path(exists=True, dir_okay=False), help="YAML config file"
)


@main.command()
@config_option
@click.option("--host", help="address to listen on (default 127.0.0.1)")
@click.option("--port", type=int, help="port to listen on (default 8000; 0 picks a free one)")
@click.option("--threads", type=int, help="worker threads of the WSGI server")
@click.option("--data-dir", type=click.Path(file_okay=False), help="where state lives")
@click.option("--db-url", help="SQLAlchemy URL, e.g. postgresql://user@host/db")
@click.option("--provider", help="where instances come from: local (default), fake or aws")
def serve(config_file: str | None, **flags: Any) -> None:
    """Start the TES server (waitress, a production WSGI server)."""
    from waitress.server import create_server

    from capsule_runtime.protocol.redact import install_log_redaction, remember_secret
    from gateway.app import create_app, start_scheduler
    from gateway.private_state import make_private, private_umask

    cfg = _load(config_file, **flags)
    logging.basicConfig(
        level=cfg.logging.level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("waitress.queue").setLevel(logging.ERROR)
    install_log_redaction()  # passwords, keys and tokens masked in every line (tes/redact.py)
    remember_secret(cfg.storage.s3.secret_access_key)
    private_umask()  # the database, keys, logs and capsules: this user's alone
    for path in make_private(cfg):
        log.info("%s: group and other access removed", path)
    for allowed in cfg.allowed_dirs:
        for denied in cfg.denied_dirs:
            if Path(allowed).is_relative_to(denied):
                log.warning("storage.allowed_dirs %s lies inside %s: never used", allowed, denied)
    for shared in cfg.storage.shared_dirs:
        if str(Path(shared).resolve()) not in cfg.shared_dirs:
            log.warning("storage.shared_dirs %s lies in tescape's own state: never used", shared)
        elif not Path(shared).is_dir():
            log.warning("storage.shared_dirs %s is not a directory (yet)", shared)
    for line in s3_notes(cfg):
        log.warning("%s", line)
    try:
        app = create_app(cfg)
    except AgentWheelError as exc:
        raise click.ClickException(str(exc)) from None
    _raise_open_files_limit(cfg.server.connection_limit)
    try:  # the capsule master key: made at first start, a bad one refused before serving
        app.extensions["tescape"].dispatcher.capsule_encryption()
    except (OSError, ValueError) as exc:
        raise click.ClickException(f"capsules.encryption: {exc}") from None
    server = create_server(
        app,
        host=cfg.server.host,
        port=cfg.server.port,
        threads=cfg.server.threads,
        connection_limit=cfg.server.connection_limit,
        channel_timeout=cfg.server.channel_timeout,
        # bodies past max_request_bytes are refused by the app, except streamed uploads
        max_request_body_size=cfg.server.max_upload_bytes,
        asyncore_use_poll=True,  # select() stops at 1024 descriptors
        backlog=max(1024, cfg.server.connection_limit),
        ident="tescape",
        clear_untrusted_proxy_headers=True,
    )
    port = server.effective_port
    host = cfg.server.host
    url = f"http://{'[' + host + ']' if ':' in host else host}:{port}"
    click.echo(f"tescape {__version__} serving TES at {url}/ga4gh/tes/v1", err=False)
    click.echo(f"  state in {cfg.data_path}, database {cfg.database_url.split('@')[-1]}")
    sys.stdout.flush()
    services = app.extensions["tescape"]
    stopping = threading.Event()

    def _stop_gracefully(signum: int, frame: Any) -> None:
        """SIGTERM/SIGINT: stop the instances first while the API still answers their last
        reports, then leave the server loop."""
        if stopping.is_set():
            return
        stopping.set()
        click.echo("tescape: stopping instances, then the server", err=True)

        def _stop() -> None:
            services.close()
            os.kill(os.getpid(), signal.SIGUSR1)  # wakes the server loop: KeyboardInterrupt

        threading.Thread(target=_stop, name="shutdown", daemon=True).start()

    signal.signal(signal.SIGTERM, _stop_gracefully)
    signal.signal(signal.SIGINT, _stop_gracefully)
    signal.signal(signal.SIGUSR1, _leave_loop)
    try:
        if cfg.scheduler.enabled:
            start_scheduler(services, url)
        server.run()
    except KeyboardInterrupt:
        pass
    finally:
        services.close()  # idempotent; covers an exit that did not come through a signal


def _leave_loop(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def _raise_open_files_limit(connections: int) -> None:
    """Each connection is a descriptor, and the database, logs and uploads need more: raise the
    soft limit towards the hard one when the default (often 1024) would cap the connections."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = connections + 256
    if soft != resource.RLIM_INFINITY and soft < wanted:
        new = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        if new > soft:
            resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
        if new < wanted:
            logging.getLogger(__name__).warning(
                "open files limited to %d: fewer than server.connection_limit %d connections "
                "fit (raise `ulimit -Hn`)",
                new,
                connections,
            )


@main.command(
    context_settings={"ignore_unknown_options": True, "help_option_names": []},
    add_help_option=False,
)
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def agent(args: tuple[str, ...]) -> None:
    """Run the worker agent of one instance (`tescape agent --help`). Providers start it."""
    from capsule_runtime.agent import main as agent_main

    sys.exit(agent_main(list(args)))


@main.command()
@click.option("--json", "as_json", is_flag=True, help="print the findings as JSON")
def doctor(as_json: bool) -> None:
    """Check this host for running and migrating tasks (kernel, CRIU, podman, cgroups, limits)."""
    from capsule_runtime import doctor as preflight

    findings = preflight.run_checks()
    overall = preflight.overall_status(findings)
    if as_json:
        click.echo(json.dumps(preflight.findings_as_dict(findings), indent=2, ensure_ascii=False))
    else:
        styles = {"ok": "green", "warn": "yellow", "fail": "bold red"}
        table = Table("check", "status", "detail")
        for f in findings:  # Text, not markup: details quote command output verbatim
            table.add_row(f.name, Text(str(f.status), style=styles[f.status]), Text(f.detail))
        console.print(table)
        console.print(Text.assemble("overall: ", (str(overall), styles[overall])))
    if overall == preflight.Status.FAIL:
        sys.exit(1)


@main.group()
def config() -> None:
    """Inspect the effective configuration."""


@config.command("show")
@config_option
def config_show(config_file: str | None) -> None:
    """Print the effective configuration (defaults ← file ← TESCAPE_… env) as YAML."""
    import yaml

    cfg = _load(config_file)
    click.echo(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))


@main.command("hash-password")
@click.option("--token", is_flag=True, help="hash a bearer token (sha256) instead of a password")
def hash_password(token: bool) -> None:
    """Read a secret on stdin (or prompt) and print the hash to put in the config."""
    from werkzeug.security import generate_password_hash

    from gateway.auth import token_sha256

    secret = sys.stdin.readline().rstrip("\n") if not sys.stdin.isatty() else getpass.getpass()
    if not secret:
        raise click.UsageError("empty secret")
    click.echo(token_sha256(secret) if token else generate_password_hash(secret))


@main.group()
def db() -> None:
    """Database maintenance."""


@db.command("upgrade")
@config_option
def db_upgrade(config_file: str | None) -> None:
    """Apply migrations up to the newest schema (serve does this at start)."""
    from gateway.store.database import open_database

    cfg = _load(config_file)
    open_database(cfg.database_url).close()
    click.echo("database is at the newest schema")


# -- commands that talk to a running server -------------------------------------------------

server_option = click.option(
    "--server",
    envvar="TESCAPE_SERVER",
    default="http://127.0.0.1:8000",
    show_default=True,
    help="tescape URL (or TESCAPE_SERVER)",
)


def _request(
    server: str,
    method: str,
    path: str,
    timeout: float | tuple[float, float] = 30,
    headers: dict[str, str] | None = None,
    **kwargs: Any,
) -> requests.Response:
    """One request with the user's token; an unreachable server ends the command (exit 1)."""
    headers = dict(headers or {})
    token = os.environ.get("TESCAPE_TOKEN")
    if token:
        headers["Authorization"] = f"Bearer {token}"
    try:
        return requests.request(
            method, server.rstrip("/") + path, headers=headers, timeout=timeout, **kwargs
        )
    except requests.RequestException as exc:
        err_console.print(f"[red]error:[/red] cannot reach {server}: {exc}")
        sys.exit(1)


def _fail(resp: requests.Response) -> None:
    """Say what the server refused and exit with the code for its status (cli_output)."""
    try:
        body = resp.json()
    except ValueError:
        body = {"message": resp.text}
    message = body.get("message", body) if isinstance(body, dict) else body
    err_console.print(f"[red]error {resp.status_code}:[/red] {message}")
    sys.exit(exit_code_for(resp.status_code))


def _call(
    server: str, method: str, path: str, timeout: float | tuple[float, float] = 30, **kwargs: Any
) -> Any:
    """A JSON API call; an error answer ends the command with exit 1, 2 (HTTP 400) or 4 (404)."""
    resp = _request(server, method, path, timeout=timeout, **kwargs)
    if resp.status_code >= 400:
        _fail(resp)
    try:
        return resp.json()
    except ValueError:
        return {"message": resp.text}


@main.command("status")
@server_option
@click.option("--json", "as_json", is_flag=True, help="print the status document as JSON")
def status_command(server: str, as_json: bool) -> None:
    """The gateway's health and work (GET /api/v1/status). Exit code 0: ok or degraded (the
    provider is down); 1: the database or capsule store fails, or the server cannot be reached."""
    from gateway.cli_status import fetch_status, print_status

    doc = fetch_status(server, os.environ.get("TESCAPE_TOKEN"))
    if as_json:
        click.echo(json.dumps(doc, indent=2, ensure_ascii=False))
    else:
        print_status(console, doc)
    if doc.get("status") not in ("ok", "degraded"):
        sys.exit(1)


@main.group()
def tasks() -> None:
    """List, show, submit and cancel tasks on a running server."""


@tasks.command("list")
@server_option
@click.option("--state", help="only tasks in this state")
@click.option("--name-prefix", help="only tasks whose name starts with this")
@click.option("--limit", type=int, default=50, show_default=True)
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help='print {"tasks": [TES tasks, BASIC view], "next_page_token": str|null}',
)
def tasks_list(
    server: str, state: str | None, name_prefix: str | None, limit: int, as_json: bool
) -> None:
    """Tasks, newest first (ids always print whole; other columns wrap)."""
    params = {"view": "BASIC", "page_size": limit, "state": state, "name_prefix": name_prefix}
    body = _call(server, "GET", "/ga4gh/tes/v1/tasks", params=params)
    found = body.get("tasks") or []
    if as_json:
        print_json({"tasks": found, "next_page_token": body.get("next_page_token") or None})
        return
    table = Table(
        id_column("id", (t["id"] for t in found)),
        Column("state", no_wrap=True),
        text_column("name"),
        text_column("created"),
    )
    for t in found:
        table.add_row(t["id"], t["state"], t.get("name", ""), t.get("creation_time", ""))
    console.print(table)


@tasks.command("get")
@server_option
@click.argument("task_id", shell_complete=task_ids)
@click.option("--view", default="FULL", show_default=True)
def tasks_get(server: str, task_id: str, view: str) -> None:
    click.echo(
        json.dumps(_call(server, "GET", f"/ga4gh/tes/v1/tasks/{task_id}?view={view}"), indent=2)
    )


@tasks.command("submit")
@server_option
@click.argument("task_file", type=click.File("r"))
def tasks_submit(server: str, task_file: Any) -> None:
    """Submit a TES task document (JSON or YAML; `-` reads stdin) and print its id (see also
    `tescape submit`)."""
    doc = read_task_file(task_file)
    click.echo(_call(server, "POST", "/ga4gh/tes/v1/tasks", json=doc)["id"])


@tasks.command("cancel")
@server_option
@click.argument("task_id", shell_complete=task_ids)
def tasks_cancel(server: str, task_id: str) -> None:
    _call(server, "POST", f"/ga4gh/tes/v1/tasks/{task_id}:cancel")
    click.echo(f"cancel requested for {task_id}")


def _wait_capsule(server: str, task_id: str, request_id: str, timeout: float) -> dict[str, Any]:
    """Poll the task's events until the request's capsule is written (or failed)."""
    deadline = time.monotonic() + timeout
    with waiting(f"task {task_id}", enabled=err_console.is_terminal) as progress:
        progress("checkpointing")
        while time.monotonic() < deadline:
            for event in _call(server, "GET", f"/api/v1/tasks/{task_id}/events")["events"]:
                data = event.get("data") or {}
                if data.get("request_id") == request_id and event["kind"] in (
                    "capsule",
                    "checkpoint_failed",
                ):
                    return dict(event)
            time.sleep(0.5)
    err_console.print(f"[red]error:[/red] no capsule after {timeout:g} s (still in progress?)")
    sys.exit(1)


def _move(server: str, task_id: str, migrate: bool, instance: str | None, wait: float) -> None:
    verb = "migrate" if migrate else "checkpoint"
    body = {"instance": instance} if instance else None
    out = _call(server, "POST", f"/api/v1/tasks/{task_id}:{verb}", json=body)
    click.echo(f"{verb} requested for {task_id} (attempt {out['attempt_id']})")
    if wait > 0:
        event = _wait_capsule(server, task_id, out["request_id"], wait)
        click.echo(event.get("message", event["kind"]))
        if event["kind"] == "checkpoint_failed":
            sys.exit(1)


@tasks.command("checkpoint")
@server_option
@click.argument("task_id", shell_complete=task_ids)
@click.option("--wait", type=float, default=0, help="seconds to wait for the capsule (0: don't)")
def tasks_checkpoint(server: str, task_id: str, wait: float) -> None:
    """Checkpoint a RUNNING task into a capsule; it keeps running."""
    _move(server, task_id, False, None, wait)


@tasks.command("migrate")
@server_option
@click.argument("task_id", shell_complete=task_ids)
@click.option("--instance", help="the READY instance to move to (default: the scheduler picks)")
@click.option("--wait", type=float, default=0, help="seconds to wait for the capsule (0: don't)")
def tasks_migrate(server: str, task_id: str, instance: str | None, wait: float) -> None:
    """Checkpoint a RUNNING task, stop it, and restore it on another instance."""
    _move(server, task_id, True, instance, wait)


@main.group()
def instances() -> None:
    """Instances of a running server (local provider: simulated Spot instances)."""


@instances.command("list")
@server_option
@click.option(
    "--json", "as_json", is_flag=True, help='print {"instances": [...]} as the server sends it'
)
def instances_list(server: str, as_json: bool) -> None:
    """Instances and the tasks on them (ids always print whole, one task a line)."""
    found = _call(server, "GET", "/api/v1/instances").get("instances") or []
    if as_json:
        print_json({"instances": found})
        return
    table = Table(
        id_column("id", (i["id"] for i in found)),
        text_column("where"),
        text_column("state"),
        id_column("tasks", (t for i in found for t in i["task_ids"])),
        box=box.SIMPLE_HEAD,
        show_edge=False,
        pad_edge=False,
    )
    for i in found:
        where = f"{i['instance_type']} {i['market']} {i['zone']}"
        state = i["state"]
        if i.get("draining"):  # a reclaim notice: its tasks are moving, it takes no new work
            notice = i.get("interruption") or {}
            when = str(notice.get("deadline", "?")).rpartition("T")[2]  # a notice is minutes away
            state = f"DRAINING\n{notice.get('action', 'reclaim')} at {when}"
        table.add_row(i["id"], where, state, "\n".join(i["task_ids"]))
    console.print(table)


@instances.command("interrupt")
@server_option
@click.argument("instance_id")
@click.option("--notice", type=float, default=120.0, show_default=True, help="seconds of notice")
def instances_interrupt(server: str, instance_id: str, notice: float) -> None:
    """Simulate a Spot reclaim: a notice now, the instance killed `--notice` seconds later."""
    out = _call(
        server,
        "POST",
        f"/api/v1/instances/{instance_id}:interrupt",
        json={"notice_seconds": notice},
    )
    click.echo(f"{instance_id} reclaimed at {out['deadline']}")


@main.group()
def apps() -> None:
    """The Application Library: named images, registry credentials, image archives."""


@apps.command("add")
@server_option
@click.argument("name")
@click.argument("image")
@click.option("--username", help="user for IMAGE's registry")
@click.option("--password-stdin", is_flag=True, help="read the registry password from stdin")
def apps_add(
    server: str, name: str, image: str, username: str | None, password_stdin: bool
) -> None:
    """Name IMAGE as app NAME (tasks may then use NAME as their image)."""
    body: dict[str, Any] = {"image": image}
    if username or password_stdin:
        if not (username and password_stdin):
            raise click.UsageError("--username and --password-stdin go together")
        body.update(username=username, password=sys.stdin.readline().rstrip("\n"))
    app = _call(server, "PUT", f"/api/v1/apps/{name}", json=body)
    click.echo(f"{app['name']} → {app['image']}")


@apps.command("import")
@server_option
@click.argument("name")
@click.argument("archive", type=click.Path(exists=True, dir_okay=False))
def apps_import(server: str, name: str, archive: str) -> None:
    """Load an image archive (`podman save` / `docker save`) into the library as app NAME."""
    size = os.path.getsize(archive)
    with (
        open(archive, "rb") as stream,
        uploading(f"uploading {Path(archive).name}", size, err_console.is_terminal) as advance,
    ):
        # streamed; the server hashes and inspects the whole archive before it answers
        body = UploadReader(stream, size, advance)
        app = _call(server, "PUT", f"/api/v1/apps/{name}/archive", timeout=(10, 3600), data=body)
    click.echo(f"{app['name']} → {app['image']} ({app['archive']['size_bytes']} bytes)")


@apps.command("list")
@server_option
@click.option(
    "--json", "as_json", is_flag=True, help='print {"apps": [...]} as the server sends it'
)
def apps_list(server: str, as_json: bool) -> None:
    """Apps of the library: the name tasks use as their image, the image, its archive."""
    found = _call(server, "GET", "/api/v1/apps").get("apps") or []
    if as_json:
        print_json({"apps": found})
        return
    table = Table(
        id_column("name", (a["name"] for a in found)), text_column("image"), text_column("archive")
    )
    for app in found:
        archive = app.get("archive")
        table.add_row(app["name"], app["image"], archive["sha256"][:12] if archive else "")
    console.print(table)


@apps.command("remove")
@server_option
@click.argument("name")
def apps_remove(server: str, name: str) -> None:
    _call(server, "DELETE", f"/api/v1/apps/{name}")
    click.echo(f"removed {name}")


register_workflow_commands(main)  # tescape nextflow …, tescape cromwell …
register_market_commands(main)  # tescape market show|set-price|costs


@main.group("aws")
def aws_group() -> None:
    """The aws provider: what it would create, and whether it can (docs/aws.md)."""


@aws_group.command("plan")
@config_option
@click.option("--json", "as_json", is_flag=True, help="the IAM policy alone, as JSON")
def aws_plan(config_file: str | None, as_json: bool) -> None:
    """Print what `providers.aws` would create and the least-privilege IAM policy it needs."""
    import json as _json

    from gateway.providers.aws.plan import iam_policy, plan_lines

    cfg = _load(config_file)
    gid = cfg.providers.aws.gateway_id
    policy = _json.dumps(iam_policy(cfg.providers.aws, gid), indent=2)
    if as_json:
        click.echo(policy)
        return
    for line in plan_lines(cfg.providers.aws, gid):
        click.echo(f"- {line}")
    click.echo("\nIAM policy for the gateway's credentials:\n" + policy)


@aws_group.command("check")
@config_option
def aws_check(config_file: str | None) -> None:
    """Check credentials, AMI, subnets, instance types, vCPU quotas and the capsule bucket
    (exit 1 when one would stop tasks from running)."""
    from gateway.providers.aws import from_context, preflight
    from gateway.providers.base import ProviderError
    from gateway.providers.registry import ProviderContext

    cfg = _load(config_file)
    url = f"http://{cfg.server.host}:{cfg.server.port}"
    try:
        provider = from_context(ProviderContext(cfg, url))
        provider.check()
        offers = provider.offers()
    except ProviderError as exc:
        err_console.print(f"[red]error:[/red] {exc}")
        sys.exit(1)
    zones = ", ".join(provider.subnets())
    click.echo(f"ok: {len(offers)} offers in {zones} (AMI {provider.ami()})")
    aws = cfg.providers.aws
    findings = [
        *preflight.quota_findings(
            preflight.read_quotas(preflight.quotas_client(aws), list(aws.markets)),
            {t: vcpus for t, (vcpus, _) in provider.sizes().items()},
            aws.max_instances,
        ),
        *preflight.store_findings(cfg.capsule_store, cfg.capsule_s3, aws.region),
    ]
    for finding in findings:
        if finding.level == "ok":
            click.echo(f"ok: {finding.text}")
        else:
            colour = "red" if finding.level == "error" else "yellow"
            err_console.print(f"[{colour}]{finding.level}:[/{colour}] {finding.text}")
    if cfg.agent.wheel and not cfg.providers.aws.agent_wheel_url:
        try:
            wheel = load_agent_wheel(cfg.agent.wheel)
        except AgentWheelError as exc:
            err_console.print(f"[red]error:[/red] {exc}")
            sys.exit(1)
        click.echo(f"ok: instances install the agent from {wheel.url(provider.gateway_url)}")
    if provider.queue is not None:
        click.echo(f"ok: interruption queue {provider.queue.url} can be read")
    if any(f.level == "error" for f in findings):
        sys.exit(1)


@aws_group.command("bake")
@config_option
@click.argument("name")
@click.option("--instance-type", help="the builder's type (default: the first of instance_types)")
@click.option("--timeout", "timeout_s", default=3600.0, show_default=True, help="seconds in all")
def aws_bake(
    config_file: str | None, name: str, instance_type: str | None, timeout_s: float
) -> None:
    """Make an AMI named NAME with podman, runc, CRIU and the agent installed (set its id as
    providers.aws.ami): instances from it boot straight to the agent."""
    from gateway.providers.aws import from_context
    from gateway.providers.aws.bake import bake
    from gateway.providers.base import ProviderError
    from gateway.providers.registry import ProviderContext

    cfg = _load(config_file)
    url = f"http://{cfg.server.host}:{cfg.server.port}"
    try:
        provider = from_context(ProviderContext(cfg, url))
        baked = bake(
            provider,
            name,
            instance_type=instance_type,
            timeout_seconds=timeout_s,
            say=lambda line: err_console.print(line),
        )
    except ProviderError as exc:
        err_console.print(f"[red]error:[/red] {exc}")
        sys.exit(1)
    click.echo(baked.image_id)
    err_console.print(
        f"{baked.name}: {baked.image_id} in {baked.seconds / 60:.1f} min; set providers.aws.ami: "
        f"{baked.image_id}"
    )


register_log_commands(tasks)  # tescape tasks logs|events
register_submit_command(main)  # tescape submit


if __name__ == "__main__":
    main()
