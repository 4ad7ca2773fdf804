"""The typed `data` columns of attempts and instances read and write the JSON they always held."""

from __future__ import annotations

import pytest

from gateway.store.fleet_data import (
    AttemptData,
    CheckpointRequest,
    InstanceData,
    UsageSample,
    changed,
)

OLD_ATTEMPT = {
    "restore": True,
    "exclude": ["i-1"],
    "target": None,
    "migrations": 2,
    "limits": {"cpu_cores": 2.0, "ram_gb": 4.0},
    "plan": {"offer": None, "zone_matters": False, "strategy": "same_type"},
    "checkpoint": {"id": "ck-1", "stop": True, "reason": "cost", "sent": "2026-01-01T00:00:00Z"},
    "usage": [{"cpu_cores": 0.5, "memory_bytes": 1024, "time": "2026-01-01T00:00:00Z"}],
    "from_a_newer_gateway": {"kept": 1},
}


def test_an_old_row_reads_typed_and_writes_back_the_same_json() -> None:
    data = AttemptData.model_validate(OLD_ATTEMPT)
    assert data.restore and data.exclude == ["i-1"] and data.migrations == 2
    assert data.checkpoint is not None and data.checkpoint.reason == "cost"
    assert data.usage[0].memory_bytes == 1024 and isinstance(data.usage[0].memory_bytes, int)
    assert data.dump() == OLD_ATTEMPT  # unknown keys kept, absent keys stay absent


def test_changes_set_and_remove_fields_and_refuse_unknown_ones() -> None:
    data = AttemptData.model_validate(OLD_ATTEMPT)
    after = changed(data, {"checkpoint": None, "usage": [UsageSample(time="t")]})
    assert "checkpoint" not in after.dump() and after.dump()["usage"] == [{"time": "t"}]
    assert after.dump()["from_a_newer_gateway"] == {"kept": 1}
    again = changed(after, {"checkpoint": CheckpointRequest(id="ck-2")})
    assert again.dump()["checkpoint"] == {"id": "ck-2"}
    with pytest.raises(TypeError, match="not attempt data fields"):
        changed(data, {"no_such_field": 1})  # type: ignore[typeddict-unknown-key]


def test_an_instance_row_with_sizes_missing_counts_them_as_none() -> None:
    data = InstanceData.model_validate({"capacity": {"cpu_cores": 2, "ram_gb": 8}, "x": 1})
    assert data.capacity is not None and data.capacity.disk_gb == 0.0
    assert data.dump()["x"] == 1
