"""`tescape submit`: run one command as a task, in the manner of MemVerge's `float submit`
(`--image IMG --cpu 2 --mem 4G -- cmd args`), or submit a TES task written as JSON or YAML.

It prints the new task's id (or `{"id", "state"}` with `--json`). With `--wait` it follows the
task to a terminal state and exits 0 when it is COMPLETE, 1 otherwise (EXECUTOR_ERROR,
SYSTEM_ERROR, CANCELED), so that a script can chain on it. Bad input is refused here with exit 2
before anything reaches the server; what the server refuses exits as every command does
(cli_output: 2 for a 400, 1 for other errors).
"""

from __future__ import annotations

import json
import re
import sys
import time
from typing import Any

import click
import yaml

from gateway.cli_output import EXIT_ERROR, EXIT_OK, print_json
from gateway.cli_progress import waiting
from gateway.tes.states import TERMINAL

FIRST_POLL_SECONDS = 0.5  # --wait polls at this interval first, doubling up to MAX_POLL_SECONDS
MAX_POLL_SECONDS = 5.0

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgtKMGT]?)(?:i?[bB])?\s*$")
_GB_PER_UNIT = {"": 1.0, "k": 1 / 1024**2, "m": 1 / 1024, "g": 1.0, "t": 1024.0}


def gigabytes(text: str, what: str) -> float:
    """'4G', '4GB', '4GiB', '512M', '1.5' (GB) → TES's ram_gb/disk_gb. TES counts in GB and does
    not say which; tescape reads it as GiB (1 G = 1024 M), as `float submit` does."""
    match = _SIZE.match(text)
    if not match:
        raise click.BadParameter(f"{text!r}: a size like 4G, 512M or 1.5 (GB)", param_hint=what)
    value = float(match.group(1)) * _GB_PER_UNIT[match.group(2).lower()]
    if value <= 0:
        raise click.BadParameter(f"{text!r}: must be more than 0", param_hint=what)
    return value


def pairs(values: tuple[str, ...], what: str) -> dict[str, str]:
    """`KEY=VALUE` options → a dict; the first '=' splits, so values may hold '='."""
    out: dict[str, str] = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{item!r}: write it as KEY=VALUE", param_hint=what)
        out[key] = value
    return out


def transfers(values: tuple[str, ...], what: str) -> list[dict[str, Any]]:
    """`--input /path=URL` / `--output /path=URL` → TES inputs/outputs. The path (inside the
    container, absolute) comes first so that a URL's own '=' (a query string) needs no quoting;
    a URL or path ending in '/' is a directory."""
    out: list[dict[str, Any]] = []
    for item in values:
        path, sep, url = item.partition("=")
        if not sep or not path.startswith("/") or not url:
            raise click.BadParameter(
                f"{item!r}: write it as /path/in/container=URL", param_hint=what
            )
        is_dir = url.endswith("/") or path.endswith("/")
        entry: dict[str, Any] = {"url": url, "path": path.rstrip("/") or "/"}
        entry["type"] = "DIRECTORY" if is_dir else "FILE"
        out.append(entry)
    return out


def read_task_file(stream: Any) -> dict[str, Any]:
    """A TES task from a JSON or YAML file ('-' is stdin); exit 2 when it is neither, or not a
    task-shaped mapping (the server checks the fields themselves)."""
    name = getattr(stream, "name", "task file")
    text = stream.read()
    try:
        doc = json.loads(text)
    except ValueError:
        try:
            doc = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise click.UsageError(f"{name} is neither JSON nor YAML: {exc}") from None
    if not isinstance(doc, dict):
        raise click.UsageError(f"{name}: a TES task is a mapping with `executors`, not this")
    if not doc.get("executors"):
        raise click.UsageError(f"{name}: the task has no `executors`")
    return doc


def build_task(opts: dict[str, Any], command: tuple[str, ...]) -> dict[str, Any]:
    """The TES task that the flags describe (one executor)."""
    if not command:
        raise click.UsageError("no command: put it after `--`, e.g. `-- echo hello`")
    executor: dict[str, Any] = {"image": opts["image"], "command": list(command)}
    env = pairs(opts["env"], "--env")
    if env:
        executor["env"] = env
    if opts["workdir"]:
        executor["workdir"] = opts["workdir"]
    task: dict[str, Any] = {"executors": [executor]}
    if opts["name"]:
        task["name"] = opts["name"]
    resources: dict[str, Any] = {}
    if opts["cpu"] is not None:
        resources["cpu_cores"] = opts["cpu"]
    if opts["mem"] is not None:
        resources["ram_gb"] = gigabytes(opts["mem"], "--mem")
    if opts["disk"] is not None:
        resources["disk_gb"] = gigabytes(opts["disk"], "--disk")
    if opts["preemptible"] is not None:
        resources["preemptible"] = opts["preemptible"]
    if resources:
        task["resources"] = resources
    tags = pairs(opts["tag"], "--tag")
    if tags:
        task["tags"] = tags
    inputs = transfers(opts["input"], "--input")
    if inputs:
        task["inputs"] = inputs
    outputs = transfers(opts["output"], "--output")
    if outputs:
        task["outputs"] = outputs
    return task


def wait_for_end(server: str, task_id: str, show_progress: bool) -> dict[str, Any]:
    """Poll the task (BASIC view) until it reaches a terminal state; return it. A spinner with
    the state shows on a terminal; Ctrl-C stops waiting, not the task."""
    from gateway import cli

    interval = FIRST_POLL_SECONDS
    last = ""
    with waiting(f"task {task_id}", enabled=show_progress) as progress:
        while True:
            task: dict[str, Any] = cli._call(
                server, "GET", f"/ga4gh/tes/v1/tasks/{task_id}?view=BASIC"
            )
            state = str(task.get("state", ""))
            if state in TERMINAL:
                return task
            if state != last:
                progress(state)
                last, interval = state, FIRST_POLL_SECONDS
            time.sleep(interval)
            interval = min(interval * 2, MAX_POLL_SECONDS)


def register(main: click.Group) -> None:
    """Add `tescape submit` to the top-level group (call it at the end of cli.py)."""
    from gateway import cli

    @main.command("submit", no_args_is_help=True)
    @cli.server_option
    @click.option("--image", "-i", help="container image (or an app of the library)")
    @click.option("--cpu", type=click.IntRange(min=1), help="CPU cores")
    @click.option("--mem", help="memory: 4G, 512M, 1.5 (GB)")
    @click.option("--disk", help="disk: 20G, … (GB)")
    @click.option("--name", "-n", help="task name")
    @click.option("--tag", multiple=True, metavar="KEY=VALUE", help="a tag (repeatable)")
    @click.option("--env", "-e", multiple=True, metavar="KEY=VALUE", help="an env var (repeat)")
    @click.option("--workdir", help="working directory in the container")
    @click.option(
        "--input", multiple=True, metavar="/PATH=URL", help="a file or dir/ to stage in (repeat)"
    )
    @click.option(
        "--output", multiple=True, metavar="/PATH=URL", help="a file or dir/ to save (repeat)"
    )
    @click.option("--preemptible/--on-demand", default=None, help="Spot or on-demand capacity")
    @click.option("--wait", is_flag=True, help="follow the task until it ends; exit 0 if COMPLETE")
    @click.option("--json", "as_json", is_flag=True, help='print {"id": str, "state": str}')
    @click.argument("args", nargs=-1, type=click.UNPROCESSED)
    def submit(server: str, args: tuple[str, ...], wait: bool, as_json: bool, **opts: Any) -> None:
        """Run a command as a task, or submit a TES task file.

        \b
          tescape submit --image ubuntu:24.04 --cpu 2 --mem 4G -- sh -c 'echo hi'
          tescape submit task.yaml        (TES task as JSON or YAML; - reads stdin)

        Put the command after `--` (its own options are then never read as tescape's). Prints
        the task's id. With --wait, follows it to the end (the state goes to stderr) and exits
        0 when COMPLETE, 1 when it failed or was cancelled.
        """
        task = _task_from(args, opts)
        created = cli._call(server, "POST", "/ga4gh/tes/v1/tasks", json=task)
        task_id = str(created["id"])
        if not wait:
            if as_json:
                print_json({"id": task_id, "state": "QUEUED"})
            else:
                click.echo(task_id)
            return
        if not as_json:
            click.echo(task_id)  # the id first, so that a user can look while it runs
        show = not as_json and cli.err_console.is_terminal
        try:
            final = wait_for_end(server, task_id, show)
        except KeyboardInterrupt:
            cli.err_console.print(f"stopped waiting; task {task_id} goes on")
            sys.exit(130)
        state = str(final.get("state"))
        if as_json:
            print_json({"id": task_id, "state": state})
        else:
            cli.err_console.print(f"task {task_id}: {state}")
        sys.exit(EXIT_OK if state == "COMPLETE" else EXIT_ERROR)


_BUILD_FLAGS = ("image", "cpu", "mem", "disk", "name", "workdir", "preemptible")
_MULTI_FLAGS = ("tag", "env", "input", "output")


def _task_from(args: tuple[str, ...], opts: dict[str, Any]) -> dict[str, Any]:
    """From the flags (with --image) or from a file (the one argument without --image)."""
    if opts["image"]:
        return build_task(opts, args)
    given = [f"--{k}" for k in _BUILD_FLAGS if opts[k] is not None]
    given += [f"--{k}" for k in _MULTI_FLAGS if opts[k]]
    if given:
        raise click.UsageError(f"{', '.join(given)} need --image (or give a task FILE alone)")
    if len(args) != 1:
        raise click.UsageError("give --image IMAGE -- COMMAND …, or one task FILE (JSON or YAML)")
    try:
        with click.open_file(args[0], "r") as stream:
            return read_task_file(stream)
    except OSError as exc:
        raise click.UsageError(f"cannot read {args[0]}: {exc.strerror or exc}") from None
