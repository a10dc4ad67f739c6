"""Delivery decisions as pure functions: retry schedule, Retry-After, circuit breaker, order.

Nothing here does I/O or reads a clock; time and randomness come in as arguments, so each rule
is table-tested (tests/server/events/test_schedule.py). :mod:`.delivery` performs the attempts
and applies these rules. The schedule, the breaker and the order promise: docs/webhooks.md §3.
"""

from __future__ import annotations

import email.utils
import random
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from itertools import groupby

from keybound.errors import MalformedRequest
from keybound.server.events.signing import MESSAGE_ID, SigningSecret

#: Caps of the successive retry delays after a failed attempt (Standard Webhooks' example
#: schedule: 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 14 h, 20 h, 24 h); the last cap repeats until
#: the retry window closes.
DEFAULT_SCHEDULE: tuple[float, ...] = (5, 300, 1800, 7200, 18000, 36000, 50400, 72000, 86400)
#: Retries stop this long after the first attempt.
DEFAULT_WINDOW = 3 * 86400.0
#: A receiver's Retry-After is obeyed up to this long.
DEFAULT_MAX_RETRY_AFTER = 86400.0
_SECONDS = re.compile(r"[0-9]{1,10}")


class AttemptError(StrEnum):
    """Why an attempt failed (allow-list; stored as the delivery's ``last_error``)."""

    TIMEOUT = "timeout"  # connect, read, write or the total time-out
    CONNECT = "connect_error"  # refused, reset, unresolvable, TLS failure
    POLICY_REFUSED = "policy_refused"  # the endpoint policy refused the URL or an address
    REDIRECT = "redirect"  # 3xx: never followed (Standard Webhooks, "Delivery success")
    HTTP_STATUS = "http_status"  # 4xx or 5xx
    PROTOCOL = "protocol_error"  # not a valid HTTP response


@dataclass(frozen=True, kw_only=True)
class AttemptResult:
    """What one HTTP attempt produced. ``error`` is None exactly when the status is 2xx."""

    status: int | None = None
    error: AttemptError | None = None
    retry_after: str | None = None  # the raw header, parsed by the decision
    detail: str = ""  # short and secret-free, for the delivery log

    @property
    def delivered(self) -> bool:
        return self.error is None


class Verdict(StrEnum):
    DELIVERED = "delivered"  # 2xx
    RETRY = "retry"  # failed; try again at next_attempt_at
    GAVE_UP = "gave_up"  # failed and the retry window is over
    ENDPOINT_GONE = "endpoint_gone"  # 410: disable the endpoint, send it nothing more


@dataclass(frozen=True, kw_only=True)
class Decision:
    verdict: Verdict
    next_attempt_at: float | None = None  # set exactly for RETRY


@dataclass(frozen=True, kw_only=True)
class RetryPolicy:
    schedule: tuple[float, ...] = DEFAULT_SCHEDULE
    window: float = DEFAULT_WINDOW
    max_retry_after: float = DEFAULT_MAX_RETRY_AFTER

    def __post_init__(self) -> None:
        if not self.schedule or any(cap <= 0 for cap in self.schedule):
            raise ValueError("schedule needs at least one positive delay")
        if self.window <= 0 or self.max_retry_after < 0:
            raise ValueError("window must be positive and max_retry_after not negative")

    def cap(self, attempts: int) -> float:
        """The largest delay after the ``attempts``-th failed attempt."""
        return self.schedule[min(max(attempts, 1), len(self.schedule)) - 1]


def parse_retry_after(value: str | None, *, now: float) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (RFC 9110 §10.2.3: delay-seconds or an
    HTTP-date); None when absent or unreadable, 0 for a date in the past."""
    if value is None:
        return None
    text = value.strip()
    if _SECONDS.fullmatch(text):
        return float(int(text))
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # RFC 9110 dates are GMT; the parser leaves "-0000" naive
        return None
    return max(0.0, when.timestamp() - now)


def decide(
    *,
    attempts: int,
    first_attempt_at: float,
    result: AttemptResult,
    now: float,
    rng: random.Random,
    policy: RetryPolicy,
) -> Decision:
    """The verdict on an attempt, ``attempts`` counting it (1 for the first).

    Failures wait a full-jitter delay, uniform in [0, cap], then at least what Retry-After
    asks (capped); the last retry falls on the end of the window, after which the delivery is
    given up. 410 Gone stops for good.
    """
    if result.delivered:
        return Decision(verdict=Verdict.DELIVERED)
    if result.status == 410:
        return Decision(verdict=Verdict.ENDPOINT_GONE)
    deadline = first_attempt_at + policy.window
    if now >= deadline:
        return Decision(verdict=Verdict.GAVE_UP)
    delay = rng.uniform(0.0, policy.cap(attempts))
    asked = parse_retry_after(result.retry_after, now=now)
    if asked is not None:
        delay = max(delay, min(asked, policy.max_retry_after))
    return Decision(verdict=Verdict.RETRY, next_attempt_at=min(now + delay, deadline))


# --- circuit breaker ----------------------------------------------------------------------


class BreakerPhase(StrEnum):
    CLOSED = "closed"  # send
    OPEN = "open"  # send nothing until open_until
    HALF_OPEN = "half_open"  # cool-down over: one probe decides


@dataclass(frozen=True, kw_only=True)
class BreakerPolicy:
    failure_threshold: int = 5  # consecutive failed attempts that open the breaker
    cool_down: float = 60.0

    def __post_init__(self) -> None:
        if self.failure_threshold < 1 or self.cool_down <= 0:
            raise ValueError("failure_threshold must be >= 1 and cool_down positive")


@dataclass(frozen=True, kw_only=True)
class BreakerState:
    """Per endpoint; small enough to persist on the endpoint's row."""

    consecutive_failures: int = 0
    open_until: float | None = None


def breaker_phase(state: BreakerState, *, now: float) -> BreakerPhase:
    if state.open_until is None:
        return BreakerPhase.CLOSED
    return BreakerPhase.OPEN if now < state.open_until else BreakerPhase.HALF_OPEN


def breaker_record(
    state: BreakerState, *, success: bool, now: float, policy: BreakerPolicy
) -> BreakerState:
    """The state after an attempt: a success closes; the threshold-th consecutive failure
    opens for one cool-down, and so does a failed probe (its count is past the threshold)."""
    if success:
        return BreakerState()
    failures = state.consecutive_failures + 1
    if failures >= policy.failure_threshold:
        return BreakerState(consecutive_failures=failures, open_until=now + policy.cool_down)
    return BreakerState(consecutive_failures=failures)


# --- what to send next --------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class PendingDelivery:
    """One event to one endpoint, not yet delivered, as the outbox hands it to the sender."""

    delivery_id: str  # the outbox row (event x endpoint)
    event_id: str  # sent as webhook-id: the receiver's deduplication key
    endpoint_id: str
    url: str
    secrets: tuple[SigningSecret, ...] = field(repr=False)  # every active secret signs
    payload: bytes = field(repr=False)
    subject: str  # order is kept per (endpoint, subject), e.g. one device or one operation
    sequence: int  # commit order of the event (the outbox's event sequence)
    attempts: int = 0  # made so far
    first_attempt_at: float | None = None
    next_attempt_at: float = 0.0

    def __post_init__(self) -> None:
        # docs/webhooks.md §2.1: the id is signed unescaped and is the receiver's dedup key
        if not MESSAGE_ID.fullmatch(self.event_id):
            raise MalformedRequest("event id must match [A-Za-z0-9_-]{1,128}")
        # docs/webhooks.md §2.2: every attempt is signed
        if not self.secrets:
            raise MalformedRequest("a delivery needs at least one signing secret")


def select_due(
    pending: Iterable[PendingDelivery], *, now: float, limit: int | None = None
) -> list[PendingDelivery]:
    """Which unfinished deliveries to send now, in the order that keeps the promise.

    ``pending`` is every unfinished delivery of the endpoints considered. Per (endpoint,
    subject) only a leading run of due deliveries goes: one that is not yet due holds back
    everything after it, so a subject's events reach the receiver in commit order.
    """
    ordered = sorted(pending, key=lambda d: (d.endpoint_id, d.subject, d.sequence))
    chosen: list[PendingDelivery] = []
    for _key, group in groupby(ordered, key=lambda d: (d.endpoint_id, d.subject)):
        for delivery in group:
            if delivery.next_attempt_at > now:
                break
            chosen.append(delivery)
    chosen.sort(key=lambda d: d.sequence)
    return chosen if limit is None else chosen[:limit]
