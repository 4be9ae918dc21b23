"""The connection side of the store: engines per backend, units of work per thread, migrations at start.

SQLite (the embedded default): one connection shared by the service's threads behind a lock, in WAL
mode; a unit of work is `BEGIN IMMEDIATE` ... `COMMIT` (SQLite serialises writers anyway, and taking
the write lock up front means a transaction never fails half way for want of it). Reads outside a
unit of work run in a deferred transaction, so readers in other processes (`remediator status`)
never block the service. synchronous=FULL: a commit acknowledged to Alertmanager survives power loss.

PostgreSQL (psycopg 3): a pool of connections, one per thread in a unit of work, READ COMMITTED;
rows the engine takes to act on are locked with FOR UPDATE SKIP LOCKED (`Database.skip_locked`).
"""

from __future__ import annotations

import threading
import time
from contextlib import contextmanager, nullcontext
from importlib import resources
from pathlib import Path
from typing import Any, ContextManager, Iterator

import sqlalchemy as sa
from alembic import command
from alembic.config import Config as AlembicConfig
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.pool import StaticPool

from remediator.store.base import StoreError
from remediator.store.types import dumps, loads
from remediator.store.checkpoint import AUTOCHECKPOINT_PAGES, WalCheckpointer
from remediator.store.writer_lock import WriterLock

# A SQLite file the hand-written store made is at PRAGMA user_version N = Alembic revision "000N".
LEGACY_VERSIONS = 3
# Written into PRAGMA user_version once Alembic owns a SQLite file: the hand-written store (which knew
# versions up to 3) then refuses the file ("newer than this remediator knows") instead of misreading it.
ALEMBIC_USER_VERSION = 1000
MIGRATION_LOCK = 0x72656D65  # pg_advisory_xact_lock key: replicas starting together migrate one at a time
AUTOCOMMIT = "autocommit"  # this thread's connection runs without a transaction (Database.autocommit)
# Database.autocommit keeps its connection between calls while it is used at least this often; one idle for
# longer goes back to the pool, and the next call checks a fresh one out (pinged on PostgreSQL).
KEPT_IDLE_S = 1.0


def redacted(url: str) -> str:
    """The URL with its password hidden: what logs and errors may show."""
    try:
        return sa.make_url(url).render_as_string(hide_password=True)
    except sa.exc.ArgumentError:
        return url.split("@")[-1]


def engine_url(url: str) -> sa.URL:
    """sqlite:///PATH (absolute, or :memory:) or postgresql://... (driven by psycopg 3)."""
    if url.startswith("sqlite:///"):
        rest = url[len("sqlite:///"):]
        path = rest if rest == ":memory:" else "/" + rest.lstrip("/")
        if path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        return sa.URL.create("sqlite", database=path)
    if url.startswith(("postgresql://", "postgres://", "postgresql+psycopg://")):
        return sa.make_url(url).set(drivername="postgresql+psycopg")
    raise StoreError(f"unsupported store URL scheme: {url.split(':', 1)[0]!r}")


class Database:
    def __init__(self, url: str):
        self.url = redacted(url)
        target = engine_url(url)
        self.dialect = target.get_backend_name()
        self._local = threading.local()  # this thread's open unit of work: connection and depth
        self.closed = False
        common: dict[str, Any] = {"json_serializer": dumps, "json_deserializer": loads}
        if self.dialect == "sqlite":
            self.engine = sa.create_engine(target, poolclass=StaticPool,
                                           connect_args={"check_same_thread": False, "timeout": 10.0}, **common)
            sa.event.listen(self.engine, "connect", _sqlite_connect)
            sa.event.listen(self.engine, "begin", self._sqlite_begin)
            self._serial: threading.RLock | None = threading.RLock()
            on_file = target.database != ":memory:"
            self._writers = WriterLock(target.database) if on_file else None
            self._checkpoints = WalCheckpointer(target.database) if on_file else None
        else:
            self.engine = sa.create_engine(target, pool_size=8, max_overflow=24, pool_pre_ping=True,
                                           connect_args={"connect_timeout": 10}, **common)
            self._serial = None
            self._writers = None
            self._checkpoints = None
        self._kept = KeptConnection(self.engine)  # the webhook's (autocommit), held by one thread at a time
        self._kept_lock = threading.Lock()
        self.skip_locked = self.dialect == "postgresql"
        try:
            self.migrate()
        except sa.exc.SQLAlchemyError as e:
            self.dispose()
            raise StoreError(f"cannot open store {self.url}: {e}") from e

    # ---- units of work

    @contextmanager
    def tx(self, write: bool = True) -> Iterator[sa.Connection]:
        """This thread's unit of work, or a new one; the outermost commits or rolls back.

        IntegrityError passes through (callers turn a refused invariant into their own error);
        other database errors become StoreError naming the store (never its password)."""
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            yield conn
            return
        with self._connection(write) as conn:
            yield conn

    @contextmanager
    def autocommit(self) -> Iterator[sa.Connection]:
        """This thread's store calls, each statement committing as it runs (no BEGIN, no COMMIT: PostgreSQL
        saves two round trips, SQLite runs the statement in its own implicit transaction, as durable).
        Only for work whose every write is a single statement; reads see what is committed."""
        if self.in_unit_of_work():
            raise RuntimeError("autocommit inside a unit of work: its writes would not be atomic")
        if not self._kept_lock.acquire(blocking=False):  # another thread has it: a connection from the pool
            with self._connection(AUTOCOMMIT) as conn:
                yield conn
            return
        try:
            with self._connection(AUTOCOMMIT, self._kept) as conn:
                yield conn
        finally:
            self._kept_lock.release()

    def single_write(self) -> ContextManager[None]:
        """Around one write statement in autocommit, its own implicit transaction: on SQLite the writers' lock of
        writer_lock.py for that statement alone. Held for the whole webhook batch, it was held while the batch's
        thread waited for its process's GIL between the statement's parts (the reads, the binding): tens of ms at
        times, with the other webhook processes waiting on it (p99 268-381 ms in some runs). In a unit of work
        the lock is held already; PostgreSQL needs none."""
        if self._writers is not None and getattr(self._local, "write", True) is AUTOCOMMIT:
            return self._writers.held()
        return nullcontext()

    @contextmanager
    def _connection(self, mode: bool | str, kept: KeptConnection | None = None) -> Iterator[sa.Connection]:
        """A connection made this thread's for the block (the pool's, or `kept`'s): in a write (True) or read
        (False) transaction, or in AUTOCOMMIT (psycopg's autocommit; SQLite's driver runs so already, BEGIN
        being ours)."""
        if self.closed:
            raise StoreError(f"store {self.url} is closed")
        # A unit of work holds the writers' lock throughout (BEGIN IMMEDIATE takes SQLite's write lock at once);
        # in autocommit only each write statement takes it (single_write): not the reads and the Python around it
        with self._serial if self._serial is not None else nullcontext(), \
                self._writers.held() if mode is True and self._writers is not None else nullcontext():
            self._local.write = mode
            try:
                with self._errors(), (kept.lent() if kept is not None else _checked_out(self.engine, mode)) as conn:
                    self._local.conn = conn
                    try:
                        with conn.begin() if mode is not AUTOCOMMIT else _autocommitted(conn):
                            yield conn
                    finally:
                        self._local.conn = None
            finally:
                self._local.write = True

    @contextmanager
    def _errors(self) -> Iterator[None]:
        """Database errors as StoreError naming the store; IntegrityError and refused values as they are."""
        try:
            yield
        except sa.exc.IntegrityError:
            raise
        except sa.exc.DBAPIError as e:
            raise StoreError(f"store {self.url}: {e.orig}") from e
        except sa.exc.StatementError as e:
            if isinstance(e.orig, (ValueError, TypeError)):  # a value the store refuses (a naive time): the caller's bug
                raise e.orig from None
            raise StoreError(f"store {self.url}: {e}") from e
        except sa.exc.SQLAlchemyError as e:
            raise StoreError(f"store {self.url}: {e}") from e

    def in_unit_of_work(self) -> bool:
        return getattr(self._local, "conn", None) is not None

    def read(self) -> ContextManager[sa.Connection]:
        return self.tx(write=False)

    def _sqlite_begin(self, conn: sa.Connection) -> None:
        write = getattr(self._local, "write", True)
        if write is not AUTOCOMMIT:
            conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")

    def dispose(self) -> None:
        with self._kept_lock, self._serial if self._serial is not None else nullcontext():  # autocommit's order
            self.closed = True
            self._kept.drop()
            self.engine.dispose()
            if self._writers is not None:
                self._writers.close()
            if self._checkpoints is not None:
                self._checkpoints.close()

    # ---- schema

    def migrate(self) -> None:
        """Bring the schema to the newest revision in one transaction (PostgreSQL: under an advisory
        lock, so replicas starting together do not race). A file the hand-written store made is
        stamped at its PRAGMA user_version first; a database newer than this code is refused."""
        cfg = AlembicConfig()
        cfg.set_main_option("script_location", str(resources.files("remediator.store") / "migrations"))
        head = ScriptDirectory.from_config(cfg).get_current_head()
        self._local.write = True
        with self._writers.held() if self._writers is not None else nullcontext(), self.engine.begin() as conn:
            if self.dialect == "postgresql":
                conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": MIGRATION_LOCK})
            current = MigrationContext.configure(conn).get_current_revision()
            if current is None and self.dialect == "sqlite":
                legacy = conn.exec_driver_sql("PRAGMA user_version").scalar_one()
                if legacy > LEGACY_VERSIONS:
                    raise StoreError(f"store {self.url} has schema version {legacy}, newer than this remediator "
                                     f"knows ({LEGACY_VERSIONS} before Alembic)")
                if legacy:
                    cfg.attributes["connection"] = conn
                    command.stamp(cfg, f"{legacy:04d}")
                    current = f"{legacy:04d}"
            if current is not None and current != head and current not in _known_revisions(cfg):
                raise StoreError(f"store {self.url} is at schema revision {current}, newer than this remediator "
                                 f"knows (head {head})")
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "head")
            if self.dialect == "sqlite" and conn.exec_driver_sql("PRAGMA user_version").scalar_one() != ALEMBIC_USER_VERSION:
                conn.exec_driver_sql(f"PRAGMA user_version = {ALEMBIC_USER_VERSION}")  # once: opening writes nothing
        self.revision = head


class KeptConnection:
    """A connection kept checked out between one thread's uses (the caller serialises them): the webhook's
    group commit runs hundreds of batches a second, and a checkout from the pool each time cost it more CPU
    than its statements (checkout and checkin events, the PostgreSQL ping and isolation level set and reset).
    It is given back to the pool when it fails (the next use checks a fresh one out) or when it sat unused
    for KEPT_IDLE_S, so a connection the server dropped meanwhile is found by the pool's ping, as before."""

    def __init__(self, engine: sa.Engine):
        self._engine = engine
        self._conn: sa.Connection | None = None
        self._used = 0.0

    @contextmanager
    def lent(self) -> Iterator[sa.Connection]:
        conn = self._conn
        if conn is not None and (conn.invalidated or conn.closed or time.monotonic() - self._used > KEPT_IDLE_S):
            self.drop()
            conn = None
        if conn is None:
            conn = self._conn = _autocommit(self._engine.connect())
        try:
            yield conn
        except BaseException:
            self.drop()  # whatever failed, the next use starts from a connection the pool vouches for
            raise
        self._used = time.monotonic()

    def drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except sa.exc.SQLAlchemyError:
                pass  # a dead connection: the pool has already discarded it


@contextmanager
def _autocommitted(conn: sa.Connection) -> Iterator[None]:
    """AUTOCOMMIT needs no transaction of SQLAlchemy's (the store's prepared statements run on the driver):
    one only if a Core statement autobegan it (nothing on the server: the driver is in autocommit), ended here."""
    try:
        yield
    except BaseException:
        if conn.in_transaction():
            conn.rollback()
        raise
    if conn.in_transaction():
        conn.commit()


@contextmanager
def _checked_out(engine: sa.Engine, mode: bool | str) -> Iterator[sa.Connection]:
    with engine.connect() as conn:
        yield _autocommit(conn) if mode is AUTOCOMMIT else conn


def _autocommit(conn: sa.Connection) -> sa.Connection:
    """PostgreSQL: statements commit as they run (psycopg's autocommit); SQLite's driver runs so already."""
    return conn.execution_options(isolation_level="AUTOCOMMIT") if conn.dialect.name == "postgresql" else conn


def _known_revisions(cfg: AlembicConfig) -> set[str]:
    return {s.revision for s in ScriptDirectory.from_config(cfg).walk_revisions()}


def _sqlite_connect(dbapi_connection: Any, _record: Any) -> None:
    dbapi_connection.isolation_level = None  # we issue BEGIN ourselves (pysqlite's own is broken for this)
    for pragma in ("journal_mode=WAL", "synchronous=FULL", "foreign_keys=ON", "busy_timeout=10000",
                   f"wal_autocheckpoint={AUTOCHECKPOINT_PAGES}"):  # a backstop: store/checkpoint.py does them
        dbapi_connection.execute(f"PRAGMA {pragma}")
