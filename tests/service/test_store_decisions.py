"""The store's guards for more than one decider, on SQLite and PostgreSQL: compare-and-set transitions,
claimed alerts, units of work that commit whole, and host and storm state kept in rows."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest

from remediator.alerts import parse_alerts
from remediator.model import Action, Event, Remediation
from remediator.store import StoreError, TransitionConflict

from .payloads import VM_UUID, alert, body
from .store_backends import T0, Decision, store, store_url  # noqa: F401 (fixtures)


def _incident(store, subject=f"vm:{VM_UUID}"):
    return store.create_incident(subject, Remediation.VM_DOWN, "h1", VM_UUID, "t00", "verifying", "alert", T0)


def test_apply_transition_refuses_a_stale_version_or_state_and_writes_nothing(store):
    inc = _incident(store)
    moved = store.apply_transition(inc.id, T0, Event("vm_not_running", T0), Decision("restarting"),
                                   expected_state="verifying", expected_version=0)
    assert (moved.state, moved.version) == ("restarting", 1)
    with pytest.raises(TransitionConflict, match=r"decided on state verifying version 0, the store has restarting "
                                                 r"version 1; nothing was written"):
        store.apply_transition(inc.id, T0, Event("timer", T0), Decision("failed"),
                               expected_state="verifying", expected_version=0)
    with pytest.raises(TransitionConflict):
        store.apply_transition(inc.id, T0, Event("timer", T0), Decision("failed"),
                               expected_state="verifying", expected_version=1)
    assert store.get_incident(inc.id).state == "restarting"
    assert len(store.history(inc.id)) == 1


def test_racing_transitions_from_one_version_yield_one_winner(store):
    inc = _incident(store)
    results: list[object] = []
    start = threading.Barrier(6)

    def decide(n: int):
        start.wait()
        try:
            results.append(store.apply_transition(inc.id, T0, Event("timer", T0), Decision(f"s{n}"),
                                                  expected_state="verifying", expected_version=0).state)
        except TransitionConflict as e:
            results.append(e)

    threads = [threading.Thread(target=decide, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    winners = [r for r in results if isinstance(r, str)]
    assert len(winners) == 1 and len(results) == 6
    assert [h.to_state for h in store.history(inc.id)] == winners


def test_a_refused_transition_rolls_back_its_whole_unit_of_work(store):
    """Alert, transition and intents commit together: a conflict leaves the alert pending and no intent."""
    (stored,) = store.record_alerts(parse_alerts(body()), T0)
    inc = _incident(store)
    store.apply_transition(inc.id, T0, Event("timer", T0), Decision("restarting"), expected_state="verifying",
                           expected_version=0)
    with pytest.raises(TransitionConflict), store.atomic():
        store.mark_alert(stored.id, "duplicate", inc.id, "repeat")
        store.record_intent(inc.id, Action("start_vm", {"uuid": VM_UUID}), T0)
        store.apply_transition(inc.id, T0, Event("alert_firing", T0), Decision("failed"),
                               expected_state="verifying", expected_version=0)
    assert [p.id for p in store.pending_alerts()] == [stored.id]
    assert store.intents(inc.id) == []


def test_create_incident_refused_inside_a_unit_of_work_keeps_the_rest(store):
    from remediator.store import IncidentExists
    first = _incident(store)
    with store.atomic():
        store.set_setting("before", 1)
        with pytest.raises(IncidentExists):
            _incident(store)
        store.set_setting("after", 2)
    assert (store.get_setting("before"), store.get_setting("after")) == (1, 2)
    assert store.open_incident_for(first.subject).id == first.id


def test_a_claimed_alert_is_not_claimed_again(store):
    a1, a2 = store.record_alerts(parse_alerts(body(alert(), alert(fingerprint="bb", host="h2"))), T0)
    claimed, release = threading.Event(), threading.Event()

    def first_claimant():
        with store.atomic():
            assert store.claim_alert(a1.id).id == a1.id
            claimed.set()
            if store.dialect == "postgresql":
                release.wait(30)  # hold the row lock while the other claimant tries
            store.mark_alert(a1.id, "ignored", None, "handled by the first claimant")

    t = threading.Thread(target=first_claimant)
    t.start()
    assert claimed.wait(30)
    try:
        if store.dialect == "postgresql":
            # FOR UPDATE SKIP LOCKED: the held row is passed over at once, the other one is taken
            assert store.claim_alert(a1.id) is None
            with store.atomic():
                assert [c.id for c in store.claim_pending_alerts()] == [a2.id]
        else:
            # SQLite: the unit of work holds the write lock; the second claim waits, then finds it handled
            assert store.claim_alert(a1.id) is None
    finally:
        release.set()
        t.join()
    assert [p.id for p in store.pending_alerts()] == [a2.id]


def test_reachability_is_kept_per_host_row(store):
    assert store.note_reachability({"h1", "h2"}, {"h1"}, T0) is True
    assert store.note_reachability({"h1", "h2"}, {"h1"}, T0 + timedelta(seconds=5)) is False  # since kept
    assert store.note_reachability({"h3"}, {"h3"}, T0 + timedelta(seconds=6)) is True  # h1 not asked: stays
    assert store.unreachable_hosts() == {"h1": T0, "h3": T0 + timedelta(seconds=6)}
    assert store.note_reachability({"h1"}, set(), T0 + timedelta(seconds=7)) is True
    assert store.unreachable_hosts() == {"h3": T0 + timedelta(seconds=6)}


def test_concurrent_reachability_writers_lose_nothing(store):
    """Rows, not one read-modify-written document: hosts noted by different threads all stay."""
    def note(n: int):
        for i in range(5):
            store.note_reachability({f"h{n}-{i}"}, {f"h{n}-{i}"}, T0)

    threads = [threading.Thread(target=note, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(store.unreachable_hosts()) == 20


def test_host_loads(store):
    assert store.host_loads() == {}
    store.set_host_loads({"h1": (0.5, 1 << 30), "h2": (None, None)}, T0, "prometheus")
    assert store.host_loads() == {"h1": {"load1": 0.5, "memory_available_bytes": 1 << 30},
                                  "h2": {"load1": None, "memory_available_bytes": None},
                                  "at": T0, "source": "prometheus"}


def test_storm_hold_and_release(store):
    assert store.storm_hold() is None and store.storm_release() is None
    store.set_storm_hold(True, "2 of 3 hosts out", ["h1", "h2"], T0)
    release = {"at": T0 + timedelta(minutes=1), "by": "alice", "reason": "rack back", "hosts": ["h1", "h2"]}
    store.set_storm_release(release)
    assert store.storm_hold() == {"active": True, "reason": "2 of 3 hosts out", "since": T0,
                                  "unhealthy": ["h1", "h2"]}
    assert store.storm_release() == release
    store.set_storm_release(None)
    assert store.storm_release() is None and store.storm_hold()["active"]


def test_intents_and_results_carry_epochs(store):
    inc = _incident(store)
    i1 = store.record_intent(inc.id, Action("fence_host", {"host": "h1"}), T0, epoch=7)
    store.record_result(i1, True, "off", T0, epoch=8)
    (intent,) = store.intents(inc.id)
    assert intent.epoch == 7
    with store.db.read() as conn:
        assert conn.exec_driver_sql(f"SELECT result_epoch FROM intents WHERE id = {i1}").scalar_one() == 8


def test_postgres_errors_never_show_the_password(postgres_db):
    from remediator.store import open_store
    url = postgres_db()
    password = url.split(":")[2].split("@")[0]
    with pytest.raises(StoreError) as e:
        open_store(url.replace(password, password + "x"))
    assert password not in str(e.value) and "remediator:***@127.0.0.1" in str(e.value)


def test_concurrent_webhook_writes_share_commits_and_a_bad_one_fails_alone(store):
    """record_alerts from many threads goes through group commit: every caller gets its own rows, and a
    caller whose batch the store refuses (a naive time) gets the error without spoiling the others'."""
    from datetime import datetime as naive_clock
    from remediator.model import Alert, AlertStatus

    def batch(n):
        at = naive_clock(2026, 1, 1) if n == 5 else T0
        return [Alert(fingerprint=f"f{n}", status=AlertStatus.FIRING, remediation=Remediation.HOST_DOWN,
                      alertname="HostDown", host="h1", starts_at=at)]

    results, errors = {}, {}
    start = threading.Barrier(12)

    def post(n):
        start.wait()
        try:
            results[n] = store.record_alerts(batch(n), T0)
        except ValueError as e:
            errors[n] = e

    threads = [threading.Thread(target=post, args=(n,)) for n in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert list(errors) == [5] and "naive datetime" in str(errors[5])
    assert {n: [s.alert.fingerprint for s in r] for n, r in results.items()} == {n: [f"f{n}"] for n in range(12) if n != 5}
    assert len(store.pending_alerts()) == 11
