"""The pure delivery rules, table-tested: retry decision, Retry-After, breaker, order."""

from __future__ import annotations

import email.utils
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from keybound.server.events.schedule import (
    DEFAULT_SCHEDULE,
    DEFAULT_WINDOW,
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
    parse_retry_after,
    select_due,
)
from keybound.server.events.signing import generate_symmetric_secret
from tests.server.events.helpers import delivery


class FixedRandom(random.Random):
    """A generator whose every draw is the same fraction of the range."""

    def __init__(self, fraction: float) -> None:
        super().__init__(0)
        self.fraction = fraction

    def random(self) -> float:
        return self.fraction


POLICY = RetryPolicy()
FIRST = 1_000_000.0
OK = AttemptResult(status=200)
FAILED = AttemptResult(status=500, error=AttemptError.HTTP_STATUS)
HTTP_DATE_IN_10_MIN = email.utils.formatdate(FIRST + 10 + 600, usegmt=True)


def _busy(retry_after: str, status: int = 503) -> AttemptResult:
    return AttemptResult(status=status, error=AttemptError.HTTP_STATUS, retry_after=retry_after)


@pytest.mark.parametrize(
    ("name", "attempts", "elapsed", "result", "fraction", "verdict", "delay"),
    [
        ("2xx", 1, 0, OK, 1.0, Verdict.DELIVERED, None),
        ("204", 4, 0, AttemptResult(status=204), 1.0, Verdict.DELIVERED, None),
        (
            "Retry-After on a 2xx is moot",
            1,
            0,
            AttemptResult(status=200, retry_after="60"),
            1.0,
            Verdict.DELIVERED,
            None,
        ),
        (
            "410 stops for good",
            1,
            0,
            AttemptResult(status=410, error=AttemptError.HTTP_STATUS),
            1.0,
            Verdict.ENDPOINT_GONE,
            None,
        ),
        (
            "410 even with Retry-After",
            3,
            0,
            _busy("5", status=410),
            1.0,
            Verdict.ENDPOINT_GONE,
            None,
        ),
        ("first retry, top of jitter", 1, 0, FAILED, 1.0, Verdict.RETRY, 5.0),
        ("first retry, bottom of jitter", 1, 0, FAILED, 0.0, Verdict.RETRY, 0.0),
        ("third retry, middle", 3, 10, FAILED, 0.5, Verdict.RETRY, 900.0),
        ("past the table the last cap repeats", 20, 10, FAILED, 1.0, Verdict.RETRY, 86400.0),
        ("time-out", 2, 10, AttemptResult(error=AttemptError.TIMEOUT), 1.0, Verdict.RETRY, 300.0),
        (
            "3xx is a failure",
            1,
            0,
            AttemptResult(status=302, error=AttemptError.REDIRECT),
            1.0,
            Verdict.RETRY,
            5.0,
        ),
        (
            "refused address retries",
            1,
            0,
            AttemptResult(error=AttemptError.POLICY_REFUSED),
            1.0,
            Verdict.RETRY,
            5.0,
        ),
        (
            "Retry-After seconds beats a shorter jitter",
            1,
            10,
            _busy("120"),
            1.0,
            Verdict.RETRY,
            120.0,
        ),
        ("429 too", 1, 10, _busy("120", status=429), 1.0, Verdict.RETRY, 120.0),
        ("a longer jitter beats Retry-After", 3, 10, _busy("1"), 0.5, Verdict.RETRY, 900.0),
        ("Retry-After is capped", 1, 10, _busy("999999999"), 1.0, Verdict.RETRY, 86400.0),
        (
            "Retry-After as an HTTP date",
            1,
            10,
            _busy(HTTP_DATE_IN_10_MIN),
            1.0,
            Verdict.RETRY,
            600.0,
        ),
        ("unreadable Retry-After is ignored", 1, 10, _busy("soon"), 1.0, Verdict.RETRY, 5.0),
        (
            "the last retry falls on the window's end",
            9,
            DEFAULT_WINDOW - 100,
            FAILED,
            1.0,
            Verdict.RETRY,
            100.0,
        ),
        (
            "Retry-After cannot stretch the window",
            1,
            DEFAULT_WINDOW - 100,
            _busy("3600"),
            1.0,
            Verdict.RETRY,
            100.0,
        ),
        ("window over", 10, DEFAULT_WINDOW, FAILED, 1.0, Verdict.GAVE_UP, None),
    ],
)
def test_decide(
    name: str,
    attempts: int,
    elapsed: float,
    result: AttemptResult,
    fraction: float,
    verdict: Verdict,
    delay: float | None,
) -> None:
    now = FIRST + elapsed
    decision = decide(
        attempts=attempts,
        first_attempt_at=FIRST,
        result=result,
        now=now,
        rng=FixedRandom(fraction),
        policy=POLICY,
    )
    assert decision.verdict is verdict
    if delay is None:
        assert decision.next_attempt_at is None
    else:
        assert decision.next_attempt_at == pytest.approx(now + delay)


def test_the_default_schedule_spans_three_days() -> None:
    """With the longest jitter every time: attempts at 0, 5 s, 5 min 5 s, ... and the last at
    72 h, after which the delivery is given up."""
    now, attempts, times = FIRST, 0, []
    while True:
        attempts += 1
        times.append(now - FIRST)
        decision = decide(
            attempts=attempts,
            first_attempt_at=FIRST,
            result=FAILED,
            now=now,
            rng=FixedRandom(1.0),
            policy=POLICY,
        )
        if decision.next_attempt_at is None:
            break
        now = decision.next_attempt_at
    assert decision.verdict is Verdict.GAVE_UP
    assert times == [0, 5, 305, 2105, 9305, 27305, 63305, 113705, 185705, DEFAULT_WINDOW]
    assert sum(DEFAULT_SCHEDULE) / 3600 == pytest.approx(75.6, abs=0.1)


@given(
    attempts=st.integers(1, 50),
    elapsed=st.floats(0, DEFAULT_WINDOW - 1),
    seed=st.integers(0, 2**32),
)
def test_full_jitter_stays_in_range(attempts: int, elapsed: float, seed: int) -> None:
    now = FIRST + elapsed
    decision = decide(
        attempts=attempts,
        first_attempt_at=FIRST,
        result=FAILED,
        now=now,
        rng=random.Random(seed),
        policy=POLICY,
    )
    assert decision.verdict is Verdict.RETRY and decision.next_attempt_at is not None
    assert (
        now <= decision.next_attempt_at <= min(now + POLICY.cap(attempts), FIRST + DEFAULT_WINDOW)
    )


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        (None, None),
        ("120", 120.0),
        (" 7 ", 7.0),
        ("0", 0.0),
        ("-5", None),
        ("1.5", None),
        ("soon", None),
        ("", None),
        (email.utils.formatdate(FIRST + 90, usegmt=True), 90.0),
        (email.utils.formatdate(FIRST - 90, usegmt=True), 0.0),  # in the past: now
        ("Wed, 21 Oct 2015 07:28:00 -0000", None),  # RFC 9110 dates are GMT
    ],
)
def test_parse_retry_after(value: str | None, seconds: float | None) -> None:
    assert parse_retry_after(value, now=FIRST) == seconds


def test_policy_validation() -> None:
    for bad in ({"schedule": ()}, {"schedule": (5, 0)}, {"window": 0}, {"max_retry_after": -1}):
        with pytest.raises(ValueError):
            RetryPolicy(**bad)
    with pytest.raises(ValueError):
        BreakerPolicy(failure_threshold=0)


BREAKER = BreakerPolicy(failure_threshold=3, cool_down=60)


@pytest.mark.parametrize(
    ("name", "before", "success", "after"),
    [
        ("first failure", BreakerState(), False, BreakerState(consecutive_failures=1)),
        (
            "below threshold",
            BreakerState(consecutive_failures=1),
            False,
            BreakerState(consecutive_failures=2),
        ),
        (
            "threshold opens",
            BreakerState(consecutive_failures=2),
            False,
            BreakerState(consecutive_failures=3, open_until=FIRST + 60),
        ),
        ("success closes", BreakerState(consecutive_failures=2), True, BreakerState()),
        (
            "failed probe opens again",
            BreakerState(consecutive_failures=3, open_until=FIRST - 1),
            False,
            BreakerState(consecutive_failures=4, open_until=FIRST + 60),
        ),
        (
            "good probe closes",
            BreakerState(consecutive_failures=3, open_until=FIRST - 1),
            True,
            BreakerState(),
        ),
    ],
)
def test_breaker_record(
    name: str, before: BreakerState, success: bool, after: BreakerState
) -> None:
    assert breaker_record(before, success=success, now=FIRST, policy=BREAKER) == after


def test_breaker_phase() -> None:
    opened = BreakerState(consecutive_failures=3, open_until=FIRST + 60)
    assert breaker_phase(BreakerState(consecutive_failures=2), now=FIRST) is BreakerPhase.CLOSED
    assert breaker_phase(opened, now=FIRST + 59.9) is BreakerPhase.OPEN
    assert breaker_phase(opened, now=FIRST + 60) is BreakerPhase.HALF_OPEN


SECRET = generate_symmetric_secret()


def _d(n: int, subject: str, due: float, endpoint: str = "ep_1") -> PendingDelivery:
    return delivery(
        "https://hooks.example/",
        SECRET,
        n=n,
        subject=subject,
        endpoint_id=endpoint,
        next_attempt_at=due,
    )


def test_select_due_keeps_each_subject_in_order() -> None:
    a1, a2, b1, b2, c1 = (
        _d(1, "a", 0),
        _d(2, "a", 5),
        _d(3, "b", 99),
        _d(4, "b", 0),
        _d(5, "c", 0, endpoint="ep_2"),
    )
    a3 = _d(6, "a", 99)
    a4 = _d(7, "a", 0)
    chosen = select_due([b2, a4, a3, c1, a2, a1, b1], now=10)
    # b2 waits behind b1 (not due); a4 waits behind a3; other endpoints are independent
    assert chosen == [a1, a2, c1]
    assert select_due([a1, a2, c1], now=10, limit=2) == [a1, a2]
    same_subject_other_endpoint = _d(8, "b", 0, endpoint="ep_2")
    assert select_due([b1, same_subject_other_endpoint], now=10) == [same_subject_other_endpoint]
