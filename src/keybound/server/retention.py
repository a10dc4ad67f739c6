"""Retention: what the database keeps, and for how long (``keybound db prune``).

Nothing here runs by itself; an operator schedules ``keybound db prune`` (cron, a systemd
timer, a Kubernetes CronJob). Pending operations are never touched, and neither is anything a
live registration needs.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import delete

from keybound.protocol import OperationState
from keybound.server import audit
from keybound.server.e2ekeys import purge_seen_requests
from keybound.storage import tables as t
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


def prune(db: Database, clock: Clock, retention: Retention = Retention()) -> Pruned:
    now = now_ms(clock)
    ops_before = now - retention.operations_days * DAY_MS
    keys_before = now - retention.superseded_keys_days * DAY_MS
    o = t.operations
    with db.write() as conn:
        operations = conn.execute(delete(o).where(
            ((o.c.state != OperationState.PENDING.value) & (o.c.completed_at < ops_before))
            | ((o.c.state == OperationState.PENDING.value) & (o.c.expires_at < ops_before))
        )).rowcount
        superseded = conn.execute(delete(t.superseded_keys).where(
            t.superseded_keys.c.superseded_at < keys_before)).rowcount
        seen = purge_seen_requests(conn, now)
        pruned = Pruned(operations=operations, superseded_keys=superseded,
                        seen_requests=seen)
        audit.record(conn, at=now, actor=audit.Actor.OPERATOR, event="db.prune",
                     outcome=audit.Outcome.SUCCESS,
                     details={"operationsDays": retention.operations_days,
                              "supersededKeysDays": retention.superseded_keys_days,
                              "operations": operations, "supersededKeys": superseded,
                              "seenRequests": seen})
    return pruned
