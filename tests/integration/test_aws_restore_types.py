"""Restore compatibility before launch on the aws provider, against moto in server mode: the
types that can restore a capsule come from DescribeInstanceTypes' ProcessorInfo (architecture,
manufacturer) and the processor-family table, read in the one batched describe that reads the
sizes; an EC2 Fleet launch for a restore keeps to them; and the scheduler's restore launches
only such a type, or says there is none."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from capsule_runtime.protocol.messages import AttemptReport, CapsuleReport
from gateway.providers.base import LaunchSpec
from gateway.store.fleet import InstanceState
from tests.fixtures.aws_world import AwsWorld, count_calls, provider
from tests.fixtures.moto_server import MotoServer

pytestmark = pytest.mark.timeout(120)
TYPES = ["m5.large", "c5.large", "m6i.large", "m5a.large", "m6g.large", "c7g.large"]


def test_compatible_types_by_architecture_maker_and_family(moto: MotoServer) -> None:
    p = provider(moto, instance_types=TYPES)
    calls = count_calls(p)
    # Skylake/Cascade Lake Intel: and Ice Lake (m6i, newer), not AMD (m5a) or Graviton
    assert p.compatible_types("m5.large") == {"m5.large", "c5.large", "m6i.large"}
    assert p.compatible_types("m6i.large") == {"m6i.large"}  # not the older m5 and c5
    assert p.compatible_types("m5a.large") == {"m5a.large"}
    assert p.compatible_types("m6g.large") == {"m6g.large", "c7g.large"}  # Graviton2, and 3
    assert p.compatible_types("c7g.large") == {"c7g.large"}  # Graviton3: not back to 2
    assert calls["DescribeInstanceTypes"] == 1  # the sizes' describe, for all of them
    # a capsule of a type no longer configured: one describe of its own, kept
    assert p.compatible_types("r5.xlarge") == {"m5.large", "c5.large", "m6i.large"}
    assert p.compatible_types("r5.xlarge") == {"m5.large", "c5.large", "m6i.large"}
    assert calls["DescribeInstanceTypes"] == 2
    assert str(p.processor("m5.large")) == "x86_64, Intel skylake-cascadelake"


def test_a_fleet_launch_for_a_restore_keeps_to_the_compatible_types(moto: MotoServer) -> None:
    """m5.large and m5a.large have one size: a plain fleet launch spans both (any x86 machine
    runs a new task), a restore's only the type that can run its capsule."""
    p = provider(
        moto, instance_types=["m5.large", "m5a.large"], launch_api="fleet", markets=["spot"]
    )
    sent: list[dict[str, Any]] = []
    p.ec2_launch.meta.events.register(
        "provide-client-params.ec2.CreateFleet", lambda params, **_: sent.append(params)
    )
    offer = next(o for o in p.offers() if o.instance_type == "m5.large")
    p.launch(LaunchSpec("inst-any", "tok", offer))
    restore = LaunchSpec("inst-restore", "tok2", offer, p.compatible_types("m5.large"))
    record = p.launch(restore)
    spans = [{o["InstanceType"] for o in r["LaunchTemplateConfigs"][0]["Overrides"]} for r in sent]
    assert spans == [{"m5.large", "m5a.large"}, {"m5.large"}]
    assert record.provider_data["instance_type"] == "m5.large"


def capsule_taken_on(w: AwsWorld, itype: str) -> str:
    """A task that ran on an EC2 instance of `itype` (played by hand), left capsule c1 and
    moved: it waits to be restored. Its id."""
    task_id = w.submit()
    inst, token = w.boot()
    assert inst.instance_type == itype
    w.scheduler.tick()
    (assign,) = w.poll(inst, token).get_json()["assign"]
    aid = assign["attempt_id"]
    ready = w.fleet.instance(inst.id)
    assert ready is not None
    w.dispatch.capsule(
        ready,
        aid,
        CapsuleReport(
            state="complete", capsule_id="c1", sequence=1, manifest_key="k", manifest_sha256="s"
        ),
    )
    moved = AttemptReport(status="interrupted", task_log={"logs": [], "outputs": []})
    w.dispatch.report(ready, aid, moved)  # a move: the task restores elsewhere from c1
    return task_id


def test_a_restore_on_aws_launches_the_compatible_type_or_says_none_is(
    tmp_path: Path, moto: MotoServer, worlds: list[AwsWorld]
) -> None:
    w = AwsWorld(tmp_path, moto, instance_types=["m5.large"], max_instances=3)
    worlds.append(w)
    task_id = capsule_taken_on(w, "m5.large")
    # the configuration changes: Graviton and AMD only, the cheaper ones
    w.cfg.providers.aws.instance_types[:] = ["m6g.large", "m5a.large"]
    w.provider = w.new_provider()
    w.scheduler = w.new_scheduler(w.provider)
    for _ in range(2):
        w.scheduler.tick()
    assert w.fleet.instances({InstanceState.LAUNCHING}) == []  # nothing useless launched
    [said] = [e for e in w.tasks.events(task_id) if e["kind"] == "no_compatible_offer"]
    assert "m5.large" in said["message"] and said["data"]["types"] == []
    # a compatible type configured again: the restore launches it, not the cheaper others
    w.cfg.providers.aws.instance_types[:] = ["m6g.large", "m5a.large", "c5.large"]
    w.provider = w.new_provider()
    w.scheduler = w.new_scheduler(w.provider)
    w.scheduler.tick()
    (launched,) = w.fleet.instances({InstanceState.LAUNCHING})
    assert launched.instance_type == "c5.large"
    (machine,) = [i for i in w.tagged() if i["InstanceType"] == "c5.large"]
    assert machine["InstanceType"] == "c5.large"
