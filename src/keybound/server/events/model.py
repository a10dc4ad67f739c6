"""What an operation did, as one event row: the audit trail today, and what the outbox
delivers (docs/architecture.md). A unit of work writes its events in the transaction that
makes the change they describe, so an event exists exactly when its change does."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class Actor(StrEnum):
    DEVICE = "DEVICE"
    RELYING_PARTY = "RELYING_PARTY"
    OPERATOR = "OPERATOR"
    SYSTEM = "SYSTEM"


class Outcome(StrEnum):
    SUCCESS = "SUCCESS"
    FAILURE = "FAILURE"  # a ceremony that ran and failed (counted)
    REJECTED = "REJECTED"  # a request refused without changing anything


class EventType(StrEnum):
    """Every kind of event, on an allow-list (the audit trail's ``event`` column)."""

    # device ceremonies
    ACTIVATION_START = "activation.start"
    ACTIVATION_FINISH = "activation.finish"
    #: a wrong typed activation code, counted against its budget (payload: attemptsLeft,
    #: burnt); the answer is the same as for an unknown one
    ACTIVATION_CODE_FAILED = "activation.code_failed"
    AUTHENTICATION_START = "authentication.start"
    AUTHENTICATION_FINISH = "authentication.finish"
    AUTHENTICATION_DECLINE = "authentication.decline"
    AUTHENTICATION_PENDING = "authentication.pending"
    CLONE_DETECTED = "authentication.clone_detected"
    # relying party
    USER_CREATE = "user.create"
    USER_READ = "user.read"
    ACTIVATION_CODE_ISSUED = "activation.code_issued"
    REACTIVATION_CODE_ISSUED = "reactivation.code_issued"
    AUTHENTICATION_CREATE = "authentication.create"
    SIGNATURE_CREATE = "signature.create"
    OPERATION_READ = "operation.read"
    DEVICE_READ = "device.read"
    DEVICE_LOCK = "device.lock"
    DEVICE_UNLOCK = "device.unlock"
    DEVICE_DEACTIVATE = "device.deactivate"
    # operator
    APPLICATION_CREATE = "application.create"
    APPLICATION_UPDATE = "application.update"
    API_KEY_CREATE = "api_key.create"
    API_KEY_REVOKE = "api_key.revoke"
    E2E_KEY_CREATE = "e2e_key.create"
    E2E_KEY_ACTIVATE = "e2e_key.activate"
    E2E_KEY_RETIRE = "e2e_key.retire"
    E2E_KEY_EXPORT_PIN = "e2e_key.export_pin"
    DB_PRUNE = "db.prune"
    SIGNING_KEY_CREATE = "signing_key.create"
    SIGNING_KEY_RETIRE = "signing_key.retire"
    SIGNING_KEY_ISSUER = "signing_key.issuer"
    AUDIT_EXPORT = "audit.export"
    ADMIN_READ = "admin.read"  # a refused read only: reads are not audited
    # what a relying party hears of (webhooks and polling; docs/events.md): one row each,
    # written by the change it describes
    OPERATION_COMPLETED = "operation.completed"
    OPERATION_FAILED = "operation.failed"
    OPERATION_EXPIRED = "operation.expired"
    DEVICE_ACTIVATED = "device.activated"
    DEVICE_LOCKED = "device.locked"
    DEVICE_UNLOCKED = "device.unlocked"
    DEVICE_DEACTIVATED = "device.deactivated"
    DEVICE_CLONE_SUSPECTED = "device.clone_suspected"
    DEVICE_OPERATION_PENDING = "device.operation_pending"
    # the outbox, push tokens and notifications (audit only)
    PUSH_TOKEN_UPDATE = "device.push_token_update"  # noqa: S105 - event names
    EVENTS_READ = "events.read"
    WEBHOOK_ENDPOINT_CREATE = "webhook.endpoint_create"
    WEBHOOK_ENDPOINT_UPDATE = "webhook.endpoint_update"
    WEBHOOK_ENDPOINT_DELETE = "webhook.endpoint_delete"
    WEBHOOK_SECRET_CREATE = "webhook.secret_create"  # noqa: S105
    WEBHOOK_SECRET_REVOKE = "webhook.secret_revoke"  # noqa: S105
    WEBHOOK_REDELIVER = "webhook.redeliver"
    PUSH_PROVIDER_SET = "push.provider_set"
    PUSH_PROVIDER_REMOVE = "push.provider_remove"


#: The event types a relying party can subscribe to and poll (docs/events.md); every other
#: type is the audit trail only.
PUBLIC_TYPES: frozenset[EventType] = frozenset(
    {
        EventType.OPERATION_COMPLETED,
        EventType.OPERATION_FAILED,
        EventType.OPERATION_EXPIRED,
        EventType.DEVICE_ACTIVATED,
        EventType.DEVICE_LOCKED,
        EventType.DEVICE_UNLOCKED,
        EventType.DEVICE_DEACTIVATED,
        EventType.DEVICE_CLONE_SUSPECTED,
        EventType.DEVICE_OPERATION_PENDING,
    }
)


@dataclass(frozen=True, kw_only=True)
class Event:
    """One event row (storage/tables.py ``events``)."""

    type: EventType
    actor: Actor
    outcome: Outcome
    created_at: int  # ms
    application_id: str | None = None
    subject: str | None = None  # the device (or user, key) it is about
    operation_id: str | None = None
    code: str | None = None
    payload: dict[str, Any] | None = None
    id: str = field(default_factory=lambda: str(uuid.uuid4()))


__all__ = ["PUBLIC_TYPES", "Actor", "Event", "EventType", "Outcome"]
