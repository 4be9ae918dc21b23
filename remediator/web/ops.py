"""/healthz (the process answers), /readyz (the store answers; which replica leads, at which epoch),
/metrics (this service's own registry).

Left without auth, as Prometheus scrapes and liveness probes expect.
"""

from __future__ import annotations

from flask import Blueprint, Response, jsonify
from flask.typing import ResponseReturnValue
from prometheus_client import CONTENT_TYPE_LATEST

from remediator.store.base import StoreError
from remediator.web.context import error, services

health = Blueprint("health", __name__)
exposition = Blueprint("exposition", __name__)


@health.get("/healthz")
def healthz() -> ResponseReturnValue:
    return jsonify({"status": "ok"})


@health.get("/readyz")
def readyz() -> ResponseReturnValue:
    try:
        services().store.ping()
    except StoreError as e:
        return error(503, f"store not ready: {e}")
    # A standby is ready too: it takes webhooks and operator requests (the leader carries them out).
    cluster = services().cluster()
    return jsonify({"status": "ready", "replica": cluster["replica"], "leading": cluster["leading"],
                    "leader": cluster["leader"], "epoch": cluster.get("leader_epoch")})


@exposition.get("/metrics")
def metrics() -> ResponseReturnValue:
    return Response(services().metrics.exposition(), mimetype=CONTENT_TYPE_LATEST)
