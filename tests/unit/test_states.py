"""The transition table and the store's compare-and-swap that applies it."""

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.store import TaskStore, open_database
from gateway.store.tasks import Transition
from gateway.tes.states import (
    ILLEGAL,
    PHASE_TRANSITIONS,
    TERMINAL,
    TRANSITIONS,
    AttemptPhase,
    State,
    can_transition,
)

SPEC = {"executors": [{"image": "alpine", "command": ["true"]}]}


def test_table_covers_every_state() -> None:
    assert set(TRANSITIONS) == set(State)
    assert set(PHASE_TRANSITIONS) == set(AttemptPhase)


def test_terminal_states_are_absorbing() -> None:
    for state in TERMINAL:
        assert TRANSITIONS[state] == frozenset()


def test_illegal_states_are_never_entered_nor_left() -> None:
    for src, targets in TRANSITIONS.items():
        assert not targets & ILLEGAL, src
    for state in ILLEGAL:
        assert TRANSITIONS[state] == frozenset()


def test_no_self_transitions() -> None:
    for state in State:
        assert not can_transition(state, state)


def test_every_non_terminal_state_can_end() -> None:
    for state in (State.QUEUED, State.INITIALIZING, State.RUNNING, State.CANCELING):
        reachable: set[State] = set()
        frontier = {state}
        while frontier:
            nxt = set().union(*(TRANSITIONS[s] for s in frontier)) - reachable
            reachable |= nxt
            frontier = nxt
        assert reachable & TERMINAL, state


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> TaskStore:
    db = open_database(f"sqlite:///{tmp_path_factory.mktemp('db') / 't.db'}")
    return TaskStore(db)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.sampled_from(list(State)), max_size=8))
def test_store_applies_exactly_the_table(store: TaskStore, targets: list[State]) -> None:
    """Whatever sequence of changes is asked for, the store applies exactly those the table
    allows, ends in a state reachable by legal steps, and records one event per applied change."""
    task = store.create(SPEC)
    state = State.QUEUED
    applied = 0
    for target in targets:
        result = store.transition(task.id, target)
        assert result.from_state == state
        assert result.applied == can_transition(state, target)
        if result.applied:
            state = target
            applied += 1
    record = store.get(task.id)
    assert record is not None and record.state == state
    changes = [e for e in store.events(task.id) if e["kind"] == "state"]
    assert len(changes) == applied
    assert [e["to_state"] for e in changes] == _walk(targets)


def _walk(targets: list[State]) -> list[State]:
    state, out = State.QUEUED, []
    for target in targets:
        if can_transition(state, target):
            state = target
            out.append(target)
    return out


def test_expect_guards_the_swap(store: TaskStore) -> None:
    task = store.create(SPEC)
    refused = store.transition(task.id, State.CANCELED, expect={State.RUNNING})
    assert not refused.applied and refused.from_state is State.QUEUED
    assert store.transition(task.id, State.CANCELED, expect={State.QUEUED}).applied


def test_concurrent_transitions_apply_once(tmp_path: Path) -> None:
    """Two writers race QUEUED → INITIALIZING; exactly one wins, the other sees the new state."""
    import threading

    db = open_database(f"sqlite:///{tmp_path / 'race.db'}")
    store = TaskStore(db)
    wins: list[bool] = []
    for _ in range(20):
        task = store.create(SPEC)
        barrier = threading.Barrier(2)
        results: list[Transition] = []

        def go(
            task_id: str = task.id,
            barrier: threading.Barrier = barrier,
            results: list[Transition] = results,
        ) -> None:
            barrier.wait()
            results.append(store.transition(task_id, State.INITIALIZING, expect={State.QUEUED}))

        threads = [threading.Thread(target=go) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sum(r.applied for r in results) == 1
        wins.append(True)
        changes = [e for e in store.events(task.id) if e["kind"] == "state"]
        assert len(changes) == 1
    db.close()
