"""Activation's rules (docs/protocol.md §3.1.2): what a finish must prove, and what the
application's strategy makes of its hardware key. Pure: the service reads the operation and
writes the outcome."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from keybound.attestation import AttestationFailed
from keybound.crypto import parse_public_key, verify_signature
from keybound.errors import CeremonyError, ErrorCode, InvalidSignature
from keybound.protocol import (
    NO_CONTEXT_HASH,
    ActivationFinishRequest,
    Algorithm,
    AttestationMode,
    AuthMethod,
    HwKeyServerResult,
    OperationType,
    Purpose,
    transcript,
)
from keybound.server.clock import ms_to_dt
from keybound.server.core.appconfig import AppConfig
from keybound.server.core.attestation import (
    AttestationOutcome,
    Ceremony,
    TpmCredentialState,
    TrustMaterial,
    app_attest_key,
    check_assertion,
    judge,
    mode_of,
)
from keybound.server.core.ceremony import prove_possession, require_pending
from keybound.server.core.risk import risk_data
from keybound.server.core.strategy import decide, finding
from keybound.server.records import OperationRecord

ACTIVATION_TYPES = (OperationType.ACTIVATION.value, OperationType.REACTIVATION.value)


@dataclass(frozen=True, kw_only=True)
class VerifiedActivation:
    """A finish that proved possession, with the attestation's outcome and the decision."""

    operation: OperationRecord
    software_key: bytes
    hardware_key: bytes | None  # stored only when VALID
    hardware_algorithm: Algorithm | None  # how the stored key proves possession (§4.6)
    hardware_counter: int | None  # an App Attest key's assertion counter
    server_result: HwKeyServerResult
    attestation: AttestationOutcome
    config: AppConfig
    auth_methods: list[AuthMethod]  # what the registration will be able to use
    failure: ErrorCode | None  # the decision table refused the hardware finding
    risk: dict[str, Any]

    @property
    def result(self) -> dict[str, Any]:
        """The operation's stored result (§3.2.1)."""
        return {"risk": self.risk, "failureCode": self.failure.value if self.failure else None}


def verify_activation(
    request: ActivationFinishRequest,
    *,
    operation: OperationRecord | None,
    now: int,
    trust: TrustMaterial,
    tpm_state: Callable[[], TpmCredentialState | None] = lambda: None,
) -> VerifiedActivation:
    """Guard clauses, one protocol step each (§3.1.2); raises CeremonyError, changes
    nothing. ``trust`` and ``tpm_state`` (the start's TPM credential, unwrapped on demand)
    serve the attestation (§6.5)."""
    op = operation
    # step 1: an activation of this device and application, started (its secret consumed
    # by a start, which gave it its challenge)
    if (
        op is None
        or op.type not in ACTIVATION_TYPES
        or op.application_id != request.application_id
        or op.device_id != request.device_id
        or op.challenge is None
    ):
        raise CeremonyError("authentication failed")
    software_key = parse_public_key(request.software_public_key)
    hardware_key = (
        parse_public_key(request.hardware_public_key)
        if request.hardware_public_key is not None
        else None
    )
    tbs = transcript(
        Purpose.ACTIVATION,
        application_id=op.application_id,
        device_id=op.device_id,
        operation_id=op.id,
        challenge=op.challenge,
        context_digest=NO_CONTEXT_HASH,
        software_public_key=software_key,
        hardware_public_key=hardware_key or b"",
        hw_key_client_status=request.hw_key_client_status.value,
    )
    # step 2 (§4.4): proof of possession of the software key
    prove_possession(software_key, tbs, request.software_signature)
    # step 3: only a caller who proved possession learns why a well-signed request is refused
    require_pending(op, now)
    config = AppConfig.from_stored(op.config)
    methods = usable_methods(config, request.pin_key)
    if not methods:
        raise CeremonyError(
            "this application only allows DEVICE:PIN: send a pinKey", code=ErrorCode.PIN_REQUIRED
        )
    # step 4 (§6.5): the attestation, under the platform's mode and the application's policy
    platform = request.device_profile.platform
    ceremony = (
        None
        if hardware_key is None
        else Ceremony(
            config=config,
            platform=platform,
            application_id=op.application_id,
            device_id=op.device_id,
            operation_id=op.id,
            challenge=op.challenge,
            hardware_key=hardware_key,
            now=ms_to_dt(now),
            trust=trust,
            tpm_state=tpm_state,
        )
    )
    attestation = judge(request.attestation, ceremony=ceremony, platform=platform, config=config)
    # step 5 (§6.1, §4.6): the hardware key's proof of possession, in the key's own kind
    app_attest = app_attest_key(request.attestation, config, platform)
    server_result, counter = hardware_result(
        tbs, hardware_key, request.hardware_signature, app_attest=config if app_attest else None
    )
    # step 6 (§6.1): the decision table, by the operation's snapshot
    failure = decide(
        config.hw_key_validation_strategy,
        finding(server_result, attestation.value),
        attestation_required=mode_of(config, platform) is AttestationMode.REQUIRED,
    )
    valid = server_result is HwKeyServerResult.VALID
    return VerifiedActivation(
        operation=op,
        software_key=software_key,
        hardware_key=hardware_key if valid else None,
        hardware_algorithm=(
            None if not valid else Algorithm.APPLE_APP_ATTEST if app_attest else Algorithm.ES256
        ),
        hardware_counter=counter,
        server_result=server_result,
        attestation=attestation,
        config=config,
        auth_methods=methods,
        failure=failure,
        risk=risk_data(
            client_status=request.hw_key_client_status,
            server_result=server_result,
            platform=request.device_profile.platform.value,
            os_version=request.device_profile.os_version,
            attestation=attestation.risk(),
        ),
    )


def hardware_result(
    tbs: bytes,
    hardware_key: bytes | None,
    signature: bytes | None,
    *,
    app_attest: AppConfig | None = None,
) -> tuple[HwKeyServerResult, int | None]:
    """§6.1 at activation: VALID (key with valid proof of possession), INVALID (key with
    a bad or absent proof), NO_KEY_REGISTERED (no hardware key offered). The proof is an
    ES256 signature over the transcript, or, for an App Attest key (``app_attest``: the
    configuration naming its App ID), an assertion over it (§4.6), whose counter is
    returned."""
    if hardware_key is None:
        return HwKeyServerResult.NO_KEY_REGISTERED, None
    if signature is None:
        return HwKeyServerResult.INVALID, None
    if app_attest is not None:
        try:  # the attestation's counter is 0, so the first assertion's is above it
            counter = check_assertion(
                signature,
                transcript=tbs,
                public_key=hardware_key,
                previous_counter=0,
                config=app_attest,
            )
        except AttestationFailed:
            return HwKeyServerResult.INVALID, None
        return HwKeyServerResult.VALID, counter
    try:
        verify_signature(
            public_key=hardware_key, algorithm=Algorithm.ES256, message=tbs, signature=signature
        )
    except InvalidSignature:
        return HwKeyServerResult.INVALID, None
    return HwKeyServerResult.VALID, None


def usable_methods(config: AppConfig, pin_key: bytes | None) -> list[AuthMethod]:
    """The allowed methods a registration can use: DEVICE:PIN needs a registered PIN."""
    return [
        m
        for m in config.allowed_auth_methods
        if m is not AuthMethod.DEVICE_PIN or pin_key is not None
    ]
