"""The server's database handle: an engine plus read and write transactions.

Two kinds of transaction: :meth:`Database.read` and :meth:`Database.write`. On SQLite (the
embedded default, :mod:`keybound.storage.sqlite`) a write transaction starts with ``BEGIN
IMMEDIATE`` after taking the writer lock, and runs in WAL mode so readers never wait for
writers. On PostgreSQL (psycopg 3) both are ordinary READ COMMITTED transactions.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Connection, create_engine
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from keybound.errors import ConfigurationInvalid
from keybound.storage import DEFAULT_DATA_DIR, ENV_DATABASE_URL, default_database_url
from keybound.storage.sqlite import SqliteFile

#: open SQLite connections kept between transactions
_IDLE_MAX = 4


def _postgresql_driver(url: str) -> str:
    """PostgreSQL through psycopg 3, the driver keybound is built and tested with (the hot
    path runs statements on its cursor: storage/prepared.py). A bare ``postgresql://`` URL,
    which SQLAlchemy would give to psycopg2, gets it; any other driver is refused."""
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    if backend != "postgresql":
        raise ConfigurationInvalid(
            f"unsupported database {backend!r}: use SQLite "
            "(sqlite:///path/keybound.db) or PostgreSQL "
            "(postgresql+psycopg://user:password@host/db)"
        )
    if parsed.drivername == "postgresql":
        return parsed.set(drivername="postgresql+psycopg").render_as_string(hide_password=False)
    driver = parsed.drivername.partition("+")[2]
    if driver != "psycopg":
        raise ConfigurationInvalid(
            f"unsupported PostgreSQL driver {driver!r}: use postgresql+psycopg://..."
        )
    return url


def _check_url(url: str) -> None:
    try:
        make_url(url)
    except ArgumentError:
        raise ConfigurationInvalid(
            "the database URL is not a URL: use sqlite:///path/keybound.db or "
            "postgresql+psycopg://user:password@host/db"
        ) from None


class Database:
    """The server's database handle: an engine plus read/write transaction helpers."""

    def __init__(self, url: str | None = None) -> None:
        self.url = url or default_database_url()
        _check_url(self.url)
        self.sqlite: SqliteFile | None = None
        if make_url(self.url).get_backend_name() == "sqlite":
            self.sqlite = SqliteFile(self.url)
            self.engine = self.sqlite.engine
        else:
            try:
                # 20 kept open: a connection per concurrent request up to there, none reopened
                self.engine = create_engine(
                    _postgresql_driver(self.url), pool_size=20, max_overflow=30, pool_pre_ping=True
                )
            except ModuleNotFoundError as exc:
                raise ConfigurationInvalid(
                    f"PostgreSQL needs its driver ({exc.name} is not installed): "
                    "pip install 'keybound[postgres]'"
                ) from None
        self.is_sqlite = self.sqlite is not None
        self._idle: list[Connection] = []  # SQLite: kept open between transactions

    @property
    def display_url(self) -> str:
        """The URL without its password, for logs and terminals."""
        return make_url(self.url).render_as_string(hide_password=True)

    @contextmanager
    def read(self) -> Iterator[Connection]:
        if self.sqlite is None:
            with self.engine.connect() as conn, conn.begin():
                yield conn
            return
        with self._sqlite_transaction("BEGIN") as conn:
            yield conn

    @contextmanager
    def write(self) -> Iterator[Connection]:
        if self.sqlite is None:
            with self.engine.connect() as conn, conn.begin():
                yield conn
            return
        # SQLite has one writer at a time: writers queue on the writer lock, never on
        # SQLite's busy handler
        with self.sqlite.writer, self._sqlite_transaction("BEGIN IMMEDIATE") as conn:
            yield conn
            self.sqlite.writer.count_commit()  # under the writer lock, before COMMIT

    @contextmanager
    def _sqlite_transaction(self, begin: str) -> Iterator[Connection]:
        """One SQLite transaction on a kept-open connection, begun and committed on the
        driver's connection: SQLAlchemy's transaction objects and events cost more than
        BEGIN and COMMIT themselves. Statements run through ``Connection.execute`` inside it
        make SQLAlchemy begin its own transaction, which the ``begin`` listener joins to
        this one (no second BEGIN) and which is committed with it.

        Connections are kept open between transactions (up to _IDLE_MAX): taking one from
        the engine's pool and giving it back cost three times the transaction itself. Reads
        and writes share them: on the server's event loop one connection serves every
        transaction, and no commit on another connection empties its page cache. A
        connection whose transaction raised is rolled back and closed."""
        try:
            conn = self._idle.pop()
        except IndexError:
            conn = self.engine.connect()
        raw = conn.connection.dbapi_connection
        assert raw is not None
        try:
            raw.execute(begin)
            yield conn
            if conn.in_transaction():
                conn.commit()  # SQLAlchemy's joined transaction: COMMITs on the driver
            else:
                raw.commit()
        except BaseException:
            try:
                if conn.in_transaction():
                    conn.rollback()
                raw.rollback()
            finally:
                conn.close()
            raise
        if len(self._idle) < _IDLE_MAX:
            self._idle.append(conn)
        else:
            conn.close()

    def _close_idle(self) -> None:
        while self._idle:
            self._idle.pop().close()

    # -- durability (SQLite's group commit; keybound.server.web.durable) ------------------

    @property
    def committed(self) -> int:
        """SQLite: write transactions committed so far by every process using the file.
        Always 0 on PostgreSQL, whose commits are durable when they return."""
        return 0 if self.sqlite is None else self.sqlite.committed

    @property
    def synced(self) -> int:
        return 0 if self.sqlite is None else self.sqlite.synced

    @property
    def sync_deferred(self) -> bool:
        return self.sqlite is not None and self.sqlite.sync_deferred

    def defer_sync(self) -> bool:
        """Group commit on SQLite (:meth:`SqliteFile.defer_sync`); False on PostgreSQL,
        where nothing changes."""
        if self.sqlite is None:
            return False
        self._close_idle()
        self.sqlite.defer_sync()
        return True

    def sync(self, *, wait: bool = True) -> bool:
        assert self.sqlite is not None
        return self.sqlite.sync(wait=wait)

    def checkpoint(self) -> None:
        assert self.sqlite is not None
        self.sqlite.checkpoint()

    # -- schema --------------------------------------------------------------------------

    def migrate(self, *, master_key: bytes | None = None) -> None:
        """Bring the schema to the newest Alembic revision (creates it on first run).
        ``master_key``: for revisions that re-wrap secrets at rest."""
        from keybound.storage.migrations import upgrade

        upgrade(self.engine, master_key=master_key)

    def dispose(self) -> None:
        self._close_idle()
        self.engine.dispose()


__all__ = ["DEFAULT_DATA_DIR", "ENV_DATABASE_URL", "Database", "default_database_url"]
