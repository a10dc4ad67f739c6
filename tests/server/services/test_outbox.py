"""The sender (services.outbox) end to end: events committed by real requests, fanned out,
claimed and sent to real receivers on 127.0.0.1, outcomes stored; the injected clock moves
retries and breakers along (nothing sleeps for a retry delay)."""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import func, select

from keybound.rpapi import EventName, RedeliverRequest, SecretScheme
from keybound.server.events.ssrf import EndpointPolicy
from keybound.server.services import Keybound
from keybound.server.services.outbox import Outbox
from keybound.storage import tables as t
from tests.conftest import FakeClock
from tests.helpers import RawDevice, RelyingParty
from tests.server.events.receiver import Receiver, Reply
from tests.server.services.outbox_driver import (
    LOOPBACK,
    QUICK,
    deliver,
    drive,
    subscribe,
)
from tests.server.services.test_resultkeys import jwcrypto_claims

pytestmark = pytest.mark.server


@pytest.fixture
def endpoint_policy() -> EndpointPolicy:
    return LOOPBACK


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    running = Receiver().start()
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture
def other_receiver() -> Iterator[Receiver]:
    running = Receiver().start()
    try:
        yield running
    finally:
        running.stop()


def activated(rp: RelyingParty) -> RawDevice:
    device = RawDevice(rp.http, rp.app_id)
    assert device.activate(rp.activation_code()).status_code == 200
    return device


def events_of(kb: Keybound, *types: str) -> list[tuple[int, str, str, str | None]]:
    """(seq, id, type, subject) of the public events committed, in commit order."""
    e = t.events
    with kb.db.read() as conn:
        rows = conn.execute(
            select(e.c.seq, e.c.id, e.c.type, e.c.subject)
            .where(e.c.type.in_(types or [n.value for n in EventName]))
            .order_by(e.c.seq)
        ).all()
    return [tuple(row) for row in rows]  # type: ignore[misc]


def bodies(receiver: Receiver) -> list[dict[str, Any]]:
    return [json.loads(r.body) for r in receiver.received]


def deliveries(kb: Keybound) -> list[Any]:
    with kb.db.read() as conn:
        return list(conn.execute(select(t.webhook_deliveries).order_by(t.webhook_deliveries.c.id)))


def test_an_authentication_reaches_the_endpoint_as_polling_shows_it(
    rp: RelyingParty, kb: Keybound, clock: FakeClock, receiver: Receiver
) -> None:
    subscribe(kb, rp.app_id, receiver)
    device = activated(rp)
    operation = rp.start_operation(
        device.device_id,
        postOperationContext={"content": "SECRET-POST-CONTEXT", "mimeType": "text/plain"},
    )
    assert device.authenticate(operation_id=operation["operationId"]).status_code == 200
    deliver(kb, clock)
    received = bodies(receiver)
    assert [b["type"] for b in received] == [
        "operation.completed",
        "device.activated",
        "device.operation_pending",
        "operation.completed",
    ]
    assert all(r.verified for r in receiver.received)  # the reference package's v1 check
    # the body is the event exactly as polling returns it
    polled = rp.call("GET", "/rp/v1/events", expect=200)["events"]
    assert received == polled
    assert [r.webhook_id for r in receiver.received] == [b["id"] for b in received]
    completed = received[-1]["data"]
    assert completed == {"applicationId": rp.app_id, **rp.operation(operation["operationId"])}
    assert completed["state"] == "COMPLETED" and completed["result"]["authLevel"]
    # the operation's signed result rides along: evidence the receiver verifies offline
    _, claims = jwcrypto_claims(completed["resultJws"], rp.jwks())
    assert (claims["operationId"], claims["state"], claims["authLevel"]) == (
        operation["operationId"],
        "COMPLETED",
        completed["result"]["authLevel"],
    )
    # docs/events.md: no post-operation context, no secret
    assert not any(b"SECRET-POST-CONTEXT" in r.body for r in receiver.received)
    assert {d.state for d in deliveries(kb)} == {"delivered"}


def test_v1a_is_verified_by_an_independent_ed25519_check(
    rp: RelyingParty, kb: Keybound, clock: FakeClock, receiver: Receiver
) -> None:
    subscribe(kb, rp.app_id, receiver, scheme=SecretScheme.V1A)
    assert receiver.secrets == () and receiver.public_keys  # only the whpk_ key
    activated(rp)
    deliver(kb, clock)
    assert receiver.received and all(r.verified for r in receiver.received)
    assert all(r.replied == 200 for r in receiver.received)


def test_a_receiver_down_for_minutes_gets_every_event_once_in_subject_order(
    rp: RelyingParty, kb: Keybound, clock: FakeClock, receiver: Receiver
) -> None:
    subscribe(kb, rp.app_id, receiver, types=(EventName.DEVICE_LOCKED, EventName.DEVICE_UNLOCKED))
    devices = [activated(rp) for _ in range(3)]
    receiver.stop()  # connections are refused from here on
    for _ in range(3):
        for device in devices:
            rp.call("POST", f"/rp/v1/devices/{device.device_id}/lock", expect=200)
            rp.call("POST", f"/rp/v1/devices/{device.device_id}/unlock", expect=200)
    back_at = clock.now + 10 * 60

    def maybe_back(_round: int) -> None:
        if clock.now >= back_at and receiver.port and receiver._server is None:
            receiver.start()

    deliver(kb, clock, before_round=maybe_back, rounds=400)
    assert clock.now >= back_at  # it really was down for ten minutes of retries
    expected = events_of(kb, "device.locked", "device.unlocked")
    ids = receiver.ids()
    assert set(ids) == {event_id for _seq, event_id, _type, _subject in expected}
    for device in devices:
        mine = [
            event_id for _seq, event_id, _type, subject in expected if subject == device.device_id
        ]
        first_seen = list(dict.fromkeys(i for i in ids if i in mine))
        assert first_seen == mine  # after deduplication: every event, in commit order
    assert {d.state for d in deliveries(kb)} == {"delivered"}


def test_a_slow_receiver_holds_its_time_out_and_blocks_no_other_endpoint(
    rp: RelyingParty, kb: Keybound, clock: FakeClock, receiver: Receiver, other_receiver: Receiver
) -> None:
    slow = subscribe(kb, rp.app_id, receiver, types=(EventName.DEVICE_ACTIVATED,))
    subscribe(kb, rp.app_id, other_receiver, types=(EventName.DEVICE_ACTIVATED,))
    receiver.default = Reply(hang=30)
    for _ in range(3):
        activated(rp)

    async def one_round() -> float:
        async with Outbox(kb, settings=QUICK) as outbox:
            began = time.monotonic()
            await outbox.step()
            while len(other_receiver.received) < 3:
                await asyncio.sleep(0.01)
            fast_done = time.monotonic() - began
            await outbox.idle()
            return fast_done

    fast_done = asyncio.run(one_round())
    assert fast_done < QUICK.timeouts.total  # the other endpoint did not wait for the slow
    with kb.db.read() as conn:
        attempts = list(
            conn.execute(select(t.webhook_attempts).where(t.webhook_attempts.c.endpoint_id == slow))
        )
    assert attempts and all(a.error == "timeout" for a in attempts)
    assert all(a.duration_ms <= (QUICK.timeouts.total + 0.5) * 1000 for a in attempts)
    # one attempt in flight per endpoint: three subjects, three attempts one after another
    assert len(receiver.received) == 3 == len(attempts)


def test_a_redirect_is_not_followed(
    rp: RelyingParty, kb: Keybound, clock: FakeClock, receiver: Receiver, other_receiver: Receiver
) -> None:
    subscribe(kb, rp.app_id, receiver, types=(EventName.DEVICE_ACTIVATED,))
    receiver.default = Reply(status=307, headers=(("Location", other_receiver.url()),))
    activated(rp)
    deliver(kb, clock, until=lambda: len(receiver.received) >= 2)
    assert other_receiver.received == []
    (row,) = deliveries(kb)
    assert row.state == "pending" and row.last_error == "redirect" and row.last_status == 307


def test_410_disables_the_endpoint_and_nothing_more_is_sent(
    rp: RelyingParty, kb: Keybound, clock: FakeClock, receiver: Receiver
) -> None:
    endpoint_id = subscribe(kb, rp.app_id, receiver, types=(EventName.DEVICE_ACTIVATED,))
    receiver.default = Reply(status=410)
    activated(rp)
    deliver(kb, clock)
    activated(rp)
    deliver(kb, clock)
    assert len(receiver.received) == 1
    endpoint = kb.admin.webhook_endpoint(rp.app_id, endpoint_id)
    assert not endpoint.enabled and endpoint.disabled_reason == "GONE"
    assert [d.state for d in deliveries(kb)] == ["gone"]  # the second was never fanned out


def test_retry_after_is_honoured(
    rp: RelyingParty, kb: Keybound, clock: FakeClock, receiver: Receiver
) -> None:
    subscribe(kb, rp.app_id, receiver, types=(EventName.DEVICE_ACTIVATED,))
    receiver.script(Reply(status=503, headers=(("Retry-After", "600"),)))
    activated(rp)
    asked_at = clock.now
    deliver(kb, clock)
    assert [r.replied for r in receiver.received] == [503, 200]
    (row,) = deliveries(kb)
    assert row.state == "delivered" and row.attempts == 2
    assert row.last_attempt_at >= int(asked_at * 1000) + 600_000


def test_the_breaker_opens_and_defers_without_counting_attempts(
    rp: RelyingParty, kb: Keybound, clock: FakeClock, receiver: Receiver
) -> None:
    endpoint_id = subscribe(kb, rp.app_id, receiver, types=(EventName.DEVICE_ACTIVATED,))
    receiver.default = Reply(status=500)
    activated(rp)
    deliver(kb, clock, until=lambda: len(receiver.received) >= 5)
    with kb.db.read() as conn:
        endpoint = conn.execute(
            select(t.webhook_endpoints).where(t.webhook_endpoints.c.id == endpoint_id)
        ).one()
    assert endpoint.breaker_failures == 5
    assert endpoint.breaker_open_until >= clock.now * 1000  # open: nothing is claimed now
    receiver.default = Reply()
    deliver(kb, clock)  # after the cool-down a probe goes, and succeeds
    (row,) = deliveries(kb)
    assert row.state == "delivered" and row.attempts == 6
    with kb.db.read() as conn:
        endpoint = conn.execute(
            select(t.webhook_endpoints).where(t.webhook_endpoints.c.id == endpoint_id)
        ).one()
    assert endpoint.breaker_failures == 0 and endpoint.breaker_open_until is None


def test_dns_that_turns_to_loopback_after_registration_is_refused_at_connect(
    rp: RelyingParty, kb: Keybound, clock: FakeClock, receiver: Receiver
) -> None:
    public = ipaddress.ip_address("93.184.215.14")
    answers = {"hooks.example.com": [public]}

    def resolver(host: str, port: int) -> list[Any]:
        return answers.get(host) or [ipaddress.ip_address(host)]

    kb.webhooks.policy = EndpointPolicy(allow_http=True)  # loopback not allowed
    kb.webhooks.resolver = resolver
    # registered while the name resolves to a public address ...
    subscribe(
        kb, rp.app_id, receiver, host="hooks.example.com", types=(EventName.DEVICE_ACTIVATED,)
    )
    answers["hooks.example.com"] = [ipaddress.ip_address("127.0.0.1")]  # ... then rebinds
    activated(rp)
    deliver(kb, clock, until=lambda: bool(deliveries(kb)[0].attempts))
    assert receiver.received == []
    (row,) = deliveries(kb)
    assert row.last_error == "policy_refused" and row.state == "pending"


def test_two_senders_never_send_one_delivery_at_once(
    rp: RelyingParty, kb: Keybound, clock: FakeClock, receiver: Receiver
) -> None:
    subscribe(kb, rp.app_id, receiver, types=(EventName.DEVICE_LOCKED, EventName.DEVICE_UNLOCKED))
    devices = [activated(rp) for _ in range(4)]
    for device in devices:
        for _ in range(3):
            rp.call("POST", f"/rp/v1/devices/{device.device_id}/lock", expect=200)
            rp.call("POST", f"/rp/v1/devices/{device.device_id}/unlock", expect=200)
    receiver.default = Reply(hang=0.02)  # long enough for the two to overlap

    sent: dict[str, int] = {"one": 0, "two": 0}

    def counting(outbox: Outbox, name: str) -> None:
        claim = outbox.claim

        def claimed() -> list[Any]:
            got = claim()
            sent[name] += len(got)
            return got

        outbox.claim = claimed  # type: ignore[method-assign]

    async def both() -> None:
        few = dataclasses.replace(QUICK, per_endpoint=4)  # neither can take everything
        async with Outbox(kb, settings=few) as one, Outbox(kb, settings=few) as two:
            counting(one, "one")
            counting(two, "two")
            await asyncio.gather(
                drive(one, clock, advance=False, rounds=2000),
                drive(two, clock, advance=False, rounds=2000),
            )

    asyncio.run(both())
    assert sent["one"] and sent["two"]  # both sent: the claims really competed
    expected = [
        event_id for _s, event_id, _t, _d in events_of(kb, "device.locked", "device.unlocked")
    ]
    ids = receiver.ids()
    assert sorted(ids) == sorted(expected)  # each exactly once: no answer was lost
    for device in devices:
        mine = [
            e
            for _s, e, _t, subject in events_of(kb, "device.locked", "device.unlocked")
            if subject == device.device_id
        ]
        assert [i for i in ids if i in mine] == mine


def test_redelivery_sends_the_same_event_again_with_its_id(
    rp: RelyingParty, kb: Keybound, clock: FakeClock, receiver: Receiver
) -> None:
    endpoint_id = subscribe(kb, rp.app_id, receiver, types=(EventName.DEVICE_ACTIVATED,))
    activated(rp)
    activated(rp)
    deliver(kb, clock)
    first, second = receiver.ids()
    assert kb.admin.redeliver(rp.app_id, endpoint_id, RedeliverRequest(event_id=first)).queued == 1
    deliver(kb, clock)
    assert receiver.ids() == [first, second, first]
    body_of = {r.webhook_id: r.body for r in receiver.received}
    assert receiver.received[2].body == body_of[first]  # the same bytes, signed anew
    window = RedeliverRequest.model_validate(
        {"since": "2000-01-01T00:00:00Z", "until": "2100-01-01T00:00:00Z"}
    )
    assert kb.admin.redeliver(rp.app_id, endpoint_id, window).queued == 2
    deliver(kb, clock)
    assert receiver.ids()[3:] == [first, second]


def test_an_application_without_endpoints_marks_nothing_for_delivery(
    rp: RelyingParty, kb: Keybound, make_rp: Any, receiver: Receiver
) -> None:
    other = make_rp()
    subscribe(kb, other.app_id, receiver, types=(EventName.DEVICE_LOCKED,))
    device = activated(rp)
    rp.call("POST", f"/rp/v1/devices/{device.device_id}/lock", expect=200)
    with kb.db.read() as conn:
        marks = conn.execute(
            select(t.events.c.type, t.events.c.delivery).where(
                t.events.c.application_id == rp.app_id
            )
        ).all()
    assert marks and {mark for _type, mark in marks} == {None}


def test_only_subscribed_types_are_marked_and_sent(
    rp: RelyingParty, kb: Keybound, clock: FakeClock, receiver: Receiver
) -> None:
    subscribe(kb, rp.app_id, receiver, types=(EventName.DEVICE_LOCKED,))
    device = activated(rp)
    rp.call("POST", f"/rp/v1/devices/{device.device_id}/lock", expect=200)
    deliver(kb, clock)
    assert [b["type"] for b in bodies(receiver)] == ["device.locked"]
    with kb.db.read() as conn:
        marks = dict(
            conn.execute(
                select(t.events.c.type, t.events.c.delivery).where(
                    t.events.c.application_id == rp.app_id,
                    t.events.c.type.in_(["device.activated", "device.locked"]),
                )
            ).all()
        )
    assert marks == {"device.activated": None, "device.locked": "FANNED"}


def test_retention_prunes_the_finished_log_and_keeps_what_is_pending(
    rp: RelyingParty, kb: Keybound, clock: FakeClock, receiver: Receiver, other_receiver: Receiver
) -> None:
    from keybound.server.services.retention import Retention

    subscribe(kb, rp.app_id, receiver, types=(EventName.DEVICE_ACTIVATED,))
    subscribe(kb, rp.app_id, other_receiver, types=(EventName.DEVICE_ACTIVATED,))
    other_receiver.default = Reply(status=500)
    activated(rp)
    deliver(kb, clock, until=lambda: len(other_receiver.received) >= 2)
    clock.advance(31 * 86400)
    pruned = kb.admin.prune(Retention(webhook_log_days=30))
    assert pruned.webhook_log == 1 + 1 + 2  # one delivered, its attempt, two failed attempts
    assert [d.state for d in deliveries(kb)] == ["pending"]


def test_retention_never_deletes_an_event_still_owed_to_an_endpoint(
    rp: RelyingParty, kb: Keybound, clock: FakeClock, receiver: Receiver, other_receiver: Receiver
) -> None:
    """The sender builds each request from the event row: the audit trail's prune stops
    before the first event not yet fanned out or with a delivery pending (docs/audit.md:
    retention), so pruning while a receiver is down loses it nothing."""
    from keybound.server.services.retention import Retention

    subscribe(kb, rp.app_id, receiver, types=(EventName.DEVICE_ACTIVATED,))
    subscribe(kb, rp.app_id, other_receiver, types=(EventName.DEVICE_ACTIVATED,))
    other_receiver.default = Reply(status=503)
    activated(rp)
    deliver(kb, clock, until=lambda: len(other_receiver.received) >= 1)
    activated(rp)  # its device.activated is not even fanned out: no sender runs now
    (first_seq, first, _, _), (_, second, _, _) = events_of(kb, "device.activated")
    with kb.db.read() as conn:
        marks = dict(
            conn.execute(
                select(t.events.c.id, t.events.c.delivery).where(t.events.c.id.in_([first, second]))
            ).all()
        )
        older = conn.execute(
            select(func.count()).select_from(t.events).where(t.events.c.seq < first_seq)
        ).scalar()
    assert marks == {first: "FANNED", second: "PENDING"}
    assert {d.state for d in deliveries(kb)} == {"delivered", "pending"}
    assert older

    clock.advance(2 * 86400)  # every event is past the retention below
    pruned = kb.admin.prune(Retention(events_days=1))
    assert pruned.events == older  # the prefix before the first event still owed
    assert [row[1] for row in events_of(kb, "device.activated")] == [first, second]
    assert kb.admin.audit_verify().entries  # what stays still verifies

    other_receiver.default = Reply(status=200)  # back up: everything owed arrives
    deliver(kb, clock)
    assert sorted(
        json.loads(r.body)["id"] for r in other_receiver.received if r.replied == 200
    ) == sorted([first, second])
    clock.advance(2 * 86400)
    kb.admin.prune(Retention(events_days=1))
    assert events_of(kb, "device.activated") == []  # delivered: now retention applies
    assert kb.admin.audit_verify().entries
