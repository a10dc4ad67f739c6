"""Registrations (devices) and their superseded software keys (docs/protocol.md §4.5)."""

from __future__ import annotations

from typing import Any, Final

from sqlalchemy import (
    ColumnElement,
    Connection,
    bindparam,
    case,
    delete,
    func,
    insert,
    select,
    update,
)

from keybound.protocol import DeviceState, LockReason
from keybound.server.records import RegistrationRecord, SupersededKey
from keybound.storage import tables as t
from keybound.storage.prepared import Prepared

R = t.registrations
S = t.superseded_keys


_SELECT: Final = Prepared(select(R).where(R.c.id == bindparam("id")), row=RegistrationRecord)
_SELECT_OF_APP: Final = Prepared(
    select(R).where(R.c.id == bindparam("id"), R.c.application_id == bindparam("application_id")),
    row=RegistrationRecord,
)
_SELECT_STATE: Final = Prepared(
    select(R.c.state).where(
        R.c.id == bindparam("device_id"), R.c.application_id == bindparam("application_id")
    )
)
_SELECT_SUPERSEDED: Final = Prepared(
    select(S.c.public_key, S.c.superseded_at).where(
        S.c.registration_id == bindparam("registration_id"), S.c.key_id == bindparam("key_id")
    ),
    row=SupersededKey,
)
_INSERT_SUPERSEDED: Final = Prepared(insert(S))
_INSERT: Final = Prepared(insert(R))  # every column given (no Python-side defaults)
#: §4.5: rotate only if the signer is still the current key of an active registration
_ROTATE: Final = Prepared(
    update(R)
    .where(
        R.c.id == bindparam("reg_id"),
        R.c.sw_key_id == bindparam("signer_key_id"),
        R.c.state == DeviceState.ACTIVE.value,
    )
    .values(
        sw_public_key=bindparam("next_key"),
        sw_key_id=bindparam("next_key_id"),
        failures=0,
        last_authenticated_at=bindparam("now"),
        updated_at=bindparam("now"),
    )
)
#: §4.6: the same for an App Attest hardware key, whose assertion counter is stored in the
#: same conditional statement, and only if it is above the stored one
_ROTATE_COUNTED: Final = Prepared(
    update(R)
    .where(
        R.c.id == bindparam("reg_id"),
        R.c.sw_key_id == bindparam("signer_key_id"),
        R.c.state == DeviceState.ACTIVE.value,
        func.coalesce(R.c.hw_counter, 0) < bindparam("counter"),
    )
    .values(
        sw_public_key=bindparam("next_key"),
        sw_key_id=bindparam("next_key_id"),
        failures=0,
        last_authenticated_at=bindparam("now"),
        updated_at=bindparam("now"),
        hw_counter=bindparam("counter"),
    )
)


def get(conn: Connection, device_id: str) -> RegistrationRecord | None:
    return _SELECT.first(conn, {"id": device_id})


def get_of_application(
    conn: Connection, application_id: str, device_id: str
) -> RegistrationRecord | None:
    return _SELECT_OF_APP.first(conn, {"id": device_id, "application_id": application_id})


def state_of(conn: Connection, application_id: str, device_id: str) -> str | None:
    state: str | None = _SELECT_STATE.scalar(
        conn, {"device_id": device_id, "application_id": application_id}
    )
    return state


def of_user(conn: Connection, application_id: str, user_id: str) -> list[RegistrationRecord]:
    rows = conn.execute(
        select(R)
        .where(R.c.application_id == application_id, R.c.user_id == user_id)
        .order_by(R.c.created_at)
    )
    return [RegistrationRecord(*row) for row in rows]


def superseded_key(conn: Connection, registration_id: str, key_id: bytes) -> SupersededKey | None:
    return _SELECT_SUPERSEDED.first(conn, {"registration_id": registration_id, "key_id": key_id})


def insert_registration(conn: Connection, **columns: Any) -> None:
    _INSERT.rowcount(conn, columns)


def replace_credentials(conn: Connection, device_id: str, credentials: dict[str, Any]) -> bool:
    """Reactivation: every credential replaced, the old software keys forgotten; False if
    the device was deactivated meanwhile."""
    replaced = (
        conn.execute(
            update(R)
            .where(R.c.id == device_id, R.c.state != DeviceState.DEACTIVATED.value)
            .values(generation=R.c.generation + 1, last_authenticated_at=None, **credentials)
        ).rowcount
        == 1
    )
    if replaced:
        conn.execute(delete(S).where(S.c.registration_id == device_id))
    return replaced


def rotate(
    conn: Connection,
    reg: RegistrationRecord,
    *,
    signer_key_id: bytes,
    signer_key: bytes,
    next_key: bytes,
    next_key_id: bytes,
    now: int,
    hardware_counter: int | None = None,
) -> bool:
    """§4.5: the next software key replaces the signer, which is remembered as superseded;
    False if the signer is no longer the current key of an active registration. With
    ``hardware_counter`` (§4.6) also False if the stored counter is not below it."""
    params = {
        "reg_id": reg.id,
        "signer_key_id": signer_key_id,
        "next_key": next_key,
        "next_key_id": next_key_id,
        "now": now,
    }
    if hardware_counter is None:
        rotated = _ROTATE.rowcount(conn, params) == 1
    else:
        rotated = _ROTATE_COUNTED.rowcount(conn, {**params, "counter": hardware_counter}) == 1
    if rotated:
        _INSERT_SUPERSEDED.rowcount(
            conn,
            {
                "registration_id": reg.id,
                "key_id": signer_key_id,
                "public_key": signer_key,
                "superseded_at": now,
            },
        )
    return rotated


def count_failure(conn: Connection, device_id: str, *, allowed: int, now: int) -> bool:
    """§5.3: consecutive failures lock the registration at ``allowed``; True if this one
    locked it."""
    reached = R.c.failures + 1 >= allowed
    row = conn.execute(
        update(R)
        .where(R.c.id == device_id, R.c.state == DeviceState.ACTIVE.value)
        .values(
            failures=R.c.failures + 1,
            state=case((reached, DeviceState.LOCKED.value), else_=R.c.state),
            lock_reason=case((reached, LockReason.FAILURES.value), else_=R.c.lock_reason),
            updated_at=now,
        )
        .returning(R.c.state)
    ).first()
    return row is not None and row.state == DeviceState.LOCKED.value


def lock_cloned(conn: Connection, device_id: str, now: int) -> bool:
    """Lock for a copied key; False if the device was deactivated (nothing to lock)."""
    return (
        conn.execute(
            update(R)
            .where(R.c.id == device_id, R.c.state != DeviceState.DEACTIVATED.value)
            .values(
                state=DeviceState.LOCKED.value,
                lock_reason=LockReason.SOFTWARE_KEY_CLONED.value,
                updated_at=now,
            )
        ).rowcount
        == 1
    )


def transition(
    conn: Connection,
    device_id: str,
    *,
    allowed_from: tuple[DeviceState, ...],
    refuse_reason: LockReason | None,
    values: dict[str, Any],
    now: int,
) -> bool:
    """Move a device between states; the checks are in the UPDATE's WHERE, so a concurrent
    change (a clone lock, say) is never overwritten under READ COMMITTED."""
    where: list[ColumnElement[bool]] = [
        R.c.id == device_id,
        R.c.state.in_([s.value for s in allowed_from]),
    ]
    if refuse_reason is not None:
        where.append(R.c.lock_reason.is_distinct_from(refuse_reason.value))
    return conn.execute(update(R).where(*where).values(updated_at=now, **values)).rowcount == 1
