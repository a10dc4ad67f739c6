"""Authentication's rules (docs/protocol.md §3.1.4, §4.5, §5, §6): the software key always,
the PIN proof for DEVICE:PIN, the hardware key as the strategy says, and what a signature by a
superseded software key means. Pure: the service reads the records and writes the outcome."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

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
    context_hash,
    pin_proof_message,
    transcript,
)
from keybound.server.core.appconfig import AppConfig
from keybound.server.core.ceremony import (
    FINISH_PURPOSE,
    bound,
    load_context,
    prove_possession,
    require_pending,
)
from keybound.server.core.risk import risk_data
from keybound.server.core.strategy import HW_FAILURE_CODE, decide
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
    failure: ErrorCode | None  # pin_invalid, or the strategy's refusal
    result: dict[str, Any]  # the operation's stored result (§3.2.1)


class SupersededKeyUsed(Exception):
    """A valid signature by a superseded software key (§4.5). ``copy``: the key was
    superseded before this operation's challenge was issued, so a copy of it is in use
    (lock); otherwise two ceremonies of the device overlapped (retryable)."""

    def __init__(self, *, operation: OperationRecord, registration: RegistrationRecord,
                 signer: Signer, copy: bool) -> None:
        super().__init__("superseded software key used")
        self.operation = operation
        self.registration = registration
        self.signer = signer
        self.copy = copy


def verify_authentication(request: AuthenticationFinishRequest, *,
                          operation: OperationRecord | None,
                          registration: RegistrationRecord | None, signer: Signer | None,
                          next_key_is_old: bool, pin_key: Callable[[bytes], bytes],
                          now: int) -> VerifiedAuthentication:
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
        FINISH_PURPOSE[op.type], application_id=op.application_id, device_id=reg.id,
        operation_id=op.id, challenge=op.challenge,
        context_digest=context_hash(load_context(op.pre_context)),
        software_public_key=request.next_software_public_key,
        auth_method=request.auth_method.value,
        hw_key_client_status=request.hw_key_client_status.value)
    # step 2: the software signature always has to verify (§6)
    prove_possession(signer.public_key, tbs, request.software_signature)
    # step 3: from here on the caller holds a key of this registration. A replayed finish is
    # refused as such; a superseded key is a copy or an overlap (§4.5).
    if op.state != OperationState.PENDING.value:
        raise CeremonyError("challenge already used", code=ErrorCode.CHALLENGE_USED)
    if signer.superseded_at is not None:
        issued = op.challenge_issued_at if op.challenge_issued_at is not None else op.created_at
        raise SupersededKeyUsed(operation=op, registration=reg, signer=signer,
                                copy=signer.superseded_at <= issued)
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
            op.required_auth_method and method.value != op.required_auth_method):
        raise CeremonyError(f"auth method {method} not allowed",
                            code=ErrorCode.AUTH_METHOD_NOT_ALLOWED)
    pin_ok = True
    if method is AuthMethod.DEVICE_PIN:
        if reg.pin_key is None:
            raise CeremonyError("no PIN registered for this device",
                                code=ErrorCode.AUTH_METHOD_NOT_ALLOWED)
        if request.pin_proof is None:
            raise CeremonyError("pinProof is required for DEVICE:PIN",
                                code=ErrorCode.PIN_REQUIRED)
        pin_ok = verify_pin_proof(pin_key=pin_key(reg.pin_key), message=pin_proof_message(tbs),
                                  proof=request.pin_proof)
    # step 5: the hardware key, judged by the strategy snapshot (§6)
    server_result = hardware_result(tbs, reg, request.hardware_signature)
    failure = (ErrorCode.PIN_INVALID if not pin_ok
               else None if decide(config.hw_key_validation_strategy, server_result)
               else HW_FAILURE_CODE[server_result])
    noted = json.loads(op.result) if op.result else {}
    risk = risk_data(client_status=request.hw_key_client_status, server_result=server_result,
                     platform=reg.platform, os_version=reg.os_version,
                     overlap=bool(noted.get("softwareKeyOverlap")))
    result = {"authMethod": method.value,
              "authLevel": None if failure else AUTH_LEVEL[method].value,
              "failureCode": failure.value if failure else None, "risk": risk}
    return VerifiedAuthentication(operation=op, registration=reg, signer=signer,
                                  next_key=next_key, server_result=server_result,
                                  failure=failure, result=result)


def hardware_result(tbs: bytes, reg: RegistrationRecord,
                    signature: bytes | None) -> HwKeyServerResult:
    """§6.1 at authentication: against the stored hardware key, if any."""
    if reg.hw_public_key is None or reg.hw_algorithm is None:
        return HwKeyServerResult.NO_KEY_REGISTERED
    if signature is None:
        return HwKeyServerResult.MISSING
    try:
        # the algorithm comes from the stored key, never from the request
        verify_signature(public_key=reg.hw_public_key, algorithm=Algorithm(reg.hw_algorithm),
                         message=tbs, signature=signature)
    except InvalidSignature:
        return HwKeyServerResult.INVALID
    return HwKeyServerResult.VALID


def clone_result() -> dict[str, Any]:
    """The result of an operation failed because a copied key signed it (§4.5)."""
    return {"failureCode": ErrorCode.SOFTWARE_KEY_CLONED.value,
            "risk": {"softwareKeyCloneSuspected": True}}
