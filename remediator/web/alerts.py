"""POST /api/v1/alerts: Alertmanager's webhook. Validate, store, answer; never act here.

The answer comes as soon as the store has committed (Alertmanager retries on 5xx, so a store
failure is a 503); concurrent posts share one commit (web/ingest.py: group commit). Alerts outside
the inventory, or for a VM not declared HA, are stored as ignored with the reason, so an operator
can see why nothing happened.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from typing import Callable, Sequence

from flask import Blueprint, Response, current_app, jsonify, request
from flask.typing import ResponseReturnValue

from remediator.alerts import PayloadError, parse_body
from remediator.config import Config
from remediator.model import VM_KINDS, Alert
from remediator.store.base import KnownVMs, Store, StoredAlert, StoreError
from remediator.web.auth import require
from remediator.web.context import error, log, services
from remediator.web.ingest import Commit

bp = Blueprint("alerts", __name__)
bp.before_request(require("alertmanager"))


def protection(alert: Alert, config: Config, known: KnownVMs) -> tuple[Alert, str | None]:
    """The alert to store (a VM's UUID filled in from the inventory when it came by name only) and why it is
    ignored, or None when it may be acted on. `known`: the inventory rows of the batch's VMs."""
    if config.host(alert.host) is None:
        return alert, f"host {alert.host!r} is not in the inventory"
    if alert.remediation not in VM_KINDS:
        return alert, None
    label = repr(alert.vm or alert.uuid) if not (alert.vm and alert.uuid) else f"{alert.vm!r} ({alert.uuid})"
    declared = config.vm(uuid=alert.uuid, name=alert.vm)
    found = known.find(alert.uuid, alert.vm)
    if declared is None and found is None:
        return alert, f"VM {label} is not in the inventory"
    if declared is None and not (found is not None and found.protected):
        return alert, f"VM {label} is not declared HA"
    uuid = alert.uuid or (declared.uuid if declared else None) or (found.uuid if found else None)
    if uuid is None:
        return alert, f"VM {label} is declared HA but its UUID is not known yet (no inventory sync has seen it)"
    return (alert if alert.uuid == uuid else replace(alert, uuid=uuid)), None


# Up to this many alerts a batch is one INSERT statement (SQLAlchemy's insertmanyvalues page), which
# commits on its own: no transaction around it needed.
ALERTS_PER_STATEMENT = 1000


def committer(config: Config, store: Store, clock: Callable[[], datetime]) -> Commit:
    """What one group commit does with the alerts of its posts: check each against the inventory and
    store them all (ignored ones with their reason). The inventory rows of every VM the batch names come
    in one query, and the alerts go in one INSERT that commits as it runs (store.autocommit): on
    PostgreSQL three round trips a batch instead of five, on SQLite one implicit transaction, as
    durable. A batch too big for one statement takes a unit of work instead."""

    def commit(alerts: Sequence[Alert]) -> list[StoredAlert]:
        about_vms = [a for a in alerts if a.remediation in VM_KINDS and config.host(a.host) is not None]
        with store.autocommit() if len(alerts) <= ALERTS_PER_STATEMENT else store.atomic():
            known = store.known_vms([a.uuid for a in about_vms if a.uuid],
                                    [a.vm for a in about_vms if a.vm and not a.uuid])
            checked = [protection(a, config, known) for a in alerts]
            return store.record_alerts([a for a, _ in checked], clock(), [why for _, why in checked])

    return commit


@bp.post("/api/v1/alerts")
def receive() -> ResponseReturnValue:
    s = services()
    body = request.get_data(cache=False)  # raises 413 beyond MAX_CONTENT_LENGTH
    try:
        notification = parse_body(body)
    except PayloadError as e:
        log.warning("webhook refused: %s", e)
        return error(400, f"malformed payload: {e}")
    try:
        stored = current_app.extensions["remediator_ingest"].submit(notification.alerts)
    except StoreError as e:
        log.error("webhook: store failed, Alertmanager will retry: %s", e)
        return error(503, f"store unavailable: {e}")
    ignored = [st for st in stored if st.outcome == "ignored"]
    new = [st for st in stored if st.new and st.outcome != "ignored"]
    repeats = [st for st in stored if not st.new and st.outcome != "ignored"]
    for st in ignored:
        if st.new:
            log.info("alert %s %s ignored: %s", st.alert.alertname, st.alert.fingerprint, st.reason)
    s.metrics.alert_received("new", len(new))
    s.metrics.alert_received("repeat", len(repeats))
    s.metrics.alert_received("ignored", len(ignored))
    if new:
        s.wake_engine()
    return jsonify(
        {
            "stored": len(stored),
            "new": len(new),
            "repeats": len(repeats),
            "ignored": [{"fingerprint": st.alert.fingerprint, "reason": st.reason} for st in ignored],
        }
    )


@bp.after_request
def count(response: Response) -> Response:
    services().metrics.webhook_request(response.status_code)
    return response
