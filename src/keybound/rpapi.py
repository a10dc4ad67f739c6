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
    """A new (re)activation and what the user starts it with (docs/protocol.md §3.2.5): the
    link (show it as a QR code, or open it on the phone), and the typed fallback -- hint and
    code together. Secrets are shown once; the server keeps only keyed hashes."""

    operation_id: str
    user_id: str
    device_id: str
    activation_link: Annotated[str, Field(
        description="keybound://activate?app=...&token=...: show as a QR code or a link; "
        "usable until expiresAt however often the typed code is mistyped",
        examples=["keybound://activate?app=bank.example&"
                  "token=q1XTxZ4ONHPOwYJnFXHYv1mlRl8cU9mF2Ysv7aaVe0U"])]
    activation_token: Annotated[str, Field(
        description="the link's secret (32 bytes, base64url), for a relying party that "
        "builds its own link; the device sends it as activationToken",
        examples=["q1XTxZ4ONHPOwYJnFXHYv1mlRl8cU9mF2Ysv7aaVe0U"])]
    activation_code: Annotated[str, Field(
        description="the typed fallback code, valid only with activationHint",
        examples=["483920"])]
    activation_hint: Annotated[str, Field(
        description="names this activation for the typed code (not a secret); show it "
        "with the code, e.g. 7KQ2MX-483920", examples=["7KQ2MX"])]
    activation_code_attempts: Annotated[int, Field(
        description="typed attempts the code allows; then it is burnt (the link still "
        "works)", examples=[5])]
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
