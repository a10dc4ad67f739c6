"""Driving the real sender (services.outbox) round by round from a test: each round fans out,
claims, sends to real receivers, and stores every outcome; when nothing is due, the injected
clock jumps to the next moment something is (a retry, a breaker's cool-down), so minutes or
days pass without sleeping."""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import Callable
from typing import Any

from sqlalchemy import func, select

from keybound.rpapi import CreateWebhookEndpointRequest, EventName, SecretScheme
from keybound.server.events.delivery import DeliveryTimeouts
from keybound.server.events.schedule import BreakerPolicy
from keybound.server.events.ssrf import EndpointPolicy
from keybound.server.services import Keybound
from keybound.server.services.outbox import Outbox, OutboxSettings
from keybound.storage import tables as t
from tests.conftest import FakeClock
from tests.server.events.receiver import Receiver

#: what an operator running local receivers would allow
LOOPBACK = EndpointPolicy(
    allow_http=True,
    allowed_networks=(ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128")),
)
QUICK = OutboxSettings(
    timeouts=DeliveryTimeouts(connect=1, read=1, total=1.5), lease_margin=1.0, idle_wait=0.05
)


def next_due(kb: Keybound, now: float) -> float | None:
    """The next moment after ``now`` at which a pending delivery or wake-up may fall due (a
    retry, a lease running out, a breaker closing), or None when nothing is pending."""
    d, e, n = t.webhook_deliveries, t.webhook_endpoints, t.push_notifications
    with kb.db.read() as conn:
        moments = [
            conn.execute(
                select(func.min(d.c.next_attempt_at)).where(d.c.state == "pending")
            ).scalar(),
            conn.execute(select(func.min(d.c.leased_until)).where(d.c.state == "pending")).scalar(),
            conn.execute(
                select(func.min(e.c.breaker_open_until)).where(e.c.disabled_at.is_(None))
            ).scalar(),
            conn.execute(
                select(func.min(n.c.next_attempt_at)).where(n.c.state == "pending")
            ).scalar(),
        ]
    found = [m / 1000 for m in moments if m is not None and m / 1000 > now]
    return min(found) if found else None


def next_pending(kb: Keybound) -> int:
    """Deliveries and wake-ups not yet finished."""
    d, n = t.webhook_deliveries, t.push_notifications
    with kb.db.read() as conn:
        return sum(
            conn.execute(
                select(func.count()).select_from(table).where(table.c.state == "pending")
            ).scalar()
            or 0
            for table in (d, n)
        )


async def drive(
    outbox: Outbox,
    clock: FakeClock,
    *,
    rounds: int = 200,
    until: Callable[[], bool] | None = None,
    before_round: Callable[[int], None] | None = None,
    advance: bool = True,
) -> int:
    """Rounds until nothing is left (or ``until`` holds); returns how many it took.
    ``advance``: move the clock to the next due moment when a round found nothing (off when
    several senders share the clock: a jump would expire the leases another one holds)."""
    for number in range(rounds):
        if before_round is not None:
            before_round(number)
        worked = await outbox.step()
        await outbox.idle()
        if until is not None and until():
            return number + 1
        if worked:
            continue
        if not next_pending(outbox.kb):
            return number + 1
        due = next_due(outbox.kb, clock.now)
        if due is None or not advance:  # due now (another sender just let go of it)
            await asyncio.sleep(0.01)
            continue
        clock.now = due + 0.001
    raise AssertionError(f"the outbox still has work after {rounds} rounds")


def deliver(
    kb: Keybound, clock: FakeClock, *, settings: OutboxSettings = QUICK, **options: Any
) -> int:
    async def main() -> int:
        async with Outbox(kb, settings=settings) as outbox:
            return await drive(outbox, clock, **options)

    return asyncio.run(main())


def subscribe(
    kb: Keybound,
    app_id: str,
    receiver: Receiver,
    *,
    path: str = "/hook",
    host: str = "127.0.0.1",
    scheme: SecretScheme = SecretScheme.V1,
    types: tuple[EventName, ...] = tuple(EventName),
) -> str:
    """An endpoint at ``receiver`` (which is told the secret to verify with); its id."""
    created = kb.admin.create_webhook_endpoint(
        app_id,
        CreateWebhookEndpointRequest(
            url=receiver.url(path, host=host), event_types=list(types), secret_scheme=scheme
        ),
    )
    if created.secret.secret is not None:
        receiver.secrets = (*receiver.secrets, created.secret.secret)
    if created.secret.public_key is not None:
        receiver.public_keys = (*receiver.public_keys, created.secret.public_key)
    return created.endpoint.endpoint_id


NEVER_OPENS = BreakerPolicy(failure_threshold=10_000)
