"""The outbox's tables: webhook endpoints, their secrets and subscriptions, deliveries (one
per event and endpoint) and attempts (the delivery log). docs/webhooks.md §5 says what the
sender stores; docs/events.md what the relying party sees.

SQLite uses a partial index only for a query whose WHERE repeats the index's own terms, so
the queries that must use one say ``state = 'pending'`` as text, literal and all.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, Final

from sqlalchemy import Connection, delete, func, insert, or_, select, text, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from keybound.server.records import (
    AttemptRecord,
    DeliveryRecord,
    EventRecord,
    WebhookEndpointRecord,
    WebhookSecretRecord,
)
from keybound.storage import tables as t

EP = t.webhook_endpoints
SEC = t.webhook_secrets
SUB = t.webhook_subscriptions
D = t.webhook_deliveries
A = t.webhook_attempts
E = t.events

PENDING: Final = "pending"
#: ix_webhook_deliveries_pending's predicate, as the queries that use it must spell it
_PENDING: Final = text("webhook_deliveries.state = 'pending'")


def _insert(conn: Connection) -> Any:
    return sqlite_insert if conn.dialect.name == "sqlite" else pg_insert


# -- endpoints -----------------------------------------------------------------------------


def insert_endpoint(conn: Connection, record: WebhookEndpointRecord) -> None:
    conn.execute(insert(EP).values(**record._asdict()))


def endpoint(conn: Connection, endpoint_id: str) -> WebhookEndpointRecord | None:
    row = conn.execute(select(EP).where(EP.c.id == endpoint_id)).first()
    return None if row is None else WebhookEndpointRecord(*row)


def endpoint_of(
    conn: Connection, application_id: str, endpoint_id: str
) -> WebhookEndpointRecord | None:
    """Scoped to the application: another application's endpoint is not found."""
    row = conn.execute(
        select(EP).where(EP.c.id == endpoint_id, EP.c.application_id == application_id)
    ).first()
    return None if row is None else WebhookEndpointRecord(*row)


def endpoints_of(conn: Connection, application_id: str) -> list[WebhookEndpointRecord]:
    rows = conn.execute(
        select(EP).where(EP.c.application_id == application_id).order_by(EP.c.created_at, EP.c.id)
    )
    return [WebhookEndpointRecord(*row) for row in rows]


def update_endpoint(conn: Connection, endpoint_id: str, **values: Any) -> None:
    conn.execute(update(EP).where(EP.c.id == endpoint_id).values(**values))


def delete_endpoint(conn: Connection, endpoint_id: str) -> None:
    """The endpoint and everything that hangs on it: secrets, subscriptions, deliveries and
    their log."""
    conn.execute(delete(A).where(A.c.endpoint_id == endpoint_id))
    conn.execute(delete(D).where(D.c.endpoint_id == endpoint_id))
    conn.execute(delete(SUB).where(SUB.c.endpoint_id == endpoint_id))
    conn.execute(delete(SEC).where(SEC.c.endpoint_id == endpoint_id))
    conn.execute(delete(EP).where(EP.c.id == endpoint_id))


def disable_gone(conn: Connection, endpoint_id: str, now: int) -> None:
    """docs/webhooks.md §3.3: after a 410 nothing more is sent, queued deliveries included."""
    conn.execute(
        update(EP)
        .where(EP.c.id == endpoint_id, EP.c.disabled_at.is_(None))
        .values(disabled_at=now, disabled_reason="GONE", updated_at=now)
    )
    conn.execute(
        update(D)
        .where(D.c.endpoint_id == endpoint_id, _PENDING)
        .values(state="gone", leased_until=None)
    )


def store_breaker(
    conn: Connection, endpoint_id: str, *, failures: int, open_until: int | None
) -> None:
    conn.execute(
        update(EP)
        .where(EP.c.id == endpoint_id)
        .values(breaker_failures=failures, breaker_open_until=open_until)
    )


# -- subscriptions -------------------------------------------------------------------------


def set_subscriptions(
    conn: Connection, *, endpoint_id: str, application_id: str, types: Iterable[str]
) -> None:
    conn.execute(delete(SUB).where(SUB.c.endpoint_id == endpoint_id))
    rows = [
        {"application_id": application_id, "event_type": kind, "endpoint_id": endpoint_id}
        for kind in sorted(set(types))
    ]
    if rows:
        conn.execute(insert(SUB), rows)


def subscriptions(conn: Connection, endpoint_ids: Sequence[str]) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {endpoint_id: [] for endpoint_id in endpoint_ids}
    if endpoint_ids:
        for row in conn.execute(
            select(SUB.c.endpoint_id, SUB.c.event_type)
            .where(SUB.c.endpoint_id.in_(list(endpoint_ids)))
            .order_by(SUB.c.event_type)
        ):
            found[row.endpoint_id].append(row.event_type)
    return found


def subscribers(conn: Connection, application_id: str, event_type: str) -> list[str]:
    """The enabled endpoints of the application that want this type."""
    rows = conn.execute(
        select(SUB.c.endpoint_id)
        .join(EP, EP.c.id == SUB.c.endpoint_id)
        .where(
            SUB.c.application_id == application_id,
            SUB.c.event_type == event_type,
            EP.c.disabled_at.is_(None),
        )
        .order_by(SUB.c.endpoint_id)
    )
    return [str(row.endpoint_id) for row in rows]


# -- secrets -------------------------------------------------------------------------------


def insert_secret(conn: Connection, record: WebhookSecretRecord) -> None:
    conn.execute(insert(SEC).values(**record._asdict()))


def secrets_of(
    conn: Connection, endpoint_ids: Sequence[str], *, active_only: bool = True
) -> list[WebhookSecretRecord]:
    query = select(SEC).where(SEC.c.endpoint_id.in_(list(endpoint_ids)))
    if active_only:
        query = query.where(SEC.c.revoked_at.is_(None))
    rows = conn.execute(query.order_by(SEC.c.created_at, SEC.c.id))
    return [WebhookSecretRecord(*row) for row in rows]


def revoke_secret(conn: Connection, endpoint_id: str, secret_id: str, now: int) -> bool:
    return (
        conn.execute(
            update(SEC)
            .where(
                SEC.c.id == secret_id, SEC.c.endpoint_id == endpoint_id, SEC.c.revoked_at.is_(None)
            )
            .values(revoked_at=now)
        ).rowcount
        == 1
    )


# -- deliveries: created by the fan-out or a redelivery ------------------------------------


def add_deliveries(conn: Connection, rows: Sequence[dict[str, Any]]) -> None:
    """New pending deliveries; one that exists for its (endpoint, event) already is kept as
    it is, so a fan-out that runs twice (two senders, or one retried) adds nothing."""
    if rows:
        conn.execute(
            _insert(conn)(D).on_conflict_do_nothing(index_elements=["endpoint_id", "event_seq"]),
            list(rows),
        )


def requeue(conn: Connection, *, endpoint_id: str, event: EventRecord, now: int) -> None:
    """Redelivery on request: the event goes to the endpoint again as a fresh delivery
    (attempts and the 72-hour window start over), whatever became of an earlier one."""
    fresh = {
        "state": PENDING,
        "attempts": 0,
        "first_attempt_at": None,
        "next_attempt_at": now,
        "leased_until": None,
    }
    statement = _insert(conn)(D).values(
        endpoint_id=endpoint_id,
        event_seq=event.seq,
        event_id=event.id,
        subject=event.subject or "",
        created_at=now,
        **fresh,
    )
    conn.execute(
        statement.on_conflict_do_update(index_elements=["endpoint_id", "event_seq"], set_=fresh)
    )


# -- deliveries: the sender's side (docs/webhooks.md §5) -----------------------------------


def sendable_endpoints(conn: Connection, now: int) -> list[WebhookEndpointRecord]:
    """Enabled endpoints whose breaker is not open and that have pending deliveries."""
    has_pending = select(D.c.id).where(D.c.endpoint_id == EP.c.id, _PENDING).exists()
    rows = conn.execute(
        select(EP)
        .where(
            EP.c.disabled_at.is_(None),
            or_(EP.c.breaker_open_until.is_(None), EP.c.breaker_open_until <= now),
            has_pending,
        )
        .order_by(EP.c.id)
    )
    return [WebhookEndpointRecord(*row) for row in rows]


def due(conn: Connection, endpoint_id: str, now: int, limit: int) -> list[DeliveryRecord]:
    """Pending deliveries of the endpoint due now and not leased, oldest event first."""
    rows = conn.execute(
        select(D)
        .where(
            D.c.endpoint_id == endpoint_id,
            _PENDING,
            D.c.next_attempt_at <= now,
            or_(D.c.leased_until.is_(None), D.c.leased_until < now),
        )
        .order_by(D.c.event_seq)
        .limit(limit)
    )
    return [DeliveryRecord(*row) for row in rows]


def first_waiting(
    conn: Connection, endpoint_id: str, subjects: Sequence[str], now: int
) -> dict[str, int]:
    """Per subject, the oldest pending delivery that is not due (a retry later, or leased by
    a sender): nothing of that subject after it may go yet (docs/webhooks.md §3.4)."""
    if not subjects:
        return {}
    rows = conn.execute(
        select(D.c.subject, func.min(D.c.event_seq))
        .where(
            D.c.endpoint_id == endpoint_id,
            _PENDING,
            D.c.subject.in_(list(subjects)),
            or_(D.c.next_attempt_at > now, D.c.leased_until >= now),
        )
        .group_by(D.c.subject)
    )
    return {str(subject): int(seq) for subject, seq in rows}


def claim(conn: Connection, ids: Sequence[int], *, now: int, lease_until: int) -> set[int]:
    """Lease deliveries with one conditional UPDATE; the ids it got. The condition on
    ``next_attempt_at`` keeps a stale read from re-sending one that just failed, the one on
    the lease keeps two senders from sending one at once."""
    if not ids:
        return set()
    rows = conn.execute(
        update(D)
        .where(
            D.c.id.in_(list(ids)),
            _PENDING,
            D.c.next_attempt_at <= now,
            or_(D.c.leased_until.is_(None), D.c.leased_until < now),
        )
        .values(leased_until=lease_until)
        .returning(D.c.id)
    )
    return {int(row.id) for row in rows}


def renew(conn: Connection, ids: Sequence[int], *, held_until: int, lease_until: int) -> set[int]:
    """Extend leases this sender still holds (unchanged since it set them); the ids renewed."""
    if not ids:
        return set()
    rows = conn.execute(
        update(D)
        .where(D.c.id.in_(list(ids)), D.c.leased_until == held_until, _PENDING)
        .values(leased_until=lease_until)
        .returning(D.c.id)
    )
    return {int(row.id) for row in rows}


def release(conn: Connection, ids: Sequence[int], lease_until: int) -> None:
    if ids:
        conn.execute(
            update(D)
            .where(D.c.id.in_(list(ids)), D.c.leased_until == lease_until)
            .values(leased_until=None)
        )


def store_outcome(conn: Connection, delivery_id: int, **values: Any) -> None:
    """The delivery after one pass (its lease cleared): state, counts and the last attempt."""
    conn.execute(update(D).where(D.c.id == delivery_id).values(leased_until=None, **values))


def log_attempts(conn: Connection, rows: Sequence[dict[str, Any]]) -> None:
    if rows:
        conn.execute(insert(A), list(rows))


def events_by_seq(conn: Connection, seqs: Sequence[int]) -> dict[int, EventRecord]:
    if not seqs:
        return {}
    rows = conn.execute(select(E).where(E.c.seq.in_(list(seqs))))
    return {int(row.seq): EventRecord(*row) for row in rows}


# -- the relying party's view --------------------------------------------------------------


def deliveries_of(
    conn: Connection, endpoint_id: str, *, state: str | None, after: int, limit: int
) -> list[tuple[DeliveryRecord, str]]:
    """Deliveries with ``id > after`` (and the event type of each), oldest first."""
    query = (
        select(D, E.c.type)
        .join(E, E.c.seq == D.c.event_seq, isouter=True)
        .where(D.c.endpoint_id == endpoint_id, D.c.id > after)
    )
    if state is not None:
        query = query.where(D.c.state == state)
    rows = conn.execute(query.order_by(D.c.id).limit(limit))
    return [(DeliveryRecord(*row[:-1]), str(row[-1] or "")) for row in rows]


def attempts_of(
    conn: Connection, endpoint_id: str, *, after: int, limit: int
) -> list[AttemptRecord]:
    rows = conn.execute(
        select(A)
        .where(A.c.endpoint_id == endpoint_id, A.c.id > after)
        .order_by(A.c.id)
        .limit(limit)
    )
    return [AttemptRecord(*row) for row in rows]


__all__ = [
    "PENDING",
    "add_deliveries",
    "attempts_of",
    "claim",
    "delete_endpoint",
    "deliveries_of",
    "disable_gone",
    "due",
    "endpoint",
    "endpoint_of",
    "endpoints_of",
    "events_by_seq",
    "first_waiting",
    "insert_endpoint",
    "insert_secret",
    "log_attempts",
    "release",
    "renew",
    "requeue",
    "revoke_secret",
    "secrets_of",
    "sendable_endpoints",
    "set_subscriptions",
    "store_breaker",
    "store_outcome",
    "subscribers",
    "subscriptions",
    "update_endpoint",
]
