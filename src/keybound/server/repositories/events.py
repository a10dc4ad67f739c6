"""The events table: the audit trail and the outbox (docs/architecture.md, docs/events.md).

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
from collections.abc import Sequence
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

from keybound.server.events.model import PUBLIC_TYPES, Event
from keybound.server.records import EventRecord
from keybound.storage import tables as t
from keybound.storage.prepared import Prepared

E = t.events
S = t.webhook_subscriptions

#: the advisory lock key public-event writers share and pollers take (PostgreSQL)
PUBLIC_EVENTS_LOCK: Final = 0x6B62_6576_656E_7473  # "kbevents"
#: delivery states of an event row: NULL is the audit trail only
PENDING: Final = "PENDING"  # an endpoint subscribed; not yet fanned out into deliveries
FANNED: Final = "FANNED"  # its deliveries exist

#: ix_events_delivery_pending's predicate as text (SQLite matches partial indexes literally)
_DELIVERY_PENDING: Final = text("events.delivery = 'PENDING'")
_COLUMNS: Final = ("id", "type", "application_id", "subject", "operation_id", "actor",
                   "outcome", "code", "payload", "created_at")
_INSERT: Final = Prepared(insert(E))  # every operation writes at least one
_SUBSCRIBED = case((exists().where(S.c.application_id == bindparam("sub_app"),
                                   S.c.event_type == bindparam("sub_type")),
                    literal(PENDING)), else_=None)
_INSERT_PUBLIC: Final = Prepared(insert(E).values(delivery=_SUBSCRIBED))
_LOCK_SHARED = select(func.pg_advisory_xact_lock_shared(PUBLIC_EVENTS_LOCK)
                      .label("locked")).subquery("lock")
#: PostgreSQL: the lock is taken in the SELECT's FROM, which runs before the row's defaults
#: (the ``seq`` draw) are computed (tests/server/repositories/test_events.py holds it)
_INSERT_PUBLIC_PG: Final = Prepared(insert(E).from_select(
    [*_COLUMNS, "delivery"],
    select(*(bindparam(name, type_=E.c[name].type) for name in _COLUMNS), _SUBSCRIBED)
    .select_from(_LOCK_SHARED)))


def _row(event: Event) -> dict[str, Any]:
    return {
        "id": event.id, "type": event.type.value, "application_id": event.application_id,
        "subject": event.subject, "operation_id": event.operation_id,
        "actor": event.actor.value, "outcome": event.outcome.value, "code": event.code,
        "payload": json.dumps(event.payload, sort_keys=True) if event.payload else None,
        "created_at": event.created_at}


def insert_events(conn: Connection, events: Sequence[Event]) -> None:
    for event in events:
        row = _row(event)
        if event.type not in PUBLIC_TYPES:
            _INSERT.rowcount(conn, row)
            continue
        row["sub_app"], row["sub_type"] = event.application_id, row["type"]
        statement = _INSERT_PUBLIC if conn.dialect.name == "sqlite" else _INSERT_PUBLIC_PG
        statement.rowcount(conn, row)


def settle(conn: Connection) -> None:
    """Wait until every public event whose ``seq`` was drawn so far is visible (PostgreSQL;
    see the module docstring); call first in the transaction that reads them."""
    if conn.dialect.name != "sqlite":
        conn.execute(select(func.pg_advisory_xact_lock(PUBLIC_EVENTS_LOCK)))


def latest(conn: Connection, *, application_id: str | None, limit: int) -> list[EventRecord]:
    query = select(E).order_by(E.c.seq.desc()).limit(limit)
    if application_id is not None:
        query = query.where(E.c.application_id == application_id)
    return [EventRecord(*row) for row in conn.execute(query)]


def public_after(conn: Connection, *, application_id: str, after: int, scan: int,
                 types: Sequence[str]) -> tuple[list[EventRecord], int | None]:
    """The application's public events with ``seq > after``, looking at no more than
    ``scan`` rows of the table, and the last ``seq`` looked at (None: none were): a poller
    continues from there even when nothing matched, so a quiet application does not make it
    scan the busy ones' events again."""
    window = (select(E.c.seq).where(E.c.seq > after).order_by(E.c.seq).limit(scan)
              .subquery("window"))
    last = conn.execute(select(func.max(window.c.seq))).scalar()
    if last is None:
        return [], None
    rows = conn.execute(select(E).where(
        E.c.seq > after, E.c.seq <= last, E.c.application_id == application_id,
        E.c.type.in_(list(types))).order_by(E.c.seq))
    return [EventRecord(*row) for row in rows], int(last)


def by_id(conn: Connection, application_id: str, event_id: str) -> EventRecord | None:
    row = conn.execute(select(E).where(E.c.id == event_id,
                                       E.c.application_id == application_id)).first()
    return None if row is None else EventRecord(*row)


def public_between(conn: Connection, *, application_id: str, since: int, until: int,
                   types: Sequence[str], limit: int) -> list[EventRecord]:
    """Public events of the application created in [since, until), oldest first."""
    rows = conn.execute(select(E).where(
        E.c.application_id == application_id, E.c.created_at >= since,
        E.c.created_at < until, E.c.type.in_(list(types))).order_by(E.c.seq).limit(limit))
    return [EventRecord(*row) for row in rows]


def pending_delivery(conn: Connection, limit: int) -> list[EventRecord]:
    """Events waiting to be fanned out, oldest first (ix_events_delivery_pending)."""
    rows = conn.execute(select(E).where(_DELIVERY_PENDING).order_by(E.c.seq).limit(limit))
    return [EventRecord(*row) for row in rows]


def mark_fanned(conn: Connection, seqs: Sequence[int]) -> None:
    conn.execute(update(E).where(E.c.seq.in_(list(seqs)), _DELIVERY_PENDING)
                 .values(delivery=FANNED))


def as_dict(record: EventRecord) -> dict[str, Any]:
    return record._asdict()


__all__ = ["FANNED", "PENDING", "PUBLIC_EVENTS_LOCK", "as_dict", "by_id", "insert_events",
           "latest", "mark_fanned", "pending_delivery", "public_after",
           "public_between", "settle"]
