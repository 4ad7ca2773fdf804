"""Opt-in, against real AWS (it costs a few cents): one tiny task on a real EC2 Spot instance, a
real Spot interruption forced through AWS Fault Injection Service, the task carried to another
instance in a capsule and COMPLETE without a restart; then every instance this gateway launched
is terminated and the experiment template deleted. Skipped unless TESCAPE_AWS_LIVE=1.

What it needs (docs/aws.md, "The live test"):
- AWS credentials in the usual places (environment, ~/.aws, an instance role) with the gateway's
  policy (`tescape aws plan`) plus fis:CreateExperimentTemplate, fis:StartExperiment,
  fis:GetExperiment, fis:DeleteExperimentTemplate, iam:PassRole on the FIS role;
- TESCAPE_AWS_LIVE_CONFIG: a tescape config file for `providers.default: aws` whose
  `providers.aws.gateway_url` the instances can reach (this machine's public or VPC address and
  `server.port`), with Spot in `markets`, a capsule store in S3 (`capsules.store: s3://…`) the
  instance profile can write, and the agent wheel (`agent.wheel` or `agent_wheel_url`);
- TESCAPE_AWS_LIVE_FIS_ROLE: the ARN of a role FIS assumes, allowed
  ec2:SendSpotInstanceInterruptions on the instances (the AWS managed policy
  AWSFaultInjectionSimulatorEC2Access has it);
- the task's image, TESCAPE_AWS_LIVE_IMAGE (default `alpine`), pullable by the instances.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.fixtures.server import RunningServer, tescape_server
from tests.fixtures.tasks import ended, events, instance_of, submit, wait_state

pytestmark = [
    pytest.mark.aws_live,
    pytest.mark.timeout(3600),
    pytest.mark.skipif(
        os.environ.get("TESCAPE_AWS_LIVE") != "1",
        reason="real AWS: set TESCAPE_AWS_LIVE=1 (and see this module's docstring)",
    ),
]

# A counter that says whether it ever started over: /tmp is in the container's root file
# system, which the capsule carries, so a restored task never sees a missing marker again.
SCRIPT = (
    "if [ -e /tmp/started ]; then echo restarted-from-zero; fi; touch /tmp/started; "
    "i=0; while [ $i -lt 900 ]; do i=$((i+1)); echo $i >/tmp/count; sleep 1; done; "
    "echo counted $(cat /tmp/count)"
)


def _env(name: str) -> str:
    value = os.environ.get(name)
    if not value:
        pytest.fail(f"{name} is not set (see tests/e2e/test_aws_live.py's docstring)")
    return value


@pytest.fixture
def live_config() -> dict[str, Any]:
    config = yaml.safe_load(Path(_env("TESCAPE_AWS_LIVE_CONFIG")).read_text()) or {}
    aws = config.get("providers", {}).get("aws", {})
    assert config.get("providers", {}).get("default") == "aws", "providers.default must be aws"
    assert aws.get("gateway_url"), "providers.aws.gateway_url: where the instances reach you"
    assert "spot" in aws.get("markets", ["spot"]), "providers.aws.markets must include spot"
    return dict(config)


@pytest.fixture
def gateway(tmp_path: Path, live_config: dict[str, Any]) -> Iterator[RunningServer]:
    port = int(live_config.get("server", {}).get("port", 8000))
    with tescape_server(tmp_path / "gateway", config=live_config, run_tasks=True, port=port) as srv:
        yield srv


@pytest.fixture
def aws(live_config: dict[str, Any]) -> Any:
    import boto3

    return boto3.Session(region_name=live_config["providers"]["aws"].get("region"))


def _ec2_instance(ec2: Any, tescape_id: str) -> dict[str, Any]:
    pages = ec2.describe_instances(
        Filters=[{"Name": "tag:tescape:instance", "Values": [tescape_id]}]
    )
    found = [i for r in pages["Reservations"] for i in r["Instances"]]
    assert found, f"no EC2 instance tagged tescape:instance={tescape_id}"
    return dict(found[0])


def _interrupt(aws: Any, instance: dict[str, Any], role: str) -> str:
    """A real Spot interruption of `instance`, two minutes' notice, through FIS; the template id
    (deleted by the caller)."""
    fis = aws.client("fis")
    account = aws.client("sts").get_caller_identity()["Account"]
    arn = f"arn:aws:ec2:{aws.region_name}:{account}:instance/{instance['InstanceId']}"
    template = fis.create_experiment_template(
        clientToken=uuid.uuid4().hex,
        description="tescape live test: one Spot interruption",
        stopConditions=[{"source": "none"}],
        targets={
            "spot": {
                "resourceType": "aws:ec2:spot-instance",
                "resourceArns": [arn],
                "selectionMode": "ALL",
            }
        },
        actions={
            "interrupt": {
                "actionId": "aws:ec2:send-spot-instance-interruptions",
                "parameters": {"durationBeforeInterruption": "PT2M"},
                "targets": {"SpotInstances": "spot"},
            }
        },
        roleArn=role,
        tags={"tescape:live-test": "1"},
    )["experimentTemplate"]["id"]
    fis.start_experiment(clientToken=uuid.uuid4().hex, experimentTemplateId=template)
    return str(template)


def _clean_up(aws: Any, gateway_id: str | None, template: str | None) -> list[str]:
    """Terminate whatever this gateway launched that still runs; delete the template."""
    ec2 = aws.client("ec2")
    left: list[str] = []
    if gateway_id:
        pages = ec2.describe_instances(
            Filters=[
                {"Name": "tag:tescape:gateway", "Values": [gateway_id]},
                {"Name": "instance-state-name", "Values": ["pending", "running", "stopped"]},
            ]
        )
        left = [i["InstanceId"] for r in pages["Reservations"] for i in r["Instances"]]
        if left:
            ec2.terminate_instances(InstanceIds=left)
    if template:
        aws.client("fis").delete_experiment_template(id=template)
    return left


def test_a_task_survives_a_real_spot_interruption(
    gateway: RunningServer, aws: Any, live_config: dict[str, Any]
) -> None:
    role = _env("TESCAPE_AWS_LIVE_FIS_ROLE")
    image = os.environ.get("TESCAPE_AWS_LIVE_IMAGE", "alpine")
    template = None
    try:
        task_id = submit(
            gateway,
            {
                "name": "tescape-live",
                "resources": {"cpu_cores": 1, "ram_gb": 0.5, "preemptible": True},
                "executors": [{"image": image, "command": ["sh", "-c", SCRIPT]}],
            },
        )
        wait_state(gateway, task_id, {"RUNNING"}, timeout=1500)  # boot, bootstrap, image pull
        first = instance_of(gateway, task_id)
        template = _interrupt(aws, _ec2_instance(aws.client("ec2"), first), role)
        done = ended(gateway, task_id, timeout=2400)
        assert done["state"] == "COMPLETE", done
        stdout = done["logs"][-1]["logs"][-1].get("stdout", "")
        assert "counted 900" in stdout and "restarted-from-zero" not in stdout, stdout
        kinds = [e["kind"] for e in events(gateway, task_id)]
        assert "restored" in kinds and "restart_from_scratch" not in kinds, kinds
        assert instance_of(gateway, task_id) != first  # it finished elsewhere
    finally:
        id_file = gateway.data_dir / "aws-gateway-id"
        gateway_id = (
            id_file.read_text().strip()
            if id_file.exists()
            else live_config["providers"]["aws"].get("gateway_id")
        )
        left = _clean_up(aws, gateway_id, template)
        if left:
            print(f"terminated instances still running at the end: {left}")
