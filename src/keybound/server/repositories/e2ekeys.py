"""The server's secure-channel (E2E) key pairs, private keys wrapped (server.secrets)."""

from __future__ import annotations

from typing import Final

from sqlalchemy import Connection, insert, select, update

from keybound.server.records import E2EKeyRecord
from keybound.storage import tables as t

K = t.e2e_keys


_PUBLIC_COLUMNS: Final = [c for c in K.c if c.name != "wrapped_private_key"]


def _public(row: object) -> E2EKeyRecord:
    """A record without the wrapped private key (for listings)."""
    values = dict(row._mapping)  # type: ignore[attr-defined]
    return E2EKeyRecord(wrapped_private_key=None, **values)


def in_state(conn: Connection, state: str) -> list[E2EKeyRecord]:
    return [E2EKeyRecord(*row) for row in conn.execute(select(K).where(K.c.state == state))]


def insert_key(conn: Connection, record: E2EKeyRecord) -> None:
    conn.execute(insert(K).values(**record._asdict()))


def get_public(conn: Connection, key_id: str) -> E2EKeyRecord | None:
    row = conn.execute(select(*_PUBLIC_COLUMNS).where(K.c.key_id == key_id)).first()
    return None if row is None else _public(row)


def of_application(conn: Connection, application_id: str) -> list[E2EKeyRecord]:
    rows = conn.execute(
        select(*_PUBLIC_COLUMNS)
        .where(K.c.application_id == application_id)
        .order_by(K.c.created_at, K.c.key_id)
    )
    return [_public(row) for row in rows]


def transition(
    conn: Connection,
    key_id: str,
    *,
    to: str,
    from_states: tuple[str, ...],
    stamp: str,
    now: int,
    erase_private: bool,
) -> str | None:
    """One atomic UPDATE; the key's application, or None if it is not in ``from_states``."""
    values: dict[str, object] = {"state": to, stamp: now}
    if erase_private:
        values["wrapped_private_key"] = None
    row = conn.execute(
        update(K)
        .where(K.c.key_id == key_id, K.c.state.in_(from_states))
        .values(**values)
        .returning(K.c.application_id)
    ).first()
    return None if row is None else str(row.application_id)


def state_of(conn: Connection, key_id: str) -> str | None:
    state: str | None = conn.execute(
        select(K.c.state).where(K.c.key_id == key_id)
    ).scalar_one_or_none()
    return state
