"""What a relying party receives for an event: the envelope and its ``data`` (docs/events.md).

One shape for webhooks and polling, in the Standard Webhooks payload form::

    {"id": "<event id>", "seq": 1234, "type": "operation.completed",
     "timestamp": "2026-12-08T10:03:41.535Z", "data": {...}}

``data`` holds ids, states and risk as the relying party sees them -- never a secret, a
push token, or an operation's post-operation context. An operation event's ``data`` is the
operation exactly as ``GET /rp/v1/operations/{id}`` returns it (risk filtered by the
operation's ``enabledRiskData``); a device event's is captured when it is emitted. Pure: the
outbox reads the rows and calls these.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any, Final

from pydantic import TypeAdapter

from keybound.protocol import OperationState
from keybound.rpapi import EventEnvelope, EventName
from keybound.server.clock import ms_to_dt
from keybound.server.events.model import EventType
from keybound.server.records import EventRecord

#: the operation events, and the state each one leaves the operation in
OPERATION_EVENTS: Final = {
    EventType.OPERATION_COMPLETED.value: OperationState.COMPLETED,
    EventType.OPERATION_FAILED.value: OperationState.FAILED,
    EventType.OPERATION_EXPIRED.value: OperationState.EXPIRED,
}


_DATETIME: Final = TypeAdapter(datetime)


def timestamp(ms: int) -> str:
    """A stored time as every keybound timestamp is written on the wire (pydantic's)."""
    text: str = _DATETIME.dump_python(ms_to_dt(ms), mode="json")
    return text


def device_data(
    *, device_id: str, user_id: str, state: str, lock_reason: str | None = None, **extra: Any
) -> dict[str, Any]:
    """A device event's ``data``, captured when it is emitted (stored as its payload)."""
    data: dict[str, Any] = {"deviceId": device_id, "userId": user_id, "state": state}
    if lock_reason is not None:
        data["lockReason"] = lock_reason
    return {**data, **extra}


def event_data(record: EventRecord, operation: dict[str, Any] | None) -> dict[str, Any]:
    """``data`` of a public event. ``operation``: for an operation event, the operation as
    the relying party API shows it (None once retention removed it: then only its ids and
    the state the event left it in)."""
    base: dict[str, Any] = {"applicationId": record.application_id}
    if record.type in OPERATION_EVENTS:
        if operation is not None:
            return {**base, **operation}
        gone: dict[str, Any] = {
            "operationId": record.operation_id,
            "state": OPERATION_EVENTS[record.type].value,
        }
        if record.subject:
            gone["deviceId"] = record.subject
        return {**base, **gone}
    stored = json.loads(record.payload) if record.payload else {}
    return {**base, **stored}


def envelope(record: EventRecord, operation: dict[str, Any] | None) -> EventEnvelope:
    return EventEnvelope(
        id=record.id,
        seq=record.seq,
        type=EventName(record.type),
        timestamp=ms_to_dt(record.created_at),
        data=event_data(record, operation),
    )


def body(event: EventEnvelope) -> bytes:
    """The bytes sent (and signed): the envelope's JSON, the same for every attempt and the
    same as polling returns."""
    return event.model_dump_json(by_alias=True, exclude_none=True).encode()


__all__ = ["OPERATION_EVENTS", "body", "device_data", "envelope", "event_data", "timestamp"]
