"""The TaskLog a task starts with.

From creation on, a task has one TaskLog whose `logs` hold an ExecutorLog for every executor the
server is already committed to run: the first one, and each next one while the one before it has
`ignore_error` (a failure there cannot stop the chain). Such a planned entry has exit_code -1 and
no start_time until its executor starts; entries of executors that never started are dropped when
the task ends. Clients that read `logs[0].logs` straight after create (the TES compliance suite)
see the executors that will run; a finished task shows exactly the executors that ran.
"""

from __future__ import annotations

from typing import Any

from capsule_runtime.protocol.tes import TesTask

NOT_RUN = -1


def planned_executor_count(task: TesTask) -> int:
    count = 0
    for ex in task.executors:
        count += 1
        if not ex.ignore_error:
            break
    return count


def initial_task_log(task: TesTask) -> dict[str, Any]:
    return {
        "logs": [{"exit_code": NOT_RUN} for _ in range(planned_executor_count(task))],
        "outputs": [],
    }


def drop_unstarted(executor_logs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for e in executor_logs if "start_time" in e]
