"""Signed checkpoints of the audit chain (server.events.chain, docs/audit.md)."""

from __future__ import annotations

from sqlalchemy import Connection, delete, func, insert, select

from keybound.server.records import CheckpointRecord
from keybound.storage import tables as t

C = t.audit_checkpoints


def insert_checkpoint(conn: Connection, *, kind: str, seq: int, chain_hash: bytes, jws: str,
                      created_at: int) -> None:
    conn.execute(insert(C).values(kind=kind, seq=seq, chain_hash=chain_hash, jws=jws,
                                  created_at=created_at))


def all_checkpoints(conn: Connection) -> list[CheckpointRecord]:
    return [CheckpointRecord(*row) for row in conn.execute(select(C).order_by(C.c.id))]


def newest_seq(conn: Connection) -> int | None:
    seq: int | None = conn.execute(select(func.max(C.c.seq))).scalar()
    return seq


def delete_before(conn: Connection, seq: int) -> int:
    """Checkpoints of entries retention deleted: the PRUNE checkpoint at ``seq`` replaces
    them."""
    deleted: int = conn.execute(delete(C).where(C.c.seq < seq)).rowcount
    return deleted
