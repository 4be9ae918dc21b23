"""The operators' API and the ops endpoints, through Flask's test client and a real SQLite store."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

import pytest

from remediator.fsm import EventKind, State
from remediator.model import Action, Event, HostCondition, Remediation

from .conftest import NOW, bearer, operator, operator_basic
from .payloads import VM_UUID


@dataclass(frozen=True)
class Decision:
    """Shaped like fsm.Decision; built by hand to put a known history in the store."""

    next_state: str
    actions: tuple = ()
    reason: str = ""
    closes: bool = False
    attempts: int = 0


def _host_incident(store, host="h1", state=State.HOST_FENCE_WAITING):
    inc = store.create_incident(f"host:{host}", Remediation.HOST_DOWN, host, None, None, State.HOST_VERIFYING.value,
                                "alert HostDown", NOW)
    return store.apply_transition(inc.id, NOW, Event(EventKind.HOST_UNREACHABLE.value, NOW),
                                  Decision(state.value, (), "fence_ipmilan: BMC does not answer"),
                                  expected_state=inc.state, expected_version=inc.version)


def test_read_api_needs_auth(client):
    assert client.get("/api/v1/incidents").status_code == 401
    assert client.get("/api/v1/incidents", headers=operator()).status_code == 200
    assert client.get("/api/v1/hosts", headers=operator_basic()).status_code == 200


def test_ops_endpoints_are_open(client):
    assert client.get("/healthz").json == {"status": "ok"}
    assert client.get("/readyz").json["status"] == "ready"
    assert client.get("/metrics").status_code == 200


def test_incidents_list_and_detail_with_history_and_action_results(client, store):
    inc = store.create_incident(f"vm:{VM_UUID}", Remediation.VM_DOWN, "h1", VM_UUID, "t00", State.VM_VERIFYING.value,
                                "alert VMDown", NOW)
    start = Action("start_vm", {"host": "h1", "uuid": VM_UUID})
    store.apply_transition(inc.id, NOW + timedelta(seconds=1), Event(EventKind.VM_NOT_RUNNING.value, NOW, {"action": "verify_vm"}),
                           Decision(State.VM_RESTARTING.value, (start,), "not running on any reachable host", attempts=1),
                           expected_state=inc.state, expected_version=0)
    intent = store.record_intent(inc.id, start, NOW + timedelta(seconds=1))
    store.record_result(intent, True, "started on h1", NOW + timedelta(seconds=2))
    store.apply_transition(inc.id, NOW + timedelta(seconds=3), Event(EventKind.VM_RUNNING.value, NOW, {"action": "start_vm"}),
                           Decision(State.RECOVERED.value, (), "running on h1", closes=True),
                           expected_state=State.VM_RESTARTING.value, expected_version=1)

    listed = client.get("/api/v1/incidents", headers=operator()).json["incidents"]
    assert [(i["id"], i["state"]) for i in listed] == [(inc.id, "recovered")]
    assert client.get("/api/v1/incidents?open=true", headers=operator()).json["incidents"] == []

    detail = client.get(f"/api/v1/incidents/{inc.id}", headers=operator()).json
    assert detail["incident"]["closed_at"] == (NOW + timedelta(seconds=3)).isoformat()
    assert [(h["from_state"], h["event"]["kind"], h["to_state"]) for h in detail["history"]] == [
        ("vm_verifying", "vm_not_running", "vm_restarting"),
        ("vm_restarting", "vm_running", "recovered"),
    ]
    assert detail["history"][0]["actions"] == [{"kind": "start_vm", "params": {"host": "h1", "uuid": VM_UUID}}]
    assert detail["history"][0]["reason"] == "not running on any reachable host"
    (action,) = detail["actions"]
    assert (action["action"]["kind"], action["ok"], action["detail"]) == ("start_vm", True, "started on h1")


def test_incident_errors(client):
    assert client.get("/api/v1/incidents/42", headers=operator()).json == {"error": "incident 42 not found"}
    assert client.get("/api/v1/incidents?limit=x", headers=operator()).status_code == 400
    assert client.get("/api/v1/incidents?limit=0", headers=operator()).json["error"] == "limit: must be 1..1000, got 0"


def test_hosts_show_condition_schedulable_load_vms_and_storm(client, store):
    store.set_host_state("h2", HostCondition.FENCED, "fence_ipmilan off; status off", NOW)
    store.set_host_loads({"h1": (0.25, 1 << 30)}, NOW, "prometheus")
    store.set_storm_hold(True, "2 of 3 hosts out (> 33%)", ["h2", "h3"], NOW)
    inc = _host_incident(store, "h2")
    r = client.get("/api/v1/hosts", headers=operator()).json
    by_name = {h["name"]: h for h in r["hosts"]}
    assert list(by_name) == ["h1", "h2", "h3"]
    assert by_name["h1"]["condition"] == "up" and by_name["h1"]["schedulable"] is True
    assert by_name["h1"]["load"] == {"load1": 0.25, "memory_available_bytes": 1 << 30}
    assert by_name["h1"]["fence_agent"] == "fence_ipmilan"
    assert [v["name"] for v in by_name["h1"]["vms"]] == ["t00"]
    assert by_name["h2"]["condition"] == "fenced" and by_name["h2"]["schedulable"] is False
    assert by_name["h2"]["open_incident"] == inc.id
    assert by_name["h3"]["load"] is None
    assert r["load_source"] == "prometheus"
    assert r["storm"]["active"] is True and r["storm"]["unhealthy"] == ["h2", "h3"]


def test_maintenance_and_activate_are_queued_for_the_engine(client, store, engine):
    r = client.post("/api/v1/hosts/h3/maintenance", json={"on": True, "reason": "BIOS update"}, headers=operator())
    assert r.status_code == 202 and r.json["request"] == "maintenance"
    r = client.post("/api/v1/hosts/h2/activate", json={"reason": "PSU replaced"}, headers=operator())
    assert r.status_code == 202 and r.json["request"] == "activate_host"
    maint, activate = store.pending_events()
    assert (maint.subject, maint.event.kind, maint.event.detail["on"]) == ("host:h3", "maintenance", True)
    assert maint.event.detail["reason"] == "BIOS update"
    assert (activate.subject, activate.event.kind, activate.event.detail["reason"]) == (
        "host:h2", "activate_host", "PSU replaced")
    assert engine.notified == 2
    assert client.post("/api/v1/hosts/h9/activate", headers=operator()).status_code == 404


@pytest.mark.parametrize(
    "host, body, status, message",
    [
        ("h9", {"on": True}, 404, "host 'h9' is not in the inventory"),
        ("h1", {}, 400, "on: missing"),
        ("h1", {"on": "yes"}, 400, "on: expected bool, got str"),
        ("h1", {"on": True, "colour": "red"}, 400, "colour: unknown field (expected: on, reason)"),
        ("h1", [1], 400, "body: expected a JSON object"),
    ],
)
def test_maintenance_refusals(client, store, engine, host, body, status, message):
    r = client.post(f"/api/v1/hosts/{host}/maintenance", json=body, headers=operator())
    assert (r.status_code, r.json["error"]) == (status, message)
    assert store.pending_events() == [] and engine.notified == 0


def test_malformed_json_body(client):
    r = client.post("/api/v1/hosts/h1/maintenance", data=b"{on", headers=operator())
    assert r.status_code == 400 and r.json["error"].startswith("body: malformed JSON")


def test_confirm_off_queues_the_operator_event_for_the_waiting_incident(client, store, engine):
    inc = _host_incident(store, "h1")
    r = client.post("/api/v1/hosts/h1/confirm-off", json={"reason": "PDU outlet 7 switched off"}, headers=operator())
    assert r.status_code == 202 and r.json["incident"] == inc.id
    (queued,) = store.pending_events()
    assert queued.id == r.json["queued_event"]
    assert (queued.subject, queued.event.kind) == ("host:h1", EventKind.OPERATOR_CONFIRM_OFF.value)
    assert queued.event.detail == {"by": "operator token", "reason": "PDU outlet 7 switched off"}
    assert engine.notified == 1


def test_confirm_off_refused_without_a_waiting_incident(client, store, engine):
    r = client.post("/api/v1/hosts/h1/confirm-off", headers=operator())
    assert (r.status_code, r.json["error"]) == (409, "host h1 is not waiting to be fenced: it has no open incident")
    _host_incident(store, "h2", state=State.HOST_EVACUATING)
    r = client.post("/api/v1/hosts/h2/confirm-off", headers=operator())
    assert r.status_code == 409 and "is host_evacuating" in r.json["error"]
    assert client.post("/api/v1/hosts/h9/confirm-off", headers=operator()).status_code == 404
    assert client.post("/api/v1/hosts/h1/confirm-off", headers={}).status_code == 401
    assert store.pending_events() == [] and engine.notified == 0


def test_operator_retry_and_close(client, store, engine):
    inc = _host_incident(store, "h1", state=State.FAILED)
    r = client.post(f"/api/v1/incidents/{inc.id}/retry", headers=operator())
    assert r.status_code == 202
    r = client.post(f"/api/v1/incidents/{inc.id}/close", json={"reason": "host retired"}, headers=operator())
    assert r.status_code == 202
    assert [q.event.kind for q in store.pending_events()] == ["operator_retry", "operator_close"]
    assert client.post("/api/v1/incidents/99/retry", headers=operator()).status_code == 404


def test_storm_release(client, store, engine):
    assert client.post("/api/v1/storm/release", headers=operator()).json["error"] == "no storm hold is active"
    store.set_storm_hold(True, "2 of 3 hosts out", ["h1", "h2"], NOW)
    r = client.post("/api/v1/storm/release", json={"reason": "rack power restored"}, headers=operator())
    assert r.status_code == 202
    # The release covers the hosts that were out: a host failing beyond them holds again.
    assert store.storm_release() == {"at": NOW, "by": "operator token", "reason": "rack power restored",
                                                        "hosts": ["h1", "h2"]}
    storm = client.get("/api/v1/storm", headers=operator()).json
    assert storm["hold"]["active"] is True and storm["release"]["by"] == "operator token"
    assert engine.notified == 1


def test_metrics_show_incidents_by_state_and_hosts_by_condition(client, store, app):
    _host_incident(store, "h1", state=State.FAILED)
    store.set_host_state("h1", HostCondition.DOWN, "unreachable", NOW)
    app.extensions["remediator"].metrics.set_storm(True, 2 / 3)
    text = client.get("/metrics").data.decode()
    assert 'remediator_incidents_open{state="failed"} 1.0' in text
    assert 'remediator_incidents_open{state="vm_restarting"} 0.0' in text
    assert 'remediator_hosts{condition="down"} 1.0' in text and 'remediator_hosts{condition="up"} 2.0' in text
    assert "remediator_storm_hold 1.0" in text
    assert "remediator_store_up 1.0" in text


def test_each_app_has_its_own_registry(config, store):
    from remediator.web import create_app

    a, b = create_app(config, store=store), create_app(config, store=store)
    a.test_client().post("/api/v1/alerts", data=b"x", headers=bearer())
    assert 'remediator_webhook_requests_total{code="400"} 1.0' in a.test_client().get("/metrics").data.decode()
    assert 'remediator_webhook_requests_total{code="400"} 0.0' in b.test_client().get("/metrics").data.decode()


def test_cluster_and_readyz_say_which_replica_leads_at_which_epoch_on_every_replica(config, store, engine):
    from remediator.config import Cluster
    from remediator.leadership import Leadership
    from remediator.metrics import Metrics
    from remediator.web import create_app

    clusters = []
    for name in ("a", "b"):
        metrics = Metrics()
        leadership = Leadership(store, name, Cluster(), metrics=metrics, on_elected=lambda e: None,
                                on_lost=lambda why: None)
        leadership.renew_once()
        client = create_app(config, store=store, engine=engine, metrics=metrics, leadership=leadership).test_client()
        assert client.get("/api/v1/cluster").status_code == 401  # the operator's role
        clusters.append((client.get("/api/v1/cluster", headers=operator()).json, client.get("/readyz").json,
                         client.get("/metrics").text))
    (a, a_ready, a_metrics), (b, b_ready, b_metrics) = clusters
    assert (a["replica"], a["leading"], a["epoch"], a["leader"]) == ("a", True, 1, "a")
    assert (b["replica"], b["leading"], b["epoch"], b["leader"], b["leader_epoch"]) == ("b", False, None, "a", 1)
    assert b["lease"]["holder"] == "a" and b["lease"]["valid"] and b["lease_s"] == 6
    assert a_ready == {"status": "ready", "replica": "a", "leading": True, "leader": "a", "epoch": 1}
    assert b_ready == {"status": "ready", "replica": "b", "leading": False, "leader": "a", "epoch": 1}
    assert 'remediator_leader{replica="a"} 1.0' in a_metrics and 'remediator_leader_epoch{replica="a"} 1.0' in a_metrics
    assert 'remediator_leader{replica="b"} 0.0' in b_metrics and 'remediator_leader_epoch{replica="b"} 1.0' in b_metrics
