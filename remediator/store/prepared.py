"""Prepared statements for the store's hot path: a Core statement compiled once for the engine's dialect, run
on a cursor of the Connection's own DBAPI connection with parameters bound by the statement's column types.

Why: the webhook runs two statements per group commit (the inventory lookup and the INSERT of its alerts).
Through `Connection.execute`, SQLAlchemy spent more CPU on each than the database did (cache-key
generation, the compiled-cache lookup, expanding IN lists rewritten per call, insertmanyvalues): about
0.4 ms of Python per batch for ~0.2 ms of driver work. Even `exec_driver_sql` of the compiled string
costs ~60 us a statement over the driver (an execution context, result metadata built from the cursor's
description on every call). Here the SQL is SQLAlchemy's, compiled once; the parameters and result values
go through the bind and result processors SQLAlchemy would apply (UTC times, JSON documents); the cursor is
one of the connection the Connection holds, so the statement runs in its transaction (or autocommit); a
driver error is wrapped by SQLAlchemy's own DBAPIError.instance, as Connection.execute wraps it (IntegrityError
stays IntegrityError, the store's StoreError mapping holds). What it skips: the engine's cursor events
and echo logging (tests count statements at the driver) and the invalidation of a connection found
disconnected: the store gives a failed connection back to the pool, whose reset or ping discards it.

What it does not do: expanding IN lists (a statement with N placeholders is a different statement: the
callers keep one per shape) or executemany.
"""

from __future__ import annotations

from contextlib import nullcontext
from typing import Any, Callable, ContextManager, Mapping, Sequence

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
        if self._positional:  # (a list comprehension: a generator costs ~0.1 us more a parameter)
            return tuple([values[key] if process is None else process(values[key]) for _, key, process in self._binds])
        return {name: values[key] if process is None else process(values[key]) for name, key, process in self._binds}

    def rows(self, conn: sa.Connection, values: Mapping[str, Any],
             during: ContextManager[Any] | None = None) -> list[tuple[Any, ...]]:
        """Run the statement; the rows it returns, each value through its column type's result processor.
        `during`: held around the statement's run alone, not its binding or results (a writers' lock)."""
        parameters = self.parameters(values)
        with during if during is not None else nullcontext():
            cursor = conn.connection.cursor()
            try:
                cursor.execute(self.sql, parameters)
                found: Sequence[Any] = cursor.fetchall() if self._results else []  # (psycopg's description is costly)
            except conn.dialect.loaded_dbapi.Error as e:
                raise sa.exc.DBAPIError.instance(self.sql, parameters, e, conn.dialect.loaded_dbapi.Error,
                                                 hide_parameters=conn.engine.hide_parameters, dialect=conn.dialect) from e
            finally:
                cursor.close()
        if not self._process_results:
            return [tuple(row) for row in found]
        return [tuple(v if p is None else p(v) for p, v in zip(self._results, row)) for row in found]


def _bind_processor(type_: sa.types.TypeEngine, dialect: sa.Dialect) -> Processor:
    return type_.dialect_impl(dialect).bind_processor(dialect)


def _result_processor(type_: sa.types.TypeEngine, dialect: sa.Dialect) -> Processor:
    return type_.dialect_impl(dialect).result_processor(dialect, None)
