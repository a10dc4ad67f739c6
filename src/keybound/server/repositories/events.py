"""The events table: the audit trail, chained (server.events.chain), and, next, the outbox
(docs/architecture.md, docs/audit.md)."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from typing import Any, Final

from sqlalchemy import Connection, bindparam, func, insert, select

from keybound.server.events.chain import GENESIS, entry_hash
from keybound.server.events.model import Event
from keybound.server.records import EventRecord
from keybound.storage import tables as t
from keybound.storage.prepared import Prepared

E = t.events

#: PostgreSQL advisory lock of the chain's head: the transactions that write events take
#: turns from their first event to their commit, so each reads the head the previous one
#: committed (docs/audit.md: concurrency). On SQLite the writer lock already does this.
CHAIN_LOCK: Final = 0x6B62_6175_6469_7431  # "kbaudit1"

_INSERT = Prepared(insert(E))  # every operation writes at least one
#: the newest chained entry's hash: the next entry's chain_prev
_HEAD: Final = Prepared(select(E.c.chain_hash).where(E.c.chain_hash.is_not(None))
                        .order_by(E.c.seq.desc()).limit(1))
_LOCK: Final = Prepared(select(func.pg_advisory_xact_lock(bindparam("key"))))


def insert_events(conn: Connection, events: Sequence[Event]) -> None:
    """Append ``events`` to the audit chain, in order, in the caller's transaction (the last
    statements before its commit: the chain's lock is held from here to the commit)."""
    if not events:
        return
    if conn.dialect.name == "postgresql":
        _LOCK.scalar(conn, {"key": CHAIN_LOCK})
    prev: bytes = _HEAD.scalar(conn, {}) or GENESIS
    for event in events:
        payload = json.dumps(event.payload, sort_keys=True) if event.payload else None
        chain_hash = entry_hash(
            prev, id=event.id, type=event.type.value, application_id=event.application_id,
            subject=event.subject, operation_id=event.operation_id, actor=event.actor.value,
            outcome=event.outcome.value, code=event.code, payload=payload,
            created_at=event.created_at)
        _INSERT.rowcount(conn, {
            "id": event.id, "type": event.type.value, "application_id": event.application_id,
            "subject": event.subject, "operation_id": event.operation_id,
            "actor": event.actor.value, "outcome": event.outcome.value, "code": event.code,
            "payload": payload, "created_at": event.created_at, "chain_prev": prev,
            "chain_hash": chain_hash})
        prev = chain_hash


def latest(conn: Connection, *, application_id: str | None, limit: int) -> list[EventRecord]:
    query = select(E).order_by(E.c.seq.desc()).limit(limit)
    if application_id is not None:
        query = query.where(E.c.application_id == application_id)
    return [EventRecord(*row) for row in conn.execute(query)]


def in_order(conn: Connection, *, batch: int = 5000) -> Iterator[EventRecord]:
    """Every entry in ``seq`` order, ``batch`` rows per query (keyset pagination)."""
    after = None
    while True:
        query = select(E).order_by(E.c.seq).limit(batch)
        if after is not None:
            query = query.where(E.c.seq > after)
        rows = [EventRecord(*row) for row in conn.execute(query)]
        yield from rows
        if len(rows) < batch:
            return
        after = rows[-1].seq


def head(conn: Connection) -> tuple[int, bytes] | None:
    """``(seq, chain_hash)`` of the newest chained entry, or None."""
    row = conn.execute(select(E.c.seq, E.c.chain_hash).where(E.c.chain_hash.is_not(None))
                       .order_by(E.c.seq.desc()).limit(1)).first()
    return None if row is None else (int(row.seq), bytes(row.chain_hash))


def prune_boundary(conn: Connection, before: int) -> tuple[int, bytes | None] | None:
    """The newest entry retention may delete with everything before it: older than
    ``before`` like every entry up to it, never the chain's head (the next entry links to
    it). ``(seq, chain_hash)`` (None for an entry older than the chain), or None."""
    newest = conn.execute(select(func.max(E.c.seq))).scalar()
    if newest is None:
        return None
    kept = conn.execute(select(func.min(E.c.seq)).where(E.c.created_at >= before)).scalar()
    limit = min(newest - 1, newest if kept is None else kept - 1)
    row = conn.execute(select(E.c.seq, E.c.chain_hash).where(E.c.seq <= limit)
                       .order_by(E.c.seq.desc()).limit(1)).first()
    if row is None:
        return None
    return int(row.seq), None if row.chain_hash is None else bytes(row.chain_hash)


def as_dict(record: EventRecord) -> dict[str, Any]:
    return record._asdict()
