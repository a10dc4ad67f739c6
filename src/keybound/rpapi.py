"""Relying-party API messages (the HTTP edge of ``/rp/v1``), shared by the server and any RP
client. Field names on the wire are camelCase."""

from __future__ import annotations

from datetime import datetime
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
    #: hwKeyAttestation as the activation decided it, and the security level a verified
    #: attestation vouched for (docs/protocol.md §6.5)
    hardware_key_attestation: str | None = None
    hardware_key_security_level: str | None = None
    pin_enabled: bool
    platform: Platform
    os_version: str
    model: str | None = None
    created_at: datetime
    activated_at: datetime
    last_authenticated_at: datetime | None = None


class DeviceList(Message):
    devices: list[Device]
