"""Operations as the relying party sees them: users, activation codes, reactivations,
backend-initiated authentications, and their state (docs/protocol.md §3.2).

Every lookup is scoped to the caller's application: another application's object is
reported exactly like one that does not exist.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import TYPE_CHECKING

from sqlalchemy.exc import IntegrityError

from keybound.errors import ErrorCode, InvalidState, KeyboundError, MalformedRequest, NotFound
from keybound.protocol import (
    MAX_PRE_CONTEXT_BYTES,
    DeviceState,
    Initiator,
    OperationState,
    OperationType,
)
from keybound.rpapi import (
    ActivationCodeResponse,
    CreateOperationRequest,
    CreateUserRequest,
    Operation,
    OperationResult,
    User,
)
from keybound.server.clock import ms_to_dt
from keybound.server.core.appconfig import AppConfig
from keybound.server.core.ceremony import dump_context, new_id
from keybound.server.core.codes import activation_code_hash, new_activation_code
from keybound.server.events.model import EventType
from keybound.server.events.public import device_data, timestamp
from keybound.server.records import OperationRecord, UserRecord
from keybound.server.repositories import applications as apps
from keybound.server.repositories import operations as ops
from keybound.server.repositories import push, users
from keybound.server.repositories import registrations as regs
from keybound.server.secrets import Purpose, SecretBox
from keybound.server.unit import Unit

if TYPE_CHECKING:
    from sqlalchemy import Connection

#: draws of a new activation code before giving up (a collision with a pending one)
CODE_ATTEMPTS = 20


def effective_state(row: OperationRecord, now: int) -> OperationState:
    """PENDING operations past their expiry are EXPIRED (derived on read)."""
    state = OperationState(row.state)
    if state is OperationState.PENDING and row.expires_at <= now:
        return OperationState.EXPIRED
    return state


def operation_view(row: OperationRecord, now: int) -> Operation:
    config = AppConfig.from_stored(row.config)
    ended = row.state in (OperationState.COMPLETED, OperationState.FAILED)
    stored = json.loads(row.result) if row.result and ended else {}
    risk = stored.get("risk", {})
    enabled = {r.value for r in config.enabled_risk_data}
    result = None
    if stored:
        result = OperationResult(auth_method=stored.get("authMethod"),
                                 auth_level=stored.get("authLevel"),
                                 failure_code=stored.get("failureCode"))
    return Operation(
        operation_id=row.id, type=OperationType(row.type), initiator=Initiator(row.initiator),
        state=effective_state(row, now), user_id=row.user_id, device_id=row.device_id,
        created_at=ms_to_dt(row.created_at), expires_at=ms_to_dt(row.expires_at),
        completed_at=ms_to_dt(row.completed_at) if row.completed_at else None,
        result=result, risk_data={k: v for k, v in risk.items() if k in enabled})


def _config(conn: Connection, application_id: str) -> AppConfig:
    raw = apps.config_text(conn, application_id)
    if raw is None:
        raise NotFound("no such application")
    return AppConfig.from_stored(raw)


def _nothing() -> None:
    pass


class Operations:
    def __init__(self, box: SecretBox, *, wake: Callable[[], None] = _nothing) -> None:
        self.box = box
        self.wake = wake  # tells this process's sender a notification is waiting

    # -- users ----------------------------------------------------------------------------

    def create_user(self, unit: Unit, application_id: str, request: CreateUserRequest) -> User:
        record = UserRecord(id=new_id(), application_id=application_id,
                            external_ref=request.external_ref, created_at=unit.now)
        conn = unit.write()
        _config(conn, application_id)
        try:
            users.insert_user(conn, record)
        except IntegrityError as exc:
            raise KeyboundError("a user with this externalRef already exists",
                                code=ErrorCode.CONFLICT) from exc
        unit.emit(EventType.USER_CREATE, subject=record.id, payload={"userId": record.id})
        return User(user_id=record.id, external_ref=record.external_ref,
                    created_at=ms_to_dt(unit.now))

    def get_user(self, unit: Unit, application_id: str, user_id: str) -> User:
        with unit.read() as conn:
            row = users.get(conn, application_id, user_id)
        if row is None:
            raise NotFound("no such user")
        return User(user_id=row.id, external_ref=row.external_ref,
                    created_at=ms_to_dt(row.created_at))

    # -- activation codes -----------------------------------------------------------------

    def create_activation(self, unit: Unit, application_id: str,
                          user_id: str) -> ActivationCodeResponse:
        """A new activation code for a user; the device id it will create is fixed now."""
        with unit.read() as conn:
            user = users.get(conn, application_id, user_id)
        if user is None:
            raise NotFound("no such user")
        return self._issue_code(unit, application_id, user_id, new_id(),
                                OperationType.ACTIVATION)

    def create_reactivation(self, unit: Unit, application_id: str,
                            device_id: str) -> ActivationCodeResponse:
        """An activation code that re-activates an existing device: all its credentials are
        replaced at finish. Not possible once the device is deactivated."""
        unit.about(device_id=device_id)
        with unit.read() as conn:
            reg = regs.get_of_application(conn, application_id, device_id)
        if reg is None:
            raise NotFound("no such device")
        if reg.state == DeviceState.DEACTIVATED:
            raise InvalidState("a deactivated device cannot be reactivated")
        return self._issue_code(unit, application_id, reg.user_id, device_id,
                                OperationType.REACTIVATION)

    def _issue_code(self, unit: Unit, application_id: str, user_id: str, device_id: str,
                    kind: OperationType) -> ActivationCodeResponse:
        conn = unit.write()
        config = _config(conn, application_id)
        expires = unit.now + config.activation_code_lifetime_seconds * 1000
        op_id = new_id()
        for _ in range(CODE_ATTEMPTS):
            code = new_activation_code(config.activation_code_type,
                                       config.activation_code_length)
            code_hash = activation_code_hash(application_id, code)
            ops.free_expired_code(conn, application_id, code_hash, unit.now)
            if ops.insert_unless_code_taken(
                    conn, id=op_id, application_id=application_id, type=kind.value,
                    initiator=Initiator.BACKEND.value, state=OperationState.PENDING.value,
                    user_id=user_id, device_id=device_id, code_hash=code_hash,
                    expires_at=expires, config=json.dumps(config.to_json()),
                    created_at=unit.now):
                break
        else:  # every draw collided with a pending code
            raise InvalidState("could not draw a unique activation code; lengthen the code")
        unit.emit(EventType.ACTIVATION_CODE_ISSUED if kind is OperationType.ACTIVATION
                  else EventType.REACTIVATION_CODE_ISSUED, subject=device_id,
                  operation_id=op_id)
        return ActivationCodeResponse(
            operation_id=op_id, user_id=user_id, device_id=device_id, activation_code=code,
            expires_at=ms_to_dt(expires), type=kind)

    # -- backend-initiated authentication -------------------------------------------------

    def create_authentication(self, unit: Unit, application_id: str, device_id: str,
                              request: CreateOperationRequest) -> Operation:
        unit.about(device_id=device_id)
        pre = request.pre_operation_context
        if pre is not None and len(pre.content.encode()) > MAX_PRE_CONTEXT_BYTES:
            raise MalformedRequest(
                f"preOperationContext content exceeds {MAX_PRE_CONTEXT_BYTES} bytes")
        op_id = new_id()
        conn = unit.write()
        config = _config(conn, application_id)
        reg = regs.get_of_application(conn, application_id, device_id)
        if reg is None:
            raise NotFound("no such device")
        if reg.state != DeviceState.ACTIVE:
            raise InvalidState(f"device is {reg.state.lower()}")
        method = request.required_auth_method
        if method is not None and method not in config.allowed_auth_methods:
            raise MalformedRequest(f"auth method {method} is not allowed for this application")
        post = request.post_operation_context
        expires_at = unit.now + config.operation_lifetime_seconds * 1000
        ops.insert_operation(
            conn, id=op_id, application_id=application_id,
            type=OperationType.AUTHENTICATION.value, initiator=Initiator.BACKEND.value,
            state=OperationState.PENDING.value, user_id=reg.user_id, device_id=device_id,
            expires_at=expires_at, pre_context=dump_context(pre),
            wrapped_post_context=None if post is None else self.box.wrap(
                Purpose.POST_CONTEXT, post.model_dump_json(by_alias=True).encode(),
                binding=op_id.encode()),
            required_auth_method=method.value if method else None,
            config=json.dumps(config.to_json()), created_at=unit.now)
        unit.emit(EventType.DEVICE_OPERATION_PENDING, operation_id=op_id, payload=device_data(
            device_id=device_id, user_id=reg.user_id, state=reg.state, operationId=op_id,
            expiresAt=timestamp(expires_at)))
        # the device is woken through its push token after commit, if the application has
        # a provider for it (docs/notifications.md); a failed wake-up never fails this
        token = push.token_of(conn, device_id)
        if token is not None and token.provider in {
                p.kind for p in push.providers_of(conn, application_id)}:
            push.queue(conn, application_id=application_id, device_id=device_id,
                       operation_id=op_id, expires_at=expires_at, now=unit.now)
            unit.after_commit(self.wake)
        row = ops.get(conn, op_id)
        assert row is not None
        return operation_view(row, unit.now)

    def get(self, unit: Unit, application_id: str, operation_id: str) -> Operation:
        unit.about(operation_id=operation_id)
        with unit.read() as conn:
            row = ops.get_of_application(conn, application_id, operation_id)
        if row is None:
            raise NotFound("no such operation")
        return operation_view(row, unit.now)
