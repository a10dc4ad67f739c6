"""Applications, their configuration, and relying-party API keys."""

from __future__ import annotations

from typing import Final

from sqlalchemy import Connection, bindparam, insert, select, update

from keybound.server.records import ApiKeyRecord, ApiKeySecret
from keybound.storage import tables as t
from keybound.storage.prepared import Prepared

A = t.applications
K = t.api_keys


_SELECT_CONFIG: Final = Prepared(select(A.c.config).where(A.c.id == bindparam("application_id")))
_SELECT_API_KEY: Final = Prepared(
    select(K.c.application_id, K.c.secret_hash, K.c.revoked_at).where(K.c.id == bindparam("id")),
    row=ApiKeySecret,
)


def config_text(conn: Connection, application_id: str) -> str | None:
    """The application's configuration as stored (the text operations snapshot)."""
    raw: str | None = _SELECT_CONFIG.scalar(conn, {"application_id": application_id})
    return raw


def insert_application(conn: Connection, application_id: str, config: str, now: int) -> None:
    conn.execute(insert(A).values(id=application_id, config=config, created_at=now, updated_at=now))


def update_config(conn: Connection, application_id: str, config: str, now: int) -> None:
    conn.execute(update(A).where(A.c.id == application_id).values(config=config, updated_at=now))


def ids(conn: Connection) -> list[str]:
    return list(conn.execute(select(A.c.id).order_by(A.c.id)).scalars())


def api_key_secret(conn: Connection, key_id: str) -> ApiKeySecret | None:
    return _SELECT_API_KEY.first(conn, {"id": key_id})


def insert_api_key(conn: Connection, record: ApiKeyRecord) -> None:
    conn.execute(insert(K).values(**record._asdict()))


def revoke_api_key(conn: Connection, key_id: str, now: int) -> str | None:
    """The application of the key revoked now; None if there is no active key of that id."""
    row = conn.execute(
        update(K)
        .where(K.c.id == key_id, K.c.revoked_at.is_(None))
        .values(revoked_at=now)
        .returning(K.c.application_id)
    ).first()
    return None if row is None else str(row.application_id)


def api_keys(conn: Connection, application_id: str) -> list[ApiKeyRecord]:
    rows = conn.execute(
        select(K).where(K.c.application_id == application_id).order_by(K.c.created_at)
    )
    return [ApiKeyRecord(*row) for row in rows]
