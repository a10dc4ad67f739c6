"""Small builders shared by the webhook tests."""

from __future__ import annotations

import json

from keybound.server.events.schedule import PendingDelivery
from keybound.server.events.signing import SigningSecret


def delivery(
    url: str,
    secret: SigningSecret,
    *,
    n: int = 1,
    endpoint_id: str = "ep_1",
    subject: str = "dev_1",
    attempts: int = 0,
    first_attempt_at: float | None = None,
    next_attempt_at: float = 0.0,
) -> PendingDelivery:
    payload = json.dumps(
        {"type": "device.locked", "data": {"deviceId": subject, "n": n}}, separators=(",", ":")
    ).encode()
    return PendingDelivery(
        delivery_id=f"del_{endpoint_id}_{n}",
        event_id=f"evt_{n}",
        endpoint_id=endpoint_id,
        url=url,
        secrets=(secret,),
        payload=payload,
        subject=subject,
        sequence=n,
        attempts=attempts,
        first_attempt_at=first_attempt_at,
        next_attempt_at=next_attempt_at,
    )
