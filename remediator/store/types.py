"""Column types that read and write the same Python values on SQLite and PostgreSQL.

Migrations import these (not schema.py's tables), so a released migration keeps its meaning when the
current schema moves on. On PostgreSQL times are `timestamptz` and documents `jsonb`; on SQLite
both are TEXT, in the formats the store has always written (so files from before Alembic read as is).
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any, Mapping

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB, TIMESTAMP


class UTCDateTime(sa.types.TypeDecorator):
    """Timezone-aware UTC in, timezone-aware UTC out; naive datetimes are refused, not guessed."""

    impl = sa.Text
    cache_ok = True

    def load_dialect_impl(self, dialect: sa.Dialect) -> sa.types.TypeEngine:
        if dialect.name == "postgresql":
            return dialect.type_descriptor(TIMESTAMP(timezone=True))
        return dialect.type_descriptor(sa.Text())

    def process_bind_param(self, value: datetime | None, dialect: sa.Dialect) -> Any:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: the store keeps timezone-aware UTC times only")
        value = value.astimezone(timezone.utc)
        # SQLite: fixed-width ISO text in UTC, so text order is time order.
        return value if dialect.name == "postgresql" else value.isoformat(timespec="microseconds")

    def process_result_value(self, value: Any, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        if isinstance(value, str):
            value = datetime.fromisoformat(value)
        return value.astimezone(timezone.utc)


def JSONDocument() -> sa.types.TypeEngine:
    """jsonb on PostgreSQL, JSON text on SQLite; (de)serialised by dumps/loads (the engine's json_serializer)."""
    return sa.JSON().with_variant(JSONB(), "postgresql")


# ---- the JSON codec: datetimes in event details and action params survive the round trip as datetimes


def _encode(value: Any) -> Any:
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: the store keeps timezone-aware UTC times only")
        return {"__datetime__": value.astimezone(timezone.utc).isoformat(timespec="microseconds")}
    if isinstance(value, (set, frozenset)):
        return sorted(value)
    if isinstance(value, Mapping):
        return dict(value)
    raise TypeError(f"cannot store {type(value).__name__} {value!r} as JSON")


def _decode(obj: dict[str, Any]) -> Any:
    if len(obj) == 1 and "__datetime__" in obj:
        return datetime.fromisoformat(obj["__datetime__"])
    return obj


# one encoder for every call: json.dumps with options builds a new one each time
_ENCODER = json.JSONEncoder(default=_encode, sort_keys=True)


def dumps(value: Any) -> str:
    return _ENCODER.encode(value)


def loads(text: str | bytes) -> Any:
    return json.loads(text, object_hook=_decode)
