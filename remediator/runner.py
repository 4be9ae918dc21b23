"""The engine's runner: the action pool, retry timers and action timeouts. No decisions here.

The runner performs an action in its pool, records the result on the action's intent, and hands
the outcome back to the engine (`on_result`); a timer that fires, or an action past its timeout,
becomes an event handed back the same way (`on_event`). An intent gets exactly one result: a late
result of an action that already timed out is dropped.
"""

from __future__ import annotations

import heapq
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import datetime
from typing import Callable

from remediator.actions import Outcome
from remediator.edges.fencing import UnknownHost
from remediator.edges.libvirt import DomainError, HostUnreachable
from remediator.fsm import EventKind as E
from remediator.leadership import LeaseLost
from remediator.model import Action, Event
from remediator.store.base import Store, StoreError

log = logging.getLogger(__name__)


class Runner:
    def __init__(self, config, store: Store, metrics, clock: Callable[[], datetime], *,
                 perform: Callable[[Action], Outcome],
                 on_result: Callable[[int, Action, Outcome], None],
                 on_event: Callable[[int, Event], None]):
        self.config = config
        self.store = store
        self.metrics = metrics
        self.clock = clock
        self._perform_fn = perform
        self._on_result = on_result
        self._on_event = on_event
        self._pool = ThreadPoolExecutor(max_workers=max(1, config.policy.max_concurrent_actions),
                                        thread_name_prefix="action")
        self._timers: list[tuple[float, int, int, Event]] = []  # (due monotonic, intent, incident, event)
        self._timers_lock = threading.Lock()
        self._running: dict[int, tuple[float, int, Action]] = {}  # intent -> (started, incident, action)
        self._idle = threading.Condition()
        self._in_flight = 0
        self.wake = threading.Event()

    # ---- actions ----------------------------------------------------------------------------------

    def submit(self, intent_id: int, incident_id: int, action: Action) -> None:
        with self._idle:
            self._in_flight += 1
        self._running[intent_id] = (time.monotonic(), incident_id, action)
        self._pool.submit(self._perform, intent_id, incident_id, action)

    def _perform(self, intent_id: int, incident_id: int, action: Action) -> None:
        started = time.monotonic()
        try:
            outcome = self._perform_fn(action)
        except LeaseLost as err:
            # Not a failure of the action: this replica may no longer act. The intent stays unfinished
            # for the next leader's resume, which checks the world before it does anything again.
            log.warning("action %s of incident %s (intent %s) stopped: %s", action.kind, incident_id, intent_id, err)
            self._running.pop(intent_id, None)
            with self._idle:
                self._in_flight -= 1
                self._idle.notify_all()
            return
        except (HostUnreachable, DomainError, StoreError, UnknownHost, OSError, ValueError) as err:
            # Expected kinds of failure from the edges; anything else is a bug and must show as one.
            outcome = Outcome(E.ACTION_FAILED, False, f"{type(err).__name__}: {err}",
                              {"host_unreachable": isinstance(err, HostUnreachable)})
        except Exception:
            # Not a fallback: an unexpected error is a bug, logged with its traceback and recorded as the
            # action's failure; swallowed silently by the pool it would leave the incident hanging.
            log.exception("action %s of incident %s crashed (a bug)", action.kind, incident_id)
            outcome = Outcome(E.ACTION_FAILED, False, f"{action.kind} crashed: see the service log")
        finally:
            self._running.pop(intent_id, None)
        try:
            if not self.finish_intent(intent_id, outcome.ok, outcome.detail):
                return  # already timed out: its failure was fed back then
            self.metrics.action_finished(action.kind, "ok" if outcome.ok else "failed", time.monotonic() - started)
            self._on_result(incident_id, action, outcome)
        except StoreError:
            log.exception("action %s of incident %s: its result could not be fed back", action.kind, incident_id)
        finally:
            with self._idle:
                self._in_flight -= 1
                self._idle.notify_all()

    def finish_intent(self, intent_id: int, ok: bool, detail: str) -> bool:
        """Record the result; False when it already had one (timed out, or finished by another run)."""
        try:
            self.store.record_result(intent_id, ok, detail, self.clock())
            return True
        except StoreError as err:
            log.warning("intent %s: result not recorded (%s)", intent_id, err)
            return False

    def wait_idle(self, timeout: float = 30.0) -> bool:
        """Block until no action is running (tests and the CLI use it); True when idle."""
        deadline = time.monotonic() + timeout
        with self._idle:
            while self._in_flight:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._idle.wait(left)
        return True

    def shutdown(self, wait: bool) -> None:
        self._pool.shutdown(wait=wait, cancel_futures=not wait)

    # ---- timers -----------------------------------------------------------------------------------

    def arm(self, intent_id: int, incident_id: int, action: Action, set_at: datetime) -> None:
        after = float(action.params.get("after_s", 1.0))
        elapsed = (self.clock() - set_at).total_seconds()
        event = Event(action.params.get("event", E.RETRY.value), set_at, {"state": action.params.get("state")})
        with self._timers_lock:
            heapq.heappush(self._timers, (time.monotonic() + max(0.0, after - elapsed), intent_id, incident_id, event))
        self.wake.set()

    def run_due(self) -> int:
        """Fire due retry timers and time out actions running past their limit; returns timers fired."""
        self.check_timeouts()
        now = time.monotonic()
        due = []
        with self._timers_lock:
            while self._timers and self._timers[0][0] <= now:
                due.append(heapq.heappop(self._timers))
        for _, intent_id, incident_id, event in due:
            if self.finish_intent(intent_id, True, "timer fired"):
                self._on_event(incident_id, replace(event, at=self.clock()))
        return len(due)

    def pending(self) -> list[tuple[float, int, Event]]:
        """(seconds from now, incident, event) of every armed timer."""
        now = time.monotonic()
        with self._timers_lock:
            return sorted((due - now, inc, ev) for due, _, inc, ev in self._timers)

    def drop_timers(self) -> None:
        """A replica that stops leading forgets its timers: their intents stay unfinished in the store, and
        the next leader's resume arms them again from the time they were set."""
        with self._timers_lock:
            self._timers = []

    def make_all_due(self) -> None:
        with self._timers_lock:
            self._timers = [(0.0, i, inc, ev) for _, i, inc, ev in self._timers]
            heapq.heapify(self._timers)

    def seconds_to_next(self, default: float) -> float:
        with self._timers_lock:
            if not self._timers:
                return default
            return max(0.0, min(default, self._timers[0][0] - time.monotonic()))

    def check_timeouts(self) -> None:
        """An action past its timeout counts as failed; its late result, if any, is dropped."""
        now = time.monotonic()
        for intent_id, (started, incident_id, action) in list(self._running.items()):
            limit = self.config.policy.timeout_for(action.kind)
            if now - started > limit and self.finish_intent(intent_id, False, f"timed out after {limit:g}s"):
                self._running.pop(intent_id, None)
                self.metrics.action_finished(action.kind, "timeout", now - started)
                self._on_event(incident_id, Event(E.ACTION_FAILED, self.clock(), {
                    "action": action.kind, "detail": f"{action.kind} timed out after {limit:g}s"}))
