"""capsule_runtime.protocol.redact: secrets masked in log lines, events and system_logs, ordinary
text kept."""

from __future__ import annotations

import io
import logging
from pathlib import Path

import pytest

from capsule_runtime.protocol.redact import (
    MASK,
    RedactingFilter,
    is_secret_name,
    redact,
    redact_value,
    remember_env_secrets,
    remember_secret,
)
from gateway.store.database import open_database
from gateway.store.tasks import TaskStore
from tests.fixtures.documents import tes_task


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        ("fetching https://alice:hunter2pw@example.org/data.txt failed", "hunter2pw"),
        ("ftp://bob:pa55word@ftp.example.org/x", "pa55word"),
        (
            "GET s3://bucket/key?X-Amz-Credential=AKIAX&X-Amz-Signature=abcdef123 → 403",
            "abcdef123",
        ),
        ("https://h/x?access_token=tok123456&page=2", "tok123456"),
        ("Authorization: Bearer eyJhbGciOi.payload.sig", "eyJhbGciOi.payload.sig"),
        ("header Basic dXNlcjpwYXNz", "dXNlcjpwYXNz"),
        ("podman pull --creds alice:s3cr3tpw docker.io/x", "s3cr3tpw"),
        ("env AWS_SECRET_ACCESS_KEY=wJalrXUtnFEMI/K7MDENG", "wJalrXUtnFEMI/K7MDENG"),
        ("DB_PASSWORD=correct-horse ok", "correct-horse"),
        ('{"password": "p@ss-word", "user": "u"}', "p@ss-word"),
        ("{'api_key': 'k-123456'}", "k-123456"),
        ("GITHUB_TOKEN: ghp_abcdef", "ghp_abcdef"),
    ],
)
def test_secrets_in_text_are_masked(text: str, secret: str) -> None:
    out = redact(text)
    assert secret not in out, out
    assert MASK in out


@pytest.mark.parametrize(
    "text",
    [
        "checkpoint 3 (periodic) failed: podman checkpoint failed: exit 125",
        "input s3://bucket/data/file.txt: 404 Not Found",
        "http://127.0.0.1:8000/api/v1/tasks/abc at 12:30:45",
        "unknown instance or wrong instance token",
        "cannot decrypt with /data/secret.key: was the key replaced?",
        "manifest_key=t/a/000001/manifest.json",
    ],
)
def test_ordinary_text_is_kept(text: str) -> None:
    assert redact(text) == text


def test_remembered_values_are_masked_anywhere() -> None:
    remember_secret("Zq9-very-unusual-value", "abc", None)  # "abc": too short to remember
    assert redact("podman said: auth Zq9-very-unusual-value refused") == (
        f"podman said: auth {MASK} refused"
    )
    assert redact("abc") == "abc"
    remember_env_secrets({"MY_PASSWORD": "env-secret-42", "PATH": "/usr/bin:/bin"})
    assert "env-secret-42" not in redact("echo env-secret-42")
    assert redact("/usr/bin:/bin") == "/usr/bin:/bin"


def test_secret_names_and_values() -> None:
    for name in ("AWS_SECRET_ACCESS_KEY", "db_password", "GITHUB_TOKEN", "api-key", "passwd"):
        assert is_secret_name(name), name
    for name in ("PATH", "HOME", "PWD", "manifest_key", "TASK_ID"):
        assert not is_secret_name(name), name
    data = {"secret_access_key": "x1", "url": "https://u:pw1234@h/", "n": 3, "l": ["Bearer abcd1"]}
    assert redact_value(data) == {
        "secret_access_key": MASK,
        "url": f"https://u:{MASK}@h/",
        "n": 3,
        "l": [f"Bearer {MASK}"],
    }


def test_the_log_filter_masks_messages_arguments_and_tracebacks() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(RedactingFilter())
    logger = logging.getLogger("test_redact")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.warning("staging %s failed", "https://u:topsecret1@h/x")
        try:
            raise ValueError("password=topsecret2")
        except ValueError:
            logger.exception("boom")
    finally:
        logger.removeHandler(handler)
    out = stream.getvalue()
    assert "topsecret1" not in out and "topsecret2" not in out
    assert "staging https://u:***@h/x failed" in out and "ValueError" in out


def test_events_and_system_logs_are_stored_redacted(tmp_path: Path) -> None:
    db = open_database(f"sqlite:///{tmp_path / 't.db'}")
    try:
        store = TaskStore(db)
        task = store.create({"executors": [{"image": "alpine", "command": ["true"]}]})
        store.record(
            task.id,
            "staging_failed",
            message="input https://alice:pw-in-url@h/x: 401",
            data={"token": "tok-abcdef", "url": "s3://b/k?X-Amz-Signature=sig123"},
        )
        store.set_logs(task.id, [{"logs": [], "system_logs": ["DB_PASSWORD=hunter22 leaked"]}])
        events = store.events(task.id)
        stored = store.get(task.id)
    finally:
        db.close()
    text = repr(events) + repr(stored.logs if stored else None)
    for secret in ("pw-in-url", "tok-abcdef", "sig123", "hunter22"):
        assert secret not in text
    assert "https://alice:***@h/x: 401" in text


def test_an_agent_remembers_its_assignments_secrets() -> None:
    from capsule_runtime.protocol.messages import Assignment, CapsuleSettings, TaskSettings
    from capsule_runtime.runner import _remember_secrets

    _remember_secrets(
        Assignment(
            attempt_id="a1",
            task_id="t1",
            task=tes_task(
                {"executors": [{"image": "x", "command": ["true"], "env": {"PGPASS": "nope"}}]}
            ),
            settings=TaskSettings(
                registry_credentials={"reg.example": {"username": "u", "password": "reg-pw-9876"}},
                s3={"secret_access_key": "s3-secret-5432"},
            ),
            capsules=CapsuleSettings(encryption={"mode": "key", "key": "Y2Fwc3VsZS1rZXktYmFzZTY0"}),
        )
    )
    line = "pull failed: reg-pw-9876 s3-secret-5432 Y2Fwc3VsZS1rZXktYmFzZTY0"
    assert redact(line) == f"pull failed: {MASK} {MASK} {MASK}"
