"""Housekeeping a running server does by itself, off the request path: forgetting expired
replay marks (docs/channel.md §6), erasing post-operation contexts whose operation expired
and the secrets of activations that expired unused, ending the relying party's pending
operations whose expiry passed (one ``operation.expired`` event each, docs/events.md),
storing the anonymous-noise counts, and signing a checkpoint of the audit chain when it has
grown (docs/audit.md).

At most once per ``interval`` per process, in a background thread, started when a request
finds it due (:meth:`Maintenance.poke`, called by the device API after each request): a
minute of expired marks is a long DELETE, and the request that happens to trigger it (on the
event loop, docs/channel.md §11.1) must not wait for it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Final

from keybound.protocol import OperationState
from keybound.server.clock import Clock, now_ms
from keybound.server.events.model import Actor, EventType
from keybound.server.events.noise import NoiseCounter
from keybound.server.repositories import operations as ops
from keybound.server.repositories.replay import purge_seen_requests
from keybound.server.services.resultkeys import ResultKeys
from keybound.server.services.retention import (
    erase_expired_activation_secrets,
    erase_expired_post_contexts,
)
from keybound.server.unit import Unit, perform
from keybound.storage.db import Database

log = logging.getLogger("keybound.server")

INTERVAL_SECONDS: Final = 60.0
#: operations ended as EXPIRED per transaction
EXPIRE_BATCH: Final = 500


def expire_operations(
    db: Database,
    clock: Clock,
    noise: NoiseCounter,
    results: ResultKeys,
    *,
    batch: int = EXPIRE_BATCH,
) -> int:
    """End every pending operation the relying party started (a backend-initiated
    authentication or signature, an activation code) whose expiry has passed: EXPIRED is
    stored with its signed result (docs/signed-results.md), and one ``operation.expired``
    event, in the same transaction; the conditional update makes it once per operation,
    whichever process runs it. How many it ended."""
    total = 0
    while True:
        unit = Unit(
            db, clock, actor=Actor.SYSTEM, action=EventType.OPERATION_EXPIRED, identified=True
        )
        found, ended = perform(
            unit,
            lambda u: _expire_batch(u, results, batch),
            noise=noise,
            cause="maintenance expiry",
        )
        total += ended
        if found < batch:
            return total


def _expire_batch(unit: Unit, results: ResultKeys, batch: int) -> tuple[int, int]:
    conn = unit.write()
    found = ops.backend_expired(conn, unit.now, batch)
    ended = 0
    for op in found:
        # a read may have signed it as expired already: that result stays
        signed = (
            None
            if op.result_jws is not None
            else results.operation_result(
                op, state=OperationState.EXPIRED, result=None, completed_at=None, now=unit.now
            )
        )
        owner = ops.expire(conn, op.id, unit.now, result_jws=signed)
        if owner is not None:
            application_id, device_id = owner
            unit.emit(
                EventType.OPERATION_EXPIRED,
                application_id=application_id,
                subject=device_id,
                operation_id=op.id,
            )
            ended += 1
    return len(found), ended


class Maintenance:
    def __init__(
        self,
        db: Database,
        clock: Clock,
        noise: NoiseCounter,
        results: ResultKeys,
        *,
        checkpoint: Callable[[], object] = lambda: None,
        interval: float = INTERVAL_SECONDS,
    ) -> None:
        self._db = db
        self._clock = clock
        self._noise = noise
        self._results = results
        self._checkpoint = checkpoint
        self._interval = interval
        self._last = clock()
        self._lock = threading.Lock()
        self.running: threading.Thread | None = None  # the last run (tests join it)

    def poke(self) -> None:
        now = self._clock()
        if now - self._last < self._interval or not self._lock.acquire(blocking=False):
            return
        self._last = now
        self.running = threading.Thread(
            target=self._run, args=(now_ms(self._clock),), name="keybound-maintenance", daemon=True
        )
        self.running.start()

    def join(self, timeout: float = 30.0) -> None:
        """Wait for a run in progress (before the database is closed)."""
        if self.running is not None:
            self.running.join(timeout)

    def _run(self, at_ms: int) -> None:
        try:
            purge_seen_requests(self._db, at_ms)
            erase_expired_post_contexts(self._db, at_ms)
            expire_operations(self._db, self._clock, self._noise, self._results)
            erase_expired_activation_secrets(self._db, at_ms)
            self._noise.flush()
            self._checkpoint()
        except Exception:  # pragma: no cover - tried again at the next interval
            log.exception("maintenance failed")
        finally:
            self._lock.release()
