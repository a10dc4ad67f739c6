"""Activation and reactivation: start consumes the activation's secret (the link's token, or
the typed code within its attempt budget) and makes a TPM's credential, finish consumes the
challenge, judges the key attestation and registers the device's keys (docs/protocol.md
§3.1.1-2, §3.2.5, §4, §6)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from keybound.crypto import key_id
from keybound.errors import CeremonyError, CeremonyFailed, ErrorCode
from keybound.protocol import (
    ActivationFinishRequest,
    ActivationFinishResponse,
    ActivationStartRequest,
    ActivationStartResponse,
    AttestationMode,
    AuthMethod,
    DeviceState,
    HwKeyValidationStrategy,
    OperationType,
    TpmCredential,
)
from keybound.server.attestation_trust import AttestationTrust
from keybound.server.clock import ms_to_dt
from keybound.server.core.activation import VerifiedActivation, verify_activation
from keybound.server.core.appconfig import AppConfig
from keybound.server.core.attestation import Status, TpmCredentialState, start_tpm_credential
from keybound.server.core.ceremony import new_challenge
from keybound.server.core.codes import (
    Attempt,
    judge_attempt,
    normalize_activation_code,
    normalize_activation_hint,
)
from keybound.server.events.model import EventType, Outcome
from keybound.server.events.public import device_data
from keybound.server.notify.base import ProviderKind, PushTarget
from keybound.server.records import OperationRecord
from keybound.server.repositories import activation_secrets as secrets_
from keybound.server.repositories import operations as ops
from keybound.server.repositories import push
from keybound.server.repositories import registrations as regs
from keybound.server.secrets import Purpose, SecretBox
from keybound.server.services.operations import consume_signed
from keybound.server.services.registrations import store_push_token
from keybound.server.services.resultkeys import ResultKeys
from keybound.server.unit import Unit

if TYPE_CHECKING:
    from sqlalchemy import Connection


#: one answer for every refused start: unknown, wrong, used, burnt or expired (§3.1.1)
CODE_REFUSED: Final = "unknown, used, burnt or expired activation code or link"


class Activation:
    def __init__(self, box: SecretBox, results: ResultKeys, trust: AttestationTrust) -> None:
        self.box = box
        self.results = results
        self.trust = trust

    # -- start (§3.1.1) -------------------------------------------------------------------

    def start(self, unit: Unit, request: ActivationStartRequest) -> ActivationStartResponse:
        unit.about(application_id=request.application_id)
        conn = unit.write()
        if request.activation_token is not None:
            form = "link"
            operation_id = secrets_.take_by_token(
                conn,
                request.application_id,
                self.box.keyed_hash(
                    Purpose.ACTIVATION_TOKEN,
                    request.activation_token,
                    binding=request.application_id.encode(),
                ),
                unit.now,
            )
        else:
            form = "code"
            operation_id = self._typed_code(unit, conn, request)
        op = None if operation_id is None else ops.get(conn, operation_id)
        if op is None:
            raise CeremonyError(CODE_REFUSED, code=ErrorCode.ACTIVATION_CODE_INVALID)
        config = AppConfig.from_stored(op.config)
        challenge = new_challenge()
        challenge_expires = min(unit.now + config.challenge_lifetime_seconds * 1000, op.expires_at)
        device_id = ops.start_activation(conn, op.id, challenge, challenge_expires, unit.now)
        if device_id is None:  # ended meanwhile (never while its secret was pending)
            raise CeremonyError(CODE_REFUSED, code=ErrorCode.ACTIVATION_CODE_INVALID)
        unit.about(device_id=device_id, operation_id=op.id)
        unit.identify()  # the holder of a valid secret
        credential = self._tpm_credential(unit, request, config, op.id)
        unit.emit(EventType.ACTIVATION_START, payload={"form": form})
        return ActivationStartResponse(
            operation_id=op.id,
            device_id=device_id,
            challenge=challenge,
            expires_at=ms_to_dt(challenge_expires),
            allowed_auth_methods=list(config.allowed_auth_methods),
            hardware_key_required=(
                config.hw_key_validation_strategy is HwKeyValidationStrategy.REQUIRED
            ),
            tpm_credential=credential,
        )

    def _tpm_credential(
        self, unit: Unit, request: ActivationStartRequest, config: AppConfig, operation_id: str
    ) -> TpmCredential | None:
        """§6.5.3: credential activation for an offered TPM, where the application checks
        TPM attestation. The state (secret, AK, EK, or why they were refused) is kept
        wrapped on the operation; the start itself never fails because of it."""
        if request.tpm is None or config.attestation_tpm_mode is AttestationMode.DISABLED:
            return None
        credential, state = start_tpm_credential(
            request.tpm, trust=self.trust.tpm, now=ms_to_dt(unit.now)
        )
        ops.keep_tpm_credential(
            unit.write(),
            operation_id,
            self.box.wrap(Purpose.TPM_CREDENTIAL, state.to_bytes(), binding=operation_id.encode()),
        )
        return credential

    def _typed_code(
        self, unit: Unit, conn: Connection, request: ActivationStartRequest
    ) -> str | None:
        """§3.1.1, typed: the attempt is counted first (one conditional statement), then
        compared in constant time; the last wrong attempt of the budget burns the code. A
        wrong attempt is committed (CeremonyFailed) and answered exactly like an unknown
        hint."""
        assert request.activation_code is not None and request.activation_hint is not None
        attempt = secrets_.count_attempt(
            conn,
            request.application_id,
            normalize_activation_hint(request.activation_hint),
            unit.now,
        )
        if attempt is None:
            return None
        given = self.box.keyed_hash(
            Purpose.ACTIVATION_CODE,
            normalize_activation_code(request.activation_code).encode(),
            binding=attempt.operation_id.encode(),
        )
        outcome = judge_attempt(
            given, expected_hash=attempt.code_hash, attempts_left=attempt.attempts_left
        )
        if outcome is Attempt.MATCH:
            return secrets_.take_by_code(conn, attempt.operation_id, attempt.code_hash)
        if outcome is Attempt.BURNT:
            secrets_.burn_code(conn, attempt.operation_id)  # the link's token stays
        unit.emit(
            EventType.ACTIVATION_CODE_FAILED,
            outcome=Outcome.FAILURE,
            code=ErrorCode.ACTIVATION_CODE_INVALID.value,
            operation_id=attempt.operation_id,
            payload={"attemptsLeft": attempt.attempts_left, "burnt": outcome is Attempt.BURNT},
        )
        raise CeremonyFailed(CODE_REFUSED, code=ErrorCode.ACTIVATION_CODE_INVALID)

    # -- finish (§3.1.2) ------------------------------------------------------------------

    def finish(self, unit: Unit, request: ActivationFinishRequest) -> ActivationFinishResponse:
        unit.about(
            application_id=request.application_id,
            device_id=request.device_id,
            operation_id=request.operation_id,
        )
        with unit.read() as conn:
            op = ops.get(conn, request.operation_id)
        verified = verify_activation(
            request,
            operation=op,
            now=unit.now,
            trust=self.trust.material(ms_to_dt(unit.now)),
            tpm_state=lambda: self._tpm_state(op),
        )
        if request.push_token is not None:  # §3.1.2: refused before anything is consumed
            PushTarget(
                provider=ProviderKind(request.push_token.provider.value),
                token=request.push_token.token,
            )
        unit.identify()
        conn = consume_signed(
            unit,
            self.results,
            verified.operation,
            passed=verified.failure is None,
            result=verified.result,
        )
        if verified.operation.wrapped_tpm_credential is not None:  # single use
            ops.erase_tpm_credential(conn, verified.operation.id)
        if verified.failure is None:
            self._store_registration(unit, request, verified)
            unit.emit(EventType.OPERATION_COMPLETED, payload=verified.result)
            op = verified.operation
            assert op.user_id is not None
            unit.emit(
                EventType.DEVICE_ACTIVATED,
                payload=device_data(
                    device_id=request.device_id,
                    user_id=op.user_id,
                    state=DeviceState.ACTIVE.value,
                    reactivation=op.type == OperationType.REACTIVATION.value,
                    hardwareKey=verified.hardware_key is not None,
                    platform=request.device_profile.platform.value,
                ),
            )
        else:
            unit.emit(
                EventType.OPERATION_FAILED,
                outcome=Outcome.FAILURE,
                code=verified.failure.value,
                payload=verified.result,
            )
        if verified.failure is not None:
            reason = verified.attestation.reason
            raise CeremonyFailed(
                "hardware key validation failed",
                code=verified.failure,
                operation_id=verified.operation.id,
                **(
                    {"reason": reason.value}
                    if reason is not None and verified.failure is ErrorCode.ATTESTATION_INVALID
                    else {}
                ),
            )
        return ActivationFinishResponse(
            device_id=request.device_id,
            hardware_key_registered=verified.hardware_key is not None,
            auth_methods=verified.auth_methods,
        )

    def _tpm_state(self, op: OperationRecord | None) -> TpmCredentialState | None:
        if op is None or op.wrapped_tpm_credential is None:
            return None
        return TpmCredentialState.from_bytes(
            self.box.unwrap(
                Purpose.TPM_CREDENTIAL, op.wrapped_tpm_credential, binding=op.id.encode()
            )
        )

    def _store_registration(
        self, unit: Unit, request: ActivationFinishRequest, verified: VerifiedActivation
    ) -> None:
        op, now, profile = verified.operation, unit.now, request.device_profile
        assert op.device_id is not None and op.user_id is not None
        # a PIN is registered only where the application allows DEVICE:PIN (§5), and stored
        # only wrapped under the master key
        keep_pin = (
            request.pin_key is not None
            and AuthMethod.DEVICE_PIN in verified.config.allowed_auth_methods
        )
        credentials = {
            "state": DeviceState.ACTIVE.value,
            "lock_reason": None,
            "failures": 0,
            "sw_public_key": verified.software_key,
            "sw_key_id": key_id(verified.software_key),
            "hw_public_key": verified.hardware_key,
            "hw_algorithm": (
                verified.hardware_algorithm.value if verified.hardware_algorithm else None
            ),
            # what the attestation decided about the stored key (§6.5), read by every
            # authentication; nothing when no key is stored
            "hw_attestation": verified.attestation.value if verified.hardware_key else None,
            "hw_security_level": (
                verified.attestation.security_level.value
                if verified.hardware_key
                and verified.attestation.status is Status.VERIFIED
                and verified.attestation.security_level
                else None
            ),
            "hw_counter": verified.hardware_counter if verified.hardware_key else None,
            "activation_hw_status": request.hw_key_client_status.value,
            "pin_key": (
                self.box.wrap(Purpose.PIN_KEY, request.pin_key, binding=op.device_id.encode())
                if keep_pin and request.pin_key is not None
                else None
            ),
            "platform": profile.platform.value,
            "os_version": profile.os_version,
            "model": profile.model,
            "activated_at": now,
            "updated_at": now,
        }
        conn = unit.write()
        if op.type == OperationType.ACTIVATION.value:
            regs.insert_registration(
                conn,
                id=op.device_id,
                application_id=op.application_id,
                user_id=op.user_id,
                generation=1,
                created_at=now,
                **credentials,
            )
        elif not regs.replace_credentials(conn, op.device_id, credentials):
            # reactivation replaces every credential; not once the device is deactivated
            raise CeremonyError("device was deactivated", code=ErrorCode.DEVICE_INACTIVE)
        else:
            push.remove_token(conn, op.device_id)  # replaced too: this app may be another
        if request.push_token is not None:
            store_push_token(unit, op.device_id, request.push_token)
