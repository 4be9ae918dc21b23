"""The service's timers, on APScheduler: each job one line, each calling one engine method.

Timers hold no state of their own: a retry's due time and an action's deadline live in the store
(as intents), and `tick` fires whatever is due, so a restart loses no timer. Jobs never overlap
themselves (max_instances=1) and missed runs collapse into one (coalesce).
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Callable, Protocol

from apscheduler.events import EVENT_JOB_ERROR, EVENT_JOB_MISSED, JobExecutionEvent
from apscheduler.schedulers.background import BackgroundScheduler

from remediator.config import Timings

log = logging.getLogger(__name__)


class EngineJobs(Protocol):
    """What the timers call on the engine. Each returns quickly or bounds its own I/O."""

    def tick(self) -> None:
        """Fire due retries, time out overdue actions, drain queued alerts and events."""

    def sync_inventory(self) -> None:
        """Refresh the stored definitions (domain XML, host) of protected VMs from every reachable host."""

    def reconcile(self) -> None:
        """Find protected VMs that are down with no alert (alerts can be lost) and feed them in as events."""


JOBS: tuple[tuple[str, str, Callable[[Timings], float]], ...] = (
    ("tick", "tick", lambda t: t.timeout_check_s),
    ("inventory-sync", "sync_inventory", lambda t: t.inventory_sync_s),
    ("reconcile", "reconcile", lambda t: t.reconcile_s),
)


class Scheduler:
    def __init__(self, timings: Timings, engine: EngineJobs):
        self._scheduler = BackgroundScheduler(timezone="UTC", job_defaults={"coalesce": True, "max_instances": 1})
        self._scheduler.add_listener(_log_job_problem, EVENT_JOB_ERROR | EVENT_JOB_MISSED)
        for job_id, method, interval in JOBS:
            seconds = interval(timings)
            if seconds <= 0:
                log.info("timer %s disabled (interval %s s)", job_id, seconds)
                continue
            self._scheduler.add_job(
                getattr(engine, method), "interval", seconds=seconds, id=job_id, name=f"engine.{method}",
                misfire_grace_time=max(1, int(seconds)),
            )

    def start(self) -> None:
        self._scheduler.start()

    def shutdown(self, wait: bool = True) -> None:
        if self._scheduler.running:
            self._scheduler.shutdown(wait=wait)

    def call_at(self, when: datetime, fn: Callable[[], None], job_id: str) -> None:
        """A one-shot timer (e.g. an early wake-up for a retry due before the next tick); same id replaces."""
        self._scheduler.add_job(fn, "date", run_date=when, id=job_id, replace_existing=True,
                                misfire_grace_time=None)

    def wake_now(self, job_id: str = "tick") -> None:
        """Run a periodic job as soon as possible (the engine's notify() can use this)."""
        job = self._scheduler.get_job(job_id)
        if job is not None:
            job.modify(next_run_time=datetime.now(job.trigger.timezone))

    def job_ids(self) -> list[str]:
        return [job.id for job in self._scheduler.get_jobs()]


def _log_job_problem(event: JobExecutionEvent) -> None:
    if event.exception is not None:
        log.error("timer %s failed: %r", event.job_id, event.exception, exc_info=event.exception)
    else:
        log.warning("timer %s missed its run at %s (the previous one was still running?)", event.job_id,
                    event.scheduled_run_time)
