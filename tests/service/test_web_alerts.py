"""POST /api/v1/alerts through Flask's test client with a real SQLite store per test.

The bad-input table of issue 5 (must-show 6) is here at the web layer: each row's status and
message, nothing stored for an invalid request, nothing woken, and the service still answering.
"""

from __future__ import annotations

import json

import pytest

from remediator.config import parse_config
from remediator.web import create_app

from .conftest import CONFIG, NON_HA_UUID, basic, bearer, operator
from .payloads import VM_UUID, alert, body, payload


def _post(client, data, headers=None, **kw):
    return client.post("/api/v1/alerts", data=data, headers=headers if headers is not None else bearer(), **kw)


def test_valid_alert_stored_and_engine_woken(client, store, engine):
    r = _post(client, body())
    assert r.status_code == 200, r.json
    assert r.json == {"stored": 1, "new": 1, "repeats": 0, "ignored": []}
    (pending,) = store.pending_alerts()
    assert pending.alert.uuid == VM_UUID and pending.alert.host == "h1"
    assert engine.notified == 1


def test_basic_auth_accepted(client):
    assert _post(client, body(), headers=basic()).status_code == 200


def test_same_alert_three_times_is_stored_once(client, store, engine):
    """Alertmanager's repeat_interval and its HA peers deliver the same alert again: one row, one wake-up."""
    answers = [_post(client, body()).json for _ in range(3)]
    assert [a["new"] for a in answers] == [1, 0, 0]
    assert [a["repeats"] for a in answers] == [0, 1, 1]
    assert len(store.pending_alerts()) == 1
    assert engine.notified == 1


def test_resolved_alert_recorded_too(client, store):
    _post(client, body())
    r = _post(client, body(alert(status="resolved", ends_at="2026-11-25T11:03:00Z"), status="resolved"))
    assert r.json["new"] == 1
    assert [p.alert.status.value for p in store.pending_alerts()] == ["firing", "resolved"]


def test_vm_named_only_gets_its_uuid_from_the_inventory(client, store):
    r = _post(client, body(alert(uuid=None, vm="t00")))
    assert r.json["new"] == 1
    assert store.pending_alerts()[0].alert.uuid == VM_UUID


def test_vm_declared_by_name_but_never_synced_is_ignored_with_reason(client, store):
    r = _post(client, body(alert(uuid=None, vm="t01")))
    assert r.json["ignored"][0]["reason"] == "VM 't01' is declared HA but its UUID is not known yet (no inventory sync has seen it)"


def test_host_alerts_need_only_a_known_host(client, store, engine):
    r = _post(client, body(alert(remediation="host_down", vm=None, uuid=None, host="h2", alertname="HostDown")))
    assert r.json["new"] == 1 and engine.notified == 1
    assert store.pending_alerts()[0].alert.subject == "host:h2"


def test_mixed_payload_acts_on_the_valid_and_records_the_ignored(client, store, engine):
    r = _post(client, body(alert(), alert(fingerprint="ee", host="h9")))
    assert r.json["new"] == 1 and r.json["ignored"] == [{"fingerprint": "ee", "reason": "host 'h9' is not in the inventory"}]
    assert len(store.pending_alerts()) == 1
    assert len(store.recent_alerts()) == 2


HUGE = json.dumps(payload(*[alert(fingerprint=f"{i:04x}") for i in range(400)])).encode()

# (name, body, headers, status, message fragment, stored as ignored?)
BAD_INPUT = [
    ("malformed JSON", b'{"version": "4", "alerts": [', None, 400,
     "malformed payload: malformed JSON: Expecting value at line 1 column 29", False),
    ("wrong version", json.dumps({**payload(), "version": "3"}).encode(), None, 400,
     "malformed payload: version: unsupported '3': only \"4\" is understood", False),
    ("missing labels", body({k: v for k, v in alert().items() if k != "labels"}), None, 400,
     "malformed payload: alerts[0].labels: missing", False),
    ("missing host label", body({**alert(), "labels": {"remediation": "vm_down", "uuid": VM_UUID}}), None, 400,
     "malformed payload: alerts[0].labels.host: missing", False),
    ("unknown remediation", body(alert(remediation="reboot")), None, 400,
     "malformed payload: alerts[0].labels.remediation: unknown value 'reboot'", False),
    ("huge body", HUGE, None, 413, "body too large: the limit is 65536 bytes (limits.max_body_bytes)", False),
    ("no credentials", body(), {}, 401, "missing credentials", False),
    ("wrong token", body(), bearer("wrong-token-0123456789"), 401, "bad credentials", False),
    ("wrong basic password", body(), basic(password="nope"), 401, "bad credentials", False),
    ("the operator's credential", body(), operator(), 403, "POST /api/v1/alerts needs the alertmanager credential", False),
    ("unknown host", body(alert(host="h9", fingerprint="f1")), None, 200, "host 'h9' is not in the inventory", True),
    ("unknown VM", body(alert(uuid="5f1a9a0e-3c1b-4d2e-9f00-0000000000ff", vm="x1", fingerprint="f2")), None, 200,
     "VM 'x1' (5f1a9a0e-3c1b-4d2e-9f00-0000000000ff) is not in the inventory", True),
    ("non-HA VM", body(alert(uuid=NON_HA_UUID, vm="t09", host="h2", fingerprint="f3")), None, 200,
     f"VM 't09' ({NON_HA_UUID}) is not declared HA", True),
]


@pytest.mark.parametrize("name, raw, headers, status, message, ignored", BAD_INPUT, ids=[b[0] for b in BAD_INPUT])
def test_bad_input_table(client, store, engine, name, raw, headers, status, message, ignored):
    r = _post(client, raw, headers=headers)
    assert r.status_code == status, r.json
    if ignored:
        assert r.json["new"] == 0 and r.json["ignored"][0]["reason"] == message
        (row,) = store.recent_alerts()
        assert row.outcome == "ignored" and row.reason == message
    else:
        assert message in r.json["error"]
        assert store.recent_alerts() == []  # nothing stored for an invalid request
    assert store.pending_alerts() == []  # nothing for the engine to act on
    assert engine.notified == 0
    assert store.list_incidents() == []
    # the service still up: the next good request works
    assert client.get("/healthz").status_code == 200
    assert _post(client, body(alert(fingerprint="0ff1ce"))).status_code == 200


def test_bad_input_table_printed(client, capsys):
    """Prints the table for the issue (run with -s)."""
    rows = []
    for name, raw, headers, _status, _message, _ignored in BAD_INPUT:
        r = _post(client, raw, headers=headers)
        what = r.json.get("error") or (r.json["ignored"][0]["reason"] if r.json.get("ignored") else r.json)
        rows.append(f"| {name} | {r.status_code} | {what} |")
    with capsys.disabled():
        print("\n| input | status | message |\n|---|---|---|\n" + "\n".join(rows))


def test_401_carries_the_challenges(client):
    r = _post(client, body(), headers={})
    assert r.headers["WWW-Authenticate"] == 'Bearer realm="remediator", Basic realm="remediator"'


def test_auth_none_written_explicitly_lets_anyone_post(tmp_path, store):
    text = CONFIG[: CONFIG.index("auth:")] + "auth: none\n" + CONFIG[CONFIG.index("hosts:") :]
    app = create_app(parse_config(text, env={}), store=store)
    assert app.test_client().post("/api/v1/alerts", data=body()).status_code == 200


def test_webhook_requests_counted_by_status_code(client):
    _post(client, body())
    _post(client, body(), headers={})
    _post(client, b"nope")
    _post(client, HUGE)
    text = client.get("/metrics").data.decode()
    for code in ("200", "401", "400", "413"):
        assert f'remediator_webhook_requests_total{{code="{code}"}} 1.0' in text
    assert 'remediator_alerts_received_total{result="new"} 1.0' in text


def test_store_failure_is_a_503_so_alertmanager_retries(client, store):
    store.close()
    r = _post(client, body())
    assert r.status_code == 503 and r.json["error"].startswith("store unavailable")
    assert client.get("/readyz").status_code == 503


def test_metrics_scrape_survives_a_dead_store(client, store):
    store.close()
    r = client.get("/metrics")
    assert r.status_code == 200
    text = r.data.decode()
    assert "remediator_store_up 0.0" in text and "remediator_incidents_open{" not in text


def test_a_batch_over_one_statement_is_stored_in_a_unit_of_work_not_autocommit(client, store, monkeypatch):
    from remediator.web import alerts as web_alerts

    monkeypatch.setattr(web_alerts, "ALERTS_PER_STATEMENT", 1)
    monkeypatch.setattr(type(store), "autocommit", lambda self: pytest.fail("autocommit for a batch over one statement"))
    r = _post(client, body(alert(), alert(fingerprint="bb")))
    assert r.status_code == 200 and r.get_json()["new"] == 2
