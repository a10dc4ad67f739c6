"""Anonymous noise, counted instead of audited.

A request refused before anyone proved who they are -- an unknown path, a missing or wrong API
key, a sealed request that does not open, a replay, a wrong activation code, a signature that
does not verify -- says nothing about an actor, and anyone can send millions. Each is counted,
per window of ``WINDOW_MS`` and per cause (route and error code: a bounded set), in memory, and
the counts are added to the ``noise`` table at most every ``FLUSH_SECONDS``: the storage they
take grows with time and the number of causes, never with the number of requests. The audit
trail keeps what identified actors did (server.unit). ``keybound audit noise`` reads them.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from keybound.server.repositories.noise import add_counts
from keybound.storage.db import Database

log = logging.getLogger("keybound.server")

WINDOW_MS = 300_000
FLUSH_SECONDS = 10.0


class NoiseCounter:
    def __init__(
        self,
        db: Database,
        *,
        monotonic: Callable[[], float] = time.monotonic,
        flush_seconds: float = FLUSH_SECONDS,
    ) -> None:
        self._db = db
        self._monotonic = monotonic
        self._flush_seconds = flush_seconds
        self._counts: dict[tuple[int, str], int] = {}
        self._lock = threading.Lock()
        self._flushed_at = monotonic()

    def count(self, cause: str, now_ms: int) -> None:
        key = (now_ms - now_ms % WINDOW_MS, cause)
        with self._lock:
            self._counts[key] = self._counts.get(key, 0) + 1
            due = self._monotonic() - self._flushed_at >= self._flush_seconds
        if due:
            self.flush()

    def flush(self) -> None:
        """Add what was counted to the table (also called at shutdown and by tests)."""
        with self._lock:
            counts, self._counts = self._counts, {}
            self._flushed_at = self._monotonic()
        if not counts:
            return
        try:
            with self._db.write() as conn:
                add_counts(conn, counts)
        except Exception:  # counted again in the next window rather than failing a request
            log.exception("storing anonymous-request counts failed")
            with self._lock:
                for key, count in counts.items():
                    self._counts[key] = self._counts.get(key, 0) + count
