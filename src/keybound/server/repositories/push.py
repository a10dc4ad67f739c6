"""Device notifications' tables: each application's providers (credentials wrapped), each
device's push token, and the wake-ups waiting to be sent (docs/notifications.md)."""

from __future__ import annotations

from typing import Any, Final

from sqlalchemy import Connection, delete, insert, or_, select, text, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from keybound.server.records import NotificationRecord, PushProviderRecord, PushTokenRecord
from keybound.storage import tables as t

P = t.push_providers
T = t.push_tokens
N = t.push_notifications

#: ix_push_notifications_pending's predicate, spelled as SQLite needs to use it
_PENDING: Final = text("push_notifications.state = 'pending'")


def _insert(conn: Connection) -> Any:
    return sqlite_insert if conn.dialect.name == "sqlite" else pg_insert


# -- providers -----------------------------------------------------------------------------


def providers_of(conn: Connection, application_id: str) -> list[PushProviderRecord]:
    rows = conn.execute(select(P).where(P.c.application_id == application_id).order_by(P.c.kind))
    return [PushProviderRecord(*row) for row in rows]


def put_provider(conn: Connection, record: PushProviderRecord) -> None:
    values = record._asdict()
    changed = {k: values[k] for k in ("settings", "wrapped_credentials", "updated_at")}
    conn.execute(
        _insert(conn)(P)
        .values(**values)
        .on_conflict_do_update(index_elements=["application_id", "kind"], set_=changed)
    )


def remove_provider(conn: Connection, application_id: str, kind: str) -> bool:
    return (
        conn.execute(
            delete(P).where(P.c.application_id == application_id, P.c.kind == kind)
        ).rowcount
        == 1
    )


# -- push tokens ---------------------------------------------------------------------------


def token_of(conn: Connection, device_id: str) -> PushTokenRecord | None:
    row = conn.execute(select(T).where(T.c.device_id == device_id)).first()
    return None if row is None else PushTokenRecord(*row)


def put_token(conn: Connection, device_id: str, provider: str, token: str, now: int) -> None:
    conn.execute(
        _insert(conn)(T)
        .values(device_id=device_id, provider=provider, token=token, updated_at=now)
        .on_conflict_do_update(
            index_elements=["device_id"],
            set_={"provider": provider, "token": token, "updated_at": now},
        )
    )


def remove_token(conn: Connection, device_id: str) -> None:
    conn.execute(delete(T).where(T.c.device_id == device_id))


def drop_token(
    conn: Connection, device_id: str, token: str, *, registered_before: int | None
) -> bool:
    """A provider said the token is dead: forget it, unless the device registered another
    one meanwhile (or, for APNs' 410, after the moment APNs found it invalid)."""
    where = [T.c.device_id == device_id, T.c.token == token]
    if registered_before is not None:
        where.append(T.c.updated_at <= registered_before)
    return conn.execute(delete(T).where(*where)).rowcount == 1


# -- wake-ups ------------------------------------------------------------------------------


def queue(
    conn: Connection,
    *,
    application_id: str,
    device_id: str,
    operation_id: str,
    expires_at: int,
    now: int,
) -> None:
    conn.execute(
        insert(N).values(
            application_id=application_id,
            device_id=device_id,
            operation_id=operation_id,
            state="pending",
            attempts=0,
            next_attempt_at=now,
            expires_at=expires_at,
            leased_until=None,
            last_detail=None,
            created_at=now,
        )
    )


def due(conn: Connection, now: int, limit: int) -> list[NotificationRecord]:
    rows = conn.execute(
        select(N)
        .where(
            _PENDING,
            N.c.next_attempt_at <= now,
            or_(N.c.leased_until.is_(None), N.c.leased_until < now),
        )
        .order_by(N.c.next_attempt_at, N.c.id)
        .limit(limit)
    )
    return [NotificationRecord(*row) for row in rows]


def claim(conn: Connection, ids: list[int], *, now: int, lease_until: int) -> set[int]:
    if not ids:
        return set()
    rows = conn.execute(
        update(N)
        .where(
            N.c.id.in_(ids),
            _PENDING,
            N.c.next_attempt_at <= now,
            or_(N.c.leased_until.is_(None), N.c.leased_until < now),
        )
        .values(leased_until=lease_until)
        .returning(N.c.id)
    )
    return {int(row.id) for row in rows}


def store(conn: Connection, notification_id: int, **values: Any) -> None:
    conn.execute(update(N).where(N.c.id == notification_id).values(leased_until=None, **values))


def of_operation(conn: Connection, operation_id: str) -> list[NotificationRecord]:
    rows = conn.execute(select(N).where(N.c.operation_id == operation_id).order_by(N.c.id))
    return [NotificationRecord(*row) for row in rows]


__all__ = [
    "claim",
    "drop_token",
    "due",
    "of_operation",
    "providers_of",
    "put_provider",
    "put_token",
    "queue",
    "remove_provider",
    "remove_token",
    "store",
    "token_of",
]
