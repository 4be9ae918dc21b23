"""/healthz (the process answers), /readyz (the store answers), /metrics (this service's own registry).

Left without auth, as Prometheus scrapes and liveness probes expect.
"""

from __future__ import annotations

from flask import Blueprint, Response, jsonify
from flask.typing import ResponseReturnValue
from prometheus_client import CONTENT_TYPE_LATEST

from remediator.store.base import StoreError
from remediator.web.context import error, services

bp = Blueprint("ops", __name__)


@bp.get("/healthz")
def healthz() -> ResponseReturnValue:
    return jsonify({"status": "ok"})


@bp.get("/readyz")
def readyz() -> ResponseReturnValue:
    try:
        services().store.ping()
    except StoreError as e:
        return error(503, f"store not ready: {e}")
    return jsonify({"status": "ready"})


@bp.get("/metrics")
def metrics() -> ResponseReturnValue:
    return Response(services().metrics.exposition(), mimetype=CONTENT_TYPE_LATEST)
