"""Prepared statements for the store's hot path: a Core statement compiled once for the engine's dialect, then
run with `exec_driver_sql` on parameters bound by the statement's own column types.

Why: the webhook runs two statements per group commit (the inventory lookup and the INSERT of its alerts).
Through `Connection.execute`, SQLAlchemy spends more CPU on each than the database does (cache-key
generation, the compiled-cache lookup, expanding IN lists rewritten per call, insertmanyvalues, a new
execution context and result metadata): about 0.3 ms of Python per batch for ~0.15 ms of SQLite work.
Here the SQL is SQLAlchemy's, compiled once; the parameters go through the same bind and result
processors SQLAlchemy would apply (the column types: UTC times, JSON documents); and execution still goes
through the Connection, so errors are wrapped as SQLAlchemy wraps them (the store's StoreError mapping
holds) and the engine's cursor events see the statement.

What it does not do: expanding IN lists (a statement with N placeholders is a different statement: the
callers keep one per shape) or executemany.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

import sqlalchemy as sa

Processor = Callable[[Any], Any] | None


class Prepared:
    def __init__(self, statement: sa.Executable, dialect: sa.Dialect):
        compiled = statement.compile(dialect=dialect)  # type: ignore[attr-defined]
        if compiled.literal_execute_params or compiled.post_compile_params:
            raise ValueError("a prepared statement cannot have expanding or literal-execute parameters")
        self.sql: str = compiled.string
        bind_by_name = {name: bind for bind, name in compiled.bind_names.items()}
        names = compiled.positiontup if compiled.positional else list(bind_by_name)
        self._positional: bool = compiled.positional
        # (the name the driver knows the parameter by, the key callers give its value by, its bind processor)
        self._binds: tuple[tuple[str, str, Processor], ...] = tuple(
            (name, bind_by_name[name].key, _bind_processor(bind_by_name[name].type, dialect)) for name in names)
        columns = getattr(statement, "exported_columns", ())
        self._results: tuple[Processor, ...] = tuple(_result_processor(c.type, dialect) for c in columns)
        self._process_results = any(p is not None for p in self._results)

    def parameters(self, values: Mapping[str, Any]) -> tuple[Any, ...] | dict[str, Any]:
        """The driver's parameters for `values` (by bind key), each through its column type's bind processor."""
        if self._positional:
            return tuple(values[key] if process is None else process(values[key]) for _, key, process in self._binds)
        return {name: values[key] if process is None else process(values[key]) for name, key, process in self._binds}

    def execute(self, conn: sa.Connection, values: Mapping[str, Any]) -> sa.CursorResult:
        return conn.exec_driver_sql(self.sql, self.parameters(values))  # type: ignore[arg-type]

    def rows(self, conn: sa.Connection, values: Mapping[str, Any]) -> list[tuple[Any, ...]]:
        """The rows the statement returns, each value through its column type's result processor."""
        found: Sequence[Any] = self.execute(conn, values).fetchall()
        if not self._process_results:
            return [tuple(row) for row in found]
        return [tuple(v if p is None else p(v) for p, v in zip(self._results, row)) for row in found]


def _bind_processor(type_: sa.types.TypeEngine, dialect: sa.Dialect) -> Processor:
    return type_.dialect_impl(dialect).bind_processor(dialect)


def _result_processor(type_: sa.types.TypeEngine, dialect: sa.Dialect) -> Processor:
    return type_.dialect_impl(dialect).result_processor(dialect, None)
