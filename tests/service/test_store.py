"""The store, on SQLite and on PostgreSQL alike: idempotent alerts, one open incident per subject,
compare-and-set transitions, claims, units of work, intents that survive kill -9."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone

import pytest

from remediator.alerts import parse_alerts
from remediator.model import Action, Event, HostCondition, ProtectedVM, Remediation
import sqlalchemy as sa

from remediator.store import IncidentExists, NotFound, StoreError, TransitionConflict, open_store
from remediator.store.schema import incidents

from .payloads import VM_UUID, alert, body
from .store_backends import T0, Decision, store, store_url  # noqa: F401 (fixtures)



def _move(store, inc, at, event, decision):
    """apply_transition as the engine calls it: on the incident as the decision saw it."""
    return store.apply_transition(inc.id, at, event, decision, expected_state=inc.state, expected_version=inc.version)


def _incident(store, subject=f"vm:{VM_UUID}", state="verifying"):
    return store.create_incident(subject, Remediation.VM_DOWN, "h1", VM_UUID, "t00", state, "alert VMDown", T0)


def test_alerts_idempotent_on_fingerprint_start_status(store):
    alerts = parse_alerts(body(alert(), alert(fingerprint="bb", host="h2")))
    first = store.record_alerts(alerts, T0)
    assert [s.new for s in first] == [True, True]
    again = store.record_alerts(alerts, T0 + timedelta(seconds=30))
    assert [s.new for s in again] == [False, False]
    assert [s.id for s in again] == [s.id for s in first]
    assert again[0].received_at == T0  # the first delivery's
    assert len(store.pending_alerts()) == 2
    # the same alert resolved is a new fact, recorded too
    resolved = parse_alerts(body(alert(status="resolved", ends_at="2026-11-25T11:05:00Z")))
    (r,) = store.record_alerts(resolved, T0)
    assert r.new and r.alert.ends_at == datetime(2026, 11, 25, 11, 5, tzinfo=timezone.utc)
    assert len(store.pending_alerts()) == 3


def test_alert_round_trip(store):
    (a,) = parse_alerts(body())
    (s,) = store.record_alerts([a], T0)
    assert s.alert == a


def test_ignored_alerts_never_pending(store):
    alerts = parse_alerts(body(alert(), alert(fingerprint="cc", host="nowhere")))
    stored = store.record_alerts(alerts, T0, [None, "host 'nowhere' is not in the inventory"])
    assert stored[1].outcome == "ignored" and "not in the inventory" in stored[1].reason
    assert [p.id for p in store.pending_alerts()] == [stored[0].id]
    # a repeat keeps its first outcome
    assert store.record_alerts(alerts[1:], T0, [None])[0].outcome == "ignored"


def test_mark_alert(store):
    (s,) = store.record_alerts(parse_alerts(body()), T0)
    inc = _incident(store)
    store.mark_alert(s.id, "incident", inc.id, "opened")
    assert store.pending_alerts() == []
    assert store.recent_alerts()[0].incident_id == inc.id
    with pytest.raises(ValueError, match="outcome must be one of"):
        store.mark_alert(s.id, "acted", None, "")
    with pytest.raises(NotFound, match="alert 999 not found"):
        store.mark_alert(999, "ignored", None, "")


def test_one_open_incident_per_subject_enforced_by_the_database(store):
    first = _incident(store)
    with pytest.raises(IncidentExists) as e:
        _incident(store)
    assert e.value.incident_id == first.id
    # not just the method: the schema itself refuses it
    with pytest.raises(sa.exc.IntegrityError), store.db.engine.begin() as conn:
        conn.execute(incidents.insert().values(subject=first.subject, kind="vm_down", state="s", host="h1",
                                               opened_at=T0, updated_at=T0, data={}))
    # once closed, a new one may open
    _move(store, first, T0, Event("vm_running", T0), Decision("recovered", reason="running", closes=True))
    second = _incident(store)
    assert second.id != first.id
    assert store.open_incident_for(first.subject).id == second.id


def test_racing_creates_yield_one_incident(store):
    results: list[object] = []

    def create():
        try:
            results.append(_incident(store, subject="host:h2").id)
        except IncidentExists as e:
            results.append(e)

    threads = [threading.Thread(target=create) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(isinstance(r, int) for r in results) == 1
    assert len(store.list_incidents(open_only=True)) == 1


def test_transitions_history_and_attempts(store):
    inc = _incident(store)
    start = Action("start_vm", {"host": "h1", "uuid": VM_UUID, "deadline": T0 + timedelta(seconds=60)})
    e1 = Event("verified_down", T0, {"host": "h1"})
    inc = _move(store, inc, T0, e1, Decision("restarting", (start,), "not running on any host"))
    assert (inc.state, inc.attempts, inc.reason) == ("restarting", 0, "not running on any host")
    # staying in a state keeps attempts unless the decision says otherwise
    inc = _move(store, inc, T0, Event("timer", T0), Decision("restarting", (), "waiting"))
    assert inc.attempts == 0

    @dataclass(frozen=True)
    class Counted(Decision):
        attempts: int = 0
        data: dict = field(default_factory=dict)

    inc = _move(
        store, inc, T0, Event("action_failed", T0), Counted("restarting", (start,), "retry", attempts=2, data={"k": 1})
    )
    assert inc.attempts == 2 and inc.data == {"k": 1}
    inc = _move(store, inc, T0 + timedelta(seconds=5), Event("vm_running", T0), Decision("recovered", (), "ok", True))
    assert inc.version == 4
    assert not inc.is_open and inc.closed_at == T0 + timedelta(seconds=5)
    hist = store.history(inc.id)
    assert [(h.from_state, h.to_state) for h in hist] == [
        ("verifying", "restarting"),
        ("restarting", "restarting"),
        ("restarting", "restarting"),
        ("restarting", "recovered"),
    ]
    assert hist[0].event == e1
    assert hist[0].actions == (start,)  # datetimes in params survive the round trip
    with pytest.raises(StoreError, match="is closed"):
        _move(store, replace(inc, state="recovered", version=4), T0, Event("timer", T0), Decision("x"))
    with pytest.raises(NotFound):
        _move(store, replace(inc, id=12345), T0, Event("timer", T0), Decision("x"))


def test_list_and_count_incidents(store):
    a = _incident(store, subject="vm:a")
    _incident(store, subject="vm:b", state="fencing")
    _move(store, a, T0, Event("vm_running", T0), Decision("recovered", closes=True))
    _incident(store, subject="vm:c")
    listed = store.list_incidents()
    assert [i.subject for i in listed] == ["vm:c", "vm:b", "vm:a"]  # open first, newest first
    assert [i.subject for i in store.list_incidents(open_only=True)] == ["vm:c", "vm:b"]
    assert store.incident_counts() == {"verifying": 1, "fencing": 1}
    with pytest.raises(NotFound):
        store.get_incident(999)


def test_intents_record_before_and_result_after(store):
    inc = _incident(store)
    fence = Action("fence_host", {"host": "h1"})
    i1 = store.record_intent(inc.id, fence, T0)
    i2 = store.record_intent(inc.id, Action("start_vm", {"uuid": VM_UUID}), T0)
    assert [i.id for i in store.unfinished_intents()] == [i1, i2]
    store.record_result(i1, True, "status: off", T0 + timedelta(seconds=2))
    assert [i.id for i in store.unfinished_intents()] == [i2]
    with pytest.raises(StoreError, match="already has a result"):
        store.record_result(i1, True, "again", T0)
    (done, pending) = store.intents(inc.id)
    assert done.action == fence and done.ok is True and done.detail == "status: off" and done.finished
    assert pending.ok is None and not pending.finished


def test_inventory_and_host_states(store):
    vm = ProtectedVM(VM_UUID.upper(), "t00", "h1", 1, 32 << 20, priority=10, group="web", xml="<domain/>")
    store.upsert_vm(vm, T0)
    assert store.get_vm(VM_UUID) == replace(vm, uuid=VM_UUID)
    store.upsert_vm(replace(vm, host="h2"), T0)
    assert store.find_vm_by_name("t00").host == "h2"
    assert [v.name for v in store.list_vms()] == ["t00"]
    store.set_host_state("h1", HostCondition.DOWN, "unreachable", T0, prior=HostCondition.CORDONED)
    store.set_host_state("h1", HostCondition.DOWN, "still unreachable", T0 + timedelta(seconds=9),
                         prior=HostCondition.CORDONED)
    assert store.host_states()["h1"] == (HostCondition.DOWN, "still unreachable", T0, HostCondition.CORDONED)
    store.set_host_state("h1", HostCondition.FENCED, "fence_ipmilan off; status off", T0 + timedelta(seconds=10))
    assert store.host_states()["h1"].since == T0 + timedelta(seconds=10)
    assert store.host_states()["h1"].prior is None


def test_vm_locations_remember_where_a_vm_is_or_was_defined(store):
    store.set_host_domains("h1", [VM_UUID.upper()], T0)
    store.set_host_domains("h2", [VM_UUID], T0)
    assert store.hosts_defining(VM_UUID) == ["h1", "h2"]
    store.set_host_domains("h2", [], T0)  # h2 answered and no longer defines it
    store.note_vm_location(VM_UUID, "h3", True, T0)
    assert store.hosts_defining(VM_UUID) == ["h1", "h3"]
    store.note_vm_location(VM_UUID, "h1", False, T0)
    assert store.hosts_defining(VM_UUID) == ["h3"]


def test_atomic_commits_all_or_nothing(store):
    with pytest.raises(RuntimeError):
        with store.atomic():
            store.set_setting("a", 1)
            with store.atomic():  # nested: joins the outer unit of work
                store.set_setting("b", 2)
            raise RuntimeError("crash between two writes")
    assert store.get_setting("a") is None and store.get_setting("b") is None
    with store.atomic():
        store.set_setting("a", 1)
        store.set_setting("b", 2)
    assert (store.get_setting("a"), store.get_setting("b")) == (1, 2)


def test_settings(store):
    assert store.get_setting("storm_release") is None
    store.set_setting("storm_release", {"by": "op", "at": T0})
    assert store.get_setting("storm_release") == {"by": "op", "at": T0}
    store.set_setting("storm_release", None)
    assert store.get_setting("storm_release") is None


def test_naive_datetimes_refused(store):
    with pytest.raises(ValueError, match="naive datetime"):
        store.record_intent(1, Action("x"), datetime(2026, 1, 1))


def test_committed_writes_survive_kill_9(store_url):
    """A process that commits and is then SIGKILLed loses nothing that was committed."""
    script = textwrap.dedent(
        f"""
        import os, signal
        from datetime import datetime, timezone
        from remediator.model import Action, Remediation
        from remediator.store import open_store
        s = open_store({store_url!r})
        now = datetime.now(timezone.utc)
        inc = s.create_incident("host:h1", Remediation.HOST_DOWN, "h1", None, None, "fencing", "down", now)
        done = s.record_intent(inc.id, Action("fence_host", {{"host": "h1"}}), now)
        s.record_result(done, True, "off", now)
        s.record_intent(inc.id, Action("evacuate_host", {{"host": "h1"}}), now)
        os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert proc.returncode == -9, proc.stderr
    with open_store(store_url) as s:
        (unfinished,) = s.unfinished_intents()
        assert unfinished.action.kind == "evacuate_host"
        assert [i.ok for i in s.intents(unfinished.incident_id)] == [True, None]


def test_concurrent_writers_and_a_second_store_reader(store, store_url):
    errors: list[BaseException] = []

    def write(n: int):
        try:
            for i in range(20):
                store.record_alerts(parse_alerts(body(alert(fingerprint=f"{n:02x}{i:02x}"))), T0)
        except BaseException as e:  # collected to fail the test below with the thread's error
            errors.append(e)

    threads = [threading.Thread(target=write, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    reader = open_store(store_url)  # a second connection, as `remediator status` has
    for t in threads:
        t.join()
    assert errors == []
    assert len(reader.pending_alerts()) == 80
    reader.close()


def test_event_queue(store):
    e1 = store.enqueue_event("host:h1", Event("operator_confirm_off", T0, {"by": "alice", "reason": "PDU off"}))
    e2 = store.enqueue_event("host:h2", Event("operator_retry", T0, {}))
    pending = store.pending_events()
    assert [(q.id, q.subject, q.event.kind) for q in pending] == [(e1, "host:h1", "operator_confirm_off"), (e2, "host:h2", "operator_retry")]
    assert pending[0].event.detail == {"by": "alice", "reason": "PDU off"}
    store.mark_event(e1, "applied", "recovery goes on")
    assert [q.id for q in store.pending_events()] == [e2]
    with pytest.raises(NotFound):
        store.mark_event(999, "applied", "")


