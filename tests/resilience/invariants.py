"""The invariants every resilience scenario ends with, read from the store's events and attempts:
each task reaches exactly one terminal state, through legal transitions only, and never has two
live attempts at once."""

from __future__ import annotations

from itertools import pairwise
from typing import Any

from gateway.store.fleet import LIVE_PHASES, Attempt
from gateway.tes.states import PHASE_TRANSITIONS, AttemptPhase, State, can_transition


def state_path(events: list[dict[str, Any]]) -> list[State]:
    """The task's states in order, from its `created` event on."""
    path = [State.QUEUED]
    for e in events:
        if e["kind"] == "state":
            assert State(e["from_state"]) is path[-1], (e, path)
            path.append(State(e["to_state"]))
    return path


def check_legal(events: list[dict[str, Any]]) -> list[State]:
    """Every state change follows the transition table; at most one terminal state."""
    path = state_path(events)
    for src, dst in pairwise(path):
        assert can_transition(src, dst), f"illegal transition {src} → {dst} in {path}"
    assert sum(s.terminal for s in path) <= 1, path
    return path


def check_finished(events: list[dict[str, Any]]) -> State:
    """Legal transitions, ending in exactly one terminal state."""
    path = check_legal(events)
    assert path[-1].terminal, path
    return path[-1]


def check_attempts(events: list[dict[str, Any]], attempts: list[Attempt]) -> None:
    """Never two live attempts at once (replayed from the phase events), and every phase change
    follows the attempt-phase table."""
    phase: dict[str, AttemptPhase] = {}
    for e in events:
        aid = e.get("attempt_id")
        if aid is None:
            continue
        if e["kind"] == "attempt" and aid not in phase:
            phase[aid] = AttemptPhase.PROVISIONING
        elif e["kind"] == "phase":
            new = AttemptPhase(e["phase"])
            assert new in PHASE_TRANSITIONS[phase[aid]], f"{aid}: {phase[aid]} → {new}"
            phase[aid] = new
        live = [a for a, p in phase.items() if p in LIVE_PHASES]
        assert len(live) <= 1, f"two live attempts {live} at event {e}"
    assert {a.id: a.phase for a in attempts} == phase
