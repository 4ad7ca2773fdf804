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
from collections.abc import Mapping, Sequence
from typing import Any, Protocol


class RuleLike(Protocol):
    name_glob: str | None
    tags: dict[str, str]
    backend_parameters: dict[str, str]
    preemptible: bool | None


def matches(rule: RuleLike, spec: Mapping[str, Any]) -> bool:
    if rule.name_glob is not None and not fnmatch.fnmatchcase(
        str(spec.get("name") or ""), rule.name_glob
    ):
        return False
    tags = spec.get("tags") or {}
    return all(
        key in tags and (value == "*" or tags[key] == value) for key, value in rule.tags.items()
    )


def effective_parameters(spec: Mapping[str, Any], rules: Sequence[RuleLike]) -> dict[str, str]:
    params: dict[str, str] = {}
    for rule in rules:
        if matches(rule, spec):
            params.update(rule.backend_parameters)
    own = (spec.get("resources") or {}).get("backend_parameters") or {}
    params.update(own)
    return params


def effective_preemptible(spec: Mapping[str, Any], rules: Sequence[RuleLike]) -> bool | None:
    own = (spec.get("resources") or {}).get("preemptible")
    if own is not None:
        return bool(own)
    chosen: bool | None = None
    for rule in rules:
        if rule.preemptible is not None and matches(rule, spec):
            chosen = rule.preemptible
    return chosen
