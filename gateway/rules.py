"""Server-side rules: backend parameters chosen by task name or tags.

nf-ga4gh never sends `preemptible` or `backend_parameters`, and Cromwell sends only what its
runtime attributes say; an operator sets the market, recovery and checkpoint policy per kind of
task instead (config `tasks.rules`):

    tasks:
      rules:
        - name_glob: "ALIGN*"              # Nextflow process names are task names
          backend_parameters: {market_policy: on_demand_only}
        - tags: {workflow: rnaseq}         # Nextflow `tes.tags`, Cromwell/Snakemake tags
          backend_parameters: {recovery: "on_demand_after:2", checkpoint_interval: 10m}
        - preemptible: true                # every other task: Spot when it says nothing

Every matching rule applies, in order (a later one overrides an earlier one); the task's own
`backend_parameters` and `preemptible` win over all rules. The stored task is not changed: the
scheduler and the dispatcher read the effective values through `effective_parameters` and
`effective_preemptible`.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence
from typing import Protocol

from capsule_runtime.protocol.tes import TesTask


class RuleLike(Protocol):
    name_glob: str | None
    tags: dict[str, str]
    backend_parameters: dict[str, str]
    preemptible: bool | None


def matches(rule: RuleLike, task: TesTask | None) -> bool:
    """Whether `rule` applies to `task` (None: a task whose document was not read, which has
    no name and no tags)."""
    name = (task.name if task is not None else None) or ""
    if rule.name_glob is not None and not fnmatch.fnmatchcase(name, rule.name_glob):
        return False
    tags = (task.tags if task is not None else None) or {}
    return all(
        key in tags and (value == "*" or tags[key] == value) for key, value in rule.tags.items()
    )


def effective_parameters(task: TesTask | None, rules: Sequence[RuleLike]) -> dict[str, str]:
    params: dict[str, str] = {}
    for rule in rules:
        if matches(rule, task):
            params.update(rule.backend_parameters)
    resources = task.resources if task is not None else None
    params.update((resources.backend_parameters if resources is not None else None) or {})
    return params


def effective_preemptible(task: TesTask | None, rules: Sequence[RuleLike]) -> bool | None:
    resources = task.resources if task is not None else None
    if resources is not None and resources.preemptible is not None:
        return resources.preemptible
    chosen: bool | None = None
    for rule in rules:
        if rule.preemptible is not None and matches(rule, task):
            chosen = rule.preemptible
    return chosen
