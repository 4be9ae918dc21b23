"""Alertmanager webhook (version 4) bodies as Alertmanager 0.25 sends them, for the service tests."""

from __future__ import annotations

import json
from typing import Any

VM_UUID = "5f1a9a0e-3c1b-4d2e-9f00-00000000a001"


def alert(
    *,
    remediation: str = "vm_down",
    host: str = "h1",
    vm: str | None = "t00",
    uuid: str | None = VM_UUID,
    status: str = "firing",
    fingerprint: str = "a1b2c3d4e5f60718",
    starts_at: str = "2026-11-25T10:57:02.123456789Z",
    ends_at: str = "0001-01-01T00:00:00Z",
    alertname: str = "VMDown",
    **extra_labels: str,
) -> dict[str, Any]:
    labels = {"alertname": alertname, "remediation": remediation, "host": host, **extra_labels}
    if vm is not None:
        labels["vm"] = vm
    if uuid is not None:
        labels["uuid"] = uuid
    return {
        "status": status,
        "labels": labels,
        "annotations": {"summary": f"{alertname} on {host}"},
        "startsAt": starts_at,
        "endsAt": ends_at,
        "generatorURL": "http://127.0.0.1:9090/graph?g0.expr=up",
        "fingerprint": fingerprint,
    }


def payload(*alerts: dict[str, Any], status: str = "firing") -> dict[str, Any]:
    return {
        "version": "4",
        "groupKey": '{}:{remediation="vm_down"}',
        "truncatedAlerts": 0,
        "status": status,
        "receiver": "remediator",
        "groupLabels": {},
        "commonLabels": {},
        "commonAnnotations": {},
        "externalURL": "http://127.0.0.1:9093",
        "alerts": list(alerts) if alerts else [alert()],
    }


def body(*alerts: dict[str, Any], status: str = "firing") -> bytes:
    return json.dumps(payload(*alerts, status=status)).encode()
