"""The three views exactly as the spec defines them."""

from typing import Any

from gateway.tes.views import View, render_task

SPEC: dict[str, Any] = {
    "name": "t",
    "inputs": [{"path": "/a", "content": "secret", "type": "FILE"}],
    "executors": [{"image": "alpine", "command": ["true"]}],
}
LOGS: list[dict[str, Any]] = [
    {
        "logs": [{"exit_code": 0, "stdout": "out", "stderr": "err", "start_time": "t0"}],
        "outputs": [],
        "system_logs": ["placed on i-1"],
        "metadata": {"vm_price_per_hour_usd": "0.1"},
    }
]


def test_minimal_is_id_and_state_only() -> None:
    assert render_task("x", "QUEUED", View.MINIMAL, SPEC, "now", LOGS) == {
        "id": "x",
        "state": "QUEUED",
    }


def test_basic_drops_exactly_the_four_fields() -> None:
    out = render_task("x", "COMPLETE", View.BASIC, SPEC, "now", LOGS)
    assert out["inputs"] == [{"path": "/a", "type": "FILE"}]
    assert out["logs"] == [
        {
            "logs": [{"exit_code": 0, "start_time": "t0"}],
            "outputs": [],
            "metadata": LOGS[0]["metadata"],
        }
    ]
    assert out["executors"] == SPEC["executors"] and out["creation_time"] == "now"


def test_full_has_everything_and_leaves_the_stored_spec_alone() -> None:
    out = render_task("x", "COMPLETE", View.FULL, SPEC, "now", LOGS)
    assert out["inputs"][0]["content"] == "secret"
    assert out["logs"] == LOGS
    render_task("x", "COMPLETE", View.BASIC, SPEC, "now", LOGS)
    assert SPEC["inputs"][0]["content"] == "secret" and "system_logs" in LOGS[0]
