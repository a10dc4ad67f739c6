"""Storage: the embedded SQLite default, migrations, and single-statement consumption."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

import pytest
from sqlalchemy import inspect, text

from keybound.storage.db import Database
from keybound.storage.tables import metadata
from tests.pgserver import PostgresServer


def test_fresh_database_is_created_in_wal_mode_with_the_full_schema(tmp_path: Path) -> None:
    path = tmp_path / "nested" / "kb.db"
    db = Database(f"sqlite:///{path}")
    db.migrate()
    assert path.exists()
    with db.read() as conn:
        assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert conn.execute(text("PRAGMA foreign_keys")).scalar() == 1
        # 16 MiB of page cache: the B-tree interior pages of a million registrations stay
        # cached when every authentication reads a different one (bench/README.md, Scale)
        assert conn.execute(text("PRAGMA cache_size")).scalar() == -16384
        revision = conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
    assert revision == "0009"
    tables = set(inspect(db.engine).get_table_names())
    assert set(metadata.tables) <= tables
    db.migrate()  # idempotent
    db.dispose()


def test_migration_matches_the_table_definitions(tmp_path: Path) -> None:
    """Autogenerate against the migrated schema finds nothing to change."""
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    db = Database(f"sqlite:///{tmp_path / 'kb.db'}")
    db.migrate()
    with db.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), metadata)
    assert diff == []
    db.dispose()


def test_migration_0003_keeps_every_row_and_writes_fewer_pages(tmp_path: Path) -> None:
    """0002 -> 0003 rebuilds seen_requests and superseded_keys as WITHOUT ROWID tables and
    narrows ix_operations_code to rows with a code: no row is lost either way, and
    downgrading restores the 0002 layout."""
    from keybound.storage.migrations import alembic_config, upgrade

    db = Database(f"sqlite:///{tmp_path / 'kb.db'}")
    upgrade(db.engine, "0002")
    rows = {
        "seen_requests": [(b"r" * 16, 1), (b"s" * 16, 2)],
        "superseded_keys": [("dev-1", b"k" * 32, b"pub", 5)],
    }
    with db.engine.begin() as conn:
        conn.execute(text("INSERT INTO applications VALUES ('app', '{}', 0, 0)"))
        conn.execute(
            text("INSERT INTO users (id, application_id, created_at) VALUES ('u', 'app', 0)")
        )
        conn.execute(
            text(
                "INSERT INTO registrations (id, application_id, user_id, state, failures, "
                "sw_public_key, sw_key_id, activation_hw_status, platform, os_version, "
                "generation, created_at, activated_at, updated_at) VALUES ('dev-1', 'app', 'u', "
                "'ACTIVE', 0, x'00', x'01', 'OK', 'LINUX', '6', 1, 0, 0, 0)"
            )
        )
        conn.execute(
            text("INSERT INTO seen_requests VALUES (:r, :e)"),
            [{"r": r, "e": e} for r, e in rows["seen_requests"]],
        )
        conn.execute(
            text("INSERT INTO superseded_keys VALUES (:d, :k, :p, :t)"),
            [{"d": d, "k": k, "p": p, "t": t} for d, k, p, t in rows["superseded_keys"]],
        )

    def layout() -> dict[str, str]:
        with db.engine.connect() as conn:
            return {
                name: sql
                for name, sql in conn.execute(
                    text(
                        "SELECT name, sql FROM sqlite_master WHERE name IN ('seen_requests', "
                        "'superseded_keys', 'ix_operations_code')"
                    )
                )
            }

    def stored() -> dict[str, list[tuple[object, ...]]]:
        with db.engine.connect() as conn:
            return {
                table: sorted(tuple(r) for r in conn.execute(text(f"SELECT * FROM {table}")))
                for table in rows
            }

    upgrade(db.engine, "0003")
    after = layout()
    assert "WITHOUT ROWID" in after["seen_requests"]
    assert "WITHOUT ROWID" in after["superseded_keys"]
    assert "WHERE code_hash IS NOT NULL" in after["ix_operations_code"]
    assert stored() == rows
    with db.engine.connect() as conn:  # the replay purge's index came back too
        indexes = {r[1] for r in conn.execute(text("PRAGMA index_list(seen_requests)"))}
    assert "ix_seen_requests_expires_at" in indexes

    from alembic import command

    command.downgrade(alembic_config(db.engine), "0002")
    before = layout()
    assert not any("WITHOUT ROWID" in sql or "WHERE" in sql for sql in before.values())
    assert stored() == rows
    db.dispose()


def test_migration_0004_keys_replay_marks_by_expiry_and_keeps_every_one(tmp_path: Path) -> None:
    """0003 -> 0004: seen_requests' key becomes (expires_at, request_id), the expires_at index
    goes (one B-tree per mark), no mark is lost, a replay of a kept mark is still refused, and
    downgrading restores the 0003 layout with every mark."""
    from alembic import command
    from sqlalchemy.exc import IntegrityError

    from keybound.storage.migrations import alembic_config, upgrade

    db = Database(f"sqlite:///{tmp_path / 'kb.db'}")
    upgrade(db.engine, "0003")
    marks = [(b"r" * 16, 1), (b"s" * 16, 2), (b"t" * 16, 2)]
    with db.engine.begin() as conn:
        conn.execute(
            text("INSERT INTO seen_requests VALUES (:r, :e)"), [{"r": r, "e": e} for r, e in marks]
        )

    def state() -> tuple[str, set[str], list[tuple[object, ...]]]:
        with db.engine.connect() as conn:
            sql = conn.execute(
                text("SELECT sql FROM sqlite_master WHERE name = 'seen_requests'")
            ).scalar_one()
            indexes = {r[1] for r in conn.execute(text("PRAGMA index_list(seen_requests)"))}
            rows = sorted(tuple(r) for r in conn.execute(text("SELECT * FROM seen_requests")))
        return sql, indexes, rows

    upgrade(db.engine)
    sql, indexes, rows = state()
    assert "PRIMARY KEY (expires_at, request_id)" in sql and "WITHOUT ROWID" in sql
    assert "ix_seen_requests_expires_at" not in indexes
    assert rows == marks
    with pytest.raises(IntegrityError), db.engine.begin() as conn:  # a replay of a kept mark
        conn.execute(text("INSERT INTO seen_requests VALUES (:r, 2)"), {"r": b"s" * 16})

    command.downgrade(alembic_config(db.engine), "0003")
    sql, indexes, rows = state()
    assert "PRIMARY KEY (request_id)" in sql and "WITHOUT ROWID" in sql
    assert "ix_seen_requests_expires_at" in indexes
    assert rows == marks
    db.dispose()


@pytest.mark.postgres
def test_migration_0004_on_postgresql_swaps_the_key_and_keeps_every_mark(
    postgres: PostgresServer,
) -> None:
    """On PostgreSQL 0004 swaps the primary key constraint in place (and 0003 comes back on
    downgrade), every mark kept; the result matches tables.py."""
    from alembic import command
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from keybound.storage.migrations import alembic_config, upgrade

    db = Database(postgres.fresh_database())  # migrated to the newest revision
    command.downgrade(alembic_config(db.engine), "0003")
    marks = [(b"r" * 16, 1), (b"s" * 16, 2)]
    with db.engine.begin() as conn:
        conn.execute(
            text("INSERT INTO seen_requests VALUES (:r, :e)"), [{"r": r, "e": e} for r, e in marks]
        )

    def state() -> tuple[list[str], set[str | None], list[tuple[object, ...]]]:
        inspector = inspect(db.engine)
        key = inspector.get_pk_constraint("seen_requests")["constrained_columns"]
        indexes = {ix["name"] for ix in inspector.get_indexes("seen_requests")}
        with db.engine.connect() as conn:
            rows = sorted(
                (bytes(r), e)
                for r, e in conn.execute(text("SELECT request_id, expires_at FROM seen_requests"))
            )
        return key, indexes, rows

    upgrade(db.engine)
    assert state() == (["expires_at", "request_id"], set(), marks)
    with db.engine.connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn), metadata) == []
    command.downgrade(alembic_config(db.engine), "0003")
    assert state() == (["request_id"], {"ix_seen_requests_expires_at"}, marks)
    db.dispose()


def test_write_transactions_take_the_lock_up_front(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path / 'kb.db'}")
    db.migrate()
    with db.write() as conn:
        # BEGIN IMMEDIATE: this connection already holds the RESERVED lock, so another
        # writer cannot start until we finish
        other = db.engine.raw_connection()
        try:
            other.execute("PRAGMA busy_timeout=0")
            try:
                other.execute("BEGIN IMMEDIATE")
                locked = False
            except Exception as exc:  # sqlite3.OperationalError: database is locked
                locked = "locked" in str(exc)
            assert locked
        finally:
            other.close()
        conn.execute(text("SELECT 1"))
    db.dispose()


def test_sqlalchemy_statements_join_the_transaction_and_share_its_fate(tmp_path: Path) -> None:
    """read()/write() begin and commit on the driver's connection; a statement run through
    Connection.execute inside joins that transaction (no second BEGIN), commits with it, and
    rolls back with it -- and the kept-open connection is clean for the next transaction."""
    from keybound.storage.prepared import Prepared
    from keybound.storage.tables import seen_requests

    db = Database(f"sqlite:///{tmp_path / 'kb.db'}")
    db.migrate()
    insert = Prepared(seen_requests.insert())
    count = "SELECT count(*) FROM seen_requests"

    with pytest.raises(RuntimeError), db.write() as conn:
        insert.rowcount(conn, {"request_id": b"a" * 16, "expires_at": 1})
        conn.execute(seen_requests.insert().values(request_id=b"b" * 16, expires_at=1))
        raise RuntimeError("the handler failed")
    with db.read() as conn:
        assert conn.execute(text(count)).scalar() == 0  # neither row survived

    for _ in range(2):  # twice: the connection kept after the first must begin cleanly
        with db.write() as conn:
            conn.execute(seen_requests.delete())
            insert.rowcount(conn, {"request_id": b"a" * 16, "expires_at": 1})
            conn.execute(seen_requests.insert().values(request_id=b"b" * 16, expires_at=1))
    with db.read() as conn:
        assert conn.execute(text(count)).scalar() == 2
    other = db.engine.raw_connection()  # committed: another connection sees both rows
    try:
        assert other.execute(count).fetchone()[0] == 2
    finally:
        other.close()
    db.dispose()


def test_writers_of_every_process_queue_on_the_lock_file(tmp_path: Path) -> None:
    """`keybound serve --workers N`: a writer holds an flock on `<database>-lock` for its whole
    transaction (and only then), so writers in other processes wait in the kernel and wake at
    once instead of sleeping in SQLite's busy handler."""
    db = Database(f"sqlite:///{tmp_path / 'kb.db'}")
    db.migrate()
    lock_file = tmp_path / "kb.db-lock"

    def held() -> bool:  # as another process sees it: its own open file description
        fd = os.open(lock_file, os.O_RDWR)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        finally:
            os.close(fd)
        return False

    with db.write():
        assert held()
    assert not held()
    with db.read():
        assert not held()  # readers never take it
    db.dispose()


def test_sqlite_commits_are_durable(tmp_path: Path) -> None:
    """Nothing acknowledged is lost on power failure: every commit is synced (FULL)."""
    db = Database(f"sqlite:///{tmp_path / 'kb.db'}")
    db.migrate()
    with db.read() as conn:
        assert conn.execute(text("PRAGMA synchronous")).scalar() == 2  # FULL
    db.dispose()


def test_displayed_url_hides_the_password() -> None:
    db = Database("postgresql+psycopg://keybound:s3cret@127.0.0.1:5/kb")
    assert "s3cret" not in db.display_url
    assert db.display_url.startswith("postgresql+psycopg://keybound:***@127.0.0.1")
    db.dispose()


def test_postgresql_urls_get_the_driver_keybound_is_built_with() -> None:
    from keybound.errors import ConfigurationInvalid
    from keybound.storage.db import _postgresql_driver

    assert (
        _postgresql_driver("postgresql://kb:pw@db:5432/kb")
        == "postgresql+psycopg://kb:pw@db:5432/kb"
    )
    assert _postgresql_driver("postgresql+psycopg://kb@db/kb") == "postgresql+psycopg://kb@db/kb"
    for url in ("postgresql+psycopg2://kb@db/kb", "mysql://kb@db/kb"):
        with pytest.raises(ConfigurationInvalid, match=r"postgresql\+psycopg://"):
            _postgresql_driver(url)


def test_sqlite_needs_a_file() -> None:
    """WAL, the writer lock file and group commit need one (an in-memory database would
    also lose everything it acknowledged)."""
    from keybound.errors import ConfigurationInvalid

    for url in ("sqlite://", "sqlite:///:memory:"):
        with pytest.raises(ConfigurationInvalid, match="database file"):
            Database(url)
