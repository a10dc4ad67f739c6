"""Deleting many rows without holding SQLite's one writer for long.

One ``DELETE`` of a minute of replay ids, or of 90 days of operations, keeps the write lock
for as long as it runs, and every request that writes waits (on the embedded SQLite server
that is every device request, and the event loop with it). Deleting in bounded batches, each
its own transaction, lets requests in between.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import ColumnElement, Table, delete, select, tuple_

from keybound.storage.db import Database

#: rows per transaction: a few milliseconds of SQLite work
DELETE_BATCH = 2000


def delete_in_batches(
    db: Database,
    table: Table,
    key: Sequence[ColumnElement[object]],
    where: ColumnElement[bool],
    *,
    batch: int = DELETE_BATCH,
    order: ColumnElement[object] | None = None,
) -> int:
    """Delete the rows of ``table`` matching ``where``, ``batch`` at a time (each batch
    chosen by the primary key ``key``, first by ``order`` if given); returns how many."""
    if batch < 1:
        raise ValueError("batch must be at least 1")
    chosen = select(*key).where(where)
    if order is not None:
        chosen = chosen.order_by(order)
    chosen = chosen.limit(batch)
    match = key[0].in_(chosen.scalar_subquery()) if len(key) == 1 else tuple_(*key).in_(chosen)
    statement = delete(table).where(match)
    total = 0
    while True:
        with db.write() as conn:
            deleted: int = conn.execute(statement).rowcount
        total += deleted
        if deleted < batch:
            return total
