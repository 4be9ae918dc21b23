"""What the blueprints share: the app's services, JSON helpers, the engine's wake-up call."""

from __future__ import annotations

import dataclasses
import enum
import logging
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Callable, Mapping, Protocol

from flask import current_app, jsonify
from flask.typing import ResponseReturnValue

from remediator.config import Config
from remediator.metrics import Metrics
from remediator.store.base import Store

log = logging.getLogger("remediator.web")


class Engine(Protocol):
    """What the web layer needs of the engine: a wake-up after something was stored. It must not block."""

    def notify(self) -> None: ...


@dataclass
class Services:
    config: Config
    store: Store
    metrics: Metrics
    engine: Engine | None
    clock: Callable[[], datetime]
    request_wait_s: float = 20.0  # how long a request about a host waits for the engine before 202
    leadership: Any = None  # leadership.Leadership: which replica acts (None: an app without a lease, in tests)

    def cluster(self) -> dict[str, Any]:
        """This replica and the leader lease, as GET /api/v1/cluster and /readyz tell them."""
        if self.leadership is None:
            return {"replica": None, "leading": self.engine is not None, "leader": None, "epoch": None}
        return self.leadership.describe()

    def wake_engine(self) -> None:
        if self.engine is None:
            log.info("no engine attached: stored work waits for the next engine start")
            return
        self.engine.notify()


def services() -> Services:
    return current_app.extensions["remediator"]


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def error(status: int, message: str, **extra: Any) -> ResponseReturnValue:
    return jsonify({"error": message, **extra}), status


def plain(value: Any) -> Any:
    """Dataclasses, enums, datetimes and mappings as JSON-ready values."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [plain(v) for v in value]
    return value
