"""Registrations (devices): views for the relying party, lock / unlock / deactivate, and the
device's own signed deactivation (docs/protocol.md §3.1.6)."""

from __future__ import annotations

from typing import Any

from keybound.errors import CeremonyError, ErrorCode, InvalidState, NotFound
from keybound.protocol import (
    NO_CONTEXT_HASH,
    Algorithm,
    DeactivateRequest,
    DeactivateResponse,
    DeviceState,
    LockReason,
    Platform,
    Purpose,
    PushToken,
    PushTokenRequest,
    PushTokenResponse,
    push_token_hash,
    transcript,
)
from keybound.rpapi import Device, DeviceList
from keybound.server.clock import ms_to_dt
from keybound.server.core.ceremony import prove_possession
from keybound.server.events.model import PUBLIC_TYPES, Actor, EventType
from keybound.server.events.public import device_data
from keybound.server.notify.base import ProviderKind, PushTarget
from keybound.server.records import RegistrationRecord
from keybound.server.repositories import push, users
from keybound.server.repositories import registrations as regs
from keybound.server.services.operations import fail_pending_of_device
from keybound.server.services.resultkeys import ResultKeys
from keybound.server.unit import Unit


def device_view(row: RegistrationRecord) -> Device:
    return Device(
        device_id=row.id,
        user_id=row.user_id,
        state=DeviceState(row.state),
        lock_reason=LockReason(row.lock_reason) if row.lock_reason else None,
        hardware_key=row.hw_public_key is not None,
        hardware_key_algorithm=Algorithm(row.hw_algorithm) if row.hw_algorithm else None,
        hardware_key_attestation=row.hw_attestation,
        hardware_key_security_level=row.hw_security_level,
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


class Registrations:
    def __init__(self, results: ResultKeys) -> None:
        self.results = results

    def get(self, unit: Unit, application_id: str, device_id: str) -> Device:
        unit.about(device_id=device_id)
        with unit.read() as conn:
            row = regs.get_of_application(conn, application_id, device_id)
        if row is None:
            raise NotFound("no such device")
        return device_view(row)

    def list_for_user(self, unit: Unit, application_id: str, user_id: str) -> DeviceList:
        with unit.read() as conn:
            if users.get(conn, application_id, user_id) is None:
                raise NotFound("no such user")
            rows = regs.of_user(conn, application_id, user_id)
        return DeviceList(devices=[device_view(r) for r in rows])

    def _transition(
        self,
        unit: Unit,
        application_id: str,
        device_id: str,
        *,
        event: EventType,
        allowed_from: tuple[DeviceState, ...],
        values: dict[str, Any],
        refuse_reason: LockReason | None = None,
        unchanged_in: tuple[DeviceState, ...] = (),
        repeated: EventType | None = None,
    ) -> Device:
        """Move a device between states (repositories.registrations.transition); a device
        already in ``unchanged_in`` is returned as it is. ``event`` is the public event of
        the change; a repeat of a change already made (a device deactivated again) is
        recorded as ``repeated``, which the relying party does not hear of."""
        # the operator's unit starts without an application: its events need one
        unit.about(application_id=application_id, device_id=device_id)
        conn = unit.write()
        row = regs.get_of_application(conn, application_id, device_id)
        if row is None:
            raise NotFound("no such device")
        if DeviceState(row.state) in unchanged_in:
            return device_view(row)
        if repeated is not None and row.state == values.get("state"):
            event = repeated
        if not regs.transition(
            conn,
            device_id,
            allowed_from=allowed_from,
            refuse_reason=refuse_reason,
            values=values,
            now=unit.now,
        ):
            current = regs.get(conn, device_id)
            assert current is not None
            if refuse_reason is not None and current.lock_reason == refuse_reason.value:
                raise InvalidState("a device locked for a cloned software key must be reactivated")
            raise InvalidState(f"device is {current.state.lower()}")
        changed = regs.get(conn, device_id)
        assert changed is not None
        unit.emit(
            event,
            payload=device_data(
                device_id=device_id,
                user_id=changed.user_id,
                state=changed.state,
                lock_reason=changed.lock_reason,
            )
            if event in PUBLIC_TYPES
            else None,
        )
        if values.get("state") == DeviceState.DEACTIVATED.value:
            fail_pending_of_device(unit, self.results, device_id, ErrorCode.DEVICE_INACTIVE)
        return device_view(changed)

    def lock(self, unit: Unit, application_id: str, device_id: str) -> Device:
        """Lock an active device. Locking a locked device changes nothing: in particular it
        never replaces a SOFTWARE_KEY_CLONED reason, which only a reactivation clears."""
        reason = LockReason.OPERATOR if unit.actor is Actor.OPERATOR else LockReason.RELYING_PARTY
        return self._transition(
            unit,
            application_id,
            device_id,
            event=EventType.DEVICE_LOCKED,
            allowed_from=(DeviceState.ACTIVE,),
            unchanged_in=(DeviceState.LOCKED,),
            values={"state": DeviceState.LOCKED.value, "lock_reason": reason.value},
        )

    def unlock(self, unit: Unit, application_id: str, device_id: str) -> Device:
        return self._transition(
            unit,
            application_id,
            device_id,
            event=EventType.DEVICE_UNLOCKED,
            allowed_from=(DeviceState.ACTIVE, DeviceState.LOCKED),
            values={"state": DeviceState.ACTIVE.value, "lock_reason": None, "failures": 0},
            refuse_reason=LockReason.SOFTWARE_KEY_CLONED,
            repeated=EventType.DEVICE_UNLOCK,
        )

    def deactivate(self, unit: Unit, application_id: str, device_id: str) -> Device:
        return self._transition(
            unit,
            application_id,
            device_id,
            event=EventType.DEVICE_DEACTIVATED,
            allowed_from=(DeviceState.ACTIVE, DeviceState.LOCKED, DeviceState.DEACTIVATED),
            values={"state": DeviceState.DEACTIVATED.value, "pin_key": None},
            repeated=EventType.DEVICE_DEACTIVATE,
        )

    def device_deactivate(self, unit: Unit, request: DeactivateRequest) -> DeactivateResponse:
        """The device deactivates itself, signing with its current software key (§3.1.6)."""
        row = _signed_by_software_key(
            unit, request, purpose=Purpose.DEACTIVATION, context_digest=NO_CONTEXT_HASH
        )
        if row.state != DeviceState.DEACTIVATED:
            self.deactivate(unit, request.application_id, request.device_id)
        return DeactivateResponse(device_id=row.id, state=DeviceState.DEACTIVATED)

    def update_push_token(self, unit: Unit, request: PushTokenRequest) -> PushTokenResponse:
        """The device registers, replaces or removes its push token, signing with its current
        software key (§3.1.8)."""
        # §3.1.8: only the current software key may change where the device is woken
        row = _signed_by_software_key(
            unit,
            request,
            purpose=Purpose.PUSH_TOKEN,
            context_digest=push_token_hash(request.push_token),
        )
        # §3.1.8: a deactivated device is never woken again
        if row.state == DeviceState.DEACTIVATED.value:
            raise CeremonyError("device is deactivated", code=ErrorCode.DEVICE_INACTIVE)
        store_push_token(unit, row.id, request.push_token)
        provider = request.push_token.provider if request.push_token else None
        return PushTokenResponse(device_id=row.id, push_provider=provider)


def _signed_by_software_key(
    unit: Unit,
    request: DeactivateRequest | PushTokenRequest,
    *,
    purpose: Purpose,
    context_digest: bytes,
) -> RegistrationRecord:
    """The device's registration, once ``request`` is proven signed by its current software
    key over ``purpose`` and ``context_digest`` (a request outside any operation)."""
    unit.about(application_id=request.application_id, device_id=request.device_id)
    with unit.read() as conn:
        row = regs.get_of_application(conn, request.application_id, request.device_id)
    if row is None or row.sw_key_id != request.software_key_id:
        raise CeremonyError("authentication failed")
    prove_possession(
        row.sw_public_key,
        transcript(
            purpose,
            application_id=request.application_id,
            device_id=request.device_id,
            operation_id="",
            challenge=b"",
            context_digest=context_digest,
            software_public_key=row.sw_public_key,
        ),
        request.software_signature,
    )
    unit.identify()
    return row


def store_push_token(unit: Unit, device_id: str, token: PushToken | None) -> None:
    """Register (or, with None, remove) a device's push token; its shape is checked for its
    provider first (§3.1.8: malformed_request)."""
    conn = unit.write()
    if token is None:
        push.remove_token(conn, device_id)
        unit.emit(EventType.PUSH_TOKEN_UPDATE, payload={"provider": None})
        return
    target = PushTarget(provider=ProviderKind(token.provider.value), token=token.token)
    push.put_token(conn, device_id, target.provider.value, target.token, unit.now)
    unit.emit(EventType.PUSH_TOKEN_UPDATE, payload={"provider": target.provider.value})
