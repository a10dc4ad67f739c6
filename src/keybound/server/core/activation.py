"""Activation's rules (docs/protocol.md §3.1.2): what a finish must prove, and what the
application's strategy makes of its hardware key. Pure: the service reads the operation and
writes the outcome."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from keybound.crypto import parse_public_key, verify_signature
from keybound.errors import CeremonyError, ErrorCode, InvalidSignature
from keybound.protocol import (
    NO_CONTEXT_HASH,
    ActivationFinishRequest,
    Algorithm,
    AuthMethod,
    HwKeyServerResult,
    OperationType,
    Purpose,
    transcript,
)
from keybound.server.core.appconfig import AppConfig
from keybound.server.core.ceremony import prove_possession, require_pending
from keybound.server.core.risk import risk_data
from keybound.server.core.strategy import HW_FAILURE_CODE, decide
from keybound.server.records import OperationRecord

ACTIVATION_TYPES = (OperationType.ACTIVATION.value, OperationType.REACTIVATION.value)


@dataclass(frozen=True, kw_only=True)
class VerifiedActivation:
    """A finish that proved possession, with the strategy's decision."""

    operation: OperationRecord
    software_key: bytes
    hardware_key: bytes | None  # stored only when VALID
    server_result: HwKeyServerResult
    config: AppConfig
    auth_methods: list[AuthMethod]  # what the registration will be able to use
    failure: ErrorCode | None  # the strategy refused the hardware result
    risk: dict[str, Any]

    @property
    def result(self) -> dict[str, Any]:
        """The operation's stored result (§3.2.1)."""
        return {"risk": self.risk, "failureCode": self.failure.value if self.failure else None}


def verify_activation(request: ActivationFinishRequest, *, operation: OperationRecord | None,
                      now: int) -> VerifiedActivation:
    """Guard clauses, one protocol step each (§3.1.2); raises CeremonyError, changes
    nothing."""
    op = operation
    # step 1: an activation of this device and application, started (its secret consumed
    # by a start, which gave it its challenge)
    if (op is None or op.type not in ACTIVATION_TYPES
            or op.application_id != request.application_id
            or op.device_id != request.device_id or op.challenge is None):
        raise CeremonyError("authentication failed")
    software_key = parse_public_key(request.software_public_key)
    hardware_key = (parse_public_key(request.hardware_public_key)
                    if request.hardware_public_key is not None else None)
    tbs = transcript(
        Purpose.ACTIVATION, application_id=op.application_id, device_id=op.device_id,
        operation_id=op.id, challenge=op.challenge, context_digest=NO_CONTEXT_HASH,
        software_public_key=software_key, hardware_public_key=hardware_key or b"",
        hw_key_client_status=request.hw_key_client_status.value)
    # step 2 (§4.4): proof of possession of the software key
    prove_possession(software_key, tbs, request.software_signature)
    # step 3: only a caller who proved possession learns why a well-signed request is refused
    require_pending(op, now)
    config = AppConfig.from_stored(op.config)
    methods = usable_methods(config, request.pin_key)
    if not methods:
        raise CeremonyError("this application only allows DEVICE:PIN: send a pinKey",
                            code=ErrorCode.PIN_REQUIRED)
    # step 4 (§6.1): the hardware key, judged by the operation's strategy snapshot
    server_result = hardware_result(tbs, hardware_key, request.hardware_signature)
    passed = decide(config.hw_key_validation_strategy, server_result)
    return VerifiedActivation(
        operation=op, software_key=software_key,
        hardware_key=hardware_key if server_result is HwKeyServerResult.VALID else None,
        server_result=server_result, config=config, auth_methods=methods,
        failure=None if passed else HW_FAILURE_CODE[server_result],
        risk=risk_data(client_status=request.hw_key_client_status,
                       server_result=server_result,
                       platform=request.device_profile.platform.value,
                       os_version=request.device_profile.os_version))


def hardware_result(tbs: bytes, hardware_key: bytes | None,
                    signature: bytes | None) -> HwKeyServerResult:
    """§6.1 at activation: VALID (key with valid proof of possession), INVALID (key with
    a bad or absent proof), NO_KEY_REGISTERED (no hardware key offered)."""
    if hardware_key is None:
        return HwKeyServerResult.NO_KEY_REGISTERED
    if signature is None:
        return HwKeyServerResult.INVALID
    try:
        verify_signature(public_key=hardware_key, algorithm=Algorithm.ES256, message=tbs,
                         signature=signature)
    except InvalidSignature:
        return HwKeyServerResult.INVALID
    return HwKeyServerResult.VALID


def usable_methods(config: AppConfig, pin_key: bytes | None) -> list[AuthMethod]:
    """The allowed methods a registration can use: DEVICE:PIN needs a registered PIN."""
    return [m for m in config.allowed_auth_methods
            if m is not AuthMethod.DEVICE_PIN or pin_key is not None]
