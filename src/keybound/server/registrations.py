"""Registrations (devices): views for the relying party, lock / unlock / deactivate, and the
device's own signed deactivation (docs/protocol.md §3.1.6)."""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import Connection, Row, select, update

from keybound.errors import CeremonyError, ErrorCode, InvalidState, NotFound
from keybound.protocol import (
    NO_CONTEXT_HASH,
    DeactivateRequest,
    DeactivateResponse,
    DeviceState,
    LockReason,
    OperationState,
    Platform,
    Purpose,
    transcript,
)
from keybound.rpapi import Device, DeviceList
from keybound.server import audit
from keybound.server.ceremony import prove_possession
from keybound.server.common import ms_to_dt
from keybound.storage import tables as t
from keybound.storage.db import Clock, Database, now_ms

R = t.registrations


def device_view(row: Row[Any]) -> Device:
    return Device(
        device_id=row.id,
        user_id=row.user_id,
        state=DeviceState(row.state),
        lock_reason=LockReason(row.lock_reason) if row.lock_reason else None,
        hardware_key=row.hw_public_key is not None,
        hardware_key_algorithm=row.hw_algorithm,
        pin_enabled=row.pin_key is not None,
        platform=Platform(row.platform),
        os_version=row.os_version,
        model=row.model,
        created_at=ms_to_dt(row.created_at),
        activated_at=ms_to_dt(row.activated_at),
        last_authenticated_at=(
            ms_to_dt(row.last_authenticated_at) if row.last_authenticated_at else None
        ),
    )


def fail_pending_operations(conn: Connection, device_id: str, code: str, now: int) -> None:
    """A device that can no longer answer has its pending operations failed, not left hanging."""
    conn.execute(
        update(t.operations)
        .where(t.operations.c.device_id == device_id,
               t.operations.c.state == OperationState.PENDING.value,
               t.operations.c.code_hash.is_(None))
        .values(state=OperationState.FAILED.value, challenge=None, completed_at=now,
                result=json.dumps({"failureCode": code}))
    )


class Registrations:
    def __init__(self, db: Database, clock: Clock) -> None:
        self.db = db
        self.clock = clock

    def get(self, application_id: str, device_id: str) -> Device:
        with self.db.read() as conn:
            row = conn.execute(select(R).where(
                R.c.id == device_id, R.c.application_id == application_id)).first()
        if row is None:
            raise NotFound("no such device")
        return device_view(row)

    def list_for_user(self, application_id: str, user_id: str) -> DeviceList:
        with self.db.read() as conn:
            user = conn.execute(select(t.users.c.id).where(
                t.users.c.id == user_id, t.users.c.application_id == application_id)).first()
            if user is None:
                raise NotFound("no such user")
            rows = conn.execute(select(R).where(
                R.c.application_id == application_id, R.c.user_id == user_id
            ).order_by(R.c.created_at)).all()
        return DeviceList(devices=[device_view(r) for r in rows])

    def _transition(self, application_id: str, device_id: str, *, event: str,
                    actor: audit.Actor, allowed_from: tuple[DeviceState, ...],
                    values: dict[str, Any], refuse_reason: LockReason | None = None,
                    unchanged_in: tuple[DeviceState, ...] = ()) -> Device:
        """Move a device between states. The checks are repeated in the UPDATE's WHERE, so
        a concurrent change (say, a clone lock) is never overwritten under READ COMMITTED;
        a device already in ``unchanged_in`` is returned as it is."""
        now = now_ms(self.clock)
        where = [R.c.id == device_id, R.c.state.in_([s.value for s in allowed_from])]
        if refuse_reason is not None:
            where.append(R.c.lock_reason.is_distinct_from(refuse_reason.value))
        with self.db.write() as conn:
            row = conn.execute(select(R).where(
                R.c.id == device_id, R.c.application_id == application_id)).first()
            if row is None:
                raise NotFound("no such device")
            if DeviceState(row.state) in unchanged_in:
                return device_view(row)
            changed = conn.execute(update(R).where(*where)
                                   .values(updated_at=now, **values)).rowcount
            if changed != 1:
                row = conn.execute(select(R).where(R.c.id == device_id)).one()
                if refuse_reason is not None and row.lock_reason == refuse_reason.value:
                    raise InvalidState(
                        "a device locked for a cloned software key must be reactivated")
                raise InvalidState(f"device is {row.state.lower()}")
            if values.get("state") == DeviceState.DEACTIVATED.value:
                fail_pending_operations(conn, device_id, ErrorCode.DEVICE_INACTIVE.value, now)
            audit.record(conn, at=now, actor=actor, event=event,
                         outcome=audit.Outcome.SUCCESS, application_id=application_id,
                         device_id=device_id)
            row = conn.execute(select(R).where(R.c.id == device_id)).one()
        return device_view(row)

    def lock(self, application_id: str, device_id: str,
             actor: audit.Actor = audit.Actor.RELYING_PARTY) -> Device:
        """Lock an active device. Locking a locked device changes nothing: in particular it
        never replaces a SOFTWARE_KEY_CLONED reason, which only a reactivation clears."""
        reason = LockReason.OPERATOR if actor is audit.Actor.OPERATOR else LockReason.RELYING_PARTY
        return self._transition(
            application_id, device_id, event="device.lock", actor=actor,
            allowed_from=(DeviceState.ACTIVE,), unchanged_in=(DeviceState.LOCKED,),
            values={"state": DeviceState.LOCKED.value, "lock_reason": reason.value})

    def unlock(self, application_id: str, device_id: str,
               actor: audit.Actor = audit.Actor.RELYING_PARTY) -> Device:
        return self._transition(
            application_id, device_id, event="device.unlock", actor=actor,
            allowed_from=(DeviceState.ACTIVE, DeviceState.LOCKED),
            values={"state": DeviceState.ACTIVE.value, "lock_reason": None, "failures": 0},
            refuse_reason=LockReason.SOFTWARE_KEY_CLONED)

    def deactivate(self, application_id: str, device_id: str,
                   actor: audit.Actor = audit.Actor.RELYING_PARTY) -> Device:
        return self._transition(
            application_id, device_id, event="device.deactivate", actor=actor,
            allowed_from=(DeviceState.ACTIVE, DeviceState.LOCKED, DeviceState.DEACTIVATED),
            values={"state": DeviceState.DEACTIVATED.value, "pin_key": None})

    def device_deactivate(self, request: DeactivateRequest) -> DeactivateResponse:
        """The device deactivates itself, signing with its current software key (§3.1.6)."""
        with self.db.read() as conn:
            row = conn.execute(select(R).where(
                R.c.id == request.device_id,
                R.c.application_id == request.application_id)).first()
        if row is None or row.sw_key_id != request.software_key_id:
            raise CeremonyError("authentication failed")
        prove_possession(row.sw_public_key, transcript(
            Purpose.DEACTIVATION, application_id=request.application_id,
            device_id=request.device_id, operation_id="", challenge=b"",
            context_digest=NO_CONTEXT_HASH, software_public_key=row.sw_public_key),
            request.software_signature)
        if row.state == DeviceState.DEACTIVATED:
            return DeactivateResponse(device_id=row.id, state=DeviceState.DEACTIVATED)
        self.deactivate(request.application_id, request.device_id, actor=audit.Actor.DEVICE)
        return DeactivateResponse(device_id=row.id, state=DeviceState.DEACTIVATED)
