"""Retention: what the database keeps, and for how long (``keybound db prune``).

Nothing here runs by itself; an operator schedules ``keybound db prune`` (cron, a systemd
timer, a Kubernetes CronJob). Pending operations are never deleted, and neither is anything a
live registration needs. Each kind of row is deleted in batches (storage.batches), so a
running server keeps serving in between.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from sqlalchemy import update

from keybound.protocol import OperationState
from keybound.server.clock import Clock, now_ms
from keybound.server.repositories.replay import purge_seen_requests
from keybound.storage import tables as t
from keybound.storage.batches import DELETE_BATCH, delete_in_batches
from keybound.storage.db import Database

if TYPE_CHECKING:
    from keybound.server.services.audit import AuditTrail

DAY_MS = 86_400_000


@dataclass(frozen=True, kw_only=True)
class Retention:
    #: finished (completed, failed) or expired operations: the relying party can read their
    #: result this long after they ended
    operations_days: int = 90
    #: superseded software keys: a copy used later than this is no longer recognised as a
    #: copy (it simply fails as an unknown key)
    superseded_keys_days: int = 365
    #: the audit trail (events); 0 keeps it for ever. The deleted prefix of the chain is
    #: replaced by a signed checkpoint, so what stays still verifies (docs/audit.md)
    events_days: int = 400
    #: counts of anonymous refusals (server.events.noise)
    noise_days: int = 30
    #: finished webhook deliveries, the delivery log and finished wake-ups
    webhook_log_days: int = 30


@dataclass(frozen=True, kw_only=True)
class Pruned:
    operations: int
    superseded_keys: int
    seen_requests: int
    events: int
    noise: int
    post_contexts: int
    webhook_log: int
    activation_secrets: int


def erase_expired_post_contexts(db: Database, now: int) -> int:
    """A post-operation context is released once, to a device that completes the
    operation; one whose operation expired unanswered is erased (docs/protocol.md §3.2)."""
    o = t.operations
    with db.write() as conn:
        erased: int = conn.execute(
            update(o)
            .where(o.c.wrapped_post_context.is_not(None), o.c.expires_at <= now)
            .values(wrapped_post_context=None)
        ).rowcount
    return erased


def erase_expired_activation_secrets(db: Database, now: int, *, batch: int = DELETE_BATCH) -> int:
    """The link tokens and typed codes of activations that expired unused (docs/protocol.md
    §3.2.5): they can start nothing any more, and give their hints back."""
    a = t.activation_secrets
    return delete_in_batches(db, a, (a.c.operation_id,), a.c.expires_at <= now, batch=batch)


def prune(
    db: Database,
    clock: Clock,
    audit: AuditTrail,
    retention: Retention = Retention(),
    *,
    batch: int = DELETE_BATCH,
) -> Pruned:
    """Delete what retention allows, ``batch`` rows per transaction."""
    now = now_ms(clock)

    def before(days: int) -> int:
        return now - days * DAY_MS

    o, s, n = t.operations, t.superseded_keys, t.noise
    # before their operations, which they refer to
    secrets_erased = erase_expired_activation_secrets(db, now, batch=batch)
    ops_before = before(retention.operations_days)
    operations = delete_in_batches(
        db,
        o,
        (o.c.id,),
        (
            ((o.c.state != OperationState.PENDING.value) & (o.c.completed_at < ops_before))
            | ((o.c.state == OperationState.PENDING.value) & (o.c.expires_at < ops_before))
        ),
        batch=batch,
    )
    superseded = delete_in_batches(
        db,
        s,
        (s.c.registration_id, s.c.key_id),
        s.c.superseded_at < before(retention.superseded_keys_days),
        batch=batch,
    )
    seen = purge_seen_requests(db, now, batch=batch)
    events = (
        0 if retention.events_days == 0 else audit.prune(before(retention.events_days), batch=batch)
    )
    noise = delete_in_batches(
        db,
        n,
        (n.c.window_start, n.c.cause),
        n.c.window_start < before(retention.noise_days),
        batch=batch,
    )
    log_before = before(retention.webhook_log_days)
    d, a, w = t.webhook_deliveries, t.webhook_attempts, t.push_notifications
    webhook_log = (
        delete_in_batches(db, a, (a.c.id,), a.c.attempted_at < log_before, batch=batch)
        + delete_in_batches(
            db, d, (d.c.id,), (d.c.state != "pending") & (d.c.created_at < log_before), batch=batch
        )
        + delete_in_batches(
            db, w, (w.c.id,), (w.c.state != "pending") & (w.c.created_at < log_before), batch=batch
        )
    )
    return Pruned(
        operations=operations,
        superseded_keys=superseded,
        seen_requests=seen,
        events=events,
        noise=noise,
        post_contexts=erase_expired_post_contexts(db, now),
        webhook_log=webhook_log,
        activation_secrets=secrets_erased,
    )
