"""Replay marks (``seen_requests``, docs/channel.md §6): stored by the unit of work
(server.unit), forgotten here once expired."""

from __future__ import annotations

from keybound.storage import tables as t
from keybound.storage.batches import DELETE_BATCH, delete_in_batches
from keybound.storage.db import Database

#: a mark is forgotten this long after it expires, so a server whose clock is a little
#: behind never meets a forgotten id
PURGE_GRACE_MS = 10_000


def purge_seen_requests(db: Database, at_ms: int, *, batch: int = DELETE_BATCH) -> int:
    """Forget request ids past their expiry plus PURGE_GRACE_MS; returns how many. In write
    transactions of at most ``batch`` rows (storage.batches)."""
    seen = t.seen_requests
    expired = seen.c.expires_at < at_ms - PURGE_GRACE_MS
    return delete_in_batches(db, seen, (seen.c.expires_at, seen.c.request_id), expired, batch=batch)
