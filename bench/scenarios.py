"""The API benchmark's scenarios, named once: `api_bench` runs them, `api_ab` compares versions on
the throughput ones, `report` makes their table columns, and the smoke test checks a run has
every one."""

from __future__ import annotations

# Every scenario runs on one connection (latency), in this order; name → its column in the tables.
LATENCY: dict[str, str] = {
    "healthz": "healthz",
    "get_minimal": "GET MINIMAL",
    "get_full": "GET FULL",
    "list_minimal": "list MINIMAL",
    "list_basic": "list BASIC",
    "list_state": "list state",
    "list_tag": "list tag",
    "list_deep": "list deep",
    "create": "create",
}
# These also on --concurrency connections (throughput).
THROUGHPUT = ("healthz", "get_minimal", "create")
# Run once before measuring (the database's pages into memory).
WARMUP = ("get_minimal", "get_full", "list_minimal", "list_deep")
