"""Operations: activations, reactivations and authentications, from the moment they are
created to their end (docs/protocol.md §3.2.3). The statements of the hot path are built once
(storage.prepared)."""

from __future__ import annotations

import json
from typing import Any, Final

from sqlalchemy import Connection, bindparam, func, insert, or_, select, text, update

from keybound.protocol import Initiator, OperationState, OperationType
from keybound.server.records import (
    BackendPendingRecord,
    ChallengeRecord,
    OperationRecord,
    PendingRecord,
)
from keybound.storage import tables as t
from keybound.storage.prepared import Prepared

OPS = t.operations
#: what a device answers after a start: an authentication or a signature (§3.2.6)
_ANSWERED = or_(
    OPS.c.type == OperationType.AUTHENTICATION.value, OPS.c.type == OperationType.SIGNATURE.value
)


_SELECT: Final = Prepared(select(OPS).where(OPS.c.id == bindparam("id")), row=OperationRecord)
_SELECT_OF_APP: Final = Prepared(
    select(OPS).where(
        OPS.c.id == bindparam("id"), OPS.c.application_id == bindparam("application_id")
    ),
    row=OperationRecord,
)
_INSERT: Final = Prepared(insert(OPS))
#: §4.3: the one statement that consumes a challenge (it is on every finish); a
#: post-operation context is erased with it, released or not. It stores the signed result,
#: and an operation already given one (signed EXPIRED on a read) is never ended again.
_CONSUME: Final = Prepared(
    update(OPS)
    .where(
        OPS.c.id == bindparam("op_id"),
        OPS.c.state == OperationState.PENDING.value,
        OPS.c.challenge == bindparam("challenge_"),
        OPS.c.challenge_expires_at > bindparam("now"),
        OPS.c.result_jws.is_(None),
    )
    .values(
        state=bindparam("new_state"),
        completed_at=bindparam("now"),
        result=bindparam("result_"),
        wrapped_post_context=None,
        result_jws=bindparam("jws"),
    )
)
#: §3.1.1: the start that consumed an activation's secret gives it its challenge
_START_ACTIVATION: Final = Prepared(
    update(OPS)
    .where(
        OPS.c.id == bindparam("op_id"),
        OPS.c.state == OperationState.PENDING.value,
        OPS.c.challenge.is_(None),
        OPS.c.expires_at > bindparam("now"),
    )
    .values(
        challenge=bindparam("challenge_"),
        challenge_expires_at=bindparam("expires"),
        challenge_issued_at=bindparam("now"),
    )
    .returning(OPS.c.device_id)
)
#: backend-initiated: the device's pending list, its start, and a challenge refresh (§3.1.3)
_SELECT_PENDING: Final = Prepared(
    select(OPS.c.id, OPS.c.expires_at, OPS.c.pre_context, OPS.c.required_auth_method, OPS.c.type)
    .where(
        OPS.c.device_id == bindparam("device_id"),
        OPS.c.application_id == bindparam("application_id"),
        OPS.c.state == OperationState.PENDING.value,
        OPS.c.initiator == Initiator.BACKEND.value,
        _ANSWERED,
        OPS.c.expires_at > bindparam("now"),
    )
    .order_by(OPS.c.created_at),
    row=PendingRecord,
)
_SELECT_BACKEND_PENDING: Final = Prepared(
    select(
        OPS.c.config,
        OPS.c.expires_at,
        OPS.c.challenge,
        OPS.c.challenge_expires_at,
        OPS.c.pre_context,
        OPS.c.required_auth_method,
        OPS.c.type,
    ).where(
        OPS.c.id == bindparam("id"),
        OPS.c.device_id == bindparam("device_id"),
        OPS.c.application_id == bindparam("application_id"),
        _ANSWERED,
        OPS.c.state == OperationState.PENDING.value,
        OPS.c.expires_at > bindparam("now"),
    ),
    row=BackendPendingRecord,
)
_REFRESH_CHALLENGE: Final = Prepared(
    update(OPS)
    .where(
        OPS.c.id == bindparam("op_id"),
        OPS.c.state == OperationState.PENDING.value,
        OPS.c.challenge.is_not_distinct_from(bindparam("current")),
    )
    .values(
        challenge=bindparam("fresh"),
        challenge_expires_at=bindparam("fresh_expires"),
        challenge_issued_at=bindparam("now"),
    )
)
#: the predicate of ix_operations_backend_expiry, as text: SQLite uses a partial index only
#: for a query whose WHERE repeats its terms, literals and all
_BACKEND_PENDING: Final = text("operations.state = 'PENDING' AND operations.initiator = 'BACKEND'")
_SELECT_CHALLENGE: Final = Prepared(
    select(OPS.c.challenge, OPS.c.challenge_expires_at).where(OPS.c.id == bindparam("id")),
    row=ChallengeRecord,
)


def get(conn: Connection, operation_id: str) -> OperationRecord | None:
    return _SELECT.first(conn, {"id": operation_id})


def get_of_application(
    conn: Connection, application_id: str, operation_id: str
) -> OperationRecord | None:
    return _SELECT_OF_APP.first(conn, {"id": operation_id, "application_id": application_id})


def insert_operation(conn: Connection, **columns: Any) -> None:
    """A new operation; every column given (no Python-side defaults on the hot path)."""
    _INSERT.rowcount(conn, columns)


def consume(
    conn: Connection,
    op: OperationRecord,
    *,
    passed: bool,
    result: dict[str, Any],
    now: int,
    result_jws: str,
) -> bool:
    """§4.3: end the operation with one conditional statement, storing its signed result;
    False if another request consumed its challenge first (or it expired meanwhile)."""
    return (
        _CONSUME.rowcount(
            conn,
            {
                "op_id": op.id,
                "challenge_": op.challenge,
                "now": now,
                "new_state": (OperationState.COMPLETED if passed else OperationState.FAILED).value,
                "result_": json.dumps(result),
                "jws": result_jws,
            },
        )
        == 1
    )


def fail(
    conn: Connection, operation_id: str, result: dict[str, Any], now: int, *, result_jws: str
) -> bool:
    """End a PENDING operation as FAILED whatever its challenge, with its signed result;
    False if it had ended (or was signed as expired)."""
    return (
        conn.execute(
            update(OPS)
            .where(
                OPS.c.id == operation_id,
                OPS.c.state == OperationState.PENDING.value,
                OPS.c.result_jws.is_(None),
            )
            .values(
                state=OperationState.FAILED.value,
                completed_at=now,
                result=json.dumps(result),
                wrapped_post_context=None,
                challenge=None,
                result_jws=result_jws,
            )
        ).rowcount
        == 1
    )


def store_result_jws(conn: Connection, operation_id: str, result_jws: str, now: int) -> bool:
    """The signed result of an operation that ended without one: it expired (EXPIRED is
    derived on read) or ended before results were signed. False if another request stored
    one first, or the operation is still pending."""
    return (
        conn.execute(
            update(OPS)
            .where(
                OPS.c.id == operation_id,
                OPS.c.result_jws.is_(None),
                (OPS.c.state != OperationState.PENDING.value) | (OPS.c.expires_at <= now),
            )
            .values(result_jws=result_jws)
        ).rowcount
        == 1
    )


def note_overlap(conn: Connection, operation_id: str, note: dict[str, Any]) -> None:
    """§4.5: a finish by a key superseded after its challenge was issued (two ceremonies of
    one device overlapped) is remembered on the pending operation, for its risk data."""
    conn.execute(
        update(OPS)
        .where(OPS.c.id == operation_id, OPS.c.state == OperationState.PENDING.value)
        .values(result=json.dumps(note))
    )


def pending_of_device_to_fail(conn: Connection, device_id: str) -> list[OperationRecord]:
    """A device that can no longer answer has its pending operations failed (each with its
    signed result and an operation.failed event: services), not left hanging; reactivations
    not yet started stay (a reactivation is how it comes back)."""
    return [
        OperationRecord(*row)
        for row in conn.execute(
            select(OPS)
            .where(
                OPS.c.device_id == device_id,
                OPS.c.state == OperationState.PENDING.value,
                or_(_ANSWERED, OPS.c.challenge.is_not(None)),
                OPS.c.result_jws.is_(None),
            )
            .order_by(OPS.c.created_at)
        )
    ]


def backend_expired(conn: Connection, now: int, limit: int) -> list[OperationRecord]:
    """Pending operations the relying party started whose expiry has passed, oldest expiry
    first (ix_operations_backend_expiry)."""
    rows = conn.execute(
        select(OPS)
        .where(_BACKEND_PENDING, OPS.c.expires_at <= now)
        .order_by(OPS.c.expires_at)
        .limit(limit)
    )
    return [OperationRecord(*row) for row in rows]


def expire(
    conn: Connection, operation_id: str, now: int, *, result_jws: str | None
) -> tuple[str, str | None] | None:
    """End a pending operation past its expiry as EXPIRED, once (§3.2.3): its challenge and
    post-operation context go with it; it keeps a signed result a read already gave it, else
    gets ``result_jws``. Its (application id, device id), or None if it ended meanwhile."""
    row = conn.execute(
        update(OPS)
        .where(
            OPS.c.id == operation_id,
            OPS.c.state == OperationState.PENDING.value,
            OPS.c.expires_at <= now,
        )
        .values(
            state=OperationState.EXPIRED.value,
            challenge=None,
            wrapped_post_context=None,
            result_jws=func.coalesce(OPS.c.result_jws, result_jws),
        )
        .returning(OPS.c.application_id, OPS.c.device_id)
    ).first()
    return None if row is None else (str(row.application_id), row.device_id)


# -- activation -----------------------------------------------------------------------------


def start_activation(
    conn: Connection, operation_id: str, challenge: bytes, challenge_expires_at: int, now: int
) -> str | None:
    """§3.1.1: the activation whose secret this request consumed gets its challenge; its
    device id, or None if it is no longer pending."""
    row = _START_ACTIVATION.first(
        conn,
        {
            "op_id": operation_id,
            "challenge_": challenge,
            "expires": challenge_expires_at,
            "now": now,
        },
    )
    return None if row is None else str(row.device_id)


def keep_tpm_credential(conn: Connection, operation_id: str, wrapped: bytes) -> None:
    """§6.5.3: the start's TPM credential state (wrapped), for this operation's finish."""
    conn.execute(update(OPS).where(OPS.c.id == operation_id).values(wrapped_tpm_credential=wrapped))


def erase_tpm_credential(conn: Connection, operation_id: str) -> None:
    """The finish used it (or the operation ended): the secret is single use."""
    conn.execute(update(OPS).where(OPS.c.id == operation_id).values(wrapped_tpm_credential=None))


# -- backend-initiated authentication -------------------------------------------------------


def pending_of_device(
    conn: Connection, application_id: str, device_id: str, now: int
) -> list[PendingRecord]:
    return _SELECT_PENDING.all(
        conn, {"device_id": device_id, "application_id": application_id, "now": now}
    )


def backend_pending(
    conn: Connection, *, operation_id: str, application_id: str, device_id: str, now: int
) -> BackendPendingRecord | None:
    return _SELECT_BACKEND_PENDING.first(
        conn,
        {"id": operation_id, "device_id": device_id, "application_id": application_id, "now": now},
    )


def refresh_challenge(
    conn: Connection,
    operation_id: str,
    *,
    current: bytes | None,
    fresh: bytes,
    fresh_expires_at: int,
    now: int,
) -> ChallengeRecord:
    """§3.1.3: replace an absent or expired challenge, unless a concurrent start did first:
    then its challenge is the one."""
    replaced = _REFRESH_CHALLENGE.rowcount(
        conn,
        {
            "op_id": operation_id,
            "current": current,
            "fresh": fresh,
            "fresh_expires": fresh_expires_at,
            "now": now,
        },
    )
    if replaced == 1:
        return ChallengeRecord(fresh, fresh_expires_at)
    return _SELECT_CHALLENGE.one(conn, {"id": operation_id})


def by_ids(conn: Connection, operation_ids: list[str]) -> dict[str, OperationRecord]:
    if not operation_ids:
        return {}
    rows = conn.execute(select(OPS).where(OPS.c.id.in_(operation_ids)))
    return {str(row.id): OperationRecord(*row) for row in rows}
