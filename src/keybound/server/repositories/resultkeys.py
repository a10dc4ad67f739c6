"""The server's result-signing keys (docs/signed-results.md), private halves wrapped
(server.secrets), and the result issuer kept with them in ``settings``."""

from __future__ import annotations

from sqlalchemy import Connection, insert, select, update

from keybound.server.records import ResultKeyRecord
from keybound.storage import tables as t

K = t.result_keys

#: ``settings`` name of the ``iss`` of results and checkpoints
ISSUER = "result_issuer"


def all_keys(conn: Connection) -> list[ResultKeyRecord]:
    return [
        ResultKeyRecord(*row) for row in conn.execute(select(K).order_by(K.c.created_at, K.c.kid))
    ]


def get(conn: Connection, kid: str) -> ResultKeyRecord | None:
    row = conn.execute(select(K).where(K.c.kid == kid)).first()
    return None if row is None else ResultKeyRecord(*row)


def insert_key(conn: Connection, record: ResultKeyRecord) -> None:
    conn.execute(insert(K).values(**record._asdict()))


def any_active(conn: Connection) -> bool:
    return conn.execute(select(K.c.kid).where(K.c.state == "ACTIVE").limit(1)).first() is not None


def retire(conn: Connection, kid: str, *, now: int, expires_at: int | None) -> bool:
    """ACTIVE -> RETIRED in one UPDATE; its private key is erased (a retired key signs
    nothing more), its public key stays published until ``expires_at``."""
    return (
        conn.execute(
            update(K)
            .where(K.c.kid == kid, K.c.state == "ACTIVE")
            .values(
                state="RETIRED", retired_at=now, expires_at=expires_at, wrapped_private_key=None
            )
        ).rowcount
        == 1
    )


def count_active(conn: Connection) -> int:
    return len(conn.execute(select(K.c.kid).where(K.c.state == "ACTIVE")).all())


def issuer(conn: Connection) -> str | None:
    value: str | None = conn.execute(
        select(t.settings.c.value).where(t.settings.c.name == ISSUER)
    ).scalar_one_or_none()
    return value


def set_issuer(conn: Connection, value: str) -> None:
    updated = conn.execute(
        update(t.settings).where(t.settings.c.name == ISSUER).values(value=value)
    ).rowcount
    if updated == 0:
        conn.execute(insert(t.settings).values(name=ISSUER, value=value))
