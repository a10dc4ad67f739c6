"""The steps every device ceremony shares (docs/protocol.md §4): proof of possession, the
state checks only a key holder may learn, and the one statement that consumes a challenge."""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import Connection, bindparam, insert, select, update

from keybound.crypto import verify_signature
from keybound.errors import CeremonyError, ErrorCode, InvalidSignature
from keybound.protocol import Algorithm, OperationState
from keybound.storage import tables as t
from keybound.storage.prepared import Prepared, Record

OPS = t.operations

#: §4.3: the one statement that consumes a challenge (built once; it is on every finish)
_CONSUME = Prepared(
    update(OPS)
    .where(OPS.c.id == bindparam("op_id"), OPS.c.state == OperationState.PENDING.value,
           OPS.c.challenge == bindparam("challenge_"),
           OPS.c.challenge_expires_at > bindparam("now"))
    .values(state=bindparam("new_state"), completed_at=bindparam("now"),
            result=bindparam("result_"))
)


#: a ceremony's operation by id (every finish reads it first)
SELECT_OPERATION = Prepared(select(OPS).where(OPS.c.id == bindparam("id")))
#: a new operation (device-initiated start, relying-party operations and activation codes)
INSERT_OPERATION = Prepared(insert(OPS))


def prove_possession(public_key: bytes, message: bytes, signature: bytes) -> None:
    """§4.4: a stored (or presented) key's signature over the transcript, or the one
    answer every failure before it gets too: ``authentication_failed``."""
    try:
        verify_signature(public_key=public_key, algorithm=Algorithm.ES256, message=message,
                         signature=signature)
    except InvalidSignature as exc:
        raise CeremonyError("authentication failed") from exc


def require_pending(op: Record, now: int) -> None:
    """Revealed only after a valid signature: a used or an expired challenge."""
    if op.state != OperationState.PENDING.value:
        raise CeremonyError("challenge already used", code=ErrorCode.CHALLENGE_USED)
    if op.challenge_expires_at <= now or op.expires_at <= now:
        raise CeremonyError("challenge expired", code=ErrorCode.CHALLENGE_EXPIRED)


def consume(conn: Connection, op: Record, *, passed: bool, result: dict[str, Any],
            now: int) -> None:
    """§4.3: end the operation with one conditional statement; a second finish finds no
    PENDING row with this challenge and is refused."""
    consumed = _CONSUME.rowcount(conn, {
        "op_id": op.id, "challenge_": op.challenge, "now": now,
        "new_state": (OperationState.COMPLETED if passed else OperationState.FAILED).value,
        "result_": json.dumps(result)})
    if consumed != 1:
        raise CeremonyError("challenge already used", code=ErrorCode.CHALLENGE_USED)
