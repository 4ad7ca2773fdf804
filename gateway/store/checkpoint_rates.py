"""How fast each instance type writes capsules: one row per provider and instance type
(`checkpoint_rates`), holding the notice budget planner's running estimate as JSON. The
planner (gateway/scheduler/notice_budget.py) owns what the JSON means; this store only keeps it.

An update is a read-modify-write of one small row in its own transaction, after the capsule
report that measured it has committed: a statistic never fails or delays a report. Two reports
of the same type at the same instant may keep only one of the two samples; the estimate is a
running average, and one sample fewer does not change what it says.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.exc import IntegrityError

from capsule_runtime.protocol.times import Clock, rfc3339, utcnow
from gateway.store.database import Database
from gateway.store.schema import checkpoint_rates

log = logging.getLogger(__name__)

Stats = dict[str, Any]


class CheckpointRates:
    def __init__(self, db: Database, clock: Clock = utcnow):
        self.db = db
        self.clock = clock

    def all(self) -> dict[tuple[str, str], Stats]:
        """(provider, instance_type) → the stored estimate."""
        with self.db.engine.connect() as conn:
            rows = conn.execute(select(checkpoint_rates)).all()
        return {(r.provider, r.instance_type): json.loads(r.stats) for r in rows}

    def update(
        self, provider: str, instance_type: str, change: Callable[[Stats | None], Stats]
    ) -> None:
        """Replace the type's estimate by `change(old)` (None: nothing stored yet)."""
        key = (checkpoint_rates.c.provider == provider) & (
            checkpoint_rates.c.instance_type == instance_type
        )
        for _ in range(2):  # a first insert that another gateway made meanwhile: once more
            try:
                with self.db.engine.begin() as conn:
                    row = conn.execute(select(checkpoint_rates.c.stats).where(key)).first()
                    stats = change(json.loads(row.stats) if row is not None else None)
                    values = {
                        "samples": int(stats.get("samples", 0)),
                        "stats": json.dumps(stats),
                        "updated_time": rfc3339(self.clock()),
                    }
                    if row is None:
                        conn.execute(
                            insert(checkpoint_rates).values(
                                provider=provider, instance_type=instance_type, **values
                            )
                        )
                    else:
                        conn.execute(update(checkpoint_rates).where(key).values(**values))
                return
            except IntegrityError:
                continue
        log.info("checkpoint rate of %s/%s not updated (concurrent)", provider, instance_type)
