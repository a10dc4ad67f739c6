"""The audit trail: every operation, success or refusal, becomes one row.

Successful changes are audited inside the transaction that makes them; refusals are audited
in a transaction of their own, because the refused change was rolled back.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from enum import StrEnum
from typing import Any

from sqlalchemy import Connection, insert, select

from keybound.errors import KeyboundError
from keybound.storage import tables as t
from keybound.storage.db import Database
from keybound.storage.prepared import Prepared


class Actor(StrEnum):
    DEVICE = "DEVICE"
    RELYING_PARTY = "RELYING_PARTY"
    OPERATOR = "OPERATOR"
    SYSTEM = "SYSTEM"


class Outcome(StrEnum):
    SUCCESS = "SUCCESS"
    FAILURE = "FAILURE"  # a ceremony that ran and failed (counted)
    REJECTED = "REJECTED"  # a request refused without changing anything


_INSERT = Prepared(insert(t.audit_events))  # every operation writes one row


def record(
    conn: Connection,
    *,
    at: int,
    actor: Actor,
    event: str,
    outcome: Outcome,
    application_id: str | None = None,
    device_id: str | None = None,
    operation_id: str | None = None,
    code: str | None = None,
    details: Mapping[str, Any] | None = None,
) -> None:
    _INSERT.rowcount(conn, {
        "at": at,
        "actor": actor.value,
        "event": event,
        "outcome": outcome.value,
        "application_id": application_id,
        "device_id": device_id,
        "operation_id": operation_id,
        "code": code,
        "details": json.dumps(details, sort_keys=True) if details else None,
    })


def record_alone(db: Database, **kwargs: Any) -> None:
    """Audit in a transaction of its own (for refusals whose change was rolled back)."""
    with db.write() as conn:
        record(conn, **kwargs)


def events(
    db: Database, *, application_id: str | None = None, limit: int = 100
) -> list[dict[str, Any]]:
    query = select(t.audit_events).order_by(t.audit_events.c.id.desc()).limit(limit)
    if application_id is not None:
        query = query.where(t.audit_events.c.application_id == application_id)
    with db.read() as conn:
        return [dict(row._mapping) for row in conn.execute(query)]


@contextmanager
def refusals(
    db: Database, at: int, *, actor: Actor, event: str, **ids: str | None
) -> Iterator[None]:
    """Audit a refused request (any KeyboundError) in its own transaction, then re-raise.
    Failures already recorded as ceremony outcomes carry ``audited=True`` and are skipped."""
    try:
        yield
    except KeyboundError as exc:
        if not exc.fields.get("audited"):
            record_alone(db, at=at, actor=actor, event=event, outcome=Outcome.REJECTED,
                         code=exc.code.value, **ids)
            exc.fields["audited"] = True
        raise
