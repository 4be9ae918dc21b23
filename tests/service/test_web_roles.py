"""Roles: Alertmanager's credential may only post alerts; the operators' API needs the operator's.

The operator endpoints are enumerated from the app's url_map, so an endpoint added later is covered
without touching this file.
"""

from __future__ import annotations

import re

import pytest

from remediator.config import parse_config
from remediator.web import create_app, services_of

from .conftest import CONFIG, basic, bearer, operator, operator_basic
from .payloads import body


def _operator_routes() -> list[tuple[str, str]]:
    """(method, path) of every endpoint of the app but the webhook and the ops ones (/healthz, /readyz,
    /metrics, open by design), with sample values for its arguments."""
    config = parse_config(CONFIG.replace("limits:", "store: {url: 'sqlite:///:memory:'}\nlimits:"), env={})
    app = create_app(config)
    services_of(app).store.close()
    routes = []
    for rule in app.url_map.iter_rules():
        if rule.endpoint in ("alerts.receive", "static") or rule.endpoint.startswith(("health.", "exposition.")):
            continue
        path = re.sub(r"<(int:)?\w+>", lambda m: "1" if m.group(1) else "h1", rule.rule)
        routes += [(method, path) for method in sorted(rule.methods - {"HEAD", "OPTIONS"})]
    return routes


OPERATOR_ROUTES = _operator_routes()


def test_the_enumeration_finds_reads_and_writes():
    methods = {m for m, _ in OPERATOR_ROUTES}
    paths = {p for _, p in OPERATOR_ROUTES}
    assert methods == {"GET", "POST"}
    assert {"/api/v1/incidents", "/api/v1/hosts/h1/confirm-off", "/api/v1/incidents/1/close"} <= paths


def test_alertmanager_credential_posts_alerts(client, store):
    assert client.post("/api/v1/alerts", data=body(), headers=bearer()).status_code == 200
    assert client.post("/api/v1/alerts", data=body(), headers=basic()).status_code == 200
    assert len(store.recent_alerts()) == 1


@pytest.mark.parametrize("method, path", OPERATOR_ROUTES, ids=[f"{m} {p}" for m, p in OPERATOR_ROUTES])
@pytest.mark.parametrize("credential", [bearer, basic], ids=["bearer", "basic"])
def test_alertmanager_credential_gets_403_on_every_operator_endpoint(client, store, engine, method, path, credential):
    r = client.open(path, method=method, json={"on": True, "reason": "x"} if method == "POST" else None,
                    headers=credential())
    assert r.status_code == 403, (r.status_code, r.json)
    assert r.json == {"error": f"{method} {path} needs the operator credential; this is the alertmanager's",
                      "required_role": "operator"}
    assert store.pending_events() == [] and engine.notified == 0


@pytest.mark.parametrize("method, path", OPERATOR_ROUTES, ids=[f"{m} {p}" for m, p in OPERATOR_ROUTES])
def test_operator_credential_passes_every_operator_endpoint(client, method, path):
    """Past auth: whatever the endpoint answers (404 for a sample id, 409 for a state), never 401 or 403."""
    r = client.open(path, method=method, json={"on": True, "reason": "x"} if method == "POST" else None,
                    headers=operator())
    assert r.status_code not in (401, 403), (r.status_code, r.json)


def test_operator_reads_and_writes_with_token_and_basic(client, store):
    assert client.get("/api/v1/incidents", headers=operator()).status_code == 200
    r = client.post("/api/v1/hosts/h3/maintenance", json={"on": True, "reason": "BIOS"}, headers=operator_basic())
    assert r.status_code == 202
    (queued,) = store.pending_events()
    assert queued.event.detail["by"] == "operator alice"


def test_operator_credential_gets_403_on_the_webhook(client, store, engine):
    r = client.post("/api/v1/alerts", data=body(), headers=operator())
    assert r.status_code == 403
    assert r.json["required_role"] == "alertmanager"
    assert store.recent_alerts() == [] and engine.notified == 0


@pytest.mark.parametrize("headers", [{}, bearer("wrong-token-0123456789"), basic("alice", "basic-secret")],
                         ids=["none", "wrong token", "operator's user with alertmanager's password"])
def test_missing_or_wrong_credentials_are_401_on_both_sides(client, headers):
    assert client.get("/api/v1/incidents", headers=headers).status_code == 401
    assert client.post("/api/v1/alerts", data=body(), headers=headers).status_code == 401


def test_ops_endpoints_need_no_credential(client):
    for path in ("/healthz", "/readyz", "/metrics"):
        assert client.get(path).status_code == 200
