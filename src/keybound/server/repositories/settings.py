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


def secrets_present(conn: Connection) -> bool:
    """Whether any secret is wrapped under the master key yet."""
    return any(
        conn.execute(select(column).where(column.is_not(None)).limit(1)).first()
        for column in (
            t.e2e_keys.c.wrapped_private_key,
            t.registrations.c.pin_key,
            t.operations.c.wrapped_post_context,
            t.operations.c.wrapped_tpm_credential,
        )
    )
