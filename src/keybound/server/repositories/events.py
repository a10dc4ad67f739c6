"""The events table: the audit trail, sealed into a hash chain (server.events.chain), and
the outbox (docs/architecture.md, docs/audit.md, docs/events.md).

Sealing appends entries to the chain: each gets the next position (``chain_seq``), the
previous entry's hash and its own, and ``audit_head`` moves on. One writer at a time may do
so. On SQLite a unit of work seals its events as it writes them (it holds the one writer
lock anyway). On PostgreSQL a unit writes them unsealed, so that no request waits for
another's commit, and a sealer seals them just after, a batch per transaction, holding the
head's row lock (docs/audit.md: concurrency). The chain covers an entry's immutable columns,
not ``delivery``, which the outbox moves on.

An event of a public type (events.model.PUBLIC_TYPES) is written with ``delivery =
'PENDING'`` exactly when an endpoint of its application subscribes to its type: the INSERT
decides it itself, with one lookup of the subscriptions' primary key inside the statement,
so an event nobody subscribed to costs what it cost before there were webhooks, and a
subscription made a moment ago is seen by the next commit (no cache to go stale). The sender
fans pending events out into deliveries (repositories/webhooks.py).

PostgreSQL assigns ``seq`` when a row is inserted, not when it commits, so two transactions
can make their events visible out of ``seq`` order, and a poller that saw ``seq`` 11 could
later miss 10. Writers of public events therefore take a shared advisory lock in the same
INSERT (before ``seq`` is drawn) and hold it to their commit; :func:`settle` takes it
exclusively, which waits for every writer that already drew a ``seq``, so after it every
public event up to the highest ``seq`` drawn is visible. SQLite has one writer at a time, so
its ``seq`` order is its commit order.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from typing import Any, Final

from sqlalchemy import (
    Connection,
    bindparam,
    case,
    exists,
    func,
    insert,
    literal,
    select,
    text,
    update,
)

from keybound.server.events.chain import entry_hash
from keybound.server.events.model import PUBLIC_TYPES, Event
from keybound.server.records import ChainHead, EventRecord
from keybound.storage import tables as t
from keybound.storage.prepared import Prepared

E = t.events
S = t.webhook_subscriptions
D = t.webhook_deliveries
H = t.audit_head

#: the advisory lock key public-event writers share and pollers take (PostgreSQL)
PUBLIC_EVENTS_LOCK: Final = 0x6B62_6576_656E_7473  # "kbevents"
#: delivery states of an event row: NULL is the audit trail only
PENDING: Final = "PENDING"  # an endpoint subscribed; not yet fanned out into deliveries
FANNED: Final = "FANNED"  # its deliveries exist

#: ix_events_delivery_pending's predicate as text (SQLite matches partial indexes literally)
_DELIVERY_PENDING: Final = text("events.delivery = 'PENDING'")
#: ix_webhook_deliveries_pending's predicate, spelled as that index's queries must
_DELIVERIES_PENDING: Final = text("webhook_deliveries.state = 'pending'")
_COLUMNS: Final = (
    "id",
    "type",
    "application_id",
    "subject",
    "operation_id",
    "actor",
    "outcome",
    "code",
    "payload",
    "created_at",
)
_INSERT: Final = Prepared(insert(E))  # every operation writes at least one
_SUBSCRIBED = case(
    (
        exists().where(
            S.c.application_id == bindparam("sub_app"), S.c.event_type == bindparam("sub_type")
        ),
        literal(PENDING),
    ),
    else_=None,
)
_INSERT_PUBLIC: Final = Prepared(insert(E).values(delivery=_SUBSCRIBED))
_LOCK_SHARED = select(
    func.pg_advisory_xact_lock_shared(PUBLIC_EVENTS_LOCK).label("locked")
).subquery("lock")
#: PostgreSQL: the lock is taken in the SELECT's FROM, which runs before the row's defaults
#: (the ``seq`` draw) are computed (tests/server/repositories/test_events.py holds it); the
#: chain columns stay NULL until the sealer's turn
_INSERT_PUBLIC_PG: Final = Prepared(
    insert(E).from_select(
        [*_COLUMNS, "delivery"],
        select(
            *(bindparam(name, type_=E.c[name].type) for name in _COLUMNS), _SUBSCRIBED
        ).select_from(_LOCK_SHARED),
    )
)
_HEAD: Final = Prepared(select(H.c.chain_seq, H.c.chain_hash).where(H.c.id == 1), row=ChainHead)
_MOVE_HEAD: Final = Prepared(
    update(H)
    .where(H.c.id == 1)
    .values(chain_seq=bindparam("head_seq"), chain_hash=bindparam("head_hash"))
)
_ANY_UNSEALED: Final = Prepared(select(E.c.seq).where(E.c.chain_hash.is_(None)).limit(1))
_SEAL: Final = (
    update(E)
    .where(E.c.seq == bindparam("row_seq"), E.c.chain_hash.is_(None))
    .values(
        chain_seq=bindparam("new_chain_seq"),
        chain_prev=bindparam("new_prev"),
        chain_hash=bindparam("new_hash"),
    )
)


def _columns(event: Event) -> dict[str, Any]:
    return {
        "id": event.id,
        "type": event.type.value,
        "application_id": event.application_id,
        "subject": event.subject,
        "operation_id": event.operation_id,
        "actor": event.actor.value,
        "outcome": event.outcome.value,
        "code": event.code,
        "payload": json.dumps(event.payload, sort_keys=True) if event.payload else None,
        "created_at": event.created_at,
    }


def _write(conn: Connection, event: Event, row: dict[str, Any]) -> None:
    """One row; a public event's ``delivery`` decided by the INSERT itself."""
    if event.type not in PUBLIC_TYPES:
        _INSERT.rowcount(conn, row)
        return
    row = {**row, "sub_app": event.application_id, "sub_type": row["type"]}
    if conn.dialect.name == "sqlite":
        _INSERT_PUBLIC.rowcount(conn, row)
    else:  # the chain columns are left out (NULL): the sealer's, just after commit
        _INSERT_PUBLIC_PG.rowcount(
            conn, {name: row[name] for name in (*_COLUMNS, "sub_app", "sub_type")}
        )


def insert_events(conn: Connection, events: Sequence[Event]) -> None:
    """Write ``events`` in the caller's transaction: sealed at once on SQLite (whose writer
    lock the transaction holds), unsealed on PostgreSQL (the sealer's, just after)."""
    if not events:
        return
    if conn.dialect.name != "sqlite":
        for event in events:
            _write(
                conn,
                event,
                {**_columns(event), "chain_seq": None, "chain_prev": None, "chain_hash": None},
            )
        return
    head = _HEAD.one(conn, {})
    position, prev = head.chain_seq, head.chain_hash
    for event in events:
        row = _columns(event)
        position, digest = position + 1, entry_hash(prev, **row)
        _write(
            conn, event, {**row, "chain_seq": position, "chain_prev": prev, "chain_hash": digest}
        )
        prev = digest
    _MOVE_HEAD.rowcount(conn, {"head_seq": position, "head_hash": prev})


def settle(conn: Connection) -> None:
    """Wait until every public event whose ``seq`` was drawn so far is visible (PostgreSQL;
    see the module docstring); call first in the transaction that reads them."""
    if conn.dialect.name != "sqlite":
        conn.execute(select(func.pg_advisory_xact_lock(PUBLIC_EVENTS_LOCK)))


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
    rows = conn.execute(
        select(E).where(E.c.chain_hash.is_(None)).order_by(E.c.seq).limit(limit)
    ).all()
    if not rows:
        return 0
    sealed = []
    for row in rows:
        stored = row._mapping
        position, digest = (
            position + 1,
            entry_hash(prev, **{name: stored[name] for name in _COLUMNS}),
        )
        sealed.append(
            {"row_seq": row.seq, "new_chain_seq": position, "new_prev": prev, "new_hash": digest}
        )
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


def public_after(
    conn: Connection, *, application_id: str, after: int, scan: int, types: Sequence[str]
) -> tuple[list[EventRecord], int | None]:
    """The application's public events with ``seq > after``, looking at no more than
    ``scan`` rows of the table, and the last ``seq`` looked at (None: none were): a poller
    continues from there even when nothing matched, so a quiet application does not make it
    scan the busy ones' events again."""
    window = select(E.c.seq).where(E.c.seq > after).order_by(E.c.seq).limit(scan).subquery("window")
    last = conn.execute(select(func.max(window.c.seq))).scalar()
    if last is None:
        return [], None
    rows = conn.execute(
        select(E)
        .where(
            E.c.seq > after,
            E.c.seq <= last,
            E.c.application_id == application_id,
            E.c.type.in_(list(types)),
        )
        .order_by(E.c.seq)
    )
    return [EventRecord(*row) for row in rows], int(last)


def by_id(conn: Connection, application_id: str, event_id: str) -> EventRecord | None:
    row = conn.execute(
        select(E).where(E.c.id == event_id, E.c.application_id == application_id)
    ).first()
    return None if row is None else EventRecord(*row)


def public_between(
    conn: Connection,
    *,
    application_id: str,
    since: int,
    until: int,
    types: Sequence[str],
    limit: int,
) -> list[EventRecord]:
    """Public events of the application created in [since, until), oldest first."""
    rows = conn.execute(
        select(E)
        .where(
            E.c.application_id == application_id,
            E.c.created_at >= since,
            E.c.created_at < until,
            E.c.type.in_(list(types)),
        )
        .order_by(E.c.seq)
        .limit(limit)
    )
    return [EventRecord(*row) for row in rows]


def pending_delivery(conn: Connection, limit: int) -> list[EventRecord]:
    """Events waiting to be fanned out, oldest first (ix_events_delivery_pending)."""
    rows = conn.execute(select(E).where(_DELIVERY_PENDING).order_by(E.c.seq).limit(limit))
    return [EventRecord(*row) for row in rows]


def mark_fanned(conn: Connection, seqs: Sequence[int]) -> None:
    conn.execute(
        update(E).where(E.c.seq.in_(list(seqs)), _DELIVERY_PENDING).values(delivery=FANNED)
    )


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
    ``before``, and none still owed to a webhook endpoint (not yet fanned out, or a delivery
    still pending), since the sender builds each request from the event row.
    ``(chain_seq, chain_hash)``, or None."""
    sealed = E.c.chain_seq.is_not(None)
    owed = select(D.c.event_seq).where(_DELIVERIES_PENDING).scalar_subquery()
    firsts = (
        conn.execute(select(func.min(E.c.chain_seq)).where(condition, sealed)).scalar()
        for condition in (E.c.created_at >= before, _DELIVERY_PENDING, E.c.seq.in_(owed))
    )
    kept = min((first for first in firsts if first is not None), default=None)
    limit = conn.execute(select(func.max(E.c.chain_seq))).scalar() if kept is None else kept - 1
    if limit is None:
        return None
    row = conn.execute(
        select(E.c.chain_seq, E.c.chain_hash)
        .where(E.c.chain_seq <= limit)
        .order_by(E.c.chain_seq.desc())
        .limit(1)
    ).first()
    return None if row is None else (int(row.chain_seq), bytes(row.chain_hash))


def as_dict(record: EventRecord) -> dict[str, Any]:
    return record._asdict()


__all__ = [
    "FANNED",
    "PENDING",
    "PUBLIC_EVENTS_LOCK",
    "any_unsealed",
    "as_dict",
    "by_id",
    "head",
    "in_chain_order",
    "insert_events",
    "latest",
    "mark_fanned",
    "pending_delivery",
    "prune_boundary",
    "public_after",
    "public_between",
    "seal",
    "settle",
]
