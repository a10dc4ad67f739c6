"""Relying-party API messages (the HTTP edge of ``/rp/v1``), shared by the server and any RP
client. Field names on the wire are camelCase."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any

from pydantic import Field

from keybound.protocol import (
    AuthLevel,
    AuthMethod,
    DeviceState,
    Initiator,
    LockReason,
    Message,
    OperationContext,
    OperationState,
    OperationType,
    Platform,
)

ExternalRef = Annotated[str, Field(min_length=1, max_length=200)]


class CreateUserRequest(Message):
    external_ref: ExternalRef | None = None


class User(Message):
    user_id: str
    external_ref: str | None = None
    created_at: datetime


class ActivationCodeResponse(Message):
    operation_id: str
    user_id: str
    device_id: str
    activation_code: str
    expires_at: datetime
    type: OperationType


class CreateOperationRequest(Message):
    pre_operation_context: OperationContext | None = None
    post_operation_context: OperationContext | None = None
    required_auth_method: AuthMethod | None = None


class OperationResult(Message):
    auth_method: AuthMethod | None = None
    auth_level: AuthLevel | None = None
    failure_code: str | None = None


class Operation(Message):
    operation_id: str
    type: OperationType
    initiator: Initiator
    state: OperationState
    user_id: str | None = None
    device_id: str | None = None
    created_at: datetime
    expires_at: datetime
    completed_at: datetime | None = None
    result: OperationResult | None = None
    risk_data: dict[str, Any] = Field(default_factory=dict)


class Device(Message):
    device_id: str
    user_id: str
    state: DeviceState
    lock_reason: LockReason | None = None
    hardware_key: bool
    hardware_key_algorithm: str | None = None
    pin_enabled: bool
    platform: Platform
    os_version: str
    model: str | None = None
    created_at: datetime
    activated_at: datetime
    last_authenticated_at: datetime | None = None


class DeviceList(Message):
    devices: list[Device]


# --------------------------------------------------------------------------- events, webhooks
# docs/events.md: what the relying party receives; docs/webhooks.md: how it is delivered


class EventName(StrEnum):
    """The event types a relying party can subscribe to and poll (docs/events.md)."""

    OPERATION_COMPLETED = "operation.completed"
    OPERATION_FAILED = "operation.failed"
    OPERATION_EXPIRED = "operation.expired"
    DEVICE_ACTIVATED = "device.activated"
    DEVICE_LOCKED = "device.locked"
    DEVICE_UNLOCKED = "device.unlocked"
    DEVICE_DEACTIVATED = "device.deactivated"
    DEVICE_CLONE_SUSPECTED = "device.clone_suspected"
    DEVICE_OPERATION_PENDING = "device.operation_pending"


class SecretScheme(StrEnum):
    """Standard Webhooks signature schemes (docs/webhooks.md §2.2)."""

    V1 = "v1"  # HMAC-SHA256 with a shared whsec_ secret
    V1A = "v1a"  # Ed25519; the receiver holds the whpk_ public key


class DeliveryState(StrEnum):
    PENDING = "pending"
    DELIVERED = "delivered"
    GAVE_UP = "gave_up"
    GONE = "gone"  # the endpoint answered 410 and was disabled


class EventEnvelope(Message):
    """One event as webhooks and polling carry it (Standard Webhooks payload shape)."""

    id: str  # the webhook-id: deduplicate on it
    seq: int  # commit order within the server; the polling cursor
    type: EventName
    timestamp: datetime
    data: dict[str, Any]


class EventList(Message):
    events: list[EventEnvelope]
    #: pass as ``after`` next time: it moves on even when no event of yours was found
    next_cursor: int


EndpointUrl = Annotated[str, Field(min_length=1, max_length=2048)]
Description = Annotated[str, Field(max_length=200)]
EventTypes = Annotated[list[EventName], Field(min_length=1, max_length=len(EventName))]


class CreateWebhookEndpointRequest(Message):
    url: EndpointUrl
    description: Description = ""
    event_types: EventTypes
    secret_scheme: SecretScheme = SecretScheme.V1


class UpdateWebhookEndpointRequest(Message):
    url: EndpointUrl | None = None
    description: Description | None = None
    event_types: EventTypes | None = None
    enabled: bool | None = None  # true re-enables an endpoint disabled by a 410


class CreateWebhookSecretRequest(Message):
    scheme: SecretScheme = SecretScheme.V1


class WebhookSecret(Message):
    secret_id: str
    scheme: SecretScheme
    created_at: datetime
    public_key: str | None = None  # whpk_..., v1a: what the receiver verifies with


class NewWebhookSecret(WebhookSecret):
    secret: str | None = None  # whsec_..., v1 only: shown once, never again


class WebhookEndpoint(Message):
    endpoint_id: str
    url: str
    description: str
    event_types: list[EventName]
    enabled: bool
    disabled_reason: str | None = None
    disabled_at: datetime | None = None
    created_at: datetime
    updated_at: datetime
    secrets: list[WebhookSecret]


class CreatedWebhookEndpoint(Message):
    endpoint: WebhookEndpoint
    secret: NewWebhookSecret


class WebhookEndpointList(Message):
    endpoints: list[WebhookEndpoint]


class WebhookDelivery(Message):
    delivery_id: int
    event_id: str
    event_seq: int
    event_type: str
    state: DeliveryState
    attempts: int
    first_attempt_at: datetime | None = None
    next_attempt_at: datetime | None = None  # pending only
    last_attempt_at: datetime | None = None
    last_status: int | None = None
    last_error: str | None = None
    last_detail: str | None = None


class WebhookDeliveryList(Message):
    deliveries: list[WebhookDelivery]
    next_cursor: int  # pass as ``after``


class WebhookAttempt(Message):
    attempt_id: int
    delivery_id: int
    event_id: str
    attempted_at: datetime
    status: int | None = None
    error: str | None = None
    detail: str
    duration_ms: int


class WebhookAttemptList(Message):
    attempts: list[WebhookAttempt]
    next_cursor: int


class RedeliverRequest(Message):
    """One event (``eventId``) or every subscribed event created in [since, until)."""

    event_id: Annotated[str, Field(max_length=64)] | None = None
    since: datetime | None = None
    until: datetime | None = None


class RedeliverResponse(Message):
    queued: int
