"""One scheduler leader among the gateways that share a database.

Any number of gateways may serve the API on one database; exactly one runs the scheduler: the
holder of the `scheduler` row of `scheduler_lease`. Each tick the holder renews the lease for
`scheduler.lease_seconds`; a gateway that finds the lease expired takes it over and bumps its
`epoch`, the fencing token. A scheduler transaction that matters (placement, launch, loss)
checks the epoch in the same transaction (`fence`): an UPDATE of the lease row that matches only
the holder's own epoch, so on PostgreSQL the row stays locked until that transaction commits and
a takeover waits for it — a deposed leader's write is refused (`LostLeadership`), never applied
after the new leader's.

    holder     the gateway's id (`<data_dir>/gateway.id`, made at first start): a gateway
               restarted on its own data dir takes its own lease back at once, a new epoch
    expires    RFC 3339 by the holder's clock: the gateways' clocks must agree (NTP) to well
               within `lease_seconds`
"""

from __future__ import annotations

import logging
import secrets
from datetime import timedelta
from pathlib import Path

from sqlalchemy import Connection, insert, select, update
from sqlalchemy.exc import IntegrityError

from capsule_runtime.protocol.times import Clock, rfc3339, utcnow
from gateway.store.database import Database
from gateway.store.schema import scheduler_lease

log = logging.getLogger(__name__)
LEASE = "scheduler"


class LostLeadership(RuntimeError):
    """This gateway no longer holds the scheduler lease: the transaction is rolled back."""


def gateway_id(data_dir: Path) -> str:
    """This gateway's id, kept in its data dir (made on first use)."""
    path = data_dir / "gateway.id"
    try:
        found = path.read_text().strip()
    except FileNotFoundError:
        found = ""
    if not found:
        found = "g-" + secrets.token_hex(8)
        data_dir.mkdir(parents=True, exist_ok=True)
        path.write_text(found + "\n")
    return found


class SchedulerLease:
    def __init__(
        self, db: Database, holder: str, lease_seconds: float, clock: Clock = utcnow
    ) -> None:
        self.db = db
        self.holder = holder
        self.lease_seconds = lease_seconds
        self.clock = clock
        self.epoch: int | None = None  # held; None: following

    @property
    def leading(self) -> bool:
        return self.epoch is not None

    def hold(self) -> bool:
        """Renew the lease, or take it when it is free, expired or this gateway's own from an
        earlier process; False: another gateway leads. Call once a tick."""
        now = self.clock()
        expires = rfc3339(now + timedelta(seconds=self.lease_seconds))
        with self.db.engine.begin() as conn:
            if self.epoch is not None and self._renew(conn, expires):
                return True
            row = conn.execute(
                select(scheduler_lease).where(scheduler_lease.c.name == LEASE)
            ).first()
            taken: int | None = None
            if row is not None and (row.holder == self.holder or row.expires <= rfc3339(now)):
                taken = self._take(conn, row.epoch, expires)
        if row is None:
            taken = self._create(expires)
        was = self.epoch
        self.epoch = taken
        if taken is not None and was != taken:
            log.warning("this gateway (%s) leads the scheduler, epoch %d", self.holder, taken)
        elif taken is None and was is not None:
            log.error("this gateway (%s) lost the scheduler lease (epoch %d)", self.holder, was)
        return taken is not None

    def _renew(self, conn: Connection, expires: str) -> bool:
        done = conn.execute(
            update(scheduler_lease)
            .where(
                scheduler_lease.c.name == LEASE,
                scheduler_lease.c.holder == self.holder,
                scheduler_lease.c.epoch == self.epoch,
            )
            .values(expires=expires)
        )
        return done.rowcount == 1

    def _take(self, conn: Connection, seen_epoch: int, expires: str) -> int | None:
        """Compare-and-swap on the epoch seen: of two gateways taking over at once, one wins."""
        done = conn.execute(
            update(scheduler_lease)
            .where(scheduler_lease.c.name == LEASE, scheduler_lease.c.epoch == seen_epoch)
            .values(holder=self.holder, epoch=seen_epoch + 1, expires=expires)
        )
        return seen_epoch + 1 if done.rowcount == 1 else None

    def _create(self, expires: str) -> int | None:
        try:
            with self.db.engine.begin() as conn:
                conn.execute(
                    insert(scheduler_lease).values(
                        name=LEASE, holder=self.holder, epoch=1, expires=expires
                    )
                )
        except IntegrityError:  # another gateway made it first
            return None
        return 1

    def fence(self, conn: Connection) -> None:
        """In the caller's transaction: raise LostLeadership unless this gateway still holds
        the epoch it leads with (and, on PostgreSQL, lock the row until that transaction ends,
        so no takeover commits in between)."""
        if self.epoch is None:
            raise LostLeadership(f"gateway {self.holder} does not lead the scheduler")
        done = conn.execute(
            update(scheduler_lease)
            .where(
                scheduler_lease.c.name == LEASE,
                scheduler_lease.c.holder == self.holder,
                scheduler_lease.c.epoch == self.epoch,
            )
            .values(epoch=self.epoch)
        )
        if done.rowcount != 1:
            epoch, self.epoch = self.epoch, None
            raise LostLeadership(f"gateway {self.holder} was deposed (it led with epoch {epoch})")

    def release(self) -> None:
        """Let the lease go at once (a clean stop): another gateway takes over at its next
        tick instead of after `lease_seconds`."""
        if self.epoch is None:
            return
        with self.db.engine.begin() as conn:
            conn.execute(
                update(scheduler_lease)
                .where(
                    scheduler_lease.c.name == LEASE,
                    scheduler_lease.c.holder == self.holder,
                    scheduler_lease.c.epoch == self.epoch,
                )
                .values(expires=rfc3339(self.clock() - timedelta(seconds=1)))
            )
        self.epoch = None
