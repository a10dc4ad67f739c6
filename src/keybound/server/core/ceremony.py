"""The steps every device ceremony shares (docs/protocol.md §4): fresh values, proof of
possession, and the state checks only a key holder may learn."""

from __future__ import annotations

import json
import secrets
import uuid

from keybound.crypto import verify_signature
from keybound.errors import CeremonyError, ErrorCode, InvalidSignature
from keybound.protocol import Algorithm, OperationContext, OperationState, OperationType, Purpose
from keybound.server.records import OperationRecord, RegistrationRecord

CHALLENGE_BYTES = 32

#: the operations a device answers with a finish, and the transcript purpose each signs
#: (§4.1.1): the stored type decides it, never the request
FINISH_PURPOSE = {
    OperationType.AUTHENTICATION.value: Purpose.AUTHENTICATION,
    OperationType.SIGNATURE.value: Purpose.SIGNATURE,
}


def new_id() -> str:
    return str(uuid.uuid4())


def new_challenge() -> bytes:
    return secrets.token_bytes(CHALLENGE_BYTES)


def dump_context(context: OperationContext | None) -> str | None:
    return None if context is None else json.dumps(context.to_wire())


def load_context(raw: str | None) -> OperationContext | None:
    return None if raw is None else OperationContext.model_validate(json.loads(raw))


def prove_possession(public_key: bytes, message: bytes, signature: bytes) -> None:
    """§4.4: a stored (or presented) key's signature over the transcript, or the one
    answer every failure before it gets too: ``authentication_failed``."""
    try:
        verify_signature(
            public_key=public_key, algorithm=Algorithm.ES256, message=message, signature=signature
        )
    except InvalidSignature as exc:
        raise CeremonyError("authentication failed") from exc


def require_pending(op: OperationRecord, now: int) -> None:
    """Revealed only after a valid signature: a used or an expired challenge."""
    if op.state != OperationState.PENDING.value:
        raise CeremonyError("challenge already used", code=ErrorCode.CHALLENGE_USED)
    if op.challenge_expires_at is None or op.challenge_expires_at <= now or op.expires_at <= now:
        raise CeremonyError("challenge expired", code=ErrorCode.CHALLENGE_EXPIRED)


def bound(op: OperationRecord, reg: RegistrationRecord, application_id: str) -> bool:
    """§3.1.4 step 1: an authentication (or signature) operation with a challenge, of this
    device, both of the application the request names."""
    return (
        op.type in FINISH_PURPOSE
        and op.challenge is not None
        and op.application_id == application_id
        and reg.application_id == application_id
        and op.device_id == reg.id
    )
