"""The timers run on a real APScheduler; the engine they call is a test double that counts calls."""

from __future__ import annotations

import logging
import threading
import time
from datetime import datetime, timedelta, timezone

import pytest

from remediator.config import Timings
from remediator.scheduler import Scheduler


class CountingEngine:
    """Test double for the engine's timer methods (the real ones are the core engineer's and need the lab)."""

    def __init__(self, fail_reconcile: bool = False):
        self.calls: dict[str, int] = {"tick": 0, "sync_inventory": 0, "reconcile": 0}
        self.fail_reconcile = fail_reconcile
        self.lock = threading.Lock()

    def _count(self, name: str) -> None:
        with self.lock:
            self.calls[name] += 1

    def tick(self) -> None:
        self._count("tick")

    def sync_inventory(self) -> None:
        self._count("sync_inventory")

    def reconcile(self) -> None:
        self._count("reconcile")
        if self.fail_reconcile:
            raise RuntimeError("libvirt said no")


def jobs(engine: CountingEngine) -> dict:
    return {"tick": engine.tick, "inventory-sync": engine.sync_inventory, "reconcile": engine.reconcile}


def _wait_for(predicate, timeout=5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return False


def test_jobs_run_at_their_intervals_and_a_failing_job_keeps_its_timer(caplog):
    engine = CountingEngine(fail_reconcile=True)
    s = Scheduler(Timings(timeout_check_s=0.1, inventory_sync_s=0.2, reconcile_s=0.1), jobs(engine))
    assert sorted(s.job_ids()) == ["inventory-sync", "reconcile", "tick"]
    with caplog.at_level(logging.ERROR, logger="remediator.scheduler"):
        s.start()
        try:
            assert _wait_for(lambda: engine.calls["tick"] >= 3 and engine.calls["reconcile"] >= 3 and engine.calls["sync_inventory"] >= 1)
        finally:
            s.shutdown()
    assert "timer reconcile failed: RuntimeError('libvirt said no')" in caplog.text


def test_wake_now_and_call_at():
    engine = CountingEngine()
    s = Scheduler(Timings(timeout_check_s=3600, inventory_sync_s=3600, reconcile_s=3600), jobs(engine))
    s.start()
    try:
        s.wake_now("tick")
        assert _wait_for(lambda: engine.calls["tick"] == 1)
        fired = threading.Event()
        s.call_at(datetime.now(timezone.utc) + timedelta(seconds=0.2), fired.set, "retry-7")
        assert fired.wait(5)
    finally:
        s.shutdown()


def test_zero_interval_disables_a_timer():
    s = Scheduler(Timings(timeout_check_s=1, inventory_sync_s=0, reconcile_s=1), jobs(CountingEngine()))
    s.start()
    try:
        assert sorted(s.job_ids()) == ["reconcile", "tick"]
    finally:
        s.shutdown()


def test_unknown_job_refused():
    with pytest.raises(ValueError, match=r"unknown timer job\(s\) \['cleanup'\]"):
        Scheduler(Timings(), {"cleanup": lambda: None})
