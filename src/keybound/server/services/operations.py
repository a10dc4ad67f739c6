"""Operations as the relying party sees them: users, activation codes, reactivations,
backend-initiated authentications and signatures, their state and signed result
(docs/protocol.md §3.2, docs/signed-results.md).

Every lookup is scoped to the caller's application: another application's object is
reported exactly like one that does not exist.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from sqlalchemy.exc import IntegrityError

from keybound.errors import (
    CeremonyError,
    ErrorCode,
    InvalidState,
    KeyboundError,
    MalformedRequest,
    NotFound,
)
from keybound.protocol import (
    MAX_DATA_TO_SIGN_BYTES,
    MAX_PRE_CONTEXT_BYTES,
    AuthMethod,
    DeviceState,
    Initiator,
    OperationContext,
    OperationState,
    OperationType,
    activation_link,
    b64u_encode,
)
from keybound.rpapi import (
    ActivationCodeResponse,
    CreateOperationRequest,
    CreateSignatureRequest,
    CreateUserRequest,
    Operation,
    OperationResult,
    User,
)
from keybound.server.clock import ms_to_dt
from keybound.server.core.appconfig import AppConfig
from keybound.server.core.ceremony import dump_context, new_id
from keybound.server.core.codes import (
    code_attempts,
    new_activation_code,
    new_activation_hint,
    new_activation_token,
    normalize_activation_code,
)
from keybound.server.events.model import EventType, Outcome
from keybound.server.events.public import device_data, timestamp
from keybound.server.records import OperationRecord, UserRecord
from keybound.server.repositories import activation_secrets, push, users
from keybound.server.repositories import applications as apps
from keybound.server.repositories import operations as ops
from keybound.server.repositories import registrations as regs
from keybound.server.secrets import Purpose, SecretBox
from keybound.server.services.resultkeys import ResultKeys
from keybound.server.unit import Unit

if TYPE_CHECKING:
    from sqlalchemy import Connection

#: draws of a new activation hint before giving up (a collision with a pending one)
HINT_ATTEMPTS = 20


def effective_state(row: OperationRecord, now: int) -> OperationState:
    """PENDING operations past their expiry are EXPIRED (derived on read)."""
    state = OperationState(row.state)
    if state is OperationState.PENDING and row.expires_at <= now:
        return OperationState.EXPIRED
    return state


def operation_view(row: OperationRecord, now: int, *, result_jws: str | None = None) -> Operation:
    config = AppConfig.from_stored(row.config)
    ended = row.state in (OperationState.COMPLETED, OperationState.FAILED)
    stored = json.loads(row.result) if row.result and ended else {}
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
        result_jws=result_jws or row.result_jws,
    )


def consume_signed(
    unit: Unit,
    results: ResultKeys,
    op: OperationRecord,
    *,
    passed: bool,
    result: dict[str, Any],
    user_id: str | None = None,
) -> Connection:
    """§4.3: end ``op`` with its signed result in the unit's write transaction (returned);
    challenge_used if another request consumed its challenge first. The result is signed
    before the transaction opens: the writer lock is not held while it is signed
    (docs/signed-results.md: cost)."""
    signed = results.operation_result(
        op,
        state=OperationState.COMPLETED if passed else OperationState.FAILED,
        result=result,
        completed_at=unit.now,
        now=unit.now,
        user_id=user_id,
    )
    conn = unit.write()
    if not ops.consume(conn, op, passed=passed, result=result, now=unit.now, result_jws=signed):
        raise CeremonyError("challenge already used", code=ErrorCode.CHALLENGE_USED)
    return conn


def fail_pending_of_device(
    unit: Unit, results: ResultKeys, device_id: str, code: ErrorCode
) -> None:
    """A device that can no longer answer (deactivated, locked as a copy) has its pending
    operations failed with ``code``, each with its signed result, in the unit's
    transaction, and an ``operation.failed`` event each."""
    conn = unit.write()
    result = {"failureCode": code.value}
    for op in ops.pending_of_device_to_fail(conn, device_id):
        if ops.fail(
            conn,
            op.id,
            result,
            unit.now,
            result_jws=results.operation_result(
                op, state=OperationState.FAILED, result=result, completed_at=unit.now, now=unit.now
            ),
        ):
            unit.emit(
                EventType.OPERATION_FAILED,
                outcome=Outcome.FAILURE,
                code=code.value,
                operation_id=op.id,
                payload=result,
            )


def _config(conn: Connection, application_id: str) -> AppConfig:
    raw = apps.config_text(conn, application_id)
    if raw is None:
        raise NotFound("no such application")
    return AppConfig.from_stored(raw)


def _nothing() -> None:
    pass


class Operations:
    def __init__(
        self, box: SecretBox, results: ResultKeys, *, wake: Callable[[], None] = _nothing
    ) -> None:
        self.box = box
        self.results = results
        self.wake = wake  # tells this process's sender a notification is waiting

    # -- users ----------------------------------------------------------------------------

    def create_user(self, unit: Unit, application_id: str, request: CreateUserRequest) -> User:
        record = UserRecord(
            id=new_id(),
            application_id=application_id,
            external_ref=request.external_ref,
            created_at=unit.now,
        )
        conn = unit.write()
        _config(conn, application_id)
        try:
            users.insert_user(conn, record)
        except IntegrityError as exc:
            raise KeyboundError(
                "a user with this externalRef already exists", code=ErrorCode.CONFLICT
            ) from exc
        unit.emit(EventType.USER_CREATE, subject=record.id, payload={"userId": record.id})
        return User(
            user_id=record.id, external_ref=record.external_ref, created_at=ms_to_dt(unit.now)
        )

    def get_user(self, unit: Unit, application_id: str, user_id: str) -> User:
        with unit.read() as conn:
            row = users.get(conn, application_id, user_id)
        if row is None:
            raise NotFound("no such user")
        return User(
            user_id=row.id, external_ref=row.external_ref, created_at=ms_to_dt(row.created_at)
        )

    # -- activation codes -----------------------------------------------------------------

    def create_activation(
        self, unit: Unit, application_id: str, user_id: str
    ) -> ActivationCodeResponse:
        """A new activation code for a user; the device id it will create is fixed now."""
        with unit.read() as conn:
            user = users.get(conn, application_id, user_id)
        if user is None:
            raise NotFound("no such user")
        return self._issue_code(unit, application_id, user_id, new_id(), OperationType.ACTIVATION)

    def create_reactivation(
        self, unit: Unit, application_id: str, device_id: str
    ) -> ActivationCodeResponse:
        """An activation code that re-activates an existing device: all its credentials are
        replaced at finish. Not possible once the device is deactivated."""
        unit.about(device_id=device_id)
        with unit.read() as conn:
            reg = regs.get_of_application(conn, application_id, device_id)
        if reg is None:
            raise NotFound("no such device")
        if reg.state == DeviceState.DEACTIVATED:
            raise InvalidState("a deactivated device cannot be reactivated")
        return self._issue_code(
            unit, application_id, reg.user_id, device_id, OperationType.REACTIVATION
        )

    def _issue_code(
        self, unit: Unit, application_id: str, user_id: str, device_id: str, kind: OperationType
    ) -> ActivationCodeResponse:
        """§3.2.5: the operation, and its secrets -- a token for the link, a typed code
        with a hint -- stored only as keyed hashes."""
        conn = unit.write()
        config = _config(conn, application_id)
        expires = unit.now + config.activation_code_lifetime_seconds * 1000
        op_id = new_id()
        ops.insert_operation(
            conn,
            id=op_id,
            application_id=application_id,
            type=kind.value,
            initiator=Initiator.BACKEND.value,
            state=OperationState.PENDING.value,
            user_id=user_id,
            device_id=device_id,
            expires_at=expires,
            config=config.to_stored(),
            created_at=unit.now,
        )
        token = new_activation_token()
        code = new_activation_code(config.activation_code_type, config.activation_code_length)
        attempts = code_attempts(config.activation_code_type, config.activation_code_length)
        for _ in range(HINT_ATTEMPTS):
            hint = new_activation_hint()
            if activation_secrets.insert_unless_hint_taken(
                conn,
                operation_id=op_id,
                application_id=application_id,
                token_hash=self.box.keyed_hash(
                    Purpose.ACTIVATION_TOKEN, token, binding=application_id.encode()
                ),
                hint=hint,
                code_hash=self.box.keyed_hash(
                    Purpose.ACTIVATION_CODE,
                    normalize_activation_code(code).encode(),
                    binding=op_id.encode(),
                ),
                attempts=attempts,
                expires_at=expires,
                now=unit.now,
            ):
                break
        else:  # every draw collided with a pending activation's hint
            raise InvalidState("could not draw a unique activation hint; try again")
        unit.emit(
            EventType.ACTIVATION_CODE_ISSUED
            if kind is OperationType.ACTIVATION
            else EventType.REACTIVATION_CODE_ISSUED,
            subject=device_id,
            operation_id=op_id,
            payload={"activationHint": hint},
        )
        return ActivationCodeResponse(
            operation_id=op_id,
            user_id=user_id,
            device_id=device_id,
            activation_link=activation_link(application_id, token),
            activation_token=b64u_encode(token),
            activation_code=code,
            activation_hint=hint,
            activation_code_attempts=attempts,
            expires_at=ms_to_dt(expires),
            type=kind,
        )

    # -- backend-initiated authentication -------------------------------------------------

    def create_authentication(
        self, unit: Unit, application_id: str, device_id: str, request: CreateOperationRequest
    ) -> Operation:
        pre = request.pre_operation_context
        if pre is not None and len(pre.content.encode()) > MAX_PRE_CONTEXT_BYTES:
            raise MalformedRequest(
                f"preOperationContext content exceeds {MAX_PRE_CONTEXT_BYTES} bytes"
            )
        return self._create_backend(
            unit,
            application_id,
            device_id,
            OperationType.AUTHENTICATION,
            shown=pre,
            post=request.post_operation_context,
            method=request.required_auth_method,
        )

    def create_signature(
        self, unit: Unit, application_id: str, device_id: str, request: CreateSignatureRequest
    ) -> Operation:
        """A signature operation (§3.2.6): like a backend-initiated authentication whose
        pre-operation context is the data to sign, kept where a context is."""
        data = request.data_to_sign
        if len(data.content.encode()) > MAX_DATA_TO_SIGN_BYTES:
            raise MalformedRequest(f"dataToSign content exceeds {MAX_DATA_TO_SIGN_BYTES} bytes")
        return self._create_backend(
            unit,
            application_id,
            device_id,
            OperationType.SIGNATURE,
            shown=data,
            post=None,
            method=request.required_auth_method,
        )

    def _create_backend(
        self,
        unit: Unit,
        application_id: str,
        device_id: str,
        kind: OperationType,
        *,
        shown: OperationContext | None,
        post: OperationContext | None,
        method: AuthMethod | None,
    ) -> Operation:
        unit.about(device_id=device_id)
        op_id = new_id()
        conn = unit.write()
        config = _config(conn, application_id)
        reg = regs.get_of_application(conn, application_id, device_id)
        if reg is None:
            raise NotFound("no such device")
        if reg.state != DeviceState.ACTIVE:
            raise InvalidState(f"device is {reg.state.lower()}")
        if method is not None and method not in config.allowed_auth_methods:
            raise MalformedRequest(f"auth method {method} is not allowed for this application")
        expires_at = unit.now + config.operation_lifetime_seconds * 1000
        ops.insert_operation(
            conn,
            id=op_id,
            application_id=application_id,
            type=kind.value,
            initiator=Initiator.BACKEND.value,
            state=OperationState.PENDING.value,
            user_id=reg.user_id,
            device_id=device_id,
            expires_at=expires_at,
            pre_context=dump_context(shown),
            wrapped_post_context=None
            if post is None
            else self.box.wrap(
                Purpose.POST_CONTEXT,
                post.model_dump_json(by_alias=True).encode(),
                binding=op_id.encode(),
            ),
            required_auth_method=method.value if method else None,
            config=config.to_stored(),
            created_at=unit.now,
        )
        # one event, public: the relying party's feed and the device's wake-up hear of it;
        # operationType keeps the kind in the audit trail
        unit.emit(
            EventType.DEVICE_OPERATION_PENDING,
            operation_id=op_id,
            payload=device_data(
                device_id=device_id,
                user_id=reg.user_id,
                state=reg.state,
                operationId=op_id,
                operationType=kind.value,
                expiresAt=timestamp(expires_at),
            ),
        )
        # the device is woken through its push token after commit, if the application has
        # a provider for it (docs/notifications.md); a failed wake-up never fails this
        token = push.token_of(conn, device_id)
        if token is not None and token.provider in {
            p.kind for p in push.providers_of(conn, application_id)
        }:
            push.queue(
                conn,
                application_id=application_id,
                device_id=device_id,
                operation_id=op_id,
                expires_at=expires_at,
                now=unit.now,
            )
            unit.after_commit(self.wake)
        row = ops.get(conn, op_id)
        assert row is not None
        return operation_view(row, unit.now)

    def get(self, unit: Unit, application_id: str, operation_id: str) -> Operation:
        """The operation, with its signed result once it has ended: one that ended without
        one (it expired: EXPIRED is derived on read; or it ended before results were
        signed) is signed now and keeps that result."""
        unit.about(operation_id=operation_id)
        with unit.read() as conn:
            row = ops.get_of_application(conn, application_id, operation_id)
        if row is None:
            raise NotFound("no such operation")
        state = effective_state(row, unit.now)
        if state is OperationState.PENDING or row.result_jws is not None:
            return operation_view(row, unit.now)
        # else it expired, never answered (EXPIRED derived, or stored by maintenance)
        ended = row.state in (OperationState.COMPLETED, OperationState.FAILED)
        signed = self.results.operation_result(
            row,
            state=state,
            result=json.loads(row.result) if ended and row.result else None,
            completed_at=row.completed_at if ended else None,
            now=unit.now,
        )
        conn = unit.write()
        if not ops.store_result_jws(conn, row.id, signed, unit.now):
            current = ops.get(conn, row.id)  # another read (or a late finish) stored one
            assert current is not None
            return operation_view(current, unit.now)
        return operation_view(row, unit.now, result_jws=signed)
