"""Issue 10, per-user data isolation: a task's s3:// URLs never reach the capsule store (inside it
or above it), stay inside the configured allow-list (a user's own list first), and the agent
refuses them again before any S3 request when the gateway's check is bypassed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from capsule_runtime.protocol.s3_paths import S3Location, S3Rules, task_s3_errors
from capsule_runtime.runner import s3_store_location
from capsule_runtime.staging import AccessRefused, S3Config, S3Storage, StagingPolicy
from gateway.config import Config
from tests.fixtures.documents import tes_task

STORE = "shared/tescape/capsules"


def capsule_rules(allowed: list[str] | None = None) -> S3Rules:
    return S3Rules.create(allowed, [STORE])


# -- the rules ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "s3://shared/tescape/capsules/t1/manifest.json",  # a capsule object
        "s3://shared/tescape/capsules",  # the store itself
        "s3://shared/tescape/capsules/",
        "s3://shared/tescape/",  # a prefix above it: a listing or a directory output covers it
        "s3://shared/tescape",
        "s3://shared/",  # the whole bucket
        "s3://shared",
        "s3://SHARED/tescape/capsules/x",  # bucket names are case-blind (virtual-host style)
        "s3://shared//tescape//capsules/x",  # empty segments collapsed
        "s3://shared/tescape/capsules//x",
        "s3://shared///",
    ],
)
def test_the_capsule_store_is_refused_inside_and_above(url: str) -> None:
    why = capsule_rules().refusal(url)
    assert why is not None and "capsule store" in why


@pytest.mark.parametrize(
    "url",
    [
        "s3://shared/tescape/capsules2/x",  # a sibling prefix: segments compared whole
        "s3://shared/tescape/caps",
        "s3://shared/other/data.txt",
        "s3://another-bucket/",
        "s3://another-bucket",
    ],
)
def test_other_locations_pass_without_an_allow_list(url: str) -> None:
    assert capsule_rules().refusal(url) is None


@pytest.mark.parametrize(
    "url",
    [
        "s3://shared/tescape/../tescape/capsules/x",
        "s3://shared/./tescape/capsules/x",
        "s3://shared/a/..",
        "s3://user@shared/x",
        "s3://shared:9000/x",
        "s3://",
    ],
)
def test_urls_no_rule_can_judge_are_refused(url: str) -> None:
    assert capsule_rules().refusal(url) is not None


def test_an_allow_list_is_matched_by_whole_segments() -> None:
    rules = capsule_rules(["lab-data/users/alice", "results"])
    assert rules.refusal("s3://lab-data/users/alice/in.bam") is None
    assert rules.refusal("s3://lab-data/users/alice") is None
    assert rules.refusal("s3://results/") is None
    assert rules.refusal("s3://results/run1/x") is None
    for url in (
        "s3://lab-data/users/alice2/in.bam",
        "s3://lab-data/users/",  # a listing above the allowed prefix
        "s3://lab-data/users/bob/secret",
        "s3://other/x",
    ):
        why = rules.refusal(url)
        assert why is not None and "storage.s3.allowed" in why, url


def test_an_allow_list_never_opens_the_capsule_store() -> None:
    rules = capsule_rules(["shared"])  # the whole bucket the capsules live in
    assert rules.refusal("s3://shared/inputs/x") is None
    assert "capsule store" in (rules.refusal("s3://shared/tescape/capsules/x") or "")
    assert "capsule store" in (rules.refusal("s3://shared/") or "")


def test_an_empty_allow_list_refuses_every_bucket() -> None:
    why = capsule_rules([]).refusal("s3://anything/x")
    assert why is not None and "none" in why


def test_entries_parse() -> None:
    assert S3Location.parse("s3://Bucket/a//b/") == S3Location("bucket", ("a", "b"))
    assert S3Location.parse("bucket") == S3Location("bucket")
    with pytest.raises(ValueError, match="bucket name"):
        S3Location.parse("/abs/path")


def test_task_s3_errors_name_each_field() -> None:
    task = {
        "inputs": [
            {"url": "s3://shared/inputs/a.txt", "path": "/a"},
            {"url": "s3://shared/tescape/capsules/t1/manifest.json", "path": "/m"},
            {"url": "S3://shared/tescape/capsules/t1/", "path": "/d", "type": "DIRECTORY"},
            {"url": "/local/path", "path": "/l"},
            {"content": "x", "path": "/c"},
        ],
        "outputs": [
            {"url": "s3://shared/", "path": "/out", "type": "DIRECTORY"},
            {"url": "s3://shared/results/", "path": "/w/*.txt", "path_prefix": "/w"},
        ],
    }
    errors = {e.field: e.message for e in task_s3_errors(tes_task(task), capsule_rules())}
    assert set(errors) == {"inputs[1].url", "inputs[2].url", "outputs[0].url"}
    assert "covers s3://shared/tescape/capsules" in errors["outputs[0].url"]


# -- configuration ------------------------------------------------------------------------------


def config(**storage: Any) -> Config:
    return Config.model_validate({"capsules": {"store": f"s3://{STORE}"}, "storage": storage})


def test_config_lists() -> None:
    cfg = config(s3={"allowed": ["lab-data"], "allowed_by_user": {"alice": ["lab-data/alice"]}})
    assert cfg.s3_denied == [STORE]
    assert cfg.s3_allowed("alice") == ["lab-data/alice"]
    assert cfg.s3_allowed("bob") == ["lab-data"]
    assert Config().s3_allowed("bob") is None
    assert Config().s3_denied == []  # a local capsule store: denied_dirs covers it


def test_config_refuses_a_bad_entry() -> None:
    with pytest.raises(ValueError, match="does not start with a bucket name"):
        config(s3={"allowed": ["/not/a/bucket"]})


def test_the_agent_gets_connection_settings_without_the_lists() -> None:
    cfg = config(
        s3={"endpoint_url": "http://s3.local", "allowed": ["x"], "allowed_by_user": {"a": []}}
    )
    assert cfg.storage.s3.connection() == {
        "endpoint_url": "http://s3.local",
        "addressing_style": "auto",
    }
    assert cfg.capsule_s3 == cfg.storage.s3.connection()  # no identity of its own: staging's


def test_the_capsule_store_may_have_its_own_identity() -> None:
    cfg = config(
        s3={"access_key_id": "staging", "secret_access_key": "s"},
        capsules_s3={"access_key_id": "capsules", "secret_access_key": "c"},
    )
    assert cfg.capsule_s3["access_key_id"] == "capsules"
    assert cfg.storage.s3.connection()["access_key_id"] == "staging"


def test_block_private_networks_auto_follows_the_provider() -> None:
    assert Config().storage.block_private_networks == "auto"
    assert Config().blocks_private_networks is False  # local instances run on this machine
    assert config(block_private_networks=True).blocks_private_networks is True
    cfg = Config()
    cfg.providers.__dict__["default"] = "aws"  # a remote provider (none is built in yet)
    assert cfg.blocks_private_networks is True


def test_dispatch_sends_the_lists_of_the_tasks_owner(monkeypatch: pytest.MonkeyPatch) -> None:
    from gateway.dispatch import Dispatcher

    cfg = config(s3={"allowed_by_user": {"alice": ["lab-data/alice"]}})

    class Library:
        def resolve(self, images: Any, rewrites: Any) -> tuple[dict[str, Any], dict[str, Any]]:
            return {}, {}

    dispatch = Dispatcher.__new__(Dispatcher)
    dispatch.cfg, dispatch.library = cfg, Library()  # type: ignore[assignment]
    alice = dispatch.settings(tes_task({"executors": []}), "alice")
    assert alice.s3_allowed == ["lab-data/alice"] and alice.s3_denied == [STORE]
    assert dispatch.settings(tes_task({"executors": []}), "bob").s3_allowed is None
    assert "allowed" not in alice.s3


# -- the agent ----------------------------------------------------------------------------------


def test_the_agent_refuses_before_any_request(tmp_path: Path) -> None:
    """The gateway's check bypassed: the agent's policy refuses every S3 operation on the
    capsule store or outside the allow-list before making a client (an unreachable endpoint)."""
    policy = StagingPolicy.create(
        s3_allowed=["lab-data/alice"], s3_denied=s3_store_location(f"s3://{STORE}")
    )
    storage = S3Storage(policy, S3Config(endpoint_url="http://127.0.0.1:9"))
    src = tmp_path / "f"
    src.write_text("x")
    for url in (
        f"s3://{STORE}/t1/manifest.json",
        "s3://shared/",
        "s3://lab-data/users/bob/x",
    ):
        with pytest.raises(AccessRefused):
            storage.get(url, tmp_path / "dest", "FILE")
        with pytest.raises(AccessRefused):
            storage.get(url, tmp_path / "dir", "DIRECTORY")
        with pytest.raises(AccessRefused):
            storage.stat(url)
        with pytest.raises(AccessRefused):
            storage.put(src, url + "/x")
    assert not storage._client.made  # never connected


def test_s3_store_location() -> None:
    assert s3_store_location("s3://b/p") == ["b/p"]
    assert s3_store_location("/data/capsules") == []


def test_start_notes_on_s3_access() -> None:
    from gateway.config import s3_notes

    cfg = config(s3={"allowed": ["lab", f"{STORE}/t1"]})
    notes = s3_notes(cfg)
    assert any(f"{STORE}/t1 lies in the capsule store" in n for n in notes)
    assert any("storage.s3's identity" in n for n in notes)
    own = config(capsules_s3={"access_key_id": "c"})
    assert s3_notes(own) == [] and s3_notes(Config()) == []
