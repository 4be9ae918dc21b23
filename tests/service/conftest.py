"""Service fixtures in the Flask tutorial's shape: a config, a temp SQLite store and an app per test."""

from __future__ import annotations

import base64
from datetime import datetime, timezone

import pytest

from remediator.config import parse_config
from remediator.model import ProtectedVM
from remediator.store import open_store
from remediator.web import create_app

from .payloads import VM_UUID

TOKEN = "test-token-0123456789abcdef"  # Alertmanager's: may only post alerts
OPERATOR_TOKEN = "operator-token-0123456789abcdef"
NOW = datetime(2026, 11, 25, 11, 0, tzinfo=timezone.utc)
NON_HA_UUID = "5f1a9a0e-3c1b-4d2e-9f00-00000000a009"

CONFIG = f"""
auth:
  alertmanager:
    bearer_token: {TOKEN}
    basic: {{username: alertmanager, password: basic-secret}}
  operator:
    bearer_token: {OPERATOR_TOKEN}
    basic: {{username: alice, password: operator-secret}}
hosts:
  - {{name: h1, uri: "test:///default", fence: {{agent: fence_ipmilan, options: {{ip: 127.0.0.1, ipport: 6231}}}}}}
  - {{name: h2, uri: "test:///default"}}
  - {{name: h3, uri: "test:///default"}}
vms:
  - {{name: t00, uuid: {VM_UUID}, priority: 100, group: web}}
  - {{name: t01, priority: 50}}
limits: {{max_body_bytes: 65536}}
"""


class RecordingEngine:
    """Test double for the engine, standing in for the core engineer's Engine: the web layer's only call to it is
    notify() (wake up, work is in the store), so counting those calls is all these tests need."""

    def __init__(self) -> None:
        self.notified = 0

    def notify(self) -> None:
        self.notified += 1


@pytest.fixture
def config(tmp_path):
    return parse_config(CONFIG.replace("limits:", f"store: {{url: 'sqlite:///{tmp_path}/state.db'}}\nlimits:"), env={})


@pytest.fixture
def store(tmp_path):
    s = open_store(f"sqlite:///{tmp_path}/state.db")
    # what an inventory sync would have found: t00 protected, t09 seen but not HA
    s.upsert_vm(ProtectedVM(VM_UUID, "t00", "h1", 1, 32 << 20, priority=100, group="web", xml="<domain/>"), NOW)
    s.upsert_vm(ProtectedVM(NON_HA_UUID, "t09", "h2", 1, 32 << 20, xml="<domain/>", protected=False), NOW)
    yield s
    s.close()


@pytest.fixture
def engine():
    return RecordingEngine()


@pytest.fixture
def app(config, store, engine):
    # The recording engine answers nothing: requests about a host come back 202 (queued) at once.
    return create_app(config, store=store, engine=engine, clock=lambda: NOW, request_wait_s=0)


@pytest.fixture
def client(app):
    return app.test_client()


def bearer(token: str = TOKEN) -> dict[str, str]:
    """Alertmanager's token by default."""
    return {"Authorization": f"Bearer {token}"}


def basic(user: str = "alertmanager", password: str = "basic-secret") -> dict[str, str]:
    """Alertmanager's basic auth by default."""
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def operator() -> dict[str, str]:
    return bearer(OPERATOR_TOKEN)


def operator_basic() -> dict[str, str]:
    return basic("alice", "operator-secret")
