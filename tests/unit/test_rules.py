"""Server-side task rules (gateway/rules.py): by name glob and tags; the task's own say wins."""

from __future__ import annotations

from gateway.config import TaskRule, load_config
from gateway.rules import effective_parameters, effective_preemptible
from gateway.scheduler.needs import task_policy
from tests.fixtures.documents import tes_task

RULES = [
    TaskRule(preemptible=True),
    TaskRule(name_glob="ALIGN*", backend_parameters={"market_policy": "on_demand_only"}),
    TaskRule(tags={"workflow": "rnaseq"}, backend_parameters={"recovery": "on_demand_after:2"}),
    TaskRule(tags={"stage": "*"}, backend_parameters={"checkpoint_interval": "10m"}),
]


def test_rules_by_name_and_tags_in_order() -> None:
    spec = {"name": "ALIGN (s1)", "tags": {"workflow": "rnaseq", "stage": "x"}}
    assert effective_parameters(tes_task(spec), RULES) == {
        "market_policy": "on_demand_only",
        "recovery": "on_demand_after:2",
        "checkpoint_interval": "10m",
    }
    assert (
        effective_parameters(tes_task({"name": "QC", "tags": {"workflow": "other"}}), RULES) == {}
    )
    assert effective_preemptible(tes_task({"name": "QC"}), RULES) is True


def test_the_task_wins_over_the_rules() -> None:
    spec = {
        "name": "ALIGN",
        "resources": {"preemptible": False, "backend_parameters": {"market_policy": "spot_only"}},
    }
    assert effective_parameters(tes_task(spec), RULES)["market_policy"] == "spot_only"
    assert effective_preemptible(tes_task(spec), RULES) is False


def test_the_scheduler_reads_the_rules() -> None:
    cfg = load_config(overrides={"tasks": {"rules": [r.model_dump() for r in RULES]}}, environ={})
    assert task_policy(tes_task({"name": "ALIGN 1"}), cfg) == "on_demand_only"
    assert task_policy(tes_task({"name": "QC"}), cfg) == "spot_first"
