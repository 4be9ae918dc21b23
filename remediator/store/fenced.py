"""The leader's view of the store: every write carries the leader's epoch and is refused from an older one.

The engine writes through this wrapper; the web layer (webhooks, operator requests: any replica takes
them) writes to the store directly. Each outermost unit of work of the engine starts with
`check_lease(replica, epoch)` (store/lease.py): a replica that lost the lease - paused past it,
partitioned from the database, or simply slower than a standby - gets StaleEpoch for its first write
and nothing of that unit of work is stored. Intents and results are stamped with the epoch as well,
so the records show which leader did what.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager
from typing import Any, Callable, Iterator

from remediator.store.base import StoreError
from remediator.store.lease import StaleEpoch

# The Store methods that write: each runs in a unit of work that checks the lease first.
WRITES = frozenset({
    "apply_transition", "create_incident", "record_intent", "record_result", "mark_alert", "mark_event",
    "claim_alert", "claim_pending_alerts", "upsert_vm", "set_host_state", "set_host_domains",
    "note_vm_location", "note_reachability", "set_host_loads", "set_storm_hold", "set_storm_release",
    "set_setting",
})
# Ingest: any replica may store an alert or an operator's request (the fast path's crash is an alert too).
INGEST = frozenset({"record_alerts", "enqueue_event"})
READS = frozenset({
    "find_vm_by_name", "known_vms", "get_event", "get_incident", "get_setting", "get_vm", "history", "host_loads", "host_states",
    "hosts_defining", "incident_counts", "intents", "latest_incident_for", "list_incidents", "list_vms",
    "open_incident_for", "pending_alerts", "pending_events", "recent_alerts", "storm_hold", "storm_release",
    "unfinished_intents", "unreachable_hosts", "ping", "close",
})
STAMPED = frozenset({"record_intent", "record_result"})  # these take the epoch as a column too


class NotLeader(StoreError):
    """An engine write on a replica that does not hold the lease (it stepped down): nothing was written."""


class FencedStore:
    def __init__(self, store: Any, token: Callable[[], tuple[str, int] | None],
                 on_refused: Callable[[StaleEpoch], None] = lambda err: None):
        """`token()` is (replica, epoch) while this replica leads, None otherwise; `on_refused` hears of a
        refused write (the replica steps down)."""
        self._store = store
        self._token = token
        self._on_refused = on_refused
        self._depth = threading.local()

    @contextmanager
    def atomic(self) -> Iterator[None]:
        depth = getattr(self._depth, "n", 0)
        with self._store.atomic():
            self._depth.n = depth + 1
            try:
                if depth == 0:
                    self._check()
                yield
            finally:
                self._depth.n = depth

    def _check(self) -> None:
        token = self._token()
        if token is None:
            raise NotLeader("this replica does not hold the leader lease: engine write refused")
        try:
            self._store.check_lease(*token)
        except StaleEpoch as err:
            self._on_refused(err)
            raise

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._store, name)
        if name not in WRITES:
            return attr

        def fenced(*args: Any, **kwargs: Any) -> Any:
            with self.atomic():
                if name in STAMPED:
                    token = self._token()
                    kwargs["epoch"] = token[1] if token else -1
                return attr(*args, **kwargs)

        return fenced
