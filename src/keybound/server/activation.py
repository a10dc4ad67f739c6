"""Activation and reactivation: start consumes the activation code, finish consumes the
challenge and registers the device's keys (docs/protocol.md §3.1.1-2, §4, §6)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import Row, bindparam, delete, insert, select, update

from keybound.crypto import key_id, parse_public_key, verify_signature
from keybound.errors import CeremonyError, ErrorCode, InvalidSignature
from keybound.protocol import (
    NO_CONTEXT_HASH,
    ActivationFinishRequest,
    ActivationFinishResponse,
    ActivationStartRequest,
    ActivationStartResponse,
    Algorithm,
    AuthMethod,
    DeviceState,
    HwKeyServerResult,
    HwKeyValidationStrategy,
    OperationState,
    OperationType,
    Purpose,
    transcript,
)
from keybound.server import audit
from keybound.server.appconfig import AppConfig
from keybound.server.ceremony import SELECT_OPERATION, consume, prove_possession, require_pending
from keybound.server.common import ms_to_dt, new_challenge
from keybound.server.operations import activation_code_hash
from keybound.server.pinkeys import PinKeys
from keybound.server.risk import risk_data
from keybound.server.strategy import decide
from keybound.storage import tables as t
from keybound.storage.db import Clock, Database, now_ms
from keybound.storage.prepared import Prepared

OPS = t.operations
R = t.registrations
_ACTIVATION_TYPES = (OperationType.ACTIVATION.value, OperationType.REACTIVATION.value)

#: hardware result -> the code a failed activation or authentication reports
HW_FAILURE_CODE = {
    HwKeyServerResult.INVALID: ErrorCode.HARDWARE_KEY_INVALID,
    HwKeyServerResult.MISSING: ErrorCode.HARDWARE_KEY_REQUIRED,
    HwKeyServerResult.NO_KEY_REGISTERED: ErrorCode.HARDWARE_KEY_REQUIRED,
}


#: §3.1.1: the code is found, then consumed by one conditional statement
_SELECT_CODE = Prepared(select(OPS.c.id, OPS.c.config, OPS.c.expires_at).where(
    OPS.c.application_id == bindparam("application_id"), OPS.c.code_hash == bindparam("code"),
    OPS.c.state == OperationState.PENDING.value, OPS.c.expires_at > bindparam("now")))
_CONSUME_CODE = Prepared(
    update(OPS)
    .where(OPS.c.id == bindparam("op_id"), OPS.c.code_hash == bindparam("code"),
           OPS.c.state == OperationState.PENDING.value)
    .values(code_hash=None, challenge=bindparam("challenge_"),
            challenge_expires_at=bindparam("expires"))
    .returning(OPS.c.device_id))
_INSERT_REGISTRATION = Prepared(insert(R))  # every column given (no Python-side defaults)


@dataclass(frozen=True, kw_only=True)
class _Checked:
    """What finish learned before writing: verified keys and the strategy's decision."""

    software_key: bytes
    hardware_key: bytes | None  # stored only when VALID
    server_result: HwKeyServerResult
    passed: bool
    config: AppConfig


class Activation:
    def __init__(self, db: Database, clock: Clock, pin_keys: PinKeys) -> None:
        self.db = db
        self.clock = clock
        self.pin_keys = pin_keys

    # -- start (§3.1.1) -------------------------------------------------------------------

    def start(self, request: ActivationStartRequest) -> ActivationStartResponse:
        now = now_ms(self.clock)
        with audit.refusals(self.db, now, actor=audit.Actor.DEVICE, event="activation.start",
                            application_id=request.application_id):
            return self._start(request, now)

    def _start(self, request: ActivationStartRequest, now: int) -> ActivationStartResponse:
        challenge = new_challenge()
        code_hash = activation_code_hash(request.application_id, request.activation_code)
        with self.db.write() as conn:
            row = _SELECT_CODE.first(conn, {"application_id": request.application_id,
                                            "code": code_hash, "now": now})
            if row is None:
                raise CeremonyError("unknown or expired activation code",
                                    code=ErrorCode.ACTIVATION_CODE_INVALID)
            config = AppConfig.from_stored(row.config)
            challenge_expires = min(now + config.challenge_lifetime_seconds * 1000,
                                    row.expires_at)
            # the code is consumed by this one conditional statement
            consumed = _CONSUME_CODE.first(conn, {
                "op_id": row.id, "code": code_hash, "challenge_": challenge,
                "expires": challenge_expires})
            if consumed is None:
                raise CeremonyError("activation code already used",
                                    code=ErrorCode.ACTIVATION_CODE_INVALID)
            audit.record(conn, at=now, actor=audit.Actor.DEVICE, event="activation.start",
                         outcome=audit.Outcome.SUCCESS, application_id=request.application_id,
                         device_id=consumed.device_id, operation_id=row.id)
        return ActivationStartResponse(
            operation_id=row.id,
            device_id=consumed.device_id,
            challenge=challenge,
            expires_at=ms_to_dt(challenge_expires),
            allowed_auth_methods=list(config.allowed_auth_methods),
            hardware_key_required=(
                config.hw_key_validation_strategy is HwKeyValidationStrategy.REQUIRED
            ),
        )

    # -- finish (§3.1.2) ------------------------------------------------------------------

    def finish(self, request: ActivationFinishRequest) -> ActivationFinishResponse:
        now = now_ms(self.clock)
        with audit.refusals(self.db, now, actor=audit.Actor.DEVICE, event="activation.finish",
                            application_id=request.application_id,
                            device_id=request.device_id, operation_id=request.operation_id):
            return self._finish(request, now)

    def _finish(self, request: ActivationFinishRequest, now: int) -> ActivationFinishResponse:
        with self.db.read() as conn:
            op = SELECT_OPERATION.first(conn, {"id": request.operation_id})
        checked = self._check(request, op, now)
        assert op is not None  # _check raised otherwise
        risk = risk_data(client_status=request.hw_key_client_status,
                         server_result=checked.server_result,
                         platform=request.device_profile.platform.value,
                         os_version=request.device_profile.os_version)
        failure = None if checked.passed else HW_FAILURE_CODE[checked.server_result]
        result = {"risk": risk, "failureCode": failure.value if failure else None}
        with self.db.write() as conn:
            consume(conn, op, passed=checked.passed, result=result, now=now)  # §4.3
            if checked.passed:
                self._store_registration(conn, op, request, checked, now)
            audit.record(conn, at=now, actor=audit.Actor.DEVICE, event="activation.finish",
                         outcome=audit.Outcome.SUCCESS if checked.passed
                         else audit.Outcome.FAILURE,
                         application_id=op.application_id, device_id=op.device_id,
                         operation_id=op.id, code=failure.value if failure else None,
                         details=risk)
        if failure is not None:
            raise CeremonyError("hardware key validation failed", code=failure, audited=True,
                                operation_id=op.id)
        return ActivationFinishResponse(device_id=op.device_id,
                                        hardware_key_registered=checked.hardware_key is not None,
                                        auth_methods=_usable_methods(checked.config,
                                                                     request.pin_key))

    def _check(self, request: ActivationFinishRequest, op: Row[Any] | None,
               now: int) -> _Checked:
        """Guard clauses, one protocol step each (§3.1.2); raises, changes nothing."""
        if (op is None or op.type not in _ACTIVATION_TYPES
                or op.application_id != request.application_id
                or op.device_id != request.device_id
                or op.code_hash is not None or op.challenge is None):
            raise CeremonyError("authentication failed")
        software_key = parse_public_key(request.software_public_key)
        hardware_key = (parse_public_key(request.hardware_public_key)
                        if request.hardware_public_key is not None else None)
        tbs = transcript(
            Purpose.ACTIVATION, application_id=op.application_id, device_id=op.device_id,
            operation_id=op.id, challenge=op.challenge, context_digest=NO_CONTEXT_HASH,
            software_public_key=software_key, hardware_public_key=hardware_key or b"",
            hw_key_client_status=request.hw_key_client_status.value)
        # §4.4 proof of possession of the software key
        prove_possession(software_key, tbs, request.software_signature)
        # only a caller who proved possession learns why a well-signed request is refused
        require_pending(op, now)
        config = AppConfig.from_stored(op.config)
        if not _usable_methods(config, request.pin_key):
            raise CeremonyError("this application only allows DEVICE:PIN: send a pinKey",
                                code=ErrorCode.PIN_REQUIRED)
        server_result = self._hardware_result(tbs, hardware_key, request.hardware_signature)
        passed = decide(config.hw_key_validation_strategy, server_result)
        return _Checked(
            software_key=software_key,
            hardware_key=hardware_key if server_result is HwKeyServerResult.VALID else None,
            server_result=server_result, passed=passed, config=config)

    @staticmethod
    def _hardware_result(tbs: bytes, hardware_key: bytes | None,
                         signature: bytes | None) -> HwKeyServerResult:
        """§6.1 at activation: VALID (key with valid proof of possession), INVALID (key with
        a bad or absent proof), NO_KEY_REGISTERED (no hardware key offered)."""
        if hardware_key is None:
            return HwKeyServerResult.NO_KEY_REGISTERED
        if signature is None:
            return HwKeyServerResult.INVALID
        try:
            verify_signature(public_key=hardware_key, algorithm=Algorithm.ES256, message=tbs,
                             signature=signature)
        except InvalidSignature:
            return HwKeyServerResult.INVALID
        return HwKeyServerResult.VALID

    def _store_registration(self, conn: Any, op: Row[Any], request: ActivationFinishRequest,
                            checked: _Checked, now: int) -> None:
        profile = request.device_profile
        credentials = {
            "state": DeviceState.ACTIVE.value,
            "lock_reason": None,
            "failures": 0,
            "sw_public_key": checked.software_key,
            "sw_key_id": key_id(checked.software_key),
            "hw_public_key": checked.hardware_key,
            "hw_algorithm": Algorithm.ES256.value if checked.hardware_key else None,
            "activation_hw_status": request.hw_key_client_status.value,
            # a PIN is registered only where the application allows DEVICE:PIN (§5), and
            # stored only wrapped under the master key
            "pin_key": (self.pin_keys.wrap(op.device_id, request.pin_key)
                        if request.pin_key is not None and AuthMethod.DEVICE_PIN
                        in checked.config.allowed_auth_methods else None),
            "platform": profile.platform.value,
            "os_version": profile.os_version,
            "model": profile.model,
            "activated_at": now,
            "updated_at": now,
        }
        if op.type == OperationType.ACTIVATION.value:
            _INSERT_REGISTRATION.rowcount(conn, {
                "id": op.device_id, "application_id": op.application_id,
                "user_id": op.user_id, "generation": 1, "failures": 0, "created_at": now,
                **credentials})
            return
        # Reactivation replaces every credential; old keys are simply unknown afterwards.
        replaced = conn.execute(
            update(R)
            .where(R.c.id == op.device_id, R.c.state != DeviceState.DEACTIVATED.value)
            .values(generation=R.c.generation + 1, last_authenticated_at=None, **credentials)
        ).rowcount
        if replaced != 1:
            raise CeremonyError("device was deactivated", code=ErrorCode.DEVICE_INACTIVE)
        conn.execute(delete(t.superseded_keys).where(
            t.superseded_keys.c.registration_id == op.device_id))


def _usable_methods(config: AppConfig, pin_key: bytes | None) -> list[AuthMethod]:
    """The allowed methods a registration can use: DEVICE:PIN needs a registered PIN."""
    return [m for m in config.allowed_auth_methods
            if m is not AuthMethod.DEVICE_PIN or pin_key is not None]
