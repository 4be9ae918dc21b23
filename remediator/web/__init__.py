"""The HTTP face of the service: an app factory, as the Flask tutorial shapes it.

create_app(config) opens the store named by the config unless one is given (tests pass a temp one,
`serve` passes the one its engine uses), and never starts threads or touches libvirt.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Callable

from flask import Flask
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from remediator.config import Config
from remediator.metrics import Metrics
from remediator.store import Store, open_store
from remediator.web import alerts, api, ops
from remediator.web.ingest import WebhookCommits
from remediator.web.context import Engine, Services, error, utcnow


def create_app(
    config: Config,
    *,
    store: Store | None = None,
    engine: Engine | None = None,
    metrics: Metrics | None = None,
    clock: Callable[[], datetime] = utcnow,
    request_wait_s: float = 20.0,
    leadership: Any = None,
    webhook_only: bool = False,
) -> Flask:
    """`webhook_only`: Alertmanager's webhook, /healthz and /readyz alone (a listen.webhook process)."""
    app = Flask("remediator")
    # Werkzeug refuses a larger body with 413 before the view reads it.
    app.config["MAX_CONTENT_LENGTH"] = config.limits.max_body_bytes
    app.json.sort_keys = False
    owns_store = store is None
    store = store if store is not None else open_store(config.store.url)
    if metrics is None:
        metrics = Metrics()
        metrics.watch_store(store, lambda: [h.name for h in config.hosts])
    app.extensions["remediator"] = Services(config=config, store=store, metrics=metrics, engine=engine, clock=clock,
                                                request_wait_s=request_wait_s, leadership=leadership)
    app.extensions["remediator_owns_store"] = owns_store
    app.extensions["remediator_ingest"] = WebhookCommits(alerts.committer(config, store, clock))

    app.register_blueprint(alerts.bp)
    app.register_blueprint(ops.health)
    if not webhook_only:
        app.register_blueprint(api.bp)
        app.register_blueprint(ops.exposition)

    @app.errorhandler(RequestEntityTooLarge)
    def too_large(e: RequestEntityTooLarge):
        return error(413, f"body too large: the limit is {config.limits.max_body_bytes} bytes (limits.max_body_bytes)")

    @app.errorhandler(HTTPException)
    def http_error(e: HTTPException):
        # JSON errors everywhere, with Werkzeug's description (e.g. 413's size message)
        return error(e.code or 500, e.description or e.name)

    return app


def services_of(app: Flask) -> Services:
    return app.extensions["remediator"]
