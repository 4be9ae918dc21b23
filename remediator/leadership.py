"""Leadership: which replica acts. The lease lives in the store (store/lease.py); this is the timer side.

A replica renews (or tries to take) the lease every `cluster.renew_s`; a standby tries again exactly
when the lease it saw expires. The leader may *start* an I/O call to libvirt, a BMC or a hook only
before its local deadline:

    deadline = (monotonic time taken before the renewal was sent) + lease_s - max_call_s

Every such call ends within max_call_s (libvirt's keepalive declares a dead peer after ~4 s, fence
agents and connects have their own timeouts), so every call the leader started has ended by
sent + lease_s, which is no later than the lease's expiry by the database's clock (the database set
expires_at = its now() + lease_s *after* the leader sent the renewal) - and no other replica can take
the lease before that expiry. The new leader therefore never races an I/O call of the old one, and
its resume checks the world (where each VM runs, power status) before it repeats anything. A paused
leader (SIGSTOP, a long GC, a VM migration of the controller) wakes past its deadline: it starts no
call, its writes are refused by the epoch check (store/fenced.py), and it steps down.

Stepping down stops the engine's loop, timers and event watchers; an action thread that is still
running fails its next call with LeaseLost and leaves its intent unfinished, for the next leader's
resume. A deadline that lapsed ends the term even if the lease was not taken meanwhile: the replica
takes it again under a new epoch and resumes, first waiting for its own action threads to end.
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import datetime, timezone
from typing import Any, Callable

from remediator.store.base import StoreError
from remediator.store.lease import LeaseView, StaleEpoch

log = logging.getLogger(__name__)


class LeaseLost(RuntimeError):
    """An I/O call refused because this replica's dispatch deadline passed (it may no longer lead)."""


class Leadership:
    def __init__(self, store: Any, replica: str, cluster: Any, *,
                 on_elected: Callable[[int], None], on_lost: Callable[[str], None],
                 metrics: Any = None, monotonic: Callable[[], float] = time.monotonic):
        self.store = store
        self.replica = replica
        self.cluster = cluster
        self._on_elected = on_elected
        self._on_lost = on_lost
        self.metrics = metrics
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._role = threading.Lock()  # role changes one at a time, in order
        self.epoch: int | None = None  # set while leading
        self._deadline = 0.0
        self.view: LeaseView | None = None  # the lease row as last seen
        self.elected_at: float | None = None  # monotonic time this replica last took the lease
        self.acting_since: datetime | None = None  # when its engine had resumed and was running (wall clock)
        self._stop = threading.Event()
        self._fresh = True  # the first take of this process starts a new epoch even under the same name
        self._acting: int | None = None  # the epoch whose engine runs (on_elected done, on_lost not yet)
        self._thread: threading.Thread | None = None

    # ---- what the rest asks

    @property
    def leading(self) -> bool:
        return self.epoch is not None

    def may_dispatch(self) -> bool:
        return self.epoch is not None and self._monotonic() < self._deadline

    def check_dispatch(self, what: str) -> None:
        """The edges' gate (Hypervisors, Fencer): called right before each call is sent."""
        if not self.may_dispatch():
            raise LeaseLost(f"replica {self.replica} no longer holds the lease "
                            f"(dispatch deadline passed{'' if self.leading else ', stepped down'}): {what} not called")

    def token(self) -> tuple[str, int] | None:
        epoch = self.epoch
        return (self.replica, epoch) if epoch is not None else None

    def refused(self, err: StaleEpoch) -> None:
        """The store refused a write under our epoch: another replica took the lease."""
        self._step_down(f"a write was refused: {err}")

    # ---- the timer

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="leadership", daemon=True)
        self._thread.start()

    def stop(self, release: bool = True) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.cluster.retry_timeout_s + 1)
        if self.leading:
            self._step_down("stopping")
            if release:
                try:
                    self.store.release_lease(self.replica)
                except StoreError as err:
                    log.warning("lease not released (%s): a standby takes it at its expiry", err)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._stop.wait(self.renew_once())

    def renew_once(self) -> float:
        """One take-or-renew; returns how long to wait before the next."""
        c = self.cluster
        sent = self._monotonic()
        if self.leading and sent >= self._deadline:
            # The deadline lapsed (a pause, a slow database): an action may have stopped at the gate and left
            # its intent unfinished. End the term; taking the lease again starts a new epoch and a resume.
            self._step_down("the dispatch deadline passed before the lease was renewed")
            self._fresh = True
        try:
            view = self.store.try_lease(self.replica, c.lease_s, fresh=self._fresh, timeout_s=c.retry_timeout_s)
        except StoreError as err:
            log.warning("lease renewal failed: %s", err)
            if self.leading and self._monotonic() >= self._deadline:
                self._step_down("the lease could not be renewed before the dispatch deadline")
            return c.renew_s if not self.leading else max(0.05, min(c.renew_s, self._deadline - self._monotonic()))
        self.view = view
        if view.holder == self.replica:
            self._fresh = False
            was = self.epoch
            if was is not None and was != view.epoch:
                self._step_down(f"epoch {was} ended (the lease lapsed and was taken again)")
            self._deadline = sent + c.lease_s - c.max_call_s
            if was != view.epoch:
                self._elect(view.epoch)
            self._publish()
            # every renew_s from when this one was sent, not from when it came back: a slow renewal must
            # not push the next one past the dispatch deadline
            return max(0.0, c.renew_s - (self._monotonic() - sent))
        if self.leading:
            self._step_down(f"the lease is held by {view.holder} at epoch {view.epoch}")
        self._publish()
        # a standby tries again when the lease it saw expires (not a whole interval later)
        return max(0.02, min(c.renew_s, view.remaining_s + 0.01))

    # ---- role changes

    def _elect(self, epoch: int) -> None:
        self.epoch = epoch
        self.elected_at = self._monotonic()
        log.warning("replica %s leads at epoch %s", self.replica, epoch)
        self._publish()
        threading.Thread(target=self._elected, args=(epoch,), name="elected", daemon=True).start()

    def _elected(self, epoch: int) -> None:
        with self._role:
            if self.epoch != epoch:
                return  # lost again before it started
            if self._acting is not None:  # the previous term's engine still runs: stop it first
                self._on_lost(f"epoch {self._acting} ended")
                self._acting = None
            try:
                self._on_elected(epoch)
            except StoreError as err:  # refused or unreachable: stop, and take a new term at the next renewal
                log.warning("resume as leader at epoch %s failed: %s", epoch, err)
                self._on_lost("resume failed")
                self._fresh = True
                return
            self._acting = epoch
            self.acting_since = datetime.now(timezone.utc)
            log.info("replica %s acting at epoch %s (resumed)", self.replica, epoch)

    def _step_down(self, why: str) -> None:
        with self._lock:
            if self.epoch is None:
                return
            epoch, self.epoch, self._deadline = self.epoch, None, 0.0
            self.acting_since = None
        log.warning("replica %s steps down from epoch %s: %s", self.replica, epoch, why)
        self._publish()
        threading.Thread(target=self._lost, args=(why,), name="stepped-down", daemon=True).start()

    def _lost(self, why: str) -> None:
        with self._role:
            if self._acting is not None and self._acting != self.epoch:
                self._on_lost(why)
                self._acting = None

    def _publish(self) -> None:
        if self.metrics is not None:
            self.metrics.set_leader(self.leading, replica=self.replica,
                                    epoch=self.epoch if self.leading else (self.view.epoch if self.view else 0))

    def describe(self) -> dict[str, Any]:
        """What GET /api/v1/cluster and /readyz say: this replica, and the lease as the database has it."""
        try:
            view = self.store.lease_view()
        except StoreError as err:
            view, problem = self.view, str(err)
        else:
            problem = None
        out: dict[str, Any] = {
            "replica": self.replica, "leading": self.leading, "epoch": self.epoch,
            "acting_since": self.acting_since.isoformat() if self.acting_since else None,
            "leader": view.holder if view is not None and view.valid else None,
            "leader_epoch": view.epoch if view is not None else None,
            "lease": None if view is None else {
                "holder": view.holder, "epoch": view.epoch, "valid": view.valid,
                "expires_at": view.expires_at.isoformat() if view.expires_at else None,
                "acquired_at": view.acquired_at.isoformat() if view.acquired_at else None,
                "renewed_at": view.renewed_at.isoformat() if view.renewed_at else None,
                "remaining_s": round(view.remaining_s, 3)},
            "lease_s": self.cluster.lease_s, "renew_s": self.cluster.renew_s,
            "retry_timeout_s": self.cluster.retry_timeout_s, "max_call_s": self.cluster.max_call_s,
        }
        if problem:
            out["store_error"] = problem
        return out
