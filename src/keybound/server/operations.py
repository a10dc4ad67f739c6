"""Operations as the relying party sees them: users, activation codes, reactivations,
backend-initiated authentications, and their state (docs/protocol.md §3.2).

Every lookup is scoped to the caller's application: another application's object is
reported exactly like one that does not exist.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from sqlalchemy import Connection, Row, bindparam, insert, select, update
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
from keybound.server import audit
from keybound.server.appconfig import AppConfig
from keybound.server.applications import load_config
from keybound.server.ceremony import INSERT_OPERATION
from keybound.server.common import (
    dump_context,
    ms_to_dt,
    new_activation_code,
    new_id,
    normalize_activation_code,
)
from keybound.storage import tables as t
from keybound.storage.db import Clock, Database, now_ms
from keybound.storage.prepared import Prepared, Record

_CODE_ATTEMPTS = 20


def activation_code_hash(application_id: str, code: str) -> bytes:
    normalized = normalize_activation_code(code)
    return hashlib.sha256(application_id.encode() + b"\x00" + normalized.encode()).digest()


def effective_state(row: Row[Any], now: int) -> OperationState:
    """PENDING operations past their expiry are EXPIRED (derived on read)."""
    state = OperationState(row.state)
    if state is OperationState.PENDING and row.expires_at <= now:
        return OperationState.EXPIRED
    return state


def operation_view(row: Record, now: int) -> Operation:
    config = AppConfig.from_stored(row.config)
    stored = json.loads(row.result) if row.result else {}
    risk = stored.get("risk", {})
    enabled = {r.value for r in config.enabled_risk_data}
    result = None
    if stored:
        result = OperationResult(
            auth_method=stored.get("authMethod"),
            auth_level=stored.get("authLevel"),
            failure_code=stored.get("failureCode"),
        )
    return Operation(
        operation_id=row.id,
        type=OperationType(row.type),
        initiator=Initiator(row.initiator),
        state=effective_state(row, now),
        user_id=row.user_id,
        device_id=row.device_id,
        created_at=ms_to_dt(row.created_at),
        expires_at=ms_to_dt(row.expires_at),
        completed_at=ms_to_dt(row.completed_at) if row.completed_at else None,
        result=result,
        risk_data={k: v for k, v in risk.items() if k in enabled},
    )


#: the relying party's statements on every activation and backend-initiated authentication
_INSERT_USER = Prepared(insert(t.users))
_SELECT_USER_ID = Prepared(select(t.users.c.id).where(
    t.users.c.id == bindparam("id"), t.users.c.application_id == bindparam("application_id")))
_FREE_EXPIRED_CODE = Prepared(update(t.operations).where(
    t.operations.c.application_id == bindparam("app"),
    t.operations.c.code_hash == bindparam("code"),
    t.operations.c.expires_at <= bindparam("now")).values(code_hash=None))
_SELECT_DEVICE = Prepared(select(t.registrations.c.user_id, t.registrations.c.state).where(
    t.registrations.c.id == bindparam("device_id"),
    t.registrations.c.application_id == bindparam("application_id")))
_SELECT_OPERATION = Prepared(select(t.operations).where(
    t.operations.c.id == bindparam("id"),
    t.operations.c.application_id == bindparam("application_id")))


class Operations:
    def __init__(self, db: Database, clock: Clock) -> None:
        self.db = db
        self.clock = clock

    def _config(self, conn: Connection, application_id: str) -> AppConfig:
        config = load_config(conn, application_id)
        if config is None:
            raise NotFound("no such application")
        return config

    # -- users --------------------------------------------------------------------------------

    def create_user(self, application_id: str, request: CreateUserRequest) -> User:
        now = now_ms(self.clock)
        user_id = new_id()
        try:
            with self.db.write() as conn:
                self._config(conn, application_id)
                _INSERT_USER.rowcount(conn, {
                    "id": user_id, "application_id": application_id,
                    "external_ref": request.external_ref, "created_at": now})
                audit.record(conn, at=now, actor=audit.Actor.RELYING_PARTY, event="user.create",
                             outcome=audit.Outcome.SUCCESS, application_id=application_id,
                             details={"userId": user_id})
        except IntegrityError as exc:
            raise KeyboundError("a user with this externalRef already exists",
                                code=ErrorCode.CONFLICT) from exc
        return User(user_id=user_id, external_ref=request.external_ref, created_at=ms_to_dt(now))

    def get_user(self, application_id: str, user_id: str) -> User:
        with self.db.read() as conn:
            row = conn.execute(select(t.users).where(
                t.users.c.id == user_id, t.users.c.application_id == application_id)).first()
        if row is None:
            raise NotFound("no such user")
        return User(user_id=row.id, external_ref=row.external_ref,
                    created_at=ms_to_dt(row.created_at))

    # -- activation codes ---------------------------------------------------------------------

    def create_activation(self, application_id: str, user_id: str) -> ActivationCodeResponse:
        """A new activation code for a user; the device id it will create is fixed now."""
        with self.db.read() as conn:
            user = _SELECT_USER_ID.first(conn, {"id": user_id, "application_id": application_id})
        if user is None:
            raise NotFound("no such user")
        return self._issue_code(application_id, user_id, new_id(), OperationType.ACTIVATION)

    def create_reactivation(self, application_id: str, device_id: str) -> ActivationCodeResponse:
        """An activation code that re-activates an existing device: all its credentials are
        replaced at finish. Not possible once the device is deactivated."""
        with self.db.read() as conn:
            reg = _SELECT_DEVICE.first(conn, {"device_id": device_id,
                                              "application_id": application_id})
        if reg is None:
            raise NotFound("no such device")
        if reg.state == DeviceState.DEACTIVATED:
            raise InvalidState("a deactivated device cannot be reactivated")
        return self._issue_code(application_id, reg.user_id, device_id,
                                OperationType.REACTIVATION)

    def _issue_code(self, application_id: str, user_id: str, device_id: str,
                    kind: OperationType) -> ActivationCodeResponse:
        now = now_ms(self.clock)
        for _ in range(_CODE_ATTEMPTS):
            op_id = new_id()
            try:
                with self.db.write() as conn:
                    config = self._config(conn, application_id)
                    code = new_activation_code(config.activation_code_type,
                                               config.activation_code_length)
                    expires = now + config.activation_code_lifetime_seconds * 1000
                    code_hash = activation_code_hash(application_id, code)
                    # an expired, never-used code gives its slot back (its operation stays
                    # PENDING in storage: EXPIRED is derived on read, and prune removes it)
                    _FREE_EXPIRED_CODE.rowcount(conn, {
                        "app": application_id, "code": code_hash, "now": now})
                    INSERT_OPERATION.rowcount(conn, {
                        "id": op_id, "application_id": application_id, "type": kind.value,
                        "initiator": Initiator.BACKEND.value,
                        "state": OperationState.PENDING.value,
                        "user_id": user_id, "device_id": device_id, "code_hash": code_hash,
                        "expires_at": expires, "config": json.dumps(config.to_json()),
                        "created_at": now})
                    audit.record(conn, at=now, actor=audit.Actor.RELYING_PARTY,
                                 event=f"{kind.value.lower()}.code_issued",
                                 outcome=audit.Outcome.SUCCESS, application_id=application_id,
                                 device_id=device_id, operation_id=op_id)
            except IntegrityError:
                continue  # the code collides with another pending one: draw again
            return ActivationCodeResponse(
                operation_id=op_id, user_id=user_id, device_id=device_id,
                activation_code=code, expires_at=ms_to_dt(expires), type=kind)
        raise InvalidState("could not draw a unique activation code; lengthen the code")

    # -- backend-initiated authentication -----------------------------------------------------

    def create_authentication(
        self, application_id: str, device_id: str, request: CreateOperationRequest
    ) -> Operation:
        pre = request.pre_operation_context
        if pre is not None and len(pre.content.encode()) > MAX_PRE_CONTEXT_BYTES:
            raise MalformedRequest(
                f"preOperationContext content exceeds {MAX_PRE_CONTEXT_BYTES} bytes")
        now = now_ms(self.clock)
        op_id = new_id()
        with self.db.write() as conn:
            config = self._config(conn, application_id)
            reg = _SELECT_DEVICE.first(conn, {"device_id": device_id,
                                              "application_id": application_id})
            if reg is None:
                raise NotFound("no such device")
            if reg.state != DeviceState.ACTIVE:
                raise InvalidState(f"device is {reg.state.lower()}")
            method = request.required_auth_method
            if method is not None and method not in config.allowed_auth_methods:
                raise MalformedRequest(f"auth method {method} is not allowed for this application")
            INSERT_OPERATION.rowcount(conn, {
                "id": op_id, "application_id": application_id,
                "type": OperationType.AUTHENTICATION.value,
                "initiator": Initiator.BACKEND.value, "state": OperationState.PENDING.value,
                "user_id": reg.user_id, "device_id": device_id,
                "expires_at": now + config.operation_lifetime_seconds * 1000,
                "pre_context": dump_context(pre),
                "post_context": dump_context(request.post_operation_context),
                "required_auth_method": method.value if method else None,
                "config": json.dumps(config.to_json()), "created_at": now})
            audit.record(conn, at=now, actor=audit.Actor.RELYING_PARTY,
                         event="authentication.create", outcome=audit.Outcome.SUCCESS,
                         application_id=application_id, device_id=device_id, operation_id=op_id)
            row = _SELECT_OPERATION.one(conn, {"id": op_id, "application_id": application_id})
        return operation_view(row, now)

    def get(self, application_id: str, operation_id: str) -> Operation:
        with self.db.read() as conn:
            row = _SELECT_OPERATION.first(conn, {"id": operation_id,
                                                 "application_id": application_id})
        if row is None:
            raise NotFound("no such operation")
        return operation_view(row, now_ms(self.clock))
