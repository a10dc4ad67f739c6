"""Retention: what the database keeps, and for how long (``keybound db prune``).

Nothing here runs by itself; an operator schedules ``keybound db prune`` (cron, a systemd
timer, a Kubernetes CronJob). Pending operations are never touched, and neither is anything a
live registration needs.
"""

from __future__ import annotations

from dataclasses import dataclass

from keybound.protocol import OperationState
from keybound.server import audit
from keybound.server.e2ekeys import purge_seen_requests
from keybound.storage import tables as t
from keybound.storage.batches import DELETE_BATCH, delete_in_batches
from keybound.storage.db import Clock, Database, now_ms

DAY_MS = 86_400_000


@dataclass(frozen=True, kw_only=True)
class Retention:
    #: finished (completed, failed) or expired operations: the relying party can read their
    #: result this long after they ended
    operations_days: int = 90
    #: superseded software keys: a copy used later than this is no longer recognised as a
    #: copy (it simply fails as an unknown key)
    superseded_keys_days: int = 365


@dataclass(frozen=True, kw_only=True)
class Pruned:
    operations: int
    superseded_keys: int
    seen_requests: int


def prune(db: Database, clock: Clock, retention: Retention = Retention(), *,
          batch: int = DELETE_BATCH) -> Pruned:
    """Delete what retention allows, ``batch`` rows per transaction (a running server's
    requests get the database in between; storage.batches)."""
    now = now_ms(clock)
    ops_before = now - retention.operations_days * DAY_MS
    keys_before = now - retention.superseded_keys_days * DAY_MS
    o, s = t.operations, t.superseded_keys
    operations = delete_in_batches(db, o, (o.c.id,), (
        ((o.c.state != OperationState.PENDING.value) & (o.c.completed_at < ops_before))
        | ((o.c.state == OperationState.PENDING.value) & (o.c.expires_at < ops_before))),
        batch=batch)
    superseded = delete_in_batches(db, s, (s.c.registration_id, s.c.key_id),
                                   s.c.superseded_at < keys_before, batch=batch)
    seen = purge_seen_requests(db, now, batch=batch)
    pruned = Pruned(operations=operations, superseded_keys=superseded, seen_requests=seen)
    with db.write() as conn:
        audit.record(conn, at=now, actor=audit.Actor.OPERATOR, event="db.prune",
                     outcome=audit.Outcome.SUCCESS,
                     details={"operationsDays": retention.operations_days,
                              "supersededKeysDays": retention.superseded_keys_days,
                              "operations": operations, "supersededKeys": superseded,
                              "seenRequests": seen})
    return pruned
