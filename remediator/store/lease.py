"""The leader lease row and the fencing-token check (mixed into SQLStore).

One row: holder, epoch, expires_at, acquired_at, renewed_at. Every time is the database's clock
(PostgreSQL `clock_timestamp()`), never a replica's, so replicas whose clocks disagree still agree on
who holds the lease. Taking or renewing it is one transaction holding the row FOR UPDATE:

  - free (never taken, or expired): the caller takes it, epoch + 1;
  - held by the caller and unexpired: renewed, same epoch (a `fresh` caller - a new process under the
    same replica name - takes a new epoch: what its previous incarnation wrote is another authority);
  - held by another and unexpired: refused; the caller learns who holds it and until when.

The epoch is the fencing token. `check_lease` runs first in every unit of work of the leader
(store/fenced.py): it reads the row FOR SHARE, so a takeover (FOR UPDATE) waits for a unit of work
already past the check to commit, and a unit of work that starts after a takeover sees the new epoch
and is refused with StaleEpoch. SQLite serialises every writer (BEGIN IMMEDIATE) and needs no lock.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import sqlalchemy as sa

from remediator.store.base import StoreError
from remediator.store.schema import lease

LEASE_ROW = 1


class StaleEpoch(StoreError):
    """A write under an epoch that no longer holds the lease: nothing was written."""

    def __init__(self, replica: str, epoch: int, view: "LeaseView"):
        super().__init__(f"replica {replica} wrote under epoch {epoch}, but the lease is at epoch {view.epoch} "
                         f"held by {view.holder or 'nobody'} ({'valid' if view.valid else 'expired'}): "
                         f"write refused, nothing was written")
        self.replica, self.epoch, self.view = replica, epoch, view


@dataclass(frozen=True)
class LeaseView:
    holder: str | None
    epoch: int
    expires_at: datetime | None
    acquired_at: datetime | None
    renewed_at: datetime | None
    now: datetime  # the database's clock when the row was read

    @property
    def valid(self) -> bool:
        return self.expires_at is not None and self.expires_at > self.now

    @property
    def remaining_s(self) -> float:
        return (self.expires_at - self.now).total_seconds() if self.valid else 0.0

    def held_by(self, replica: str) -> bool:
        return self.valid and self.holder == replica


class LeaseRows:
    """Mixed into SQLStore, which provides db and _one."""

    def _db_now(self, conn: sa.Connection) -> datetime:
        if self.db.dialect == "postgresql":  # type: ignore[attr-defined]
            return conn.execute(sa.select(sa.func.clock_timestamp())).scalar_one().astimezone(timezone.utc)
        return datetime.now(timezone.utc)  # SQLite: one machine, its clock is the database's

    def _lease_row(self, conn: sa.Connection, lock: str | None) -> LeaseView:
        query = sa.select(lease).where(lease.c.id == LEASE_ROW)
        if lock and self.db.dialect == "postgresql":  # type: ignore[attr-defined]
            query = query.with_for_update(read=(lock == "share"))
        row = conn.execute(query).first()
        if row is None:
            raise StoreError("the lease row is missing (schema older than revision 0005?)")
        return LeaseView(row.holder, int(row.epoch), row.expires_at, row.acquired_at, row.renewed_at,
                         self._db_now(conn))

    def _bound(self, conn: sa.Connection, timeout_s: float | None) -> None:
        if timeout_s and self.db.dialect == "postgresql":  # type: ignore[attr-defined]
            ms = max(1, int(timeout_s * 1000))
            conn.exec_driver_sql(f"SET LOCAL statement_timeout = {ms}")
            conn.exec_driver_sql(f"SET LOCAL lock_timeout = {ms}")

    def try_lease(self, replica: str, ttl_s: float, *, fresh: bool = False,
                  timeout_s: float | None = None) -> LeaseView:
        """Take or renew the lease for `replica` (see the module doc); the row as it is after."""
        with self.db.tx() as conn:  # type: ignore[attr-defined]
            self._bound(conn, timeout_s)
            row = self._lease_row(conn, "update")
            mine = row.holder == replica and row.valid and not fresh
            if row.valid and row.holder != replica:
                return row
            now = row.now
            values = dict(holder=replica, expires_at=now + timedelta(seconds=ttl_s), renewed_at=now)
            if not mine:
                values.update(epoch=row.epoch + 1, acquired_at=now)
            conn.execute(lease.update().where(lease.c.id == LEASE_ROW).values(**values))
            return LeaseView(replica, int(values.get("epoch", row.epoch)), values["expires_at"],
                             values.get("acquired_at", row.acquired_at), now, now)

    def release_lease(self, replica: str) -> bool:
        """Let the lease go at once (a clean stop): a standby takes it without waiting for the expiry."""
        with self.db.tx() as conn:  # type: ignore[attr-defined]
            row = self._lease_row(conn, "update")
            if row.holder != replica or not row.valid:
                return False
            conn.execute(lease.update().where(lease.c.id == LEASE_ROW).values(expires_at=row.now))
            return True

    def lease_view(self) -> LeaseView:
        with self.db.read() as conn:  # type: ignore[attr-defined]
            return self._lease_row(conn, None)

    def check_lease(self, replica: str, epoch: int) -> None:
        """Inside the leader's unit of work, first: refuse it (StaleEpoch) unless `replica` still holds the
        lease at `epoch`; the row stays locked FOR SHARE until the unit of work ends."""
        with self.db.tx() as conn:  # type: ignore[attr-defined]
            row = self._lease_row(conn, "share")
            if row.holder != replica or row.epoch != epoch or not row.valid:
                raise StaleEpoch(replica, epoch, row)
