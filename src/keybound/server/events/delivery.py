"""The webhook sender: one signed POST per attempt, and the dispatcher that runs them.

:class:`WebhookSender` makes one attempt (sign with every active secret, POST through the
SSRF-guarded client, never follow a redirect, stop at the total time-out) and reports an
:class:`~.schedule.AttemptResult`. :class:`Dispatcher` takes due deliveries from the outbox,
keeps one attempt in flight per endpoint (so an endpoint sees a subject's events in commit
order and a slow endpoint holds one slot, not the pool), applies the retry decision and the
per-endpoint circuit breaker from :mod:`.schedule`, and hands each :class:`Outcome` to the
outbox to store. Delivery is at least once: the outbox stores an outcome only after the
attempt, so a crash in between re-sends, and receivers deduplicate on ``webhook-id``.
docs/webhooks.md §3.
"""

from __future__ import annotations

import asyncio
import logging
import random
import ssl
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum

import httpx

from keybound.server.events.schedule import (
    AttemptError,
    AttemptResult,
    BreakerPhase,
    BreakerPolicy,
    BreakerState,
    PendingDelivery,
    RetryPolicy,
    Verdict,
    breaker_phase,
    breaker_record,
    decide,
)
from keybound.server.events.signing import webhook_headers
from keybound.server.events.ssrf import (
    EndpointAddressRefused,
    EndpointPolicy,
    EndpointUrlInvalid,
    GuardedTransport,
    Resolver,
    system_resolver,
)

log = logging.getLogger("keybound.events")

Clock = Callable[[], float]
USER_AGENT = "keybound-webhooks/1"
#: Of a response body only this much is read (the rest is never waited for).
MAX_RESPONSE_BYTES = 4096
_DETAIL_CHARS = 200


@dataclass(frozen=True, kw_only=True)
class DeliveryTimeouts:
    """Seconds. ``total`` bounds the whole attempt, from name resolution to the last byte read,
    so a receiver that trickles bytes cannot hold a slot longer than that."""

    connect: float = 5.0  # resolve + TCP connect + TLS handshake
    read: float = 15.0  # between two reads (and writes)
    total: float = 30.0  # Standard Webhooks suggests 15 to 30 s


def create_client(
    *,
    policy: EndpointPolicy,
    resolver: Resolver = system_resolver,
    timeouts: DeliveryTimeouts | None = None,
    ssl_context: ssl.SSLContext | None = None,
    max_connections: int = 100,
) -> httpx.AsyncClient:
    """The one HTTP client for webhooks: guarded transport, no redirects, no environment proxy."""
    timeouts = timeouts or DeliveryTimeouts()
    transport = GuardedTransport(
        policy=policy,
        resolver=resolver,
        ssl_context=ssl_context,
        limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=20),
    )
    return httpx.AsyncClient(
        transport=transport,
        timeout=httpx.Timeout(
            connect=timeouts.connect, read=timeouts.read, write=timeouts.read, pool=timeouts.total
        ),
        follow_redirects=False,  # a 3xx is a failed attempt (Standard Webhooks, "Delivery")
        trust_env=False,
        headers={"user-agent": USER_AGENT},
    )


def _printable(data: bytes) -> str:
    text = data[:_DETAIL_CHARS].decode("utf-8", "replace")
    return "".join(c if c.isprintable() else " " for c in text).strip()


def classify_response(status: int, headers: httpx.Headers, body: bytes) -> AttemptResult:
    """2xx delivered; 3xx a failure that is never followed; anything else a failure."""
    if 200 <= status < 300:
        return AttemptResult(status=status)
    if 300 <= status < 400:
        location = _printable(headers.get("location", "").encode())
        return AttemptResult(
            status=status,
            error=AttemptError.REDIRECT,
            detail=f"HTTP {status} to {location!r} not followed",
        )
    if status < 200:
        return AttemptResult(
            status=status,
            error=AttemptError.PROTOCOL,
            detail=f"HTTP {status} is not a final answer",
        )
    snippet = _printable(body)
    return AttemptResult(
        status=status,
        error=AttemptError.HTTP_STATUS,
        retry_after=headers.get("retry-after"),
        detail=f"HTTP {status}: {snippet}" if snippet else f"HTTP {status}",
    )


class WebhookSender:
    """Makes single attempts. The injected ``wall_clock`` stamps ``webhook-timestamp``: the
    receiver compares it with its own clock, so in production it is the real time."""

    def __init__(
        self,
        *,
        client: httpx.AsyncClient,
        timeouts: DeliveryTimeouts | None = None,
        wall_clock: Clock = time.time,
    ) -> None:
        self._client = client
        self._total = (timeouts or DeliveryTimeouts()).total
        self._wall_clock = wall_clock

    async def attempt(self, delivery: PendingDelivery) -> AttemptResult:
        headers = webhook_headers(
            msg_id=delivery.event_id,
            timestamp=int(self._wall_clock()),
            body=delivery.payload,
            secrets=delivery.secrets,
        )
        headers["content-type"] = "application/json"
        try:
            async with asyncio.timeout(self._total):
                async with self._client.stream(
                    "POST", delivery.url, content=delivery.payload, headers=headers
                ) as response:
                    body = await _read_capped(response)
        except TimeoutError:
            return AttemptResult(
                error=AttemptError.TIMEOUT, detail=f"no complete answer within {self._total:g} s"
            )
        except (EndpointAddressRefused, EndpointUrlInvalid) as exc:
            return AttemptResult(error=AttemptError.POLICY_REFUSED, detail=exc.detail)
        except httpx.TimeoutException as exc:
            return AttemptResult(error=AttemptError.TIMEOUT, detail=type(exc).__name__)
        except httpx.ProtocolError as exc:
            return AttemptResult(error=AttemptError.PROTOCOL, detail=_printable(str(exc).encode()))
        except (httpx.TransportError, httpx.InvalidURL) as exc:
            detail = f"{type(exc).__name__}: {_printable(str(exc).encode())}"
            return AttemptResult(error=AttemptError.CONNECT, detail=detail)
        return classify_response(response.status_code, response.headers, body)


async def _read_capped(response: httpx.Response) -> bytes:
    # raw bytes: nothing is decompressed, so a small read stays small
    data = bytearray()
    async for chunk in response.aiter_raw():
        data += chunk
        if len(data) >= MAX_RESPONSE_BYTES:
            break
    return bytes(data[:MAX_RESPONSE_BYTES])


class OutcomeKind(StrEnum):
    DELIVERED = "delivered"
    RETRY = "retry"
    GAVE_UP = "gave_up"
    ENDPOINT_GONE = "endpoint_gone"  # disable the endpoint; nothing more is sent to it
    DEFERRED = "deferred"  # not attempted: try again at next_attempt_at, attempts unchanged


class DeferReason(StrEnum):
    BREAKER_OPEN = "breaker_open"
    SUBJECT_BLOCKED = "subject_blocked"  # an earlier event of the subject failed in this run


_KIND = {
    Verdict.DELIVERED: OutcomeKind.DELIVERED,
    Verdict.RETRY: OutcomeKind.RETRY,
    Verdict.GAVE_UP: OutcomeKind.GAVE_UP,
    Verdict.ENDPOINT_GONE: OutcomeKind.ENDPOINT_GONE,
}


@dataclass(frozen=True, kw_only=True)
class Outcome:
    """What the outbox stores for one delivery after one pass (docs/webhooks.md §5)."""

    delivery_id: str
    event_id: str
    endpoint_id: str
    kind: OutcomeKind
    attempted: bool
    attempts: int  # made so far, counting this one
    first_attempt_at: float | None
    next_attempt_at: float | None  # RETRY and DEFERRED
    status: int | None = None
    error: AttemptError | None = None
    deferred: DeferReason | None = None
    detail: str = ""
    attempted_at: float | None = None  # injected clock
    duration: float = 0.0  # seconds on the wire (a measurement, not a schedule input)
    breaker: BreakerState  # the endpoint's breaker after this pass


OutcomeSink = Callable[[Outcome], Awaitable[None]]


class Dispatcher:
    """Runs due deliveries: per endpoint one at a time in submission order, across endpoints
    at most ``max_concurrency`` attempts at once.

    The outbox submits what :func:`~.schedule.select_due` chose (ordered by sequence) and
    stores every outcome ``on_outcome`` receives. Breaker states start from ``breakers`` (as
    persisted) and each outcome carries its endpoint's new state.
    """

    def __init__(
        self,
        *,
        sender: WebhookSender,
        on_outcome: OutcomeSink,
        retry: RetryPolicy | None = None,
        breaker: BreakerPolicy | None = None,
        max_concurrency: int = 16,
        clock: Clock = time.time,
        rng: random.Random | None = None,
        breakers: Mapping[str, BreakerState] | None = None,
    ) -> None:
        if max_concurrency < 1:
            raise ValueError("max_concurrency must be >= 1")
        self._sender = sender
        self._on_outcome = on_outcome
        self._retry = retry or RetryPolicy()
        self._breaker = breaker or BreakerPolicy()
        self._slots = asyncio.Semaphore(max_concurrency)
        self._clock = clock
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not a secret
        self._breakers: dict[str, BreakerState] = dict(breakers or {})
        self._queues: dict[str, deque[PendingDelivery]] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._in_hand: set[str] = set()

    def submit(self, delivery: PendingDelivery) -> bool:
        """Queue a delivery behind its endpoint's others; False if it is already in hand (the
        outbox may read a row again before its outcome is stored)."""
        if delivery.delivery_id in self._in_hand:
            return False
        self._in_hand.add(delivery.delivery_id)
        self._queues.setdefault(delivery.endpoint_id, deque()).append(delivery)
        if delivery.endpoint_id not in self._tasks:
            self._tasks[delivery.endpoint_id] = asyncio.create_task(
                self._drain(delivery.endpoint_id), name=f"webhooks:{delivery.endpoint_id}"
            )
        return True

    def busy_endpoints(self) -> frozenset[str]:
        return frozenset(self._tasks)

    def breaker_state(self, endpoint_id: str) -> BreakerState:
        return self._breakers.get(endpoint_id, BreakerState())

    async def join(self) -> None:
        """Wait until everything submitted has an outcome."""
        while self._tasks:
            await asyncio.gather(*self._tasks.values())

    async def aclose(self) -> None:
        """Stop now; deliveries without an outcome stay pending in the outbox."""
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _drain(self, endpoint_id: str) -> None:
        queue = self._queues[endpoint_id]
        blocked: dict[str, float] = {}  # subject -> when its failed event is due again
        gone = False
        try:
            while queue:
                delivery = queue.popleft()
                outcome = await self._one(delivery, blocked=blocked, gone=gone)
                gone = gone or outcome.kind is OutcomeKind.ENDPOINT_GONE
                if outcome.next_attempt_at is not None:
                    blocked.setdefault(delivery.subject, outcome.next_attempt_at)
                await self._emit(outcome)
                self._in_hand.discard(delivery.delivery_id)
        finally:
            # no await between the empty-queue check and here, so submit() cannot slip in
            for delivery in queue:
                self._in_hand.discard(delivery.delivery_id)
            del self._tasks[endpoint_id]
            del self._queues[endpoint_id]

    async def _emit(self, outcome: Outcome) -> None:
        try:
            await self._on_outcome(outcome)
        except Exception:
            # unstored: the outbox's lease runs out and the delivery is sent again (at least once)
            log.exception("storing the outcome of delivery %s failed", outcome.delivery_id)

    def _unattempted(
        self,
        delivery: PendingDelivery,
        kind: OutcomeKind,
        *,
        next_attempt_at: float | None,
        deferred: DeferReason | None,
        detail: str,
    ) -> Outcome:
        return Outcome(
            delivery_id=delivery.delivery_id,
            event_id=delivery.event_id,
            endpoint_id=delivery.endpoint_id,
            kind=kind,
            attempted=False,
            attempts=delivery.attempts,
            first_attempt_at=delivery.first_attempt_at,
            next_attempt_at=next_attempt_at,
            deferred=deferred,
            detail=detail,
            breaker=self.breaker_state(delivery.endpoint_id),
        )

    async def _one(
        self, delivery: PendingDelivery, *, blocked: Mapping[str, float], gone: bool
    ) -> Outcome:
        state = self.breaker_state(delivery.endpoint_id)
        now = self._clock()
        # docs/webhooks.md §3.3: after 410 the endpoint gets nothing more
        if gone:
            return self._unattempted(
                delivery,
                OutcomeKind.ENDPOINT_GONE,
                next_attempt_at=None,
                deferred=None,
                detail="endpoint answered 410 Gone",
            )
        # docs/webhooks.md §3.4: a subject's events go in order, so a later one waits
        if delivery.subject in blocked:
            later = max(blocked[delivery.subject], delivery.next_attempt_at)
            return self._unattempted(
                delivery,
                OutcomeKind.DEFERRED,
                next_attempt_at=later,
                deferred=DeferReason.SUBJECT_BLOCKED,
                detail="an earlier event of this subject is pending",
            )
        # docs/webhooks.md §3.2: an open breaker sends nothing until its cool-down ends
        if breaker_phase(state, now=now) is BreakerPhase.OPEN:
            assert state.open_until is not None
            return self._unattempted(
                delivery,
                OutcomeKind.DEFERRED,
                next_attempt_at=state.open_until,
                deferred=DeferReason.BREAKER_OPEN,
                detail="breaker open",
            )
        async with self._slots:
            started = self._clock()
            began = time.perf_counter()
            result = await self._sender.attempt(delivery)
            duration = time.perf_counter() - began
        now = self._clock()
        attempts = delivery.attempts + 1
        first = started if delivery.first_attempt_at is None else delivery.first_attempt_at
        decision = decide(
            attempts=attempts,
            first_attempt_at=first,
            result=result,
            now=now,
            rng=self._rng,
            policy=self._retry,
        )
        state = breaker_record(state, success=result.delivered, now=now, policy=self._breaker)
        self._breakers[delivery.endpoint_id] = state
        return Outcome(
            delivery_id=delivery.delivery_id,
            event_id=delivery.event_id,
            endpoint_id=delivery.endpoint_id,
            kind=_KIND[decision.verdict],
            attempted=True,
            attempts=attempts,
            first_attempt_at=first,
            next_attempt_at=decision.next_attempt_at,
            status=result.status,
            error=result.error,
            detail=result.detail,
            attempted_at=started,
            duration=duration,
            breaker=state,
        )
