"""Authentication's rules (docs/protocol.md §3.1.4, §4.5, §5, §6): the software key always,
the PIN proof for DEVICE:PIN, the hardware key as the strategy says, and what a signature by a
superseded software key means. Pure: the service reads the records and writes the outcome."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from keybound.attestation import AttestationFailed, Reason
from keybound.crypto import key_id, parse_public_key, verify_pin_proof, verify_signature
from keybound.errors import CeremonyError, ErrorCode, InvalidSignature, MalformedRequest
from keybound.protocol import (
    AUTH_LEVEL,
    Algorithm,
    AuthenticationFinishRequest,
    AuthMethod,
    DeviceState,
    HwKeyServerResult,
    OperationState,
    RiskAttribute,
    context_hash,
    pin_proof_message,
    transcript,
)
from keybound.server.core.appconfig import AppConfig
from keybound.server.core.attestation import check_assertion
from keybound.server.core.ceremony import (
    FINISH_PURPOSE,
    bound,
    load_context,
    prove_possession,
    require_pending,
)
from keybound.server.core.risk import NOT_PROVIDED, risk_data
from keybound.server.core.strategy import decide, finding
from keybound.server.records import OperationRecord, RegistrationRecord

#: the note a pending operation keeps after an overlapping finish (§4.5)
OVERLAP_NOTE = {"softwareKeyOverlap": True}


@dataclass(frozen=True, kw_only=True)
class Signer:
    """The stored key a finish names (by ``softwareKeyId``)."""

    key_id: bytes
    public_key: bytes
    superseded_at: int | None = None  # None: the registration's current key


@dataclass(frozen=True, kw_only=True)
class VerifiedAuthentication:
    """A finish that proved possession, with every decision made (§3.1.4 steps 1-5)."""

    operation: OperationRecord
    registration: RegistrationRecord
    signer: Signer
    next_key: bytes
    server_result: HwKeyServerResult
    hardware_counter: int | None  # an App Attest key's new counter, stored on success (§4.6)
    failure: ErrorCode | None  # pin_invalid, or the strategy's refusal
    result: dict[str, Any]  # the operation's stored result (§3.2.1)


class SupersededKeyUsed(Exception):
    """A valid signature by a superseded software key (§4.5). ``copy``: the key was
    superseded before this operation's challenge was issued, so a copy of it is in use
    (lock); otherwise two ceremonies of the device overlapped (retryable)."""

    def __init__(
        self,
        *,
        operation: OperationRecord,
        registration: RegistrationRecord,
        signer: Signer,
        copy: bool,
    ) -> None:
        super().__init__("superseded software key used")
        self.operation = operation
        self.registration = registration
        self.signer = signer
        self.copy = copy


def verify_authentication(
    request: AuthenticationFinishRequest,
    *,
    operation: OperationRecord | None,
    registration: RegistrationRecord | None,
    signer: Signer | None,
    next_key_is_old: bool,
    pin_key: Callable[[bytes], bytes],
    now: int,
) -> VerifiedAuthentication:
    """Guard clauses, one protocol step each (§3.1.4); raises CeremonyError (or
    SupersededKeyUsed), changes nothing. ``pin_key`` opens the registration's wrapped PIN key
    (only called for DEVICE:PIN)."""
    op, reg = operation, registration
    # step 1: operation, device and application belong together
    if signer is None or op is None or reg is None or not bound(op, reg, request.application_id):
        raise CeremonyError("authentication failed")
    assert op.challenge is not None  # bound()
    # §4.1.1: a signature operation's transcript is of its own purpose, and its context
    # hash is the hash of the data to sign, so a device signs exactly what it was shown
    tbs = transcript(
        FINISH_PURPOSE[op.type],
        application_id=op.application_id,
        device_id=reg.id,
        operation_id=op.id,
        challenge=op.challenge,
        context_digest=context_hash(load_context(op.pre_context)),
        software_public_key=request.next_software_public_key,
        auth_method=request.auth_method.value,
        hw_key_client_status=request.hw_key_client_status.value,
    )
    # step 2: the software signature always has to verify (§6)
    prove_possession(signer.public_key, tbs, request.software_signature)
    # step 3: from here on the caller holds a key of this registration. A replayed finish is
    # refused as such; a superseded key is a copy or an overlap (§4.5).
    if op.state != OperationState.PENDING.value:
        raise CeremonyError("challenge already used", code=ErrorCode.CHALLENGE_USED)
    if signer.superseded_at is not None:
        issued = op.challenge_issued_at if op.challenge_issued_at is not None else op.created_at
        raise SupersededKeyUsed(
            operation=op, registration=reg, signer=signer, copy=signer.superseded_at <= issued
        )
    require_pending(op, now)
    if reg.state == DeviceState.LOCKED.value:
        raise CeremonyError("device is locked", code=ErrorCode.DEVICE_LOCKED)
    if reg.state == DeviceState.DEACTIVATED.value:
        raise CeremonyError("device is deactivated", code=ErrorCode.DEVICE_INACTIVE)
    next_key = parse_public_key(request.next_software_public_key)
    if key_id(next_key) in (reg.sw_key_id, signer.key_id) or next_key_is_old:
        raise MalformedRequest("nextSoftwarePublicKey must be a new key")
    config = AppConfig.from_stored(op.config)
    # step 4: auth method allowed by the application and by the operation (§5)
    method = request.auth_method
    if method not in config.allowed_auth_methods or (
        op.required_auth_method and method.value != op.required_auth_method
    ):
        raise CeremonyError(
            f"auth method {method} not allowed", code=ErrorCode.AUTH_METHOD_NOT_ALLOWED
        )
    pin_ok = True
    if method is AuthMethod.DEVICE_PIN:
        if reg.pin_key is None:
            raise CeremonyError(
                "no PIN registered for this device", code=ErrorCode.AUTH_METHOD_NOT_ALLOWED
            )
        if request.pin_proof is None:
            raise CeremonyError("pinProof is required for DEVICE:PIN", code=ErrorCode.PIN_REQUIRED)
        pin_ok = verify_pin_proof(
            pin_key=pin_key(reg.pin_key), message=pin_proof_message(tbs), proof=request.pin_proof
        )
    # step 5: the hardware key, judged by the strategy snapshot and the key's recorded
    # attestation (§6.1, §6.5)
    proof = hardware_result(tbs, reg, request.hardware_signature, config)
    failure = (
        ErrorCode.PIN_INVALID
        if not pin_ok
        else decide(
            config.hw_key_validation_strategy, finding(proof.server_result, reg.hw_attestation)
        )
    )
    noted = json.loads(op.result) if op.result else {}
    risk = risk_data(
        client_status=request.hw_key_client_status,
        server_result=proof.server_result,
        platform=reg.platform,
        os_version=reg.os_version,
        overlap=bool(noted.get("softwareKeyOverlap")),
        attestation=recorded_attestation(reg),
        hw_key_clone_suspected=proof.clone_suspected,
    )
    result = {
        "authMethod": method.value,
        "authLevel": None if failure else AUTH_LEVEL[method].value,
        "failureCode": failure.value if failure else None,
        "risk": risk,
    }
    return VerifiedAuthentication(
        operation=op,
        registration=reg,
        signer=signer,
        next_key=next_key,
        server_result=proof.server_result,
        hardware_counter=proof.counter,
        failure=failure,
        result=result,
    )


@dataclass(frozen=True, kw_only=True)
class HardwareProof:
    server_result: HwKeyServerResult
    counter: int | None = None  # an App Attest assertion's counter, when it verified
    clone_suspected: bool = False  # an App Attest assertion's counter did not increase


_NO_KEY = HardwareProof(server_result=HwKeyServerResult.NO_KEY_REGISTERED)
_MISSING = HardwareProof(server_result=HwKeyServerResult.MISSING)
_INVALID = HardwareProof(server_result=HwKeyServerResult.INVALID)
_VALID = HardwareProof(server_result=HwKeyServerResult.VALID)


def hardware_result(
    tbs: bytes, reg: RegistrationRecord, signature: bytes | None, config: AppConfig
) -> HardwareProof:
    """§6.1 at authentication: against the stored hardware key, if any, in the kind of proof
    the stored key makes (the algorithm comes from the stored key, never from the request):
    an ES256 signature, or an App Attest assertion whose counter must increase (§4.6)."""
    if reg.hw_public_key is None or reg.hw_algorithm is None:
        return _NO_KEY
    if signature is None:
        return _MISSING
    if reg.hw_algorithm == Algorithm.APPLE_APP_ATTEST.value:
        return _assertion_result(tbs, reg, signature, config)
    try:
        verify_signature(
            public_key=reg.hw_public_key,
            algorithm=Algorithm(reg.hw_algorithm),
            message=tbs,
            signature=signature,
        )
    except InvalidSignature:
        return _INVALID
    return _VALID


def _assertion_result(
    tbs: bytes, reg: RegistrationRecord, assertion: bytes, config: AppConfig
) -> HardwareProof:
    """§4.6: a counter that does not increase over a fresh, single-use challenge is no
    replay; the key cannot leave the Secure Enclave, so it is reported (a clone signal) and
    judged as an invalid proof, not a lock."""
    assert reg.hw_public_key is not None
    try:
        counter = check_assertion(
            assertion,
            transcript=tbs,
            public_key=reg.hw_public_key,
            previous_counter=reg.hw_counter or 0,
            config=config,
        )
    except AttestationFailed as refused:
        return HardwareProof(
            server_result=HwKeyServerResult.INVALID,
            clone_suspected=refused.reason is Reason.COUNTER_NOT_INCREASING,
        )
    return HardwareProof(server_result=HwKeyServerResult.VALID, counter=counter)


def recorded_attestation(reg: RegistrationRecord) -> dict[str, Any]:
    """The registration's hwKeyAttestation (§6.5), as its activation decided it."""
    if reg.hw_attestation is None:
        return NOT_PROVIDED
    recorded: dict[str, Any] = {RiskAttribute.HW_KEY_ATTESTATION.value: reg.hw_attestation}
    if reg.hw_security_level is not None:
        recorded[RiskAttribute.HW_KEY_SECURITY_LEVEL.value] = reg.hw_security_level
    return recorded


def clone_result() -> dict[str, Any]:
    """The result of an operation failed because a copied key signed it (§4.5)."""
    return {
        "failureCode": ErrorCode.SOFTWARE_KEY_CLONED.value,
        "risk": {"softwareKeyCloneSuspected": True},
    }
