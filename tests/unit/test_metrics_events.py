"""The folds behind the event-derived /metrics (gateway.api.metrics_events), on plain rows."""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any

from gateway.api.metrics_events import STEP_BUCKETS, Fold, Histogram, fold_event


def row(kind: str, data: dict[str, Any] | None = None, **fields: Any) -> SimpleNamespace:
    base = {
        "kind": kind,
        "time": "2026-12-02T10:00:10+00:00",
        "to_state": None,
        "data": json.dumps(data) if data else None,
        "creation_time": None,
        "reason": None,
        "instance_type": None,
        "zone": None,
    }
    return SimpleNamespace(**{**base, **fields})


def test_histogram_is_cumulative_and_adds_up() -> None:
    h = Histogram((1.0, 10.0))
    for v in (0.5, 1.0, 5.0, 50.0):
        h.observe(v)
    assert h.cumulative() == [("1.0", 2), ("10.0", 3), ("+Inf", 4)]
    both = h.merged(h)
    assert both.cumulative()[-1] == ("+Inf", 8) and both.total == 2 * h.total
    assert h.cumulative()[-1] == ("+Inf", 4)  # merging made a new one


def test_events_fold_into_counters_and_histograms() -> None:
    out = Fold()
    created = "2026-12-02T10:00:00+00:00"
    fold_event(out, row("state", to_state="INITIALIZING", creation_time=created))
    fold_event(out, row("state", to_state="COMPLETE", creation_time=created))
    capsule = {"reason": "reclaim", "seconds": {"total": 2.0, "criu_frozen": 0.5}}
    fold_event(out, row("capsule", {**capsule, "size_bytes": 100, "uploaded_bytes": 40}))
    fold_event(out, row("checkpoint_failed", {"reason": "periodic", "seconds": {"total": 1}}))
    fold_event(out, row("restored", {"seconds": {"total": 3.0}, "stored_bytes": 70}))
    fold_event(out, row("restart_from_scratch"))
    fold_event(out, row("attempt", {"restore": True}, reason="reclaim"))
    fold_event(out, row("attempt", None, reason="lost"))
    fold_event(out, row("attempt", None, reason="first"))
    fold_event(out, row("interruption", instance_type="m5.large", zone="z1"))
    queue = out.histograms[("queue_latency_seconds", ("INITIALIZING",))]
    assert queue.total == 10.0 and queue.cumulative()[-1][1] == 1
    assert ("queue_latency_seconds", ("COMPLETE",)) not in out.histograms
    assert out.counters[("checkpoints", ("ok", "reclaim"))] == 1
    assert out.counters[("checkpoints", ("failed", "periodic"))] == 1
    assert out.counters[("checkpoint_bytes", ("uploaded",))] == 40
    assert out.histograms[("checkpoint_frozen_seconds", ())].total == 0.5
    assert out.histograms[("restore_seconds", ())].total == 3.0
    assert out.counters[("restore_bytes", ())] == 70
    assert out.counters[("restores", ("ok",))] == out.counters[("restores", ("none_usable",))]
    assert out.counters[("migrations", ("reclaim",))] == 1
    assert out.counters[("restarts", ("lost",))] == 1
    assert ("restarts", ("first",)) not in out.counters
    assert out.counters[("interruption_notices", ("m5.large", "z1"))] == 1


def test_bad_data_is_skipped_not_raised() -> None:
    out = Fold()
    fold_event(out, row("capsule", {"seconds": {"total": "soon"}}))
    fold_event(out, row("state", to_state="RUNNING", creation_time="not a time"))
    assert out.counters[("checkpoints", ("ok", ""))] == 1
    assert not out.histograms and len(STEP_BUCKETS) > 3
