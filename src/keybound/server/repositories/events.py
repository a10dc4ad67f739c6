"""The events table: the audit trail, sealed into a hash chain (server.events.chain), and,
next, the outbox (docs/architecture.md, docs/audit.md).

Sealing appends entries to the chain: each gets the next position (``chain_seq``), the
previous entry's hash and its own, and ``audit_head`` moves on. One writer at a time may do
so. On SQLite a unit of work seals its events as it writes them (it holds the one writer
lock anyway). On PostgreSQL a unit writes them unsealed, so that no request waits for
another's commit, and a sealer seals them just after, a batch per transaction, holding the
head's row lock (docs/audit.md: concurrency).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from typing import Any, Final

from sqlalchemy import Connection, bindparam, func, insert, select, update

from keybound.server.events.chain import entry_hash
from keybound.server.events.model import Event
from keybound.server.records import ChainHead, EventRecord
from keybound.storage import tables as t
from keybound.storage.prepared import Prepared

E = t.events
H = t.audit_head

_INSERT: Final = Prepared(insert(E))  # every operation writes at least one
_HEAD: Final = Prepared(select(H.c.chain_seq, H.c.chain_hash).where(H.c.id == 1),
                        row=ChainHead)
_MOVE_HEAD: Final = Prepared(update(H).where(H.c.id == 1).values(
    chain_seq=bindparam("head_seq"), chain_hash=bindparam("head_hash")))
_ANY_UNSEALED: Final = Prepared(select(E.c.seq).where(E.c.chain_hash.is_(None)).limit(1))
_SEAL: Final = update(E).where(E.c.seq == bindparam("row_seq"), E.c.chain_hash.is_(None)).values(
    chain_seq=bindparam("new_chain_seq"), chain_prev=bindparam("new_prev"),
    chain_hash=bindparam("new_hash"))


def _columns(event: Event) -> dict[str, Any]:
    return {"id": event.id, "type": event.type.value, "application_id": event.application_id,
            "subject": event.subject, "operation_id": event.operation_id,
            "actor": event.actor.value, "outcome": event.outcome.value, "code": event.code,
            "payload": json.dumps(event.payload, sort_keys=True) if event.payload else None,
            "created_at": event.created_at}


def insert_events(conn: Connection, events: Sequence[Event]) -> None:
    """Write ``events`` in the caller's transaction: sealed at once on SQLite (whose writer
    lock the transaction holds), unsealed on PostgreSQL (the sealer's, just after)."""
    if not events:
        return
    if conn.dialect.name != "sqlite":
        for event in events:
            _INSERT.rowcount(conn, {**_columns(event), "chain_seq": None, "chain_prev": None,
                                    "chain_hash": None})
        return
    head = _HEAD.one(conn, {})
    position, prev = head.chain_seq, head.chain_hash
    for event in events:
        row = _columns(event)
        position, digest = position + 1, entry_hash(prev, **row)
        _INSERT.rowcount(conn, {**row, "chain_seq": position, "chain_prev": prev,
                                "chain_hash": digest})
        prev = digest
    _MOVE_HEAD.rowcount(conn, {"head_seq": position, "head_hash": prev})


def seal(conn: Connection, *, limit: int, wait: bool) -> int | None:
    """Seal up to ``limit`` unsealed entries, oldest first, in the caller's write
    transaction; how many. On PostgreSQL the head's row lock lets one sealer at a time
    extend the chain: without ``wait``, None when another holds it (that sealer, or the
    next, takes these entries too)."""
    locked = select(H.c.chain_seq, H.c.chain_hash).where(H.c.id == 1)
    if conn.dialect.name != "sqlite":
        locked = locked.with_for_update(skip_locked=not wait)
    found = conn.execute(locked).first()
    if found is None:
        return None
    position, prev = int(found.chain_seq), bytes(found.chain_hash)
    rows = conn.execute(select(E).where(E.c.chain_hash.is_(None)).order_by(E.c.seq)
                        .limit(limit)).all()
    if not rows:
        return 0
    sealed = []
    for row in rows:
        record = EventRecord(*row)
        position, digest = position + 1, entry_hash(
            prev, id=record.id, type=record.type, application_id=record.application_id,
            subject=record.subject, operation_id=record.operation_id, actor=record.actor,
            outcome=record.outcome, code=record.code, payload=record.payload,
            created_at=record.created_at)
        sealed.append({"row_seq": record.seq, "new_chain_seq": position, "new_prev": prev,
                       "new_hash": digest})
        prev = digest
    conn.execute(_SEAL, sealed)
    _MOVE_HEAD.rowcount(conn, {"head_seq": position, "head_hash": prev})
    return len(sealed)


def head(conn: Connection) -> ChainHead:
    """The newest sealed position and hash (0 and the genesis value: nothing sealed yet)."""
    return _HEAD.one(conn, {})


def any_unsealed(conn: Connection) -> bool:
    """Whether an entry waits to be sealed (ix_events_unsealed: one index probe)."""
    return _ANY_UNSEALED.first(conn, {}) is not None


def latest(conn: Connection, *, application_id: str | None, limit: int) -> list[EventRecord]:
    query = select(E).order_by(E.c.seq.desc()).limit(limit)
    if application_id is not None:
        query = query.where(E.c.application_id == application_id)
    return [EventRecord(*row) for row in conn.execute(query)]


def in_chain_order(conn: Connection, *, up_to: int | None = None) -> Iterator[EventRecord]:
    """Every entry, sealed ones in chain order (up to position ``up_to``), then the
    unsealed ones by ``seq``; streamed."""
    query = select(E).order_by(E.c.chain_seq.is_(None), E.c.chain_seq, E.c.seq)
    if up_to is not None:
        query = query.where(E.c.chain_seq <= up_to)
    for row in conn.execute(query, execution_options={"yield_per": 5000}):
        yield EventRecord(*row)


def prune_boundary(conn: Connection, before: int) -> tuple[int, bytes] | None:
    """The newest position retention may delete with every one before it: all older than
    ``before``. ``(chain_seq, chain_hash)``, or None."""
    kept = conn.execute(select(func.min(E.c.chain_seq)).where(
        E.c.created_at >= before, E.c.chain_seq.is_not(None))).scalar()
    limit = conn.execute(select(func.max(E.c.chain_seq))).scalar() if kept is None \
        else kept - 1
    if limit is None:
        return None
    row = conn.execute(select(E.c.chain_seq, E.c.chain_hash).where(E.c.chain_seq <= limit)
                       .order_by(E.c.chain_seq.desc()).limit(1)).first()
    return None if row is None else (int(row.chain_seq), bytes(row.chain_hash))


def as_dict(record: EventRecord) -> dict[str, Any]:
    return record._asdict()
