"""`provider.launch_batch`: a cloud that boots machines in parallel gets up to that many launched
at once instead of one per boot, each for wants that the instances already on their way cannot
hold; 1 (the local provider's) keeps one at a time."""

from __future__ import annotations

from pathlib import Path

from tests.fixtures.world import World


def world(tmp_path: Path, batch: int) -> World:
    w = World(tmp_path)
    w.provider.max_instances = 10
    w.provider.launch_batch = batch
    return w


def test_a_batch_launches_one_instance_per_task_that_needs_one(tmp_path: Path) -> None:
    w = world(tmp_path, 3)
    for _ in range(4):
        w.submit(cpu_cores=4)  # each fills a fake.large
    w.scheduler.tick()
    assert len(w.provider.launched) == 3  # the batch, not the four wanted
    w.scheduler.tick()
    assert len(w.provider.launched) == 3  # those three boot first


def test_small_tasks_share_the_instance_launched_for_them(tmp_path: Path) -> None:
    w = world(tmp_path, 3)
    for _ in range(3):
        w.submit(cpu_cores=1)
    w.scheduler.tick()
    assert len(w.provider.launched) == 1  # one fake.large holds all three
    w.submit(cpu_cores=1)
    w.scheduler.tick()
    assert len(w.provider.launched) == 1  # the one on its way has room for the fourth too
    w.submit(cpu_cores=4)
    w.scheduler.tick()
    assert len(w.provider.launched) == 2  # but not for a whole instance more


def test_one_at_a_time_by_default(tmp_path: Path) -> None:
    w = world(tmp_path, 1)
    for _ in range(3):
        w.submit(cpu_cores=4)
    w.scheduler.tick()
    w.scheduler.tick()
    assert len(w.provider.launched) == 1
