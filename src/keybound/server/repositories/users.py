"""Users: the relying party's people, by application."""

from __future__ import annotations

from typing import Final

from sqlalchemy import Connection, bindparam, insert, select

from keybound.server.records import UserRecord
from keybound.storage import tables as t
from keybound.storage.prepared import Prepared

U = t.users


_INSERT: Final = Prepared(insert(U))
_SELECT: Final = Prepared(
    select(U).where(U.c.id == bindparam("id"), U.c.application_id == bindparam("application_id")),
    row=UserRecord,
)


def insert_user(conn: Connection, record: UserRecord) -> None:
    """IntegrityError when the application has a user with this external reference."""
    _INSERT.rowcount(conn, record._asdict())


def get(conn: Connection, application_id: str, user_id: str) -> UserRecord | None:
    return _SELECT.first(conn, {"id": user_id, "application_id": application_id})
