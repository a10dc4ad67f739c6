"""Typed records: what the repositories return, one NamedTuple per row shape (fields in the
order of the statement's columns; storage.prepared checks it). Plain data, importable by the
domain core without SQL."""

from __future__ import annotations

from typing import NamedTuple


class OperationRecord(NamedTuple):
    id: str
    application_id: str
    type: str
    initiator: str
    state: str
    user_id: str | None
    device_id: str | None
    challenge: bytes | None
    challenge_expires_at: int | None
    challenge_issued_at: int | None
    expires_at: int
    pre_context: str | None
    wrapped_post_context: bytes | None
    required_auth_method: str | None
    config: str
    result: str | None
    created_at: int
    completed_at: int | None
    result_jws: str | None
    wrapped_tpm_credential: bytes | None


class CodeAttempt(NamedTuple):
    """A typed attempt, counted: what to compare it with and what budget remains."""

    operation_id: str
    code_hash: bytes
    attempts_left: int


class PendingRecord(NamedTuple):
    id: str
    expires_at: int
    pre_context: str | None
    required_auth_method: str | None
    type: str


class BackendPendingRecord(NamedTuple):
    config: str
    expires_at: int
    challenge: bytes | None
    challenge_expires_at: int | None
    pre_context: str | None
    required_auth_method: str | None
    type: str


class ChallengeRecord(NamedTuple):
    challenge: bytes | None
    challenge_expires_at: int | None


class RegistrationRecord(NamedTuple):
    id: str
    application_id: str
    user_id: str
    state: str
    lock_reason: str | None
    failures: int
    sw_public_key: bytes
    sw_key_id: bytes
    hw_public_key: bytes | None
    hw_algorithm: str | None
    activation_hw_status: str
    pin_key: bytes | None
    platform: str
    os_version: str
    model: str | None
    generation: int
    created_at: int
    activated_at: int
    last_authenticated_at: int | None
    updated_at: int
    hw_attestation: str | None
    hw_security_level: str | None
    hw_counter: int | None


class SupersededKey(NamedTuple):
    public_key: bytes
    superseded_at: int


class ApiKeyRecord(NamedTuple):
    id: str
    application_id: str
    secret_hash: bytes
    label: str
    created_at: int
    revoked_at: int | None


class ApiKeySecret(NamedTuple):
    application_id: str
    secret_hash: bytes
    revoked_at: int | None


class UserRecord(NamedTuple):
    id: str
    application_id: str
    external_ref: str | None
    created_at: int


class E2EKeyRecord(NamedTuple):
    key_id: str
    application_id: str
    suite: str
    public_key: bytes
    wrapped_private_key: bytes | None
    state: str
    created_at: int
    activated_at: int | None
    retired_at: int | None


class EventRecord(NamedTuple):
    seq: int
    id: str
    type: str
    application_id: str | None
    subject: str | None
    operation_id: str | None
    actor: str
    outcome: str
    code: str | None
    payload: str | None
    created_at: int
    delivery: str | None
    chain_seq: int | None
    chain_prev: bytes | None
    chain_hash: bytes | None


class ChainHead(NamedTuple):
    chain_seq: int
    chain_hash: bytes


class CheckpointRecord(NamedTuple):
    id: int
    kind: str
    chain_seq: int
    chain_hash: bytes
    jws: str
    created_at: int


class ResultKeyRecord(NamedTuple):
    kid: str
    algorithm: str
    public_jwk: str
    wrapped_private_key: bytes | None
    state: str
    created_at: int
    retired_at: int | None
    expires_at: int | None


class NoiseRecord(NamedTuple):
    window_start: int
    cause: str
    total: int


class WebhookEndpointRecord(NamedTuple):
    id: str
    application_id: str
    url: str
    description: str
    created_at: int
    updated_at: int
    disabled_at: int | None
    disabled_reason: str | None
    breaker_failures: int
    breaker_open_until: int | None


class WebhookSecretRecord(NamedTuple):
    id: str
    endpoint_id: str
    scheme: str
    wrapped_secret: bytes
    public_key: str | None
    created_at: int
    revoked_at: int | None


class DeliveryRecord(NamedTuple):
    id: int
    endpoint_id: str
    event_seq: int
    event_id: str
    subject: str
    state: str
    attempts: int
    first_attempt_at: int | None
    next_attempt_at: int
    leased_until: int | None
    last_attempt_at: int | None
    last_status: int | None
    last_error: str | None
    last_detail: str | None
    created_at: int


class AttemptRecord(NamedTuple):
    id: int
    delivery_id: int
    endpoint_id: str
    event_id: str
    attempted_at: int
    status: int | None
    error: str | None
    detail: str
    duration_ms: int


class PushProviderRecord(NamedTuple):
    application_id: str
    kind: str
    settings: str
    wrapped_credentials: bytes
    created_at: int
    updated_at: int


class PushTokenRecord(NamedTuple):
    device_id: str
    provider: str
    token: str
    updated_at: int


class NotificationRecord(NamedTuple):
    id: int
    application_id: str
    device_id: str
    operation_id: str
    state: str
    attempts: int
    next_attempt_at: int
    expires_at: int
    leased_until: int | None
    last_detail: str | None
    created_at: int
