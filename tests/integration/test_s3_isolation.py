"""Issue 10, per-user data isolation against a real S3 server (SeaweedFS, one identity for
staging and capsules, the setting that needs the checks most): a task can neither read nor
overwrite a capsule object, nor list or write a prefix above the capsule store, nor reach a bucket
outside its allow-list. Refused at create (400 naming the field, a user's own list first); and,
with the gateway's check bypassed, by the agent's staging policy before any S3 request."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
from werkzeug.security import generate_password_hash

from capsule_runtime.capsules.s3store import S3Store
from capsule_runtime.staging import (
    AccessRefused,
    S3Config,
    StagingPolicy,
    Workspace,
    stage_inputs,
    upload_outputs_report,
)
from tests.fixtures.documents import tes_inputs, tes_outputs, tes_task
from tests.fixtures.seaweedfs import SeaweedS3, _seaweedfs  # noqa: F401
from tests.fixtures.server import RunningServer, tescape_server
from tests.fixtures.tasks import ended, submit

pytestmark = pytest.mark.timeout(180)
EX: dict[str, Any] = {"image": "alpine", "command": ["true"], "workdir": "/work"}
MANIFEST = b'{"capsule": "t1", "secret": "process memory"}'


@dataclass
class Buckets:
    shared: str  # capsules under tescape/capsules, task data under inputs/
    lab: str  # alice/ and bob/
    other: str  # nobody's allow-list

    @property
    def store(self) -> str:
        return f"{self.shared}/tescape/capsules"


@pytest.fixture
def buckets(seaweedfs: SeaweedS3) -> Buckets:
    tag = uuid.uuid4().hex[:8]
    b = Buckets(f"shared-{tag}", f"lab-{tag}", f"other-{tag}")
    client = seaweedfs.client()
    for name in (b.shared, b.lab, b.other):
        seaweedfs.create_bucket(name)
    capsules = S3Store(b.shared, "tescape/capsules", s3=s3_config(seaweedfs))
    capsules.put("t1/manifest.json", MANIFEST)
    client.put_object(Bucket=b.shared, Key="inputs/a.txt", Body=b"shared input")
    client.put_object(Bucket=b.lab, Key="alice/in.txt", Body=b"alice's")
    client.put_object(Bucket=b.lab, Key="bob/in.txt", Body=b"bob's")
    client.put_object(Bucket=b.other, Key="secret.txt", Body=b"not yours")
    return b


def s3_config(seaweedfs: SeaweedS3) -> S3Config:
    return S3Config.from_mapping(seaweedfs.s3_settings())


def capsule_objects(seaweedfs: SeaweedS3, b: Buckets) -> dict[str, bytes]:
    client = seaweedfs.client()
    listed = client.list_objects_v2(Bucket=b.shared, Prefix="tescape/").get("Contents", [])
    return {
        o["Key"]: client.get_object(Bucket=b.shared, Key=o["Key"])["Body"].read() for o in listed
    }


# -- the agent, the gateway's check bypassed ---------------------------------------------------


def workspace(tmp_path: Path, task: dict[str, Any], seaweedfs: SeaweedS3, b: Buckets) -> Workspace:
    policy = StagingPolicy.create(
        s3_allowed=[f"{b.shared}/inputs", f"{b.lab}/alice"], s3_denied=[b.store]
    )
    return Workspace.create(
        tmp_path / f"ws-{uuid.uuid4().hex[:6]}", tes_task(task), policy, s3=s3_config(seaweedfs)
    )


@pytest.mark.parametrize(
    ("url", "kind"),
    [
        ("{store}/t1/manifest.json", "FILE"),
        ("{store}/t1", "DIRECTORY"),
        ("{store}", "DIRECTORY"),
        ("{shared}/", "DIRECTORY"),  # a listing of the whole bucket would copy the capsules
        ("{shared}//tescape//capsules/t1/manifest.json", "FILE"),
        ("{lab}/bob/in.txt", "FILE"),  # another user's data
        ("{other}/secret.txt", "FILE"),  # a bucket outside the allow-list
    ],
)
def test_the_agent_refuses_forbidden_inputs(
    tmp_path: Path, seaweedfs: SeaweedS3, buckets: Buckets, url: str, kind: str
) -> None:
    b = buckets
    url = "s3://" + url.format(store=b.store, shared=b.shared, lab=b.lab, other=b.other)
    task = {"inputs": [{"url": url, "path": "/in/x", "type": kind}], "executors": [EX]}
    with workspace(tmp_path, task, seaweedfs, b) as ws, pytest.raises(AccessRefused):
        stage_inputs(tes_inputs(task["inputs"]), ws)
    copied = [p for p in (tmp_path).rglob("*") if p.is_file()]
    assert not any(p.read_bytes() in (MANIFEST, b"bob's", b"not yours") for p in copied)


def test_the_agent_stages_what_the_list_allows(
    tmp_path: Path, seaweedfs: SeaweedS3, buckets: Buckets
) -> None:
    b = buckets
    inputs = [
        {"url": f"s3://{b.shared}/inputs/a.txt", "path": "/in/a.txt"},
        {"url": f"s3://{b.lab}/alice/", "path": "/in/alice", "type": "DIRECTORY"},
    ]
    task = {"inputs": inputs, "executors": [EX]}
    with workspace(tmp_path, task, seaweedfs, b) as ws:
        stage_inputs(tes_inputs(inputs), ws)
        assert ws.tree_path("/in/a.txt").read_bytes() == b"shared input"
        assert ws.tree_path("/in/alice/in.txt").read_bytes() == b"alice's"


def test_the_agent_never_writes_over_or_above_the_capsules(
    tmp_path: Path, seaweedfs: SeaweedS3, buckets: Buckets
) -> None:
    b = buckets
    before = capsule_objects(seaweedfs, b)
    assert before == {"tescape/capsules/t1/manifest.json": MANIFEST}
    outputs = [
        {"url": f"s3://{b.store}/t1/manifest.json", "path": "/work/evil.json"},  # overwrite
        {"url": f"s3://{b.shared}", "path": "/work/tree", "type": "DIRECTORY"},  # above
        {"url": f"s3://{b.shared}/tescape", "path": "/work/*.json", "path_prefix": "/work"},
        {"url": f"s3://{b.other}/dropped.txt", "path": "/work/evil.json"},
        {"url": f"s3://{b.shared}/inputs/result.json", "path": "/work/evil.json"},  # allowed
    ]
    task = {"outputs": outputs, "executors": [EX]}
    with workspace(tmp_path, task, seaweedfs, b) as ws:
        stage_inputs(tes_inputs([]), ws)
        work = ws.tree_path("/work")
        (work / "evil.json").write_bytes(b"{}")
        (work / "tree" / "capsules" / "t1").mkdir(parents=True)
        (work / "tree" / "tescape" / "capsules" / "t1").mkdir(parents=True)
        (work / "tree" / "tescape" / "capsules" / "t1" / "manifest.json").write_bytes(b"{}")
        report = upload_outputs_report(tes_outputs(outputs), ws)
    logs, notes = report.as_tuple()
    assert report.failed == 4  # refused outputs fail the task (SYSTEM_ERROR), not skipped
    assert capsule_objects(seaweedfs, b) == before  # nothing overwritten, nothing added
    client = seaweedfs.client()
    assert "Contents" not in client.list_objects_v2(Bucket=b.other, Prefix="dropped")
    assert client.get_object(Bucket=b.shared, Key="inputs/result.json")["Body"].read() == b"{}"
    assert [entry["url"] for entry in logs] == [f"s3://{b.shared}/inputs/result.json"]
    refusals = "\n".join(notes)
    assert refusals.count("capsule store") == 3 and "storage.s3.allowed" in refusals, notes


# -- the gateway, at create ----------------------------------------------------------------------


@pytest.fixture
def gateway(tmp_path: Path, seaweedfs: SeaweedS3, buckets: Buckets) -> Iterator[RunningServer]:
    b = buckets
    config = {
        "capsules": {"store": f"s3://{b.store}"},
        "storage": {
            "s3": {
                **seaweedfs.s3_settings(),
                "allowed": [f"{b.shared}/inputs"],
                "allowed_by_user": {"alice": [f"{b.lab}/alice", f"{b.shared}/inputs"]},
            }
        },
        "auth": {
            "mode": "basic",
            "users": [
                {"name": "alice", "password_hash": generate_password_hash("a")},
                {"name": "bob", "password_hash": generate_password_hash("b")},
            ],
        },
    }
    with tescape_server(tmp_path / "data", config=config) as srv:
        yield srv


def create(srv: RunningServer, who: tuple[str, str], inputs: list[str], outputs: list[str]) -> Any:
    body = {
        "inputs": [
            {"url": u, "path": f"/in/{i}", "type": "DIRECTORY"} for i, u in enumerate(inputs)
        ],
        "outputs": [{"url": u, "path": f"/out/{i}"} for i, u in enumerate(outputs)],
        "executors": [EX],
    }
    return requests.post(srv.tes + "/tasks", json=body, auth=who, timeout=10)


def test_create_refuses_the_capsule_store_and_other_buckets(
    gateway: RunningServer, buckets: Buckets
) -> None:
    b = buckets
    resp = create(
        gateway,
        ("bob", "b"),
        [
            f"s3://{b.store}/t1/",
            f"s3://{b.shared}/",
            f"s3://{b.lab}/alice/",  # alice's own list, not bob's
            f"s3://{b.other}/secret.txt",
            f"s3://{b.shared}/inputs/",
        ],
        [f"s3://{b.shared}/tescape", f"s3://{b.store}/t1/manifest.json"],
    )
    assert resp.status_code == 400, resp.text
    errors = {e["field"]: e["message"] for e in resp.json()["errors"]}
    assert set(errors) == {
        "inputs[0].url",
        "inputs[1].url",
        "inputs[2].url",
        "inputs[3].url",
        "outputs[0].url",
        "outputs[1].url",
    }
    for field in ("inputs[0].url", "inputs[1].url", "outputs[0].url", "outputs[1].url"):
        assert "capsule store" in errors[field]
    assert "storage.s3.allowed" in errors["inputs[2].url"]

    ok = create(gateway, ("bob", "b"), [f"s3://{b.shared}/inputs/"], [])
    assert ok.status_code == 200, ok.text
    alice = create(
        gateway, ("alice", "a"), [f"s3://{b.lab}/alice/"], [f"s3://{b.shared}/inputs/out.txt"]
    )
    assert alice.status_code == 200, alice.text
    refused = create(gateway, ("alice", "a"), [f"s3://{b.lab}/bob/"], [])
    assert refused.status_code == 400 and "inputs[0].url" in refused.text


# -- end to end: the lists reach a real agent ----------------------------------------------------


def test_a_task_uses_its_allowed_prefix_beside_an_s3_capsule_store(
    tmp_path: Path, seaweedfs: SeaweedS3, buckets: Buckets, busybox_image: str
) -> None:
    """A real agent and podman: the settings the gateway sends (allow-list, capsule location)
    let a task read and write inside its allowed prefix, and the capsules stay untouched."""
    b = buckets
    before = capsule_objects(seaweedfs, b)
    config = {
        "capsules": {"store": f"s3://{b.store}", "keep": True},
        "storage": {"s3": {**seaweedfs.s3_settings(), "allowed": [f"{b.shared}/inputs"]}},
        "images": {"rewrites": {"alpine": busybox_image}},
        "scheduler": {"interval_seconds": 0.2},
    }
    task = {
        "inputs": [{"url": f"s3://{b.shared}/inputs/a.txt", "path": "/data/a.txt"}],
        "outputs": [{"url": f"s3://{b.shared}/inputs/out/b.txt", "path": "/data/b.txt"}],
        "executors": [
            {"image": "alpine", "command": ["sh", "-c", "tr a-z A-Z < /data/a.txt > /data/b.txt"]}
        ],
    }
    with tescape_server(tmp_path / "data", config=config, run_tasks=True) as srv:
        doc = ended(srv, submit(srv, task))
        assert doc["state"] == "COMPLETE", (doc, srv.log()[-3000:])
    body = seaweedfs.client().get_object(Bucket=b.shared, Key="inputs/out/b.txt")["Body"]
    assert body.read() == b"SHARED INPUT"
    assert capsule_objects(seaweedfs, b) == before
