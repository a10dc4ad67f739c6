"""keybound.storage.prepared (hot-path statements on the driver cursor, typed records), on
SQLite and PostgreSQL. The replay mark a unit of work stores is tested in
tests/server/test_unit.py."""

from __future__ import annotations

from typing import NamedTuple

import pytest
from sqlalchemy import bindparam, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from keybound.storage import tables as t
from keybound.storage.db import Database
from keybound.storage.prepared import Prepared

SEEN = t.seen_requests
INSERT_SEEN = Prepared(insert(SEEN))
SELECT_SEEN = Prepared(select(SEEN).where(SEEN.c.request_id == bindparam("rid")))
TOUCH = Prepared(
    update(SEEN)
    .where(SEEN.c.expires_at < bindparam("before"))
    .values(expires_at=bindparam("after"))
)
EVENT = Prepared(insert(t.events))


class SeenRow(NamedTuple):
    request_id: bytes
    expires_at: int


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
    EVENT.rowcount(
        conn,
        {
            "id": event,
            "created_at": 1,
            "actor": "SYSTEM",  # type: ignore[arg-type]
            "type": event,
            "outcome": "SUCCESS",
        },
    )


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
    assert count(db, t.events) == 0


def test_rows_become_the_typed_record_named(db: Database) -> None:
    typed = Prepared(select(SEEN).where(SEEN.c.request_id == bindparam("rid")), row=SeenRow)
    with db.write() as conn:
        INSERT_SEEN.rowcount(conn, {"request_id": b"a" * 16, "expires_at": 5})
        row = typed.one(conn, {"rid": b"a" * 16})
    assert isinstance(row, SeenRow) and row == SeenRow(b"a" * 16, 5)


def test_a_record_that_is_not_the_statements_columns_is_refused() -> None:
    class Swapped(NamedTuple):
        expires_at: int
        request_id: bytes

    with pytest.raises(TypeError, match="fields"):
        Prepared(select(SEEN), row=Swapped)
    with pytest.raises(TypeError, match="fields"):
        Prepared(insert(SEEN), row=SeenRow)  # no rows at all


@pytest.mark.parametrize(
    ("statement", "params", "why"),
    [
        (
            select(SEEN).where(SEEN.c.request_id.in_(bindparam("rids", expanding=True))),
            {"rids": [b"a" * 16]},
            "per execution",
        ),
        (
            select(SEEN).where(SEEN.c.expires_at < bindparam("before", literal_execute=True)),
            {"before": 6},
            "per execution",
        ),
        (
            select(SEEN).where(SEEN.c.request_id == bindparam("request id")),
            {"request id": b"a" * 16},
            "renamed for the driver",
        ),
    ],
    ids=["in-list", "literal-execute", "escaped-name"],
)
def test_a_statement_the_driver_cannot_run_as_compiled_is_refused(
    db: Database, statement: object, params: dict[str, object], why: str
) -> None:
    """What SQLAlchemy rewrites at each execution cannot run from one compiled string: the
    first run refuses it (a TypeError naming the fix), rather than the driver failing later
    on SQL it cannot parse."""
    prepared = Prepared(statement)  # type: ignore[arg-type]
    with db.read() as conn, pytest.raises(TypeError, match=why):
        prepared.all(conn, params)  # type: ignore[arg-type]
    with db.read() as conn:  # the same statement through SQLAlchemy runs
        assert list(conn.execute(statement, params)) == []  # type: ignore[call-overload]
