"""The worker agent: registers its instance with the gateway, long-polls for orders, runs each
assigned task in its own thread, and reports back. `python -m capsule_runtime.agent --help`.

It stops cleanly on SIGTERM: running containers are stopped and their attempts reported
SYSTEM_ERROR (a later issue checkpoints them instead)."""

from __future__ import annotations

import argparse
import logging
import os
import queue
import signal
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Any

from capsule_runtime import __version__, doctor
from capsule_runtime.client import GatewayClient, GatewayUnreachable
from capsule_runtime.host.cpu import cpu_profile
from capsule_runtime.host.meminfo import memory_gb
from capsule_runtime.host.versions import host_versions
from capsule_runtime.protocol.messages import (
    Assignment,
    AttemptReport,
    CapsuleReport,
    CheckpointOrder,
    Registration,
    Resources,
)

log = logging.getLogger("tescape.agent")
POLL_WAIT = 5.0


class Agent:
    def __init__(
        self,
        client: GatewayClient,
        capacity: Resources,
        work_dir: Path,
        run_factory: Any,
        tasks_dir: Path | None = None,
        gateway_lost_seconds: float = 0.0,
        gateway_file: Path | None = None,
    ):
        self.client = client
        # after this long without an answer from the gateway the agent parks its tasks in
        # capsules and exits (0: never); its attempt reports are retried as long (client.py)
        self.gateway_lost_seconds = gateway_lost_seconds
        client.patience = gateway_lost_seconds
        self.gateway_file = gateway_file  # where a gateway that moved says where it is now
        self.capacity = capacity
        self.work_dir = work_dir
        # (Assignment, GatewayClient, Path, tasks_dir=Path) -> TaskRun
        self.run_factory = run_factory
        self.tasks_dir = tasks_dir or work_dir / "tasks"
        self.runs: dict[str, Any] = {}
        self.cancelling: set[str] = set()
        # checkpoint and resize order ids held, by attempt: acknowledged in every poll while
        # the attempt runs, and a resent order is not carried out twice
        self.received: dict[str, set[str]] = {}
        self.fenced: set[str] = set()  # attempts the gateway refused: stopped, never restarted
        self._refused: queue.SimpleQueue[str] = queue.SimpleQueue()  # from any thread
        client.on_fenced = self.on_fenced
        self.stopping = threading.Event()
        self._shutdown_lock = threading.Lock()
        self._shut_down = False

    def facts(self) -> list[dict[str, Any]]:
        try:
            return list(doctor.findings_as_dict()["findings"])
        except Exception as exc:  # the doctor is advisory: never block registration on it
            return [{"name": "doctor", "status": "warn", "detail": str(exc)}]

    def on_notice(self, kind: str, when: str) -> None:
        """The interruption watcher saw a reclaim notice or a rebalance recommendation: tell the
        gateway, which orders the checkpoints (and stops placing work here)."""
        try:
            self.client.notice(kind, when)
        except GatewayUnreachable as exc:
            log.error("could not report the %s notice: %s", kind, exc)

    def on_fenced(self, attempt_id: str) -> None:
        """The gateway refused a message about this attempt (409: superseded, or settled
        elsewhere). Called from any thread; the main loop stops it (`_stop_refused`)."""
        self._refused.put(attempt_id)

    def _stop_refused(self) -> None:
        """Stop the containers of refused attempts without uploading outputs: their work goes
        on elsewhere (or has ended), and a resent assignment never starts them again."""
        while not self._refused.empty():
            attempt_id = self._refused.get()
            self.fenced.add(attempt_id)
            run = self.runs.get(attempt_id)
            if run is not None and attempt_id not in self.cancelling:
                self.cancelling.add(attempt_id)
                threading.Thread(target=run.cancel, name=f"fenced-{attempt_id}").start()

    def register(self) -> None:
        answer = self.client.register(
            Registration(
                agent_version=__version__,
                hostname=socket.gethostname(),
                capacity=self.capacity,
                facts=self.facts(),
                cpu=cpu_profile(),
                host=host_versions(),
            )
        )
        # the registration token is used up: keep the credential for a restart (a stand-in
        # client in tests may answer nothing)
        token = getattr(answer, "token", None)
        if token:
            from capsule_runtime.protocol.redact import remember_secret

            remember_secret(token)
            save_credential(self.work_dir, self.client.instance_id, token)
        log.info("registered as %s", self.client.instance_id)

    def run(self) -> None:
        self.register()
        while not self.stopping.is_set():
            self._stop_refused()
            self._reap()
            asked = time.monotonic()
            try:
                orders = self.client.poll(
                    list(self.runs),
                    POLL_WAIT,
                    self._usage(),
                    received=sorted(
                        {i for ids in self.received.values() for i in ids} | self.cancelling
                    ),
                )
            except GatewayUnreachable as exc:
                log.error("gateway unreachable: %s", exc)
                if self._gateway_lost():
                    break
                if self.gateway_file is not None:
                    self.client.follow(self.gateway_file)
                self.stopping.wait(2.0)
                continue
            if not (
                orders.assign
                or orders.cancel
                or orders.checkpoint
                or orders.resize
                or orders.shutdown
            ):
                # a busy gateway answers at once instead of holding the poll (its long-poll
                # slots are taken): wait here for the rest of the poll's time, not in a loop
                self.stopping.wait(POLL_WAIT - (time.monotonic() - asked))
                continue
            for assignment in orders.assign:
                self._start(assignment)
            for attempt_id in orders.cancel:
                run = self.runs.get(attempt_id)
                if run is not None and attempt_id not in self.cancelling:
                    self.cancelling.add(attempt_id)  # stopping takes its grace period: not here
                    threading.Thread(target=run.cancel, name=f"cancel-{attempt_id}").start()
            for order in orders.checkpoint:
                self._checkpoint(order)
            for resize in orders.resize:
                if (run := self.runs.get(resize.attempt_id)) is not None and self._first(
                    resize.attempt_id, resize.order_id
                ):
                    run.resize(resize.cpu_cores, resize.ram_gb)
            if orders.shutdown:
                log.info("the gateway asked this instance to shut down")
                break
        self.shutdown()

    def _gateway_lost(self) -> bool:
        """After `gateway_lost_seconds` without an answer from the gateway, stop safely: each
        running task is taken into a capsule and its container stopped (what cannot be, is
        stopped unreported); the capsule and `interrupted` reports are retried for as long
        again, so a gateway that comes back meanwhile restores the tasks from them. True: done,
        the agent exits. A gateway that comes back later finds the instance lost and takes the
        newest capsule in the store, reported or not (gateway.scheduler.unreported)."""
        limit = self.gateway_lost_seconds
        away = time.monotonic() - self.client.last_answer
        if not limit or away < limit:
            return False
        log.error(
            "the gateway has not answered for %.0f s: taking every running task into a capsule, "
            "then stopping",
            away,
        )
        self.client.deliver_until = time.monotonic() + limit
        runs = [
            (attempt_id, run)
            for attempt_id, run in self.runs.items()
            if attempt_id not in self.cancelling and attempt_id not in self.fenced
        ]
        parkers = [
            threading.Thread(target=self._park, args=(a, r), name=f"park-{a}") for a, r in runs
        ]
        for t in parkers:
            t.start()
        for t in parkers:
            t.join()
        for _, run in runs:  # their last reports, retried until deliver_until
            run.join(timeout=max(1.0, self.client.deliver_until - time.monotonic() + 30))
        log.error("every task stopped; the agent exits")
        return True

    def _park(self, attempt_id: str, run: Any) -> None:
        run.checkpoint(
            CheckpointOrder(attempt_id=attempt_id, request_id="", stop=True, reason="gateway_lost")
        )
        if not run.left_in_capsule:
            run.abandon("the gateway was out of reach and the task could not be checkpointed")

    def _first(self, attempt_id: str, order_id: str) -> bool:
        """Note an order as received; False when it was received before (a resend)."""
        held = self.received.setdefault(attempt_id, set())
        if not order_id:
            return True
        if order_id in held:
            return False
        held.add(order_id)
        return True

    def _start(self, assignment: Assignment) -> None:
        # a resent assignment (the gateway did not hear this agent acknowledge it) starts nothing
        if assignment.attempt_id in self.runs or assignment.attempt_id in self.fenced:
            return
        try:
            run = self.run_factory(assignment, self.client, self.work_dir, tasks_dir=self.tasks_dir)
            run.start()
        except Exception as exc:  # one bad assignment must not take the instance down
            log.exception("cannot start attempt %s", assignment.attempt_id)
            try:
                self.client.report(
                    assignment.attempt_id,
                    AttemptReport(
                        status="system_error",
                        task_log={
                            "logs": [],
                            "outputs": [],
                            "system_logs": [f"worker error: {exc}"],
                        },
                        message=str(exc),
                    ),
                )
            except GatewayUnreachable as report_exc:
                log.error("reporting attempt %s failed: %s", assignment.attempt_id, report_exc)
            return
        self.runs[assignment.attempt_id] = run

    def _usage(self) -> dict[str, dict[str, float | int | None]]:
        out = {}
        for attempt_id, run in list(self.runs.items()):
            sample = getattr(run, "usage", lambda: None)()
            if sample is not None:
                out[attempt_id] = sample.as_dict()
        return out

    def _checkpoint(self, order: CheckpointOrder) -> None:
        run = self.runs.get(order.attempt_id)
        if run is None:
            try:
                self.client.report_capsule(
                    order.attempt_id,
                    CapsuleReport(
                        state="failed",
                        capsule_id=f"{order.attempt_id}-none",
                        request_id=order.request_id,
                        stop=order.stop,
                        reason=order.reason,
                        error="the attempt is not running on this instance",
                    ),
                )
            except GatewayUnreachable as exc:
                log.error("reporting checkpoint %s failed: %s", order.request_id, exc)
            return
        if not self._first(order.attempt_id, order.request_id):
            return  # resent: this checkpoint is under way or done
        threading.Thread(
            target=run.checkpoint, args=(order,), name=f"checkpoint-{order.attempt_id}"
        ).start()

    def _reap(self) -> None:
        for attempt_id, run in list(self.runs.items()):
            if not run.is_alive():
                del self.runs[attempt_id]
                self.cancelling.discard(attempt_id)
                self.received.pop(attempt_id, None)

    def shutdown(self) -> None:
        """Stop every running task at once (idempotent), then wait for their last reports."""
        with self._shutdown_lock:
            first = not self._shut_down
            self._shut_down = True
        self.stopping.set()
        self.client.hurry = True
        runs = list(self.runs.values())
        if first:
            stoppers = [
                threading.Thread(target=run.abort, args=("the instance is shutting down",))
                for run in runs
            ]
            for t in stoppers:
                t.start()
            for t in stoppers:
                t.join(timeout=30)
        for run in runs:
            run.join(timeout=30)


CREDENTIAL_FILE = "agent-credential"


def save_credential(work_dir: Path, instance_id: str, token: str) -> None:
    """The credential the gateway gave in exchange for a one-time registration token, in a
    root-only file of the work dir: an agent restarted on this machine (systemd) registers
    with it, since the registration token in its environment is useless by then."""
    work_dir.mkdir(parents=True, exist_ok=True)
    path = work_dir / CREDENTIAL_FILE
    partial = path.with_suffix(".partial")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(f"{instance_id} {token}\n")
    os.replace(partial, path)


def saved_credential(work_dir: Path, instance_id: str) -> str | None:
    """The credential kept by `save_credential` for this instance id, if any."""
    try:
        saved_id, _, token = (work_dir / CREDENTIAL_FILE).read_text().strip().partition(" ")
    except OSError:
        return None
    return token if saved_id == instance_id and token else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tescape agent", description=__doc__)
    parser.add_argument("--gateway", required=True, help="the gateway's URL")
    parser.add_argument("--instance-id", required=True)
    parser.add_argument("--work-dir", required=True, type=Path)
    parser.add_argument(
        "--tasks-dir",
        type=Path,
        help="where task directories live (default: WORK_DIR/tasks); the same path on every "
        "instance, so a capsule restores with its bind mounts",
    )
    parser.add_argument("--cpu-cores", type=float, default=float(os.cpu_count() or 1))
    parser.add_argument("--ram-gb", type=float, default=memory_gb())
    parser.add_argument("--disk-gb", type=float, default=0.0)
    parser.add_argument(
        "--imds-url",
        help="the instance metadata service to watch for Spot interruption notices "
        "(on EC2: http://169.254.169.254; default: not watched)",
    )
    parser.add_argument("--imds-interval", type=float, default=1.0, help="seconds between polls")
    parser.add_argument(
        "--gateway-file",
        type=Path,
        help="a file naming the gateway's URL, read when the gateway cannot be reached (a "
        "gateway restarted on another port writes its new URL there)",
    )
    parser.add_argument(
        "--gateway-lost-seconds",
        type=float,
        default=600.0,
        help="without an answer from the gateway for this long, take every running task into "
        "a capsule, stop it and exit (0: never; agent.gateway_lost_seconds)",
    )
    args = parser.parse_args(argv)
    token = os.environ.get("TESCAPE_AGENT_TOKEN")
    if not token:
        parser.error("the instance token must be in the TESCAPE_AGENT_TOKEN environment variable")
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    from capsule_runtime.protocol.redact import install_log_redaction, remember_secret

    install_log_redaction()  # registry passwords, keys and tokens never reach the agent's log
    remember_secret(token)
    # a restarted agent whose registration token was exchanged uses the credential it got
    token = saved_credential(args.work_dir, args.instance_id) or token
    remember_secret(token)
    from capsule_runtime.runner import TaskRun

    args.work_dir.mkdir(parents=True, exist_ok=True)
    client = GatewayClient(args.gateway, args.instance_id, token)
    capacity = Resources(cpu_cores=args.cpu_cores, ram_gb=args.ram_gb, disk_gb=args.disk_gb)
    agent = Agent(
        client,
        capacity,
        args.work_dir,
        TaskRun,
        tasks_dir=args.tasks_dir,
        gateway_lost_seconds=args.gateway_lost_seconds,
        gateway_file=args.gateway_file,
    )

    def _stop(signum: int, frame: Any) -> None:
        # stop containers now, from a thread: the main thread may be inside a long poll
        if not agent.stopping.is_set():
            agent.stopping.set()
            threading.Thread(target=agent.shutdown, name="shutdown", daemon=True).start()

    if args.imds_url:
        from capsule_runtime.interruption import InterruptionWatcher

        InterruptionWatcher(args.imds_url, agent.on_notice, args.imds_interval).start()
    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    try:
        agent.run()
    except GatewayUnreachable as exc:
        log.error("cannot register with the gateway: %s", exc)
        agent.shutdown()
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
