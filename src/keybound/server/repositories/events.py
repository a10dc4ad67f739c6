"""The events table: the audit trail and, next, the outbox (docs/architecture.md)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, insert, select

from keybound.server.events.model import Event
from keybound.server.records import EventRecord
from keybound.storage import tables as t
from keybound.storage.prepared import Prepared

E = t.events


_INSERT = Prepared(insert(E))  # every operation writes at least one


def insert_events(conn: Connection, events: Sequence[Event]) -> None:
    for event in events:
        _INSERT.rowcount(conn, {
            "id": event.id, "type": event.type.value, "application_id": event.application_id,
            "subject": event.subject, "operation_id": event.operation_id,
            "actor": event.actor.value, "outcome": event.outcome.value, "code": event.code,
            "payload": json.dumps(event.payload, sort_keys=True) if event.payload else None,
            "created_at": event.created_at})


def latest(conn: Connection, *, application_id: str | None, limit: int) -> list[EventRecord]:
    query = select(E).order_by(E.c.seq.desc()).limit(limit)
    if application_id is not None:
        query = query.where(E.c.application_id == application_id)
    return [EventRecord(*row) for row in conn.execute(query)]


def as_dict(record: EventRecord) -> dict[str, Any]:
    return record._asdict()
