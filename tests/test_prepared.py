"""keybound.storage.prepared (hot-path statements on the driver cursor) and the replay mark
that rides on a handler's commit (Database.riding), on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest
from sqlalchemy import bindparam, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from keybound.storage import tables as t
from keybound.storage.db import Database
from keybound.storage.prepared import Prepared

SEEN = t.seen_requests
INSERT_SEEN = Prepared(insert(SEEN))
SELECT_SEEN = Prepared(select(SEEN).where(SEEN.c.request_id == bindparam("rid")))
TOUCH = Prepared(update(SEEN).where(SEEN.c.expires_at < bindparam("before"))
                 .values(expires_at=bindparam("after")))
AUDIT = Prepared(insert(t.audit_events))


class Replayed(Exception):
    pass


@pytest.fixture
def db(database_url: str) -> Database:
    database = Database(database_url)
    database.migrate()
    yield database  # type: ignore[misc]
    database.dispose()


def count(db: Database, table: object = SEEN) -> int:
    with db.read() as conn:
        return int(conn.execute(select(func.count()).select_from(table)).scalar_one())  # type: ignore[arg-type]


def audit_row(conn: object, event: str) -> None:
    AUDIT.rowcount(conn, {"at": 1, "actor": "SYSTEM", "event": event,  # type: ignore[arg-type]
                          "outcome": "SUCCESS"})


def test_prepared_statements_read_and_write_like_core(db: Database) -> None:
    with db.write() as conn:
        assert INSERT_SEEN.rowcount(conn, {"request_id": b"a" * 16, "expires_at": 5}) == 1
        assert INSERT_SEEN.rowcount(conn, {"request_id": b"b" * 16, "expires_at": 7}) == 1
        assert TOUCH.rowcount(conn, {"before": 6, "after": 9}) == 1
    with db.read() as conn:
        row = SELECT_SEEN.first(conn, {"rid": b"a" * 16})
        assert row is not None and (row.request_id, row.expires_at) == (b"a" * 16, 9)
        assert SELECT_SEEN.scalar(conn, {"rid": b"b" * 16}) == b"b" * 16
        assert SELECT_SEEN.first(conn, {"rid": b"c" * 16}) is None


def test_a_conflict_is_sqlalchemys_integrity_error_and_rolls_back(db: Database) -> None:
    with db.write() as conn:
        INSERT_SEEN.rowcount(conn, {"request_id": b"a" * 16, "expires_at": 5})
    with pytest.raises(IntegrityError), db.write() as conn:
        audit_row(conn, "lost")
        INSERT_SEEN.rowcount(conn, {"request_id": b"a" * 16, "expires_at": 5})
    assert count(db, t.audit_events) == 0


def mark(db: Database, rid: bytes):  # type: ignore[no-untyped-def]
    return db.riding(INSERT_SEEN, {"request_id": rid, "expires_at": 5}, conflict=Replayed)


def test_the_mark_rides_on_the_first_write_of_the_block(db: Database) -> None:
    with mark(db, b"a" * 16):
        assert count(db) == 0  # nothing stored before the handler writes
        with db.write() as conn:
            audit_row(conn, "handled")
        assert count(db) == 1  # stored by that commit, not by one of its own
        with db.write() as conn:
            audit_row(conn, "second")  # later writes go without it (no conflict with itself)
    assert count(db) == 1 and count(db, t.audit_events) == 2


def test_the_mark_is_stored_alone_when_the_block_writes_nothing(db: Database) -> None:
    with mark(db, b"a" * 16), db.read():
        pass
    assert count(db) == 1


def test_a_rolled_back_write_leaves_the_mark_for_the_next(db: Database) -> None:
    with mark(db, b"a" * 16):
        with pytest.raises(RuntimeError), db.write() as conn:
            audit_row(conn, "rolled back")
            raise RuntimeError("refused")
        assert count(db) == 0
        with db.write() as conn:
            audit_row(conn, "refusal audited")
    assert count(db) == 1 and count(db, t.audit_events) == 1


def test_a_seen_mark_refuses_and_rolls_the_handlers_change_back(db: Database) -> None:
    with mark(db, b"a" * 16):
        pass
    with pytest.raises(Replayed), mark(db, b"a" * 16), db.write() as conn:
        audit_row(conn, "replayed change")
    assert count(db, t.audit_events) == 0 and count(db) == 1
    with pytest.raises(Replayed), mark(db, b"a" * 16):
        pass  # a read-only handler's replay is refused too


@pytest.mark.parametrize(("statement", "params", "why"), [
    (select(SEEN).where(SEEN.c.request_id.in_(bindparam("rids", expanding=True))),
     {"rids": [b"a" * 16]}, "per execution"),
    (select(SEEN).where(SEEN.c.expires_at < bindparam("before", literal_execute=True)),
     {"before": 6}, "per execution"),
    (select(SEEN).where(SEEN.c.request_id == bindparam("request id")),
     {"request id": b"a" * 16}, "renamed for the driver"),
], ids=["in-list", "literal-execute", "escaped-name"])
def test_a_statement_the_driver_cannot_run_as_compiled_is_refused(
        db: Database, statement: object, params: dict[str, object], why: str) -> None:
    """What SQLAlchemy rewrites at each execution cannot run from one compiled string: the
    first run refuses it (a TypeError naming the fix), rather than the driver failing later
    on SQL it cannot parse."""
    prepared = Prepared(statement)  # type: ignore[arg-type]
    with db.read() as conn, pytest.raises(TypeError, match=why):
        prepared.all(conn, params)  # type: ignore[arg-type]
    with db.read() as conn:  # the same statement through SQLAlchemy runs
        assert list(conn.execute(statement, params)) == []  # type: ignore[call-overload]
