"""The sender: turns committed events into webhook attempts, and queued wake-ups into device
notifications. It runs in every ``keybound serve`` process and, optionally, as a process of
its own (``keybound webhook deliver``); any number may run against one database.

One round (:meth:`Outbox.step`), repeated:

1. **Fan-out.** Events the unit of work marked ``delivery = 'PENDING'`` (an endpoint
   subscribed to their type, repositories/events.py) become one delivery per subscribed,
   enabled endpoint, and are marked ``FANNED``, in one transaction. Deliveries are unique per
   (endpoint, event), so two senders fanning out the same event add nothing twice.
2. **Claim.** Per enabled endpoint whose breaker is not open: its due deliveries, oldest event
   first, minus any that would overtake an earlier undelivered event of their subject
   (``schedule.select_due``, with the subject's first waiting delivery from the database,
   leased ones included); the rest are leased by one conditional UPDATE, so no two senders
   send one delivery at once. A delivery whose claim failed holds back its subject's later
   ones. A lease lasts one attempt's total time-out and a margin; the sender renews those
   of deliveries it still holds each round, so a crashed sender's go to the others soon.
   Before anything is sent, the commits are synced (SQLite's group commit), so no event is
   announced that a crash could still take back.
3. **Send.** :class:`~keybound.server.events.delivery.Dispatcher`: one attempt in flight per
   endpoint, at most ``max_concurrency`` in all, retries, Retry-After, the breaker.
4. **Store.** Every outcome, in batches: the delivery's state, the delivery log, the
   endpoint's breaker, a 410's disabling. A crash before this re-sends (at least once).

Device notifications ride along: due wake-ups are claimed the same way and sent through the
application's provider in a worker thread; their outcome never touches the operation.
docs/webhooks.md §5 and docs/notifications.md.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import ssl
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from itertools import groupby
from typing import TYPE_CHECKING, Final

import httpx

from keybound.errors import ConfigurationInvalid
from keybound.server.clock import Clock
from keybound.server.events.delivery import (
    DeliveryTimeouts,
    Dispatcher,
    Outcome,
    OutcomeKind,
    WebhookSender,
    create_client,
)
from keybound.server.events.public import body
from keybound.server.events.schedule import (
    BreakerPolicy,
    BreakerState,
    PendingDelivery,
    RetryPolicy,
    select_due,
)
from keybound.server.events.signing import SigningSecret
from keybound.server.records import (
    DeliveryRecord,
    NotificationRecord,
    WebhookEndpointRecord,
)
from keybound.server.repositories import events as event_rows
from keybound.server.repositories import webhooks as hooks
from keybound.server.services.webhooks import envelopes

if TYPE_CHECKING:
    from keybound.server.services import Keybound

log = logging.getLogger("keybound.outbox")

_STATE: Final = {
    OutcomeKind.DELIVERED: "delivered",
    OutcomeKind.GAVE_UP: "gave_up",
    OutcomeKind.ENDPOINT_GONE: "gone",
    OutcomeKind.RETRY: hooks.PENDING,
    OutcomeKind.DEFERRED: hooks.PENDING,
}


@dataclass(frozen=True, kw_only=True)
class OutboxSettings:
    """How the sender paces itself. Times in seconds."""

    idle_wait: float = 0.5  # between rounds that found nothing to do (or a wake-up)
    fan_out_batch: int = 500  # events fanned out per transaction
    per_endpoint: int = 32  # deliveries in hand per endpoint (claimed, not yet stored)
    max_concurrency: int = 16  # attempts in flight in all
    timeouts: DeliveryTimeouts = field(default_factory=DeliveryTimeouts)
    lease_margin: float = 10.0
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    breaker: BreakerPolicy = field(default_factory=BreakerPolicy)
    store_batch: int = 200  # outcomes stored per transaction
    notify_batch: int = 50
    notify_concurrency: int = 4


ENV_WEBHOOK_TIMEOUT: Final = "KEYBOUND_WEBHOOK_TIMEOUT"


def settings_from_env(environ: Mapping[str, str] = os.environ) -> OutboxSettings:
    """``KEYBOUND_WEBHOOK_TIMEOUT``: the total time-out of one attempt in seconds (default
    30; connect and read time-outs shrink with it), which also bounds how long a crashed
    sender's leases keep its deliveries from the others."""
    raw = environ.get(ENV_WEBHOOK_TIMEOUT, "").strip()
    if not raw:
        return OutboxSettings()
    try:
        total = float(raw)
    except ValueError:
        total = 0.0
    if not 0 < total <= 300:
        raise ConfigurationInvalid(f"{ENV_WEBHOOK_TIMEOUT} must be 0 < seconds <= 300")
    timeouts = DeliveryTimeouts(connect=min(5.0, total), read=min(15.0, total), total=total)
    return OutboxSettings(timeouts=timeouts, lease_margin=min(10.0, total))


def _ms(seconds: float) -> int:
    return int(seconds * 1000)


class Wakeup:
    """A nudge from a committed unit of work (a redelivery, a queued notification) to this
    process's sender, so it need not wait for its next round. Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._targets: list[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = []

    def attach(self, loop: asyncio.AbstractEventLoop, event: asyncio.Event) -> None:
        with self._lock:
            self._targets.append((loop, event))

    def detach(self, event: asyncio.Event) -> None:
        with self._lock:
            self._targets = [(lo, ev) for lo, ev in self._targets if ev is not event]

    def __call__(self) -> None:
        with self._lock:
            targets = list(self._targets)
        for loop, event in targets:
            if not loop.is_closed():
                loop.call_soon_threadsafe(event.set)


class Outbox:
    """One sender (see the module docstring). ``clock`` schedules (retries, leases, the
    breaker); ``wall_clock`` stamps ``webhook-timestamp``, which receivers compare with their
    own clock."""

    def __init__(
        self,
        kb: Keybound,
        *,
        settings: OutboxSettings | None = None,
        clock: Clock | None = None,
        wall_clock: Clock = time.time,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.kb = kb
        self.db = kb.db
        self.settings = settings or OutboxSettings()
        self.clock = clock or kb.clock
        self.wall_clock = wall_clock
        self.ssl_context = ssl_context
        self._in_hand: dict[str, int] = {}  # endpoint -> deliveries claimed, not yet stored
        self._leases: dict[int, int] = {}  # delivery -> the lease this sender set on it
        self._unstored: list[Outcome] = []
        self._store_lock = asyncio.Lock()
        self._dispatcher: Dispatcher | None = None
        self._client: httpx.AsyncClient | None = None
        self._notifying: set[asyncio.Task[None]] = set()
        self._notify_slots = asyncio.Semaphore(self.settings.notify_concurrency)
        self.wakeup = asyncio.Event()

    # -- lifecycle -------------------------------------------------------------------------

    async def __aenter__(self) -> Outbox:
        client = create_client(
            policy=self.kb.webhooks.policy,
            resolver=self.kb.webhooks.resolver,
            timeouts=self.settings.timeouts,
            ssl_context=self.ssl_context,
        )
        self._client = client
        sender = WebhookSender(
            client=client, timeouts=self.settings.timeouts, wall_clock=self.wall_clock
        )
        self._dispatcher = Dispatcher(
            sender=sender,
            on_outcome=self._on_outcome,
            retry=self.settings.retry,
            breaker=self.settings.breaker,
            max_concurrency=self.settings.max_concurrency,
            clock=self.clock,
        )
        self.kb.wakeup.attach(asyncio.get_running_loop(), self.wakeup)
        return self

    async def __aexit__(self, *exc: object) -> None:
        """Stop at once: what is in flight has no outcome and is sent again after its lease."""
        self.kb.wakeup.detach(self.wakeup)
        if self._dispatcher is not None:
            await self._dispatcher.aclose()
        for task in list(self._notifying):
            task.cancel()
        await asyncio.gather(*self._notifying, return_exceptions=True)
        await self.flush()
        if self._client is not None:
            await self._client.aclose()

    async def run(self, stop: asyncio.Event) -> None:
        """Rounds until ``stop`` is set; a round that did something is followed by another at
        once, an idle one by a wait for a wake-up or ``idle_wait``."""
        async with self:
            while not stop.is_set():
                self.wakeup.clear()  # a nudge during the round below is kept for the wait
                try:
                    worked = await self.step()
                except Exception:  # the database away, say: try again next round
                    log.exception("outbox round failed")
                    worked = False
                if worked:
                    await asyncio.sleep(0)
                    continue
                waits = [
                    asyncio.ensure_future(self.wakeup.wait()),
                    asyncio.ensure_future(stop.wait()),
                ]
                await asyncio.wait(
                    waits, timeout=self.settings.idle_wait, return_when=asyncio.FIRST_COMPLETED
                )
                for waiting in waits:
                    waiting.cancel()

    # -- one round -------------------------------------------------------------------------

    async def step(self) -> bool:
        """Fan out, claim and submit, store what finished; True if there was anything."""
        assert self._dispatcher is not None, "use the Outbox as an async context manager"
        self.kb.maintenance.poke()  # expiry (operation.expired) runs even without traffic
        await asyncio.to_thread(self.renew)
        fanned = await asyncio.to_thread(self.fan_out)
        claimed = await asyncio.to_thread(self.claim)
        if claimed and self.db.sync_deferred:
            await asyncio.to_thread(self.db.sync)  # nothing announced that a crash undoes
        for delivery in claimed:
            if not self._dispatcher.submit(delivery):  # in hand already: counted once
                self._in_hand[delivery.endpoint_id] -= 1
        notified = await self._notify()
        await self.flush(final=False)
        return bool(fanned or claimed or notified)

    async def idle(self) -> None:
        """Wait until everything submitted has its outcome stored (tests, the benchmark)."""
        assert self._dispatcher is not None
        await self._dispatcher.join()
        await asyncio.gather(*self._notifying, return_exceptions=True)
        await self.flush()

    # -- 1. fan-out ------------------------------------------------------------------------

    def fan_out(self) -> int:
        """Deliveries for the events waiting to be fanned out; how many events it took."""
        with self.db.read() as conn:
            if not event_rows.pending_delivery(conn, 1):
                return 0
        with self.db.write() as conn:
            pending = event_rows.pending_delivery(conn, self.settings.fan_out_batch)
            subscribers: dict[tuple[str, str], list[str]] = {}
            rows: list[dict[str, object]] = []
            now = _ms(self.clock())
            for event in pending:
                key = (event.application_id or "", event.type)
                if key not in subscribers:
                    subscribers[key] = hooks.subscribers(conn, *key)
                rows.extend(
                    {
                        "endpoint_id": endpoint_id,
                        "event_seq": event.seq,
                        "event_id": event.id,
                        "subject": event.subject or "",
                        "state": hooks.PENDING,
                        "attempts": 0,
                        "next_attempt_at": now,
                        "created_at": now,
                    }
                    for endpoint_id in subscribers[key]
                )
            hooks.add_deliveries(conn, rows)
            event_rows.mark_fanned(conn, [event.seq for event in pending])
        return len(pending)

    # -- 2. claim --------------------------------------------------------------------------

    def claim(self) -> list[PendingDelivery]:
        """Due deliveries this sender may send now, leased to it, bodies built."""
        now_s = self.clock()
        now = _ms(now_s)
        with self.db.read() as conn:
            endpoints = hooks.sendable_endpoints(conn, now)
        claimed: list[PendingDelivery] = []
        for endpoint in endpoints:
            room = self.settings.per_endpoint - self._in_hand.get(endpoint.id, 0)
            if room * 2 < self.settings.per_endpoint:
                continue  # still busy with what it has: claim when half of it is done
            claimed.extend(self._claim_endpoint(endpoint, room, now_s))
        return claimed

    def _claim_endpoint(
        self, endpoint: WebhookEndpointRecord, room: int, now_s: float
    ) -> list[PendingDelivery]:
        now = _ms(now_s)
        with self.db.read() as conn:
            due = hooks.due(conn, endpoint.id, now, room)
            if not due:
                return []
            waiting = hooks.first_waiting(conn, endpoint.id, sorted({d.subject for d in due}), now)
            secret_rows = hooks.secrets_of(conn, [endpoint.id])
        if not secret_rows:
            log.error("webhook endpoint %s has no active secret", endpoint.id)
            return []
        secrets = self.kb.webhooks.signing_secrets(secret_rows)
        candidates = {d.id: self._pending(d, endpoint, secrets) for d in due}
        # docs/webhooks.md §3.4: a subject's undelivered earlier event holds back the rest
        blockers = [
            dataclasses.replace(
                next(iter(candidates.values())),
                delivery_id=f"waiting-{subject}",
                subject=subject,
                sequence=seq,
                next_attempt_at=float("inf"),
            )
            for subject, seq in waiting.items()
        ]
        chosen = [
            d
            for d in select_due([*candidates.values(), *blockers], now=now_s)
            if not d.delivery_id.startswith("waiting-")
        ]
        if not chosen:
            return []
        lease = now + self._lease_ms()
        with self.db.write() as conn:
            got = hooks.claim(
                conn, [int(d.delivery_id) for d in chosen], now=now, lease_until=lease
            )
            kept = _keep_order(chosen, got)
            held = {d.delivery_id for d in kept}
            hooks.release(
                conn,
                [
                    int(d.delivery_id)
                    for d in chosen
                    if int(d.delivery_id) in got and d.delivery_id not in held
                ],
                lease,
            )
        if not kept:
            return []
        self._in_hand[endpoint.id] = self._in_hand.get(endpoint.id, 0) + len(kept)
        for delivery in kept:
            self._leases[int(delivery.delivery_id)] = lease
        return self._with_bodies(kept)

    def _lease_ms(self) -> int:
        """One attempt's total time-out and a margin: a crashed sender's deliveries go to
        the others that soon; a live one renews what it still holds (:meth:`renew`)."""
        return _ms(self.settings.timeouts.total + self.settings.lease_margin)

    def renew(self) -> None:
        """Extend the leases of deliveries still in hand (queued behind a slow attempt, say)
        before they could run out."""
        now = _ms(self.clock())
        expiring: dict[int, list[int]] = {}
        for delivery_id, until in self._leases.items():
            if until - now < self._lease_ms() // 2:
                expiring.setdefault(until, []).append(delivery_id)
        if not expiring:
            return
        lease = now + self._lease_ms()
        with self.db.write() as conn:
            for held, ids in expiring.items():
                for delivery_id in hooks.renew(conn, ids, held_until=held, lease_until=lease):
                    self._leases[delivery_id] = lease

    @staticmethod
    def _pending(
        row: DeliveryRecord, endpoint: WebhookEndpointRecord, secrets: tuple[SigningSecret, ...]
    ) -> PendingDelivery:
        return PendingDelivery(
            delivery_id=str(row.id),
            event_id=row.event_id,
            endpoint_id=endpoint.id,
            url=endpoint.url,
            secrets=secrets,
            payload=b"",  # the body is built once claimed
            subject=row.subject,
            sequence=row.event_seq,
            attempts=row.attempts,
            first_attempt_at=row.first_attempt_at / 1000 if row.first_attempt_at else None,
            next_attempt_at=row.next_attempt_at / 1000,
        )

    def _with_bodies(self, chosen: list[PendingDelivery]) -> list[PendingDelivery]:
        with self.db.read() as conn:
            records = hooks.events_by_seq(conn, [d.sequence for d in chosen])
            views = envelopes(conn, list(records.values()), _ms(self.clock()))
        bodies = {view.seq: body(view) for view in views}
        lost = [d for d in chosen if d.sequence not in bodies]
        if lost:  # retention removed the event: nothing left to send
            with self.db.write() as conn:
                for delivery in lost:
                    hooks.store_outcome(
                        conn,
                        int(delivery.delivery_id),
                        state="gave_up",
                        last_detail="the event no longer exists",
                    )
                    self._in_hand[delivery.endpoint_id] -= 1
                    self._leases.pop(int(delivery.delivery_id), None)
        return [
            dataclasses.replace(d, payload=bodies[d.sequence])
            for d in chosen
            if d.sequence in bodies
        ]

    # -- 4. store --------------------------------------------------------------------------

    async def _on_outcome(self, outcome: Outcome) -> None:
        self._unstored.append(outcome)
        self._leases.pop(int(outcome.delivery_id), None)
        left = max(0, self._in_hand.get(outcome.endpoint_id, 1) - 1)
        self._in_hand[outcome.endpoint_id] = left
        if left * 2 == self.settings.per_endpoint:
            self.wakeup.set()  # room for another claim: no need to wait out the idle round
        if len(self._unstored) >= self.settings.store_batch:
            await self.flush(final=False)

    async def flush(self, *, final: bool = True) -> None:
        """Store the outcomes received so far."""
        async with self._store_lock:
            while self._unstored:
                batch = self._unstored[: self.settings.store_batch]
                del self._unstored[: len(batch)]
                await asyncio.to_thread(self.store, batch)
                if not final:
                    break

    def store(self, outcomes: list[Outcome]) -> None:
        """docs/webhooks.md §5: the delivery row, the log, the breaker, a 410's disabling."""
        attempts = []
        breakers: dict[str, BreakerState] = {}
        gone: set[str] = set()
        with self.db.write() as conn:
            for o in outcomes:
                values: dict[str, object] = {"state": _STATE[o.kind], "attempts": o.attempts}
                if o.first_attempt_at is not None:
                    values["first_attempt_at"] = _ms(o.first_attempt_at)
                if o.next_attempt_at is not None:
                    values["next_attempt_at"] = _ms(o.next_attempt_at)
                if o.attempted:
                    assert o.attempted_at is not None
                    values.update(
                        last_attempt_at=_ms(o.attempted_at),
                        last_status=o.status,
                        last_error=o.error.value if o.error else None,
                        last_detail=o.detail[:200],
                    )
                    attempts.append(
                        {
                            "delivery_id": int(o.delivery_id),
                            "endpoint_id": o.endpoint_id,
                            "event_id": o.event_id,
                            "attempted_at": _ms(o.attempted_at),
                            "status": o.status,
                            "error": o.error.value if o.error else None,
                            "detail": o.detail[:200],
                            "duration_ms": int(o.duration * 1000),
                        }
                    )
                hooks.store_outcome(conn, int(o.delivery_id), **values)
                breakers[o.endpoint_id] = o.breaker
                if o.kind is OutcomeKind.ENDPOINT_GONE:
                    gone.add(o.endpoint_id)
            hooks.log_attempts(conn, attempts)
            for endpoint_id, state in breakers.items():
                hooks.store_breaker(
                    conn,
                    endpoint_id,
                    failures=state.consecutive_failures,
                    open_until=_ms(state.open_until) if state.open_until else None,
                )
            for endpoint_id in gone:
                hooks.disable_gone(conn, endpoint_id, _ms(self.clock()))

    # -- device notifications --------------------------------------------------------------

    async def _notify(self) -> int:
        notifications = self.kb.notifications
        claimed = await asyncio.to_thread(notifications.claim, self.settings.notify_batch)
        for notification in claimed:
            task = asyncio.create_task(self._notify_one(notification))
            self._notifying.add(task)
            task.add_done_callback(self._notifying.discard)
        return len(claimed)

    async def _notify_one(self, notification: NotificationRecord) -> None:
        async with self._notify_slots:
            try:
                await asyncio.to_thread(self.kb.notifications.send, notification)
            except Exception:  # a wake-up never fails anything: the device still polls
                log.exception("device notification failed")


def _keep_order(chosen: list[PendingDelivery], got: set[int]) -> list[PendingDelivery]:
    """Of the chosen deliveries, those claimed -- but per subject only up to the first one
    whose claim failed (another sender holds it, or it changed): the rest would overtake it."""
    kept: list[PendingDelivery] = []
    by_subject = sorted(chosen, key=lambda d: (d.subject, d.sequence))
    for _subject, group in groupby(by_subject, key=lambda d: d.subject):
        for delivery in group:
            if int(delivery.delivery_id) not in got:
                break
            kept.append(delivery)
    kept.sort(key=lambda d: d.sequence)
    return kept


__all__ = ["ENV_WEBHOOK_TIMEOUT", "Outbox", "OutboxSettings", "Wakeup", "settings_from_env"]
