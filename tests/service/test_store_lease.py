"""The leader lease and its fencing token, on SQLite and PostgreSQL: one holder at a time, a new epoch at
every change of hands, writes of an older epoch refused whole; and the leadership timer around it."""

from __future__ import annotations

import threading
import time
from datetime import datetime, timezone

import pytest

from remediator.config import Cluster
from remediator.edges.libvirt import Hypervisors
from remediator.leadership import LeaseLost, Leadership
from remediator.model import Action
from remediator.store import open_store
from remediator.store.fenced import FencedStore, NotLeader
from remediator.store.lease import StaleEpoch

from .store_backends import store, store_url  # noqa: F401 (fixtures)
from .test_store_decisions import _incident

T0 = datetime(2026, 11, 25, 11, 0, tzinfo=timezone.utc)


def test_lease_one_holder_at_a_time_and_a_new_epoch_at_every_change_of_hands(store):
    a = store.try_lease("a", 0.5)
    assert (a.holder, a.epoch, a.valid) == ("a", 1, True)
    assert store.try_lease("b", 0.5).holder == "a"  # refused while a's is valid
    assert store.try_lease("a", 0.5).epoch == 1  # a renews: same epoch
    time.sleep(0.6)
    b = store.try_lease("b", 5)
    assert (b.holder, b.epoch) == ("b", 2)
    assert store.try_lease("a", 5).holder == "b"
    assert store.lease_view().holder == "b"
    assert store.try_lease("b", 5, fresh=True).epoch == 3  # a new process under the same name: a new term
    assert store.release_lease("b") and store.try_lease("a", 5).epoch == 4  # released: taken at once


def test_a_write_under_an_older_epoch_is_refused_and_writes_nothing(store):
    incident = _incident(store)
    store.try_lease("a", 0.3)
    refused = []
    leader = FencedStore(store, lambda: ("a", 1), refused.append)
    leader.record_intent(incident.id, Action("start_vm", {}), T0)
    time.sleep(0.4)
    store.try_lease("b", 5)  # b took over at epoch 2
    with pytest.raises(StaleEpoch, match="epoch 1.*epoch 2 held by b"):
        with leader.atomic():
            leader.record_intent(incident.id, Action("start_vm", {}), T0)
    assert len(refused) == 1
    assert [i.epoch for i in store.intents(incident.id)] == [1]  # the refused unit of work left nothing
    FencedStore(store, lambda: ("b", 2)).record_intent(incident.id, Action("start_vm", {}), T0)
    assert [i.epoch for i in store.intents(incident.id)] == [1, 2]
    with pytest.raises(NotLeader):
        FencedStore(store, lambda: None).mark_event(1, "applied", "")


def test_postgresql_takeover_waits_for_a_leaders_unit_of_work_already_past_the_check(postgres_db):
    # (SQLite serialises every writer: no unit of work runs beside another to wait for)
    store_url = postgres_db()
    a_store, b_store = open_store(store_url), open_store(store_url)
    try:
        incident = _incident(a_store)
        a_store.try_lease("a", 0.3)
        leader = FencedStore(a_store, lambda: ("a", 1))
        took: list[float] = []
        with leader.atomic():
            time.sleep(0.4)  # the lease expires while the checked unit of work is open
            thread = threading.Thread(target=lambda: took.append(b_store.try_lease("b", 5).epoch))
            thread.start()
            time.sleep(0.3)
            assert took == []  # b's FOR UPDATE waits on a's FOR SHARE
            leader.record_intent(incident.id, Action("start_vm", {}), T0)
        thread.join(5)
        assert took == [2]
    finally:
        a_store.close()
        b_store.close()


FAST = Cluster(lease_s=1.0, renew_s=0.1, retry_timeout_s=0.3, max_call_s=0.5)


def test_standby_takes_over_when_the_leader_stops_renewing_and_the_paused_leader_steps_down(store_url):
    stores = [open_store(store_url) for _ in range(2)]
    events: list[tuple[str, str]] = []
    replicas = [Leadership(s, name, FAST, on_elected=lambda e, n=name: events.append((n, f"elected {e}")),
                           on_lost=lambda why, n=name: events.append((n, "lost")))
                for s, name in zip(stores, "ab")]
    try:
        a, b = replicas
        a.renew_once()
        b.renew_once()
        assert a.leading and a.may_dispatch() and not b.leading
        hv = Hypervisors({"h": "test:///default"}, gate=a.check_dispatch)
        assert [d.name for d in hv.domains("h")] == ["test"]
        time.sleep(FAST.lease_s - FAST.max_call_s + 0.05)  # a "paused": no renewal; its deadline passes first
        assert not a.may_dispatch() and a.leading
        with pytest.raises(LeaseLost, match="list domains not called"):
            hv.domains("h")
        assert not b.store.try_lease("b", FAST.lease_s).holder == "b"  # ...before the lease's expiry
        time.sleep(FAST.max_call_s)
        b.renew_once()
        assert b.leading and b.epoch == 2
        a.renew_once()  # a wakes up: the lease is b's
        assert not a.leading
        time.sleep(0.2)
        assert ("a", "elected 1") in events and ("a", "lost") in events and ("b", "elected 2") in events
    finally:
        for s in stores:
            s.close()


def test_every_store_method_is_a_fenced_write_a_read_or_ingest():
    """A new write method of the store must be fenced too: this fails until it is classified."""
    import inspect

    from remediator.store.base import Store
    from remediator.store.fenced import INGEST, READS, WRITES

    methods = {n for n, v in inspect.getmembers(Store) if getattr(v, "__isabstractmethod__", False)}
    assert methods - {"atomic", "autocommit"} == WRITES | READS | INGEST
    assert not (WRITES & READS) and not (WRITES & INGEST)


def test_a_lapsed_deadline_ends_the_term_and_the_same_replica_resumes_under_a_new_epoch(store):
    events: list[str] = []
    a = Leadership(store, "a", FAST, on_elected=lambda e: events.append(f"elected {e}"),
                   on_lost=lambda why: events.append("lost"))
    a.renew_once()
    time.sleep(FAST.lease_s - FAST.max_call_s + 0.05)  # renewals late: the deadline passed, the lease did not
    a.renew_once()
    time.sleep(0.2)
    assert a.leading and a.epoch == 2 and events == ["elected 1", "lost", "elected 2"]
