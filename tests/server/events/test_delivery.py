"""The sender and dispatcher against real receivers on 127.0.0.1, with an injected clock for
everything scheduled (nothing here sleeps for a retry delay)."""

from __future__ import annotations

import asyncio
import dataclasses
import email.utils
import ipaddress
import logging
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

from keybound.errors import ErrorCode, KeyboundError
from keybound.server.events.delivery import (
    DeferReason,
    DeliveryTimeouts,
    Dispatcher,
    Outcome,
    OutcomeKind,
    WebhookSender,
    create_client,
)
from keybound.server.events.schedule import (
    AttemptError,
    BreakerPolicy,
    BreakerState,
    PendingDelivery,
    RetryPolicy,
)
from keybound.server.events.signing import AsymmetricSecret, SymmetricSecret
from keybound.server.events.ssrf import EndpointPolicy
from tests.conftest import FakeClock
from tests.server.events.helpers import delivery
from tests.server.events.memory_outbox import MemoryOutbox
from tests.server.events.receiver import Receiver, Reply

LOOPBACK = EndpointPolicy(allow_http=True, allowed_networks=(ipaddress.ip_network("127.0.0.0/8"),))
QUICK = DeliveryTimeouts(connect=1, read=1, total=1.5)
NEVER_OPENS = BreakerPolicy(failure_threshold=1000)


@dataclass
class Run:
    """A dispatcher wired to a list of outcomes, inside one event loop."""

    clock: FakeClock
    timeouts: DeliveryTimeouts = QUICK
    breaker: BreakerPolicy = NEVER_OPENS
    max_concurrency: int = 4
    breakers: dict[str, BreakerState] = field(default_factory=dict)
    outcomes: list[Outcome] = field(default_factory=list)
    arrived: list[float] = field(default_factory=list)  # perf_counter per outcome

    async def store(self, outcome: Outcome) -> None:
        self.outcomes.append(outcome)
        self.arrived.append(time.perf_counter())

    def dispatch(self, *deliveries: PendingDelivery, sink: object = None) -> list[Outcome]:
        async def main() -> None:
            async with create_client(policy=LOOPBACK, timeouts=self.timeouts) as client:
                dispatcher = Dispatcher(
                    sender=WebhookSender(client=client, timeouts=self.timeouts),
                    on_outcome=self.store,
                    breaker=self.breaker,
                    clock=self.clock,
                    rng=random.Random(7),
                    max_concurrency=self.max_concurrency,
                    breakers=self.breakers,
                )
                for item in deliveries:
                    dispatcher.submit(item)
                await dispatcher.join()
                self.breakers.update(
                    {d.endpoint_id: dispatcher.breaker_state(d.endpoint_id) for d in deliveries}
                )

        start = len(self.outcomes)
        asyncio.run(main())
        return self.outcomes[start:]


@pytest.fixture
def run(clock: FakeClock) -> Run:
    return Run(clock=clock)


@pytest.fixture
def second_receiver(hmac_secret: SymmetricSecret) -> Iterator[Receiver]:
    other = Receiver(secrets=(hmac_secret.serialize(),)).start()
    try:
        yield other
    finally:
        other.stop()


def test_delivered_signed_with_every_secret(
    run: Run, receiver: Receiver, hmac_secret: SymmetricSecret, ed25519_secret: AsymmetricSecret
) -> None:
    item = delivery(receiver.url(), hmac_secret)
    both = PendingDelivery(**{**item.__dict__, "secrets": (ed25519_secret, hmac_secret)})
    [outcome] = run.dispatch(both)
    assert (outcome.kind, outcome.status, outcome.attempts) == (OutcomeKind.DELIVERED, 200, 1)
    assert outcome.first_attempt_at == outcome.attempted_at == run.clock.now
    [got] = receiver.received
    assert got.verified and got.webhook_id == "evt_1" and got.body == both.payload
    assert abs(int(got.timestamp) - time.time()) < 60  # the real time, whatever the test clock


def test_3xx_is_not_followed(
    run: Run, receiver: Receiver, second_receiver: Receiver, hmac_secret: SymmetricSecret
) -> None:
    receiver.default = Reply(status=307, headers=(("Location", second_receiver.url()),))
    [outcome] = run.dispatch(delivery(receiver.url(), hmac_secret))
    assert (outcome.kind, outcome.status, outcome.error) == (
        OutcomeKind.RETRY,
        307,
        AttemptError.REDIRECT,
    )
    assert second_receiver.url() in outcome.detail
    assert len(receiver.received) == 1 and second_receiver.received == []


def test_410_disables_the_endpoint(
    run: Run, receiver: Receiver, hmac_secret: SymmetricSecret
) -> None:
    receiver.default = Reply(status=410)
    outcomes = run.dispatch(
        *(delivery(receiver.url(), hmac_secret, n=n, subject=f"s{n}") for n in (1, 2, 3))
    )
    assert [(o.kind, o.attempted) for o in outcomes] == [
        (OutcomeKind.ENDPOINT_GONE, True),
        (OutcomeKind.ENDPOINT_GONE, False),
        (OutcomeKind.ENDPOINT_GONE, False),
    ]
    assert all(o.next_attempt_at is None for o in outcomes)
    assert len(receiver.received) == 1


def test_retry_after_is_honoured(
    run: Run, receiver: Receiver, hmac_secret: SymmetricSecret
) -> None:
    date = email.utils.formatdate(int(run.clock.now) + 600, usegmt=True)
    receiver.script(
        Reply(status=503, headers=(("Retry-After", "120"),)),
        Reply(status=429, headers=(("Retry-After", date),)),
        Reply(status=503, headers=(("Retry-After", "9999999"),)),
    )
    seconds, http_date, huge = run.dispatch(
        *(delivery(receiver.url(), hmac_secret, n=n, subject=f"s{n}") for n in (1, 2, 3))
    )
    now = run.clock.now
    assert seconds.kind is OutcomeKind.RETRY and seconds.next_attempt_at == now + 120
    assert http_date.next_attempt_at == pytest.approx(now + 600, abs=1)
    assert huge.next_attempt_at == now + RetryPolicy().max_retry_after
    assert (seconds.status, http_date.status) == (503, 429)


def test_a_receiver_down_and_back_gets_every_event_once_in_subject_order(
    clock: FakeClock, receiver: Receiver, hmac_secret: SymmetricSecret
) -> None:
    """Nine events for three subjects while the receiver is down; it comes back after a few
    rounds, and its first answer is lost (it records the event, then hangs past the time-out),
    so that event arrives twice. After deduplication on webhook-id: each event once, each
    subject's events in commit order."""
    receiver.stop()
    subjects = ("dev_a", "dev_b", "dev_c")
    items = [
        delivery(receiver.url(), hmac_secret, n=n, subject=subjects[(n - 1) % 3])
        for n in range(1, 10)
    ]
    outbox = MemoryOutbox(items)

    def maybe_come_back(number: int) -> None:
        if number == 3:
            receiver.script(Reply(hang=10))  # recorded, then no answer within the time-out
            receiver.start()

    async def main() -> int:
        async with create_client(policy=LOOPBACK, timeouts=QUICK) as client:
            dispatcher = Dispatcher(
                sender=WebhookSender(client=client, timeouts=QUICK),
                on_outcome=outbox.store,
                breaker=BreakerPolicy(failure_threshold=3, cool_down=60),
                clock=clock,
                rng=random.Random(3),
            )
            return await outbox.run(dispatcher, clock, before_round=maybe_come_back)

    rounds = asyncio.run(main())
    assert set(outbox.states().values()) == {"delivered"}
    ids = receiver.ids()
    assert len(ids) > len(set(ids))  # the lost answer was re-sent
    assert all(r.verified for r in receiver.received)
    first_seen = list(dict.fromkeys(ids))
    assert sorted(first_seen) == sorted(d.event_id for d in items)
    by_event = {d.event_id: d for d in items}
    for subject in subjects:
        order = [by_event[i].sequence for i in first_seen if by_event[i].subject == subject]
        assert order == sorted(order), (subject, order)
    errors = {o.error for row in outbox.rows.values() for o in row.outcomes}
    assert {AttemptError.CONNECT, AttemptError.TIMEOUT} <= errors
    assert rounds > 3


def test_a_slow_receiver_is_bounded_and_blocks_no_other_endpoint(
    run: Run, receiver: Receiver, second_receiver: Receiver, hmac_secret: SymmetricSecret
) -> None:
    receiver.default = Reply(hang=30)
    run.max_concurrency = 2
    slow = [
        delivery(receiver.url(), hmac_secret, n=n, subject=f"s{n}", endpoint_id="slow")
        for n in (1, 2)
    ]
    fast = [
        delivery(second_receiver.url(), hmac_secret, n=n, subject=f"f{n}", endpoint_id="fast")
        for n in range(3, 9)
    ]
    began = time.perf_counter()
    outcomes = run.dispatch(*slow, *fast)
    by_endpoint = {key: [o for o in outcomes if o.endpoint_id == key] for key in ("slow", "fast")}
    assert all(o.kind is OutcomeKind.DELIVERED for o in by_endpoint["fast"])
    assert all(o.error is AttemptError.TIMEOUT for o in by_endpoint["slow"])
    # each slow attempt ends at its total time-out, far from the receiver's 30 s
    assert all(o.duration < QUICK.total + 1.0 for o in by_endpoint["slow"])
    assert time.perf_counter() - began < 2 * QUICK.total + 2.0
    # every fast outcome arrived while the first slow attempt was still waiting
    first_slow = run.arrived[outcomes.index(by_endpoint["slow"][0])]
    fast_arrivals = [run.arrived[outcomes.index(o)] for o in by_endpoint["fast"]]
    assert max(fast_arrivals) < first_slow
    assert len(second_receiver.received) == 6


def test_a_trickling_receiver_is_cut_at_the_total_time_out(
    run: Run, receiver: Receiver, hmac_secret: SymmetricSecret
) -> None:
    """A byte every 0.2 s keeps the 1 s read time-out from firing; the total one ends it."""
    receiver.default = Reply(trickle=0.2, hang=20)
    [outcome] = run.dispatch(delivery(receiver.url(), hmac_secret))
    assert outcome.error is AttemptError.TIMEOUT
    assert outcome.detail.startswith("no complete answer within 1.5 s")
    assert outcome.duration < QUICK.total + 1.0


def test_circuit_breaker_opens_then_half_opens(
    run: Run, receiver: Receiver, hmac_secret: SymmetricSecret
) -> None:
    run.breaker = BreakerPolicy(failure_threshold=3, cool_down=60)
    receiver.default = Reply(status=500)
    items = [delivery(receiver.url(), hmac_secret, n=n, subject=f"s{n}") for n in range(1, 6)]
    outcomes = run.dispatch(*items)
    assert [o.kind for o in outcomes] == [OutcomeKind.RETRY] * 3 + [OutcomeKind.DEFERRED] * 2
    opened_until = run.clock.now + 60
    assert all(
        o.deferred is DeferReason.BREAKER_OPEN
        and o.next_attempt_at == opened_until
        and o.attempts == 0
        for o in outcomes[3:]
    )
    assert outcomes[-1].breaker == BreakerState(consecutive_failures=3, open_until=opened_until)
    assert len(receiver.received) == 3

    run.clock.advance(59)  # still open: nothing is sent
    assert {o.kind for o in run.dispatch(*items)} == {OutcomeKind.DEFERRED}
    assert len(receiver.received) == 3

    run.clock.advance(1)  # half-open: one probe; it fails, so the breaker opens again
    probe, *rest = run.dispatch(*items)
    assert probe.kind is OutcomeKind.RETRY and probe.breaker.open_until == run.clock.now + 60
    assert {o.deferred for o in rest} == {DeferReason.BREAKER_OPEN}
    assert len(receiver.received) == 4

    run.clock.advance(60)  # half-open again; the receiver has recovered: the probe closes it
    receiver.default = Reply(status=200)
    outcomes = run.dispatch(*items)
    assert [o.kind for o in outcomes] == [OutcomeKind.DELIVERED] * 5
    assert outcomes[-1].breaker == BreakerState()
    assert len(receiver.received) == 9


def test_a_failed_event_holds_back_later_events_of_its_subject(
    run: Run, receiver: Receiver, hmac_secret: SymmetricSecret
) -> None:
    receiver.script(Reply(status=500))
    items = [
        delivery(receiver.url(), hmac_secret, n=1, subject="dev_a"),
        delivery(receiver.url(), hmac_secret, n=2, subject="dev_b"),
        delivery(receiver.url(), hmac_secret, n=3, subject="dev_a"),
    ]
    first, other, later = run.dispatch(*items)
    assert first.kind is OutcomeKind.RETRY and other.kind is OutcomeKind.DELIVERED
    assert later.kind is OutcomeKind.DEFERRED and later.deferred is DeferReason.SUBJECT_BLOCKED
    assert later.next_attempt_at == first.next_attempt_at and later.attempts == 0
    assert receiver.ids() == ["evt_1", "evt_2"]


def test_connect_error_when_nothing_listens(
    run: Run, receiver: Receiver, hmac_secret: SymmetricSecret
) -> None:
    url = receiver.url()
    receiver.stop()
    [outcome] = run.dispatch(delivery(url, hmac_secret, attempts=2, first_attempt_at=1.0))
    assert outcome.kind is OutcomeKind.GAVE_UP  # first attempt long before the window
    assert outcome.error is AttemptError.CONNECT and outcome.attempts == 3


def test_submit_ignores_a_delivery_already_in_hand_and_survives_a_failing_sink(
    clock: FakeClock,
    receiver: Receiver,
    hmac_secret: SymmetricSecret,
    caplog: pytest.LogCaptureFixture,
) -> None:
    stored: list[Outcome] = []

    async def flaky_store(outcome: Outcome) -> None:
        if not stored:
            stored.append(outcome)
            raise RuntimeError("database unavailable")
        stored.append(outcome)

    async def main() -> list[bool]:
        async with create_client(policy=LOOPBACK, timeouts=QUICK) as client:
            dispatcher = Dispatcher(
                sender=WebhookSender(client=client), on_outcome=flaky_store, clock=clock
            )
            first = delivery(receiver.url(), hmac_secret, n=1)
            accepted = [
                dispatcher.submit(first),
                dispatcher.submit(first),
                dispatcher.submit(delivery(receiver.url(), hmac_secret, n=2)),
            ]
            assert dispatcher.busy_endpoints() == {"ep_1"}
            await dispatcher.join()
            assert dispatcher.busy_endpoints() == frozenset()
            accepted.append(dispatcher.submit(first))  # stored or not, it may be sent again
            await dispatcher.join()
            return accepted

    with caplog.at_level(logging.ERROR, logger="keybound.events"):
        assert asyncio.run(main()) == [True, False, True, True]
    assert receiver.ids() == ["evt_1", "evt_2", "evt_1"]
    assert [o.kind for o in stored] == [OutcomeKind.DELIVERED] * 3
    assert "storing the outcome of delivery del_ep_1_1 failed" in caplog.text


def test_a_large_error_body_is_read_only_in_part(
    run: Run, receiver: Receiver, hmac_secret: SymmetricSecret
) -> None:
    receiver.default = Reply(status=500, body=b"\x00boom\n" + b"x" * 1_000_000)
    [outcome] = run.dispatch(delivery(receiver.url(), hmac_secret))
    assert outcome.error is AttemptError.HTTP_STATUS and outcome.status == 500
    assert outcome.detail.startswith("HTTP 500: boom x") and len(outcome.detail) < 220


def test_a_delivery_without_a_valid_id_or_secret_cannot_be_built(
    hmac_secret: SymmetricSecret,
) -> None:
    item = delivery("https://hooks.example/", hmac_secret)
    for change in ({"event_id": "evt.1"}, {"event_id": ""}, {"secrets": ()}):
        with pytest.raises(KeyboundError) as caught:
            dataclasses.replace(item, **change)
        assert caught.value.code is ErrorCode.MALFORMED_REQUEST


def test_aclose_stops_at_once_and_stores_nothing(
    clock: FakeClock, receiver: Receiver, hmac_secret: SymmetricSecret
) -> None:
    receiver.default = Reply(hang=30)
    stored: list[Outcome] = []

    async def store(outcome: Outcome) -> None:
        stored.append(outcome)

    async def main() -> frozenset[str]:
        async with create_client(policy=LOOPBACK) as client:
            dispatcher = Dispatcher(
                sender=WebhookSender(client=client), on_outcome=store, clock=clock
            )
            dispatcher.submit(delivery(receiver.url(), hmac_secret))
            await asyncio.to_thread(receiver.wait_for, 1)
            await dispatcher.aclose()
            return dispatcher.busy_endpoints()

    began = time.perf_counter()
    assert asyncio.run(main()) == frozenset()
    assert stored == [] and time.perf_counter() - began < 10
