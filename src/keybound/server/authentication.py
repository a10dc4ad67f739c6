"""Authentication: start issues a single-use challenge, finish verifies the software key
(always), the PIN proof (DEVICE:PIN) and the hardware key (as the strategy says), rotates the
software key, and consumes the challenge in one conditional statement
(docs/protocol.md §3.1.3-5, §4, §5, §6)."""

from __future__ import annotations

import json
from dataclasses import dataclass

from sqlalchemy import Connection, bindparam, case, insert, select, update

from keybound.crypto import key_id, parse_public_key, verify_pin_proof, verify_signature
from keybound.errors import CeremonyError, ErrorCode, InvalidSignature, MalformedRequest
from keybound.protocol import (
    AUTH_LEVEL,
    Algorithm,
    AuthenticationFinishRequest,
    AuthenticationFinishResponse,
    AuthenticationStartRequest,
    AuthenticationStartResponse,
    AuthMethod,
    DeclineRequest,
    DeclineResponse,
    DeviceState,
    HwKeyServerResult,
    Initiator,
    LockReason,
    OperationState,
    OperationType,
    PendingOperation,
    PendingOperationsRequest,
    PendingOperationsResponse,
    Purpose,
    context_hash,
    pin_proof_message,
    transcript,
)
from keybound.server import audit
from keybound.server.activation import HW_FAILURE_CODE
from keybound.server.appconfig import AppConfig
from keybound.server.applications import load_config, load_config_text
from keybound.server.ceremony import (
    INSERT_OPERATION,
    SELECT_OPERATION,
    consume,
    prove_possession,
    require_pending,
)
from keybound.server.common import load_context, ms_to_dt, new_challenge, new_id
from keybound.server.pinkeys import PinKeys
from keybound.server.registrations import fail_pending_operations
from keybound.server.risk import risk_data
from keybound.server.strategy import decide
from keybound.storage import tables as t
from keybound.storage.db import Clock, Database, now_ms
from keybound.storage.prepared import Prepared, Record

OPS = t.operations
R = t.registrations
S = t.superseded_keys


# The statements of the hot path, built once (SQLAlchemy then reuses their compiled form).
_SELECT_STATE = Prepared(select(R.c.state).where(
    R.c.id == bindparam("device_id"), R.c.application_id == bindparam("application_id")))
_SELECT_REGISTRATION = Prepared(select(R).where(R.c.id == bindparam("id")))
_SELECT_SUPERSEDED = Prepared(select(S.c.public_key).where(
    S.c.registration_id == bindparam("registration_id"), S.c.key_id == bindparam("key_id")))
_INSERT_SUPERSEDED = Prepared(insert(S))
#: backend-initiated: the device's pending list, its start, and a challenge refresh (§3.1.3)
_SELECT_PENDING = Prepared(select(
    OPS.c.id, OPS.c.expires_at, OPS.c.pre_context, OPS.c.required_auth_method).where(
    OPS.c.device_id == bindparam("device_id"),
    OPS.c.application_id == bindparam("application_id"),
    OPS.c.state == OperationState.PENDING.value, OPS.c.initiator == Initiator.BACKEND.value,
    OPS.c.type == OperationType.AUTHENTICATION.value,
    OPS.c.expires_at > bindparam("now")).order_by(OPS.c.created_at))
_SELECT_BACKEND_PENDING = Prepared(select(
    OPS.c.config, OPS.c.expires_at, OPS.c.challenge, OPS.c.challenge_expires_at,
    OPS.c.pre_context, OPS.c.required_auth_method).where(
    OPS.c.id == bindparam("id"), OPS.c.device_id == bindparam("device_id"),
    OPS.c.application_id == bindparam("application_id"),
    OPS.c.type == OperationType.AUTHENTICATION.value,
    OPS.c.state == OperationState.PENDING.value, OPS.c.expires_at > bindparam("now")))
_REFRESH_CHALLENGE = Prepared(
    update(OPS).where(OPS.c.id == bindparam("op_id"), OPS.c.state == OperationState.PENDING.value,
                      OPS.c.challenge.is_not_distinct_from(bindparam("current")))
    .values(challenge=bindparam("fresh"), challenge_expires_at=bindparam("fresh_expires")))
_SELECT_CHALLENGE = Prepared(select(OPS.c.challenge, OPS.c.challenge_expires_at).where(
    OPS.c.id == bindparam("id")))
#: §4.5: rotate only if the signer is still the current key of an active registration
_ROTATE = Prepared(
    update(R)
    .where(R.c.id == bindparam("reg_id"), R.c.sw_key_id == bindparam("signer_key_id"),
           R.c.state == DeviceState.ACTIVE.value)
    .values(sw_public_key=bindparam("next_key"), sw_key_id=bindparam("next_key_id"),
            failures=0, last_authenticated_at=bindparam("now"), updated_at=bindparam("now"))
)


@dataclass(frozen=True, kw_only=True)
class _Verified:
    """Finish after every check that changes nothing: who signed and what was decided."""

    signer_key_id: bytes
    signer_key: bytes
    next_key: bytes
    server_result: HwKeyServerResult
    pin_ok: bool
    passed: bool
    config: AppConfig


class Authentication:
    def __init__(self, db: Database, clock: Clock, pin_keys: PinKeys) -> None:
        self.db = db
        self.clock = clock
        self.pin_keys = pin_keys

    # -- start (§3.1.3) -------------------------------------------------------------------

    def start(self, request: AuthenticationStartRequest) -> AuthenticationStartResponse:
        now = now_ms(self.clock)
        with audit.refusals(self.db, now, actor=audit.Actor.DEVICE,
                            event="authentication.start",
                            application_id=request.application_id,
                            device_id=request.device_id, operation_id=request.operation_id):
            if request.operation_id is None:
                return self._start_device_initiated(request, now)
            return self._start_backend_initiated(request, request.operation_id, now)

    def _start_device_initiated(self, request: AuthenticationStartRequest,
                                now: int) -> AuthenticationStartResponse:
        challenge = new_challenge()
        op_id = new_id()
        # one transaction, decoy or not: the secure channel's replay mark rides on it
        # (Database.riding), so a start costs one commit
        with self.db.write() as conn:
            raw_config = load_config_text(conn, request.application_id)
            state = _SELECT_STATE.scalar(conn, {
                "device_id": request.device_id, "application_id": request.application_id})
            if raw_config is None or state is None or state == DeviceState.DEACTIVATED.value:
                # §3.1.3: an unknown device gets a decoy challenge, so start cannot be used to
                # find out which device ids exist. Finish will fail as for a bad signature.
                return self._decoy(AppConfig.from_stored(raw_config) if raw_config
                                   else AppConfig(), now)
            config = AppConfig.from_stored(raw_config)
            expires = now + config.challenge_lifetime_seconds * 1000
            INSERT_OPERATION.rowcount(conn, {
                "id": op_id, "application_id": request.application_id,
                "type": OperationType.AUTHENTICATION.value,
                "initiator": Initiator.DEVICE.value, "state": OperationState.PENDING.value,
                "device_id": request.device_id, "challenge": challenge,
                "challenge_expires_at": expires, "expires_at": expires,
                "config": raw_config, "created_at": now})
        return AuthenticationStartResponse(
            operation_id=op_id, challenge=challenge, expires_at=ms_to_dt(expires),
            allowed_auth_methods=list(config.allowed_auth_methods))

    def _start_backend_initiated(self, request: AuthenticationStartRequest, op_id: str,
                                 now: int) -> AuthenticationStartResponse:
        with self.db.write() as conn:
            row = _SELECT_BACKEND_PENDING.first(conn, {
                "id": op_id, "device_id": request.device_id,
                "application_id": request.application_id, "now": now})
            if row is None:
                config = load_config(conn, request.application_id) or AppConfig()
                return self._decoy(config, now, operation_id=op_id)
            config = AppConfig.from_stored(row.config)
            challenge, expires = row.challenge, row.challenge_expires_at
            if challenge is None or expires <= now:
                # §3.1.3: a challenge stays the same while it is valid, so a second start
                # (a retry, or anyone who knows the ids) cannot invalidate the device's finish
                fresh = new_challenge()
                fresh_expires = min(now + config.challenge_lifetime_seconds * 1000,
                                    row.expires_at)
                replaced = _REFRESH_CHALLENGE.rowcount(conn, {
                    "op_id": op_id, "current": challenge, "fresh": fresh,
                    "fresh_expires": fresh_expires})
                if replaced == 1:
                    challenge, expires = fresh, fresh_expires
                else:  # a concurrent start issued one first: answer with that one
                    current = _SELECT_CHALLENGE.one(conn, {"id": op_id})
                    challenge, expires = current.challenge, current.challenge_expires_at
        methods = list(config.allowed_auth_methods)
        if row.required_auth_method:
            methods = [AuthMethod(row.required_auth_method)]
        return AuthenticationStartResponse(
            operation_id=op_id, challenge=challenge, expires_at=ms_to_dt(expires),
            pre_operation_context=load_context(row.pre_context),
            allowed_auth_methods=methods)

    @staticmethod
    def _decoy(config: AppConfig, now: int,
               operation_id: str | None = None) -> AuthenticationStartResponse:
        return AuthenticationStartResponse(
            operation_id=operation_id or new_id(), challenge=new_challenge(),
            expires_at=ms_to_dt(now + config.challenge_lifetime_seconds * 1000),
            allowed_auth_methods=list(config.allowed_auth_methods))

    # -- pending backend-initiated operations (§3.1.5) -----------------------------------------

    def pending(self, request: PendingOperationsRequest) -> PendingOperationsResponse:
        now = now_ms(self.clock)
        with self.db.read() as conn:
            rows = _SELECT_PENDING.all(conn, {"device_id": request.device_id,
                                              "application_id": request.application_id,
                                              "now": now})
        return PendingOperationsResponse(operations=[
            PendingOperation(
                operation_id=r.id, expires_at=ms_to_dt(r.expires_at),
                pre_operation_context=load_context(r.pre_context),
                required_auth_method=(AuthMethod(r.required_auth_method)
                                      if r.required_auth_method else None))
            for r in rows])

    # -- decline (§3.1.7) -----------------------------------------------------------------

    def decline(self, request: DeclineRequest) -> DeclineResponse:
        """The user saw a backend-initiated operation's context and said no: the operation
        fails at once with failureCode ``declined`` (not counted as an authentication
        failure), so the relying party need not wait for it to expire."""
        now = now_ms(self.clock)
        with audit.refusals(self.db, now, actor=audit.Actor.DEVICE,
                            event="authentication.decline",
                            application_id=request.application_id,
                            device_id=request.device_id, operation_id=request.operation_id):
            return self._decline(request, now)

    def _decline(self, request: DeclineRequest, now: int) -> DeclineResponse:
        with self.db.read() as conn:
            reg = _SELECT_REGISTRATION.first(conn, {"id": request.device_id})
            op = SELECT_OPERATION.first(conn, {"id": request.operation_id})
        # binding as for finish (§3.1.4 step 1); only the current key may decline
        if (op is None or reg is None or not _bound(op, reg, request.application_id)
                or op.initiator != Initiator.BACKEND.value
                or request.software_key_id != reg.sw_key_id):
            raise CeremonyError("authentication failed")
        tbs = transcript(Purpose.DECLINE, application_id=op.application_id, device_id=reg.id,
                         operation_id=op.id, challenge=op.challenge,
                         context_digest=context_hash(load_context(op.pre_context)),
                         software_public_key=b"")
        prove_possession(reg.sw_public_key, tbs, request.software_signature)
        require_pending(op, now)
        result = {"failureCode": ErrorCode.DECLINED.value}
        with self.db.write() as conn:
            consume(conn, op, passed=False, result=result, now=now)
            audit.record(conn, at=now, actor=audit.Actor.DEVICE, event="authentication.decline",
                         outcome=audit.Outcome.SUCCESS, application_id=op.application_id,
                         device_id=reg.id, operation_id=op.id, code=ErrorCode.DECLINED.value)
        return DeclineResponse(operation_id=op.id, state=OperationState.FAILED)

    # -- finish (§3.1.4) ------------------------------------------------------------------

    def finish(self, request: AuthenticationFinishRequest) -> AuthenticationFinishResponse:
        now = now_ms(self.clock)
        with audit.refusals(self.db, now, actor=audit.Actor.DEVICE,
                            event="authentication.finish",
                            application_id=request.application_id,
                            device_id=request.device_id, operation_id=request.operation_id):
            return self._finish(request, now)

    def _finish(self, request: AuthenticationFinishRequest,
                now: int) -> AuthenticationFinishResponse:
        with self.db.read() as conn:
            # registration before operation: a finish commits both together, so an operation
            # read after the registration is never older than it (no false copy alarms under
            # READ COMMITTED when a concurrent finish rotates the key between the two reads)
            reg = _SELECT_REGISTRATION.first(conn, {"id": request.device_id})
            signer = self._signer(conn, request, reg)
            op = SELECT_OPERATION.first(conn, {"id": request.operation_id})
            # a next key that is an old one would be current and superseded at once (§4.5)
            next_is_old = reg is not None and _superseded_key(
                conn, reg.id, key_id(request.next_software_public_key)) is not None
        try:
            verified = self._check(request, op, reg, signer, now, next_is_old=next_is_old)
        except _CopyDetected:
            assert op is not None and reg is not None
            self._lock_cloned(op, reg, signer_key_id=request.software_key_id, now=now)
        assert op is not None and reg is not None
        failure = self._failure_code(verified)
        risk = risk_data(client_status=request.hw_key_client_status,
                         server_result=verified.server_result, platform=reg.platform,
                         os_version=reg.os_version)
        result = {"authMethod": request.auth_method.value,
                  "authLevel": None if failure else AUTH_LEVEL[request.auth_method].value,
                  "failureCode": failure.value if failure else None, "risk": risk}
        with self.db.write() as conn:
            consume(conn, op, passed=failure is None, result=result, now=now)
            if failure is None:
                self._rotate(conn, reg, verified, now)
            else:
                self._count_failure(conn, reg, verified.config, now)
            audit.record(conn, at=now, actor=audit.Actor.DEVICE, event="authentication.finish",
                         outcome=audit.Outcome.FAILURE if failure else audit.Outcome.SUCCESS,
                         application_id=op.application_id, device_id=reg.id,
                         operation_id=op.id, code=failure.value if failure else None,
                         details=result)
        if failure is not None:
            raise CeremonyError("authentication failed", code=failure, audited=True,
                                operation_id=op.id)
        post = load_context(op.post_context)
        return AuthenticationFinishResponse(
            operation_id=op.id, state=OperationState.COMPLETED,
            auth_method=request.auth_method, auth_level=AUTH_LEVEL[request.auth_method],
            post_operation_context=post)

    @staticmethod
    def _signer(conn: Connection, request: AuthenticationFinishRequest,
                reg: Record | None) -> tuple[bytes, bool] | None:
        """The stored key the request names: (public key, superseded?) or None."""
        if reg is None:
            return None
        if request.software_key_id == reg.sw_key_id:
            return reg.sw_public_key, False
        old = _superseded_key(conn, reg.id, request.software_key_id)
        return None if old is None else (old, True)

    def _check(self, request: AuthenticationFinishRequest, op: Record | None,
               reg: Record | None, signer: tuple[bytes, bool] | None,
               now: int, *, next_is_old: bool) -> _Verified:
        """Guard clauses, one protocol step each (§3.1.4); raises, changes nothing (a copy is
        signalled with _CopyDetected for _finish to act on)."""
        # §3.1.4 step 1: operation, device and application belong together
        if signer is None or op is None or reg is None or \
                not _bound(op, reg, request.application_id):
            raise CeremonyError("authentication failed")
        tbs = transcript(
            Purpose.AUTHENTICATION, application_id=op.application_id, device_id=reg.id,
            operation_id=op.id, challenge=op.challenge,
            context_digest=context_hash(load_context(op.pre_context)),
            software_public_key=request.next_software_public_key,
            auth_method=request.auth_method.value,
            hw_key_client_status=request.hw_key_client_status.value)
        # step 2: the software signature always has to verify (§6)
        signer_key, superseded = signer
        prove_possession(signer_key, tbs, request.software_signature)
        # step 3: from here on the caller holds a key of this registration. A replayed
        # finish is refused as such; any other use of a superseded key is a copy (§4.5).
        if op.state != OperationState.PENDING.value:
            raise CeremonyError("challenge already used", code=ErrorCode.CHALLENGE_USED)
        if superseded:
            raise _CopyDetected
        require_pending(op, now)
        if reg.state == DeviceState.LOCKED.value:
            raise CeremonyError("device is locked", code=ErrorCode.DEVICE_LOCKED)
        if reg.state == DeviceState.DEACTIVATED.value:
            raise CeremonyError("device is deactivated", code=ErrorCode.DEVICE_INACTIVE)
        next_key = parse_public_key(request.next_software_public_key)
        if key_id(next_key) in (reg.sw_key_id, request.software_key_id) or next_is_old:
            raise MalformedRequest("nextSoftwarePublicKey must be a new key")
        config = AppConfig.from_stored(op.config)
        # step 4: auth method allowed by the application and by the operation (§5)
        method = request.auth_method
        if method not in config.allowed_auth_methods or (
                op.required_auth_method and method.value != op.required_auth_method):
            raise CeremonyError(f"auth method {method} not allowed",
                                code=ErrorCode.AUTH_METHOD_NOT_ALLOWED)
        pin_ok = True
        if method is AuthMethod.DEVICE_PIN:
            if reg.pin_key is None:
                raise CeremonyError("no PIN registered for this device",
                                    code=ErrorCode.AUTH_METHOD_NOT_ALLOWED)
            if request.pin_proof is None:
                raise CeremonyError("pinProof is required for DEVICE:PIN",
                                    code=ErrorCode.PIN_REQUIRED)
            pin_ok = verify_pin_proof(pin_key=self.pin_keys.unwrap(reg.id, reg.pin_key),
                                      message=pin_proof_message(tbs), proof=request.pin_proof)
        # step 5: the hardware key, judged by the strategy snapshot (§6)
        server_result = self._hardware_result(tbs, reg, request.hardware_signature)
        passed = decide(config.hw_key_validation_strategy, server_result)
        return _Verified(signer_key_id=request.software_key_id, signer_key=signer_key,
                         next_key=next_key,
                         server_result=server_result, pin_ok=pin_ok,
                         passed=passed and pin_ok, config=config)

    @staticmethod
    def _hardware_result(tbs: bytes, reg: Record,
                         signature: bytes | None) -> HwKeyServerResult:
        if reg.hw_public_key is None:
            return HwKeyServerResult.NO_KEY_REGISTERED
        if signature is None:
            return HwKeyServerResult.MISSING
        try:
            # the algorithm comes from the stored key, never from the request
            verify_signature(public_key=reg.hw_public_key,
                             algorithm=Algorithm(reg.hw_algorithm), message=tbs,
                             signature=signature)
        except InvalidSignature:
            return HwKeyServerResult.INVALID
        return HwKeyServerResult.VALID

    @staticmethod
    def _failure_code(verified: _Verified) -> ErrorCode | None:
        if not verified.pin_ok:
            return ErrorCode.PIN_INVALID
        if not verified.passed:
            return HW_FAILURE_CODE[verified.server_result]
        return None

    @staticmethod
    def _rotate(conn: Connection, reg: Record, verified: _Verified, now: int) -> None:
        """Replace the software key; the old one is remembered to detect copies (§4.5)."""
        rotated = _ROTATE.rowcount(conn, {
            "reg_id": reg.id, "signer_key_id": verified.signer_key_id,
            "next_key": verified.next_key, "next_key_id": key_id(verified.next_key),
            "now": now})
        if rotated != 1:  # locked or deactivated meanwhile, or another finish rotated first
            state = _SELECT_STATE.scalar(conn, {"device_id": reg.id,
                                                "application_id": reg.application_id})
            if state == DeviceState.LOCKED.value:
                raise CeremonyError("device is locked", code=ErrorCode.DEVICE_LOCKED)
            if state == DeviceState.DEACTIVATED.value:
                raise CeremonyError("device is deactivated", code=ErrorCode.DEVICE_INACTIVE)
            raise CeremonyError("software key changed concurrently",
                                code=ErrorCode.CHALLENGE_USED)
        _INSERT_SUPERSEDED.rowcount(conn, {
            "registration_id": reg.id, "key_id": verified.signer_key_id,
            "public_key": verified.signer_key, "superseded_at": now})

    @staticmethod
    def _count_failure(conn: Connection, reg: Record, config: AppConfig, now: int) -> None:
        """§5: consecutive failures lock the registration at amountFailuresAllowed."""
        reached = R.c.failures + 1 >= config.amount_failures_allowed
        conn.execute(
            update(R).where(R.c.id == reg.id, R.c.state == DeviceState.ACTIVE.value)
            .values(failures=R.c.failures + 1,
                    state=case((reached, DeviceState.LOCKED.value), else_=R.c.state),
                    lock_reason=case((reached, LockReason.FAILURES.value),
                                     else_=R.c.lock_reason),
                    updated_at=now))

    def _lock_cloned(self, op: Record, reg: Record, *, signer_key_id: bytes,
                     now: int) -> None:
        """A valid signature by a superseded software key: the key was copied (§4.5). The
        registration is locked whatever else is wrong with the request."""
        result = {"failureCode": ErrorCode.SOFTWARE_KEY_CLONED.value,
                  "risk": {"softwareKeyCloneSuspected": True}}
        with self.db.write() as conn:
            failed = conn.execute(update(OPS).where(OPS.c.id == op.id,
                                                    OPS.c.state == OperationState.PENDING.value)
                                  .values(state=OperationState.FAILED.value, completed_at=now,
                                          result=json.dumps(result))).rowcount
            if failed != 1:  # finished meanwhile: a replay of it is no copy
                raise CeremonyError("challenge already used", code=ErrorCode.CHALLENGE_USED)
            conn.execute(update(R).where(R.c.id == reg.id,
                                         R.c.state != DeviceState.DEACTIVATED.value).values(
                state=DeviceState.LOCKED.value, lock_reason=LockReason.SOFTWARE_KEY_CLONED.value,
                updated_at=now))
            fail_pending_operations(conn, reg.id, ErrorCode.SOFTWARE_KEY_CLONED.value, now)
            audit.record(conn, at=now, actor=audit.Actor.DEVICE,
                         event="authentication.clone_detected", outcome=audit.Outcome.FAILURE,
                         application_id=op.application_id, device_id=reg.id,
                         operation_id=op.id, code=ErrorCode.SOFTWARE_KEY_CLONED.value,
                         details={"supersededKeyId": signer_key_id.hex()})
        raise CeremonyError("superseded software key used: registration locked",
                            code=ErrorCode.SOFTWARE_KEY_CLONED, audited=True,
                            operation_id=op.id)


class _CopyDetected(Exception):
    """_check found a valid signature by a superseded key (§4.5); _finish locks."""


def _bound(op: Record, reg: Record, application_id: str) -> bool:
    """§3.1.4 step 1: an authentication operation with a challenge, of this device, both of
    the application the request names."""
    return (op.type == OperationType.AUTHENTICATION.value and op.challenge is not None
            and op.application_id == application_id and reg.application_id == application_id
            and op.device_id == reg.id)


def _superseded_key(conn: Connection, registration_id: str, key: bytes) -> bytes | None:
    found: bytes | None = _SELECT_SUPERSEDED.scalar(conn, {
        "registration_id": registration_id, "key_id": key})
    return found
