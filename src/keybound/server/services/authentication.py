"""Authentication: start issues a single-use challenge; finish verifies (core.authentication),
rotates the software key and consumes the challenge in one conditional statement; decline and
the pending list serve backend-initiated operations (docs/protocol.md §3.1.3-5, §3.1.7)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, NoReturn

from keybound.crypto import key_id
from keybound.errors import CeremonyError, CeremonyFailed, ErrorCode
from keybound.protocol import (
    AUTH_LEVEL,
    AuthenticationFinishRequest,
    AuthenticationFinishResponse,
    AuthenticationStartRequest,
    AuthenticationStartResponse,
    AuthMethod,
    DeclineRequest,
    DeclineResponse,
    DeviceState,
    Initiator,
    LockReason,
    OperationContext,
    OperationState,
    OperationType,
    PendingOperation,
    PendingOperationsRequest,
    PendingOperationsResponse,
    Purpose,
    context_hash,
    transcript,
)
from keybound.server.clock import ms_to_dt
from keybound.server.core.appconfig import AppConfig
from keybound.server.core.authentication import (
    OVERLAP_NOTE,
    Signer,
    SupersededKeyUsed,
    VerifiedAuthentication,
    clone_result,
    verify_authentication,
)
from keybound.server.core.ceremony import (
    bound,
    load_context,
    new_challenge,
    new_id,
    prove_possession,
    require_pending,
)
from keybound.server.events.model import EventType, Outcome
from keybound.server.events.public import device_data
from keybound.server.records import RegistrationRecord
from keybound.server.repositories import applications as apps
from keybound.server.repositories import operations as ops
from keybound.server.repositories import registrations as regs
from keybound.server.secrets import Purpose as SecretPurpose
from keybound.server.secrets import SecretBox
from keybound.server.services.operations import consume_signed, fail_pending_of_device
from keybound.server.services.resultkeys import ResultKeys
from keybound.server.unit import Unit

if TYPE_CHECKING:
    from sqlalchemy import Connection


class Authentication:
    def __init__(self, box: SecretBox, results: ResultKeys) -> None:
        self.box = box
        self.results = results

    # -- start (§3.1.3) -------------------------------------------------------------------

    def start(self, unit: Unit, request: AuthenticationStartRequest) -> AuthenticationStartResponse:
        unit.about(
            application_id=request.application_id,
            device_id=request.device_id,
            operation_id=request.operation_id,
        )
        if request.operation_id is None:
            return self._start_device_initiated(unit, request)
        return self._start_backend_initiated(unit, request, request.operation_id)

    def _start_device_initiated(
        self, unit: Unit, request: AuthenticationStartRequest
    ) -> AuthenticationStartResponse:
        # one transaction, decoy or not, so a start costs one commit with its replay mark
        conn = unit.write()
        raw_config = apps.config_text(conn, request.application_id)
        state = regs.state_of(conn, request.application_id, request.device_id)
        if raw_config is None or state is None or state == DeviceState.DEACTIVATED.value:
            # §3.1.3: an unknown device gets a decoy challenge, so start cannot be used to
            # find out which device ids exist. Finish will fail as for a bad signature.
            return _decoy(
                AppConfig.from_stored(raw_config) if raw_config else AppConfig(), unit.now
            )
        config = AppConfig.from_stored(raw_config)
        challenge, op_id = new_challenge(), new_id()
        expires = unit.now + config.challenge_lifetime_seconds * 1000
        ops.insert_operation(
            conn,
            id=op_id,
            application_id=request.application_id,
            type=OperationType.AUTHENTICATION.value,
            initiator=Initiator.DEVICE.value,
            state=OperationState.PENDING.value,
            device_id=request.device_id,
            challenge=challenge,
            challenge_expires_at=expires,
            challenge_issued_at=unit.now,
            expires_at=expires,
            config=raw_config,
            created_at=unit.now,
        )
        return AuthenticationStartResponse(
            operation_id=op_id,
            challenge=challenge,
            expires_at=ms_to_dt(expires),
            allowed_auth_methods=list(config.allowed_auth_methods),
        )

    def _start_backend_initiated(
        self, unit: Unit, request: AuthenticationStartRequest, op_id: str
    ) -> AuthenticationStartResponse:
        conn = unit.write()
        row = ops.backend_pending(
            conn,
            operation_id=op_id,
            application_id=request.application_id,
            device_id=request.device_id,
            now=unit.now,
        )
        if row is None:
            raw = apps.config_text(conn, request.application_id)
            return _decoy(
                AppConfig.from_stored(raw) if raw else AppConfig(), unit.now, operation_id=op_id
            )
        config = AppConfig.from_stored(row.config)
        challenge, expires = row.challenge, row.challenge_expires_at
        if challenge is None or expires is None or expires <= unit.now:
            # §3.1.3: a challenge stays the same while it is valid, so a second start (a
            # retry, or anyone who knows the ids) cannot invalidate the device's finish
            current = ops.refresh_challenge(
                conn,
                op_id,
                current=challenge,
                fresh=new_challenge(),
                fresh_expires_at=min(
                    unit.now + config.challenge_lifetime_seconds * 1000, row.expires_at
                ),
                now=unit.now,
            )
            challenge, expires = current.challenge, current.challenge_expires_at
        assert challenge is not None and expires is not None
        methods = list(config.allowed_auth_methods)
        if row.required_auth_method:
            methods = [AuthMethod(row.required_auth_method)]
        return AuthenticationStartResponse(
            operation_id=op_id,
            challenge=challenge,
            expires_at=ms_to_dt(expires),
            allowed_auth_methods=methods,
            **_shown(row.type, row.pre_context),
        )

    # -- pending backend-initiated operations (§3.1.5) ------------------------------------

    def pending(self, unit: Unit, request: PendingOperationsRequest) -> PendingOperationsResponse:
        unit.about(application_id=request.application_id, device_id=request.device_id)
        with unit.read() as conn:
            rows = ops.pending_of_device(conn, request.application_id, request.device_id, unit.now)
        return PendingOperationsResponse(
            operations=[
                PendingOperation(
                    operation_id=r.id,
                    expires_at=ms_to_dt(r.expires_at),
                    required_auth_method=(
                        AuthMethod(r.required_auth_method) if r.required_auth_method else None
                    ),
                    **_shown(r.type, r.pre_context),
                )
                for r in rows
            ]
        )

    # -- decline (§3.1.7) -----------------------------------------------------------------

    def decline(self, unit: Unit, request: DeclineRequest) -> DeclineResponse:
        """The user saw a backend-initiated operation's context and said no: the operation
        fails at once with failureCode ``declined`` (not counted as an authentication
        failure), so the relying party need not wait for it to expire."""
        unit.about(
            application_id=request.application_id,
            device_id=request.device_id,
            operation_id=request.operation_id,
        )
        with unit.read() as conn:
            reg = regs.get(conn, request.device_id)
            op = ops.get(conn, request.operation_id)
        # binding as for finish (§3.1.4 step 1); only the current key may decline
        if (
            op is None
            or reg is None
            or not bound(op, reg, request.application_id)
            or op.initiator != Initiator.BACKEND.value
            or request.software_key_id != reg.sw_key_id
        ):
            raise CeremonyError("authentication failed")
        assert op.challenge is not None  # bound()
        tbs = transcript(
            Purpose.DECLINE,
            application_id=op.application_id,
            device_id=reg.id,
            operation_id=op.id,
            challenge=op.challenge,
            context_digest=context_hash(load_context(op.pre_context)),
            software_public_key=b"",
        )
        prove_possession(reg.sw_public_key, tbs, request.software_signature)
        unit.identify()
        require_pending(op, unit.now)
        result = {"failureCode": ErrorCode.DECLINED.value}
        consume_signed(unit, self.results, op, passed=False, result=result, user_id=reg.user_id)
        unit.emit(
            EventType.OPERATION_FAILED,
            outcome=Outcome.FAILURE,
            code=ErrorCode.DECLINED.value,
            payload=result,
        )
        return DeclineResponse(operation_id=op.id, state=OperationState.FAILED)

    # -- finish (§3.1.4) ------------------------------------------------------------------

    def finish(
        self, unit: Unit, request: AuthenticationFinishRequest
    ) -> AuthenticationFinishResponse:
        unit.about(
            application_id=request.application_id,
            device_id=request.device_id,
            operation_id=request.operation_id,
        )
        with unit.read() as conn:
            # registration before operation: a finish commits both together, so an operation
            # read after the registration is never older than it (no false copy alarms under
            # READ COMMITTED when a concurrent finish rotates the key between the two reads)
            reg = regs.get(conn, request.device_id)
            signer = _signer(conn, request, reg)
            op = ops.get(conn, request.operation_id)
            # a next key that is an old one would be current and superseded at once (§4.5)
            next_is_old = (
                reg is not None
                and regs.superseded_key(conn, reg.id, key_id(request.next_software_public_key))
                is not None
            )
        try:
            verified = verify_authentication(
                request,
                operation=op,
                registration=reg,
                signer=signer,
                next_key_is_old=next_is_old,
                now=unit.now,
                pin_key=lambda wrapped: self.box.unwrap(
                    SecretPurpose.PIN_KEY, wrapped, binding=request.device_id.encode()
                ),
            )
        except SupersededKeyUsed as used:
            unit.identify()
            self._superseded(unit, used)
        unit.identify()
        conn = consume_signed(
            unit,
            self.results,
            verified.operation,
            passed=verified.failure is None,
            result=verified.result,
            user_id=verified.registration.user_id,
        )
        if verified.failure is None:
            self._rotate(unit, verified)
            unit.emit(EventType.OPERATION_COMPLETED, payload=verified.result)
        else:
            unit.emit(
                EventType.OPERATION_FAILED,
                outcome=Outcome.FAILURE,
                code=verified.failure.value,
                payload=verified.result,
            )
            config = AppConfig.from_stored(verified.operation.config)
            reg = verified.registration
            if regs.count_failure(
                conn, reg.id, allowed=config.amount_failures_allowed, now=unit.now
            ):
                unit.emit(
                    EventType.DEVICE_LOCKED,
                    outcome=Outcome.FAILURE,
                    code=verified.failure.value,
                    payload=device_data(
                        device_id=reg.id,
                        user_id=reg.user_id,
                        state=DeviceState.LOCKED.value,
                        lock_reason=LockReason.FAILURES.value,
                    ),
                )
        if verified.failure is not None:
            raise CeremonyFailed(
                "authentication failed", code=verified.failure, operation_id=verified.operation.id
            )
        return AuthenticationFinishResponse(
            operation_id=verified.operation.id,
            state=OperationState.COMPLETED,
            auth_method=request.auth_method,
            auth_level=AUTH_LEVEL[request.auth_method],
            post_operation_context=self._post_context(verified),
        )

    def _post_context(self, verified: VerifiedAuthentication) -> OperationContext | None:
        """Released once, to the device that completed the operation; the consume that
        completed it erased the stored copy."""
        wrapped = verified.operation.wrapped_post_context
        if wrapped is None:
            return None
        raw = self.box.unwrap(
            SecretPurpose.POST_CONTEXT, wrapped, binding=verified.operation.id.encode()
        )
        return OperationContext.model_validate_json(raw)

    @staticmethod
    def _rotate(unit: Unit, verified: VerifiedAuthentication) -> None:
        """Replace the software key; the old one is remembered to detect copies (§4.5). An
        App Attest key's new counter is stored by the same conditional statement (§4.6)."""
        conn, reg = unit.write(), verified.registration
        if regs.rotate(
            conn,
            reg,
            signer_key_id=verified.signer.key_id,
            signer_key=verified.signer.public_key,
            next_key=verified.next_key,
            next_key_id=key_id(verified.next_key),
            now=unit.now,
            hardware_counter=verified.hardware_counter,
        ):
            return
        # locked or deactivated meanwhile, or another finish rotated first
        state = regs.state_of(conn, reg.application_id, reg.id)
        if state == DeviceState.LOCKED.value:
            raise CeremonyError("device is locked", code=ErrorCode.DEVICE_LOCKED)
        if state == DeviceState.DEACTIVATED.value:
            raise CeremonyError("device is deactivated", code=ErrorCode.DEVICE_INACTIVE)
        raise CeremonyError(
            "software key rotated by another ceremony of this device; retry",
            code=ErrorCode.SOFTWARE_KEY_SUPERSEDED,
        )

    def _superseded(self, unit: Unit, used: SupersededKeyUsed) -> NoReturn:
        """§4.5: a copy locks the registration, whatever else is wrong with the request; an
        overlap of the device's own ceremonies is noted on the operation and refused as
        retryable. Raises either way."""
        op, reg, conn = used.operation, used.registration, unit.write()
        details: dict[str, Any] = {
            "supersededKeyId": used.signer.key_id.hex(),
            "supersededAt": used.signer.superseded_at,
            "challengeIssuedAt": op.challenge_issued_at or op.created_at,
        }
        if not used.copy:
            ops.note_overlap(conn, op.id, OVERLAP_NOTE)
            unit.emit(
                EventType.AUTHENTICATION_FINISH,
                outcome=Outcome.REJECTED,
                code=ErrorCode.SOFTWARE_KEY_SUPERSEDED.value,
                payload={**details, **OVERLAP_NOTE},
            )
            raise CeremonyFailed(
                "the software key was rotated by another ceremony of this "
                "device after this challenge was issued; retry with the "
                "current key",
                code=ErrorCode.SOFTWARE_KEY_SUPERSEDED,
                operation_id=op.id,
            )
        cloned = ErrorCode.SOFTWARE_KEY_CLONED.value
        signed = self.results.operation_result(
            op,
            state=OperationState.FAILED,
            result=clone_result(),
            completed_at=unit.now,
            now=unit.now,
            user_id=reg.user_id,
        )
        if not ops.fail(
            conn,
            op.id,
            clone_result(),
            unit.now,  # finished meanwhile: a
            result_jws=signed,
        ):  # replay of it is no copy
            raise CeremonyError("challenge already used", code=ErrorCode.CHALLENGE_USED)
        locked = regs.lock_cloned(conn, reg.id, unit.now)
        state = DeviceState.LOCKED.value if locked else reg.state
        unit.emit(
            EventType.DEVICE_CLONE_SUSPECTED,
            outcome=Outcome.FAILURE,
            code=cloned,
            payload=device_data(
                device_id=reg.id, user_id=reg.user_id, state=state, operationId=op.id, **details
            ),
        )
        unit.emit(
            EventType.OPERATION_FAILED, outcome=Outcome.FAILURE, code=cloned, payload=clone_result()
        )
        if locked:
            unit.emit(
                EventType.DEVICE_LOCKED,
                outcome=Outcome.FAILURE,
                code=cloned,
                payload=device_data(
                    device_id=reg.id,
                    user_id=reg.user_id,
                    state=state,
                    lock_reason=LockReason.SOFTWARE_KEY_CLONED.value,
                ),
            )
        fail_pending_of_device(unit, self.results, reg.id, ErrorCode.SOFTWARE_KEY_CLONED)
        raise CeremonyFailed(
            "superseded software key used: registration locked",
            code=ErrorCode.SOFTWARE_KEY_CLONED,
            operation_id=op.id,
        )


def _signer(
    conn: Connection, request: AuthenticationFinishRequest, reg: RegistrationRecord | None
) -> Signer | None:
    """The stored key the request names: the current one, a superseded one, or None."""
    if reg is None:
        return None
    if request.software_key_id == reg.sw_key_id:
        return Signer(key_id=reg.sw_key_id, public_key=reg.sw_public_key)
    old = regs.superseded_key(conn, reg.id, request.software_key_id)
    if old is None:
        return None
    return Signer(
        key_id=request.software_key_id, public_key=old.public_key, superseded_at=old.superseded_at
    )


def _shown(operation_type: str, stored: str | None) -> dict[str, Any]:
    """What the device is shown of a pending operation (§3.1.3, §3.1.5): a signature
    operation's data to sign, or an authentication's pre-operation context."""
    if operation_type == OperationType.SIGNATURE.value:
        return {"operation_type": OperationType.SIGNATURE, "data_to_sign": load_context(stored)}
    return {"pre_operation_context": load_context(stored)}


def _decoy(
    config: AppConfig, now: int, operation_id: str | None = None
) -> AuthenticationStartResponse:
    return AuthenticationStartResponse(
        operation_id=operation_id or new_id(),
        challenge=new_challenge(),
        expires_at=ms_to_dt(now + config.challenge_lifetime_seconds * 1000),
        allowed_auth_methods=list(config.allowed_auth_methods),
    )
