"""The service's periodic timers, on APScheduler: each job one line, each calling one engine method.

The jobs keep no state of their own (what is due lives in the engine and the store), so a restart
loses nothing. Jobs never overlap themselves (max_instances=1) and missed runs collapse into one
(coalesce); a job that raises is logged with its id and keeps its timer.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Callable, Mapping

from apscheduler.events import EVENT_JOB_ERROR, EVENT_JOB_MISSED, JobExecutionEvent
from apscheduler.schedulers.background import BackgroundScheduler

from remediator.config import Timings

log = logging.getLogger(__name__)


# The service's periodic jobs and the Timings field giving each one's interval.
INTERVALS: dict[str, Callable[[Timings], float]] = {
    "tick": lambda t: t.timeout_check_s,  # fire due retries, time out overdue actions
    "inventory-sync": lambda t: t.inventory_sync_s,  # refresh stored definitions of protected VMs
    "reconcile": lambda t: t.reconcile_s,  # protected VMs down with no alert (alerts can be lost)
}


class Scheduler:
    def __init__(self, timings: Timings, jobs: Mapping[str, Callable[[], object]]):
        """`jobs` maps job ids of INTERVALS to what they call (an engine method each)."""
        unknown = sorted(set(jobs) - set(INTERVALS))
        if unknown:
            raise ValueError(f"unknown timer job(s) {unknown}: expected some of {sorted(INTERVALS)}")
        self._scheduler = BackgroundScheduler(timezone="UTC", job_defaults={"coalesce": True, "max_instances": 1})
        self._scheduler.add_listener(_log_job_problem, EVENT_JOB_ERROR | EVENT_JOB_MISSED)
        for job_id, fn in jobs.items():
            seconds = INTERVALS[job_id](timings)
            if seconds <= 0:
                log.info("timer %s disabled (interval %s s)", job_id, seconds)
                continue
            self._scheduler.add_job(fn, "interval", seconds=seconds, id=job_id, name=job_id,
                                    misfire_grace_time=max(1, int(seconds)))

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
