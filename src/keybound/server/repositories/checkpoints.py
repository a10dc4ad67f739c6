"""Signed checkpoints of the audit chain (server.events.chain, docs/audit.md)."""

from __future__ import annotations

from sqlalchemy import Connection, delete, func, insert, select

from keybound.server.records import CheckpointRecord
from keybound.storage import tables as t

C = t.audit_checkpoints


def insert_checkpoint(
    conn: Connection, *, kind: str, chain_seq: int, chain_hash: bytes, jws: str, created_at: int
) -> None:
    conn.execute(
        insert(C).values(
            kind=kind, chain_seq=chain_seq, chain_hash=chain_hash, jws=jws, created_at=created_at
        )
    )


def all_checkpoints(conn: Connection) -> list[CheckpointRecord]:
    return [CheckpointRecord(*row) for row in conn.execute(select(C).order_by(C.c.id))]


def newest_position(conn: Connection) -> int | None:
    position: int | None = conn.execute(select(func.max(C.c.chain_seq))).scalar()
    return position


def delete_before(conn: Connection, position: int) -> int:
    """Checkpoints of entries retention deletes: the PRUNE checkpoint at ``position``
    replaces them."""
    deleted: int = conn.execute(delete(C).where(C.c.chain_seq < position)).rowcount
    return deleted
