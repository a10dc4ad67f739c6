"""Activation and reactivation: start consumes the activation code, finish consumes the
challenge and registers the device's keys (docs/protocol.md §3.1.1-2, §4, §6)."""

from __future__ import annotations

from keybound.crypto import key_id
from keybound.errors import CeremonyError, CeremonyFailed, ErrorCode
from keybound.protocol import (
    ActivationFinishRequest,
    ActivationFinishResponse,
    ActivationStartRequest,
    ActivationStartResponse,
    Algorithm,
    AuthMethod,
    DeviceState,
    HwKeyValidationStrategy,
    OperationType,
)
from keybound.server.clock import ms_to_dt
from keybound.server.core.activation import VerifiedActivation, verify_activation
from keybound.server.core.appconfig import AppConfig
from keybound.server.core.ceremony import new_challenge
from keybound.server.core.codes import activation_code_hash
from keybound.server.events.model import EventType, Outcome
from keybound.server.events.public import device_data
from keybound.server.notify.base import ProviderKind, PushTarget
from keybound.server.repositories import operations as ops
from keybound.server.repositories import push
from keybound.server.repositories import registrations as regs
from keybound.server.secrets import Purpose, SecretBox
from keybound.server.services.registrations import store_push_token
from keybound.server.unit import Unit


class Activation:
    def __init__(self, box: SecretBox) -> None:
        self.box = box

    # -- start (§3.1.1) -------------------------------------------------------------------

    def start(self, unit: Unit, request: ActivationStartRequest) -> ActivationStartResponse:
        unit.about(application_id=request.application_id)
        code_hash = activation_code_hash(request.application_id, request.activation_code)
        conn = unit.write()
        row = ops.find_code(conn, request.application_id, code_hash, unit.now)
        if row is None:
            raise CeremonyError("unknown or expired activation code",
                                code=ErrorCode.ACTIVATION_CODE_INVALID)
        config = AppConfig.from_stored(row.config)
        challenge = new_challenge()
        challenge_expires = min(unit.now + config.challenge_lifetime_seconds * 1000,
                                row.expires_at)
        # the code is consumed by this one conditional statement
        device_id = ops.consume_code(conn, row.id, code_hash, challenge, challenge_expires,
                                     unit.now)
        if device_id is None:
            raise CeremonyError("activation code already used",
                                code=ErrorCode.ACTIVATION_CODE_INVALID)
        unit.about(device_id=device_id, operation_id=row.id)
        unit.identify()  # the holder of a valid code
        unit.emit(EventType.ACTIVATION_START)
        return ActivationStartResponse(
            operation_id=row.id, device_id=device_id, challenge=challenge,
            expires_at=ms_to_dt(challenge_expires),
            allowed_auth_methods=list(config.allowed_auth_methods),
            hardware_key_required=(
                config.hw_key_validation_strategy is HwKeyValidationStrategy.REQUIRED))

    # -- finish (§3.1.2) ------------------------------------------------------------------

    def finish(self, unit: Unit, request: ActivationFinishRequest) -> ActivationFinishResponse:
        unit.about(application_id=request.application_id, device_id=request.device_id,
                   operation_id=request.operation_id)
        with unit.read() as conn:
            op = ops.get(conn, request.operation_id)
        verified = verify_activation(request, operation=op, now=unit.now)
        if request.push_token is not None:  # §3.1.2: refused before anything is consumed
            PushTarget(provider=ProviderKind(request.push_token.provider.value),
                       token=request.push_token.token)
        unit.identify()
        conn = unit.write()
        if not ops.consume(conn, verified.operation, passed=verified.failure is None,
                           result=verified.result, now=unit.now):  # §4.3
            raise CeremonyError("challenge already used", code=ErrorCode.CHALLENGE_USED)
        if verified.failure is None:
            self._store_registration(unit, request, verified)
            unit.emit(EventType.OPERATION_COMPLETED, payload=verified.result)
            op = verified.operation
            assert op.user_id is not None
            unit.emit(EventType.DEVICE_ACTIVATED, payload=device_data(
                device_id=request.device_id, user_id=op.user_id, state=DeviceState.ACTIVE.value,
                reactivation=op.type == OperationType.REACTIVATION.value,
                hardwareKey=verified.hardware_key is not None,
                platform=request.device_profile.platform.value))
        else:
            unit.emit(EventType.OPERATION_FAILED, outcome=Outcome.FAILURE,
                      code=verified.failure.value, payload=verified.result)
        if verified.failure is not None:
            raise CeremonyFailed("hardware key validation failed", code=verified.failure,
                                 operation_id=verified.operation.id)
        return ActivationFinishResponse(device_id=request.device_id,
                                        hardware_key_registered=verified.hardware_key is not None,
                                        auth_methods=verified.auth_methods)

    def _store_registration(self, unit: Unit, request: ActivationFinishRequest,
                            verified: VerifiedActivation) -> None:
        op, now, profile = verified.operation, unit.now, request.device_profile
        assert op.device_id is not None and op.user_id is not None
        # a PIN is registered only where the application allows DEVICE:PIN (§5), and stored
        # only wrapped under the master key
        keep_pin = (request.pin_key is not None
                    and AuthMethod.DEVICE_PIN in verified.config.allowed_auth_methods)
        credentials = {
            "state": DeviceState.ACTIVE.value,
            "lock_reason": None,
            "failures": 0,
            "sw_public_key": verified.software_key,
            "sw_key_id": key_id(verified.software_key),
            "hw_public_key": verified.hardware_key,
            "hw_algorithm": Algorithm.ES256.value if verified.hardware_key else None,
            "activation_hw_status": request.hw_key_client_status.value,
            "pin_key": (self.box.wrap(Purpose.PIN_KEY, request.pin_key,
                                      binding=op.device_id.encode())
                        if keep_pin and request.pin_key is not None else None),
            "platform": profile.platform.value,
            "os_version": profile.os_version,
            "model": profile.model,
            "activated_at": now,
            "updated_at": now,
        }
        conn = unit.write()
        if op.type == OperationType.ACTIVATION.value:
            regs.insert_registration(conn, id=op.device_id, application_id=op.application_id,
                                     user_id=op.user_id, generation=1, created_at=now,
                                     **credentials)
        elif not regs.replace_credentials(conn, op.device_id, credentials):
            # reactivation replaces every credential; not once the device is deactivated
            raise CeremonyError("device was deactivated", code=ErrorCode.DEVICE_INACTIVE)
        else:
            push.remove_token(conn, op.device_id)  # replaced too: this app may be another
        if request.push_token is not None:
            store_push_token(unit, op.device_id, request.push_token)
