"""Server-wide settings kept in the database (the master key's fingerprint, ...)."""

from __future__ import annotations

from sqlalchemy import Connection, insert, select

from keybound.storage import tables as t

MASTER_KEY_FINGERPRINT = "master_key_fingerprint"


def get(conn: Connection, name: str) -> str | None:
    value: str | None = conn.execute(
        select(t.settings.c.value).where(t.settings.c.name == name)
    ).scalar_one_or_none()
    return value


def put_new(conn: Connection, name: str, value: str) -> None:
    conn.execute(insert(t.settings).values(name=name, value=value))
