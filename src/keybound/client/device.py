"""The device: activation, authentication, pending operations and deactivation.

A :class:`Device` plays the device side of the ceremonies in docs/protocol.md against the
device API, keeps its state in a directory (:mod:`keybound.client.state`), its software keys
in that state and its hardware key in a :class:`~keybound.client.keystores.KeyStore`.

Key safety: the device never drops a key the server may consider current.

- Before a finish request is sent, the new material (next software key, or a whole new
  registration) is persisted next to the old.
- A 2xx answer makes the new material current and deletes the old (old hardware keys too).
- A definite refusal (4xx problem with a known code) discards the new material.
- An unknown outcome (network failure, 5xx, unreadable answer) keeps both. The next
  ceremony signs with the newest candidate first; if the server answers
  ``authentication_failed`` it starts afresh with the next older one. Newest first means a
  superseded key is never used, so the server's clone detection is never tripped.

Key attestation: when the hardware key store can prove where its keys live, activation
carries the proof. A TPM that can attest sends its EK certificate and a fresh attestation key
at start (``tpm``) and, with the server's credential, the TPM2_Certify evidence at finish; the
emulated (Android-format) secure element sends its certificate chain at finish
(``attestation``). A store that cannot attest, or fails to, sends nothing: the server records
``NOT_PROVIDED`` and its policy decides, and a server that ignores the fields activates the
device as before.

Declining: when ``approve`` is False or a callback that returns False,
:meth:`Device.authenticate` raises :class:`OperationDeclined` (code ``invalid_state``) without
finishing; a backend-initiated operation is declined at the server (signed), so the relying
party sees it fail at once.

One ceremony at a time per state directory: activate, authenticate, deactivate and forget
hold the directory's lock (:mod:`keybound.client.lock`) from before they read the state until
after they saved the outcome, and read the state as saved, not as this object last saw it. So
any number of Device objects, threads and processes may use one directory: their ceremonies
take turns, and none signs with a key another one has rotated away (docs/protocol.md §4.5).
If the server still answers ``software_key_superseded`` (a ceremony outside the lock rotated
the key after this one's challenge), the device reloads its state and, if that brought a
newer key, tries once more with it; it never retries with the refused key, which the server
would take for a copy.

Signature operations (docs/protocol.md §3.2.6) are answered with :meth:`Device.sign` only:
it shows the data to the ``approve`` callback (mandatory) and signs a transcript that binds
its hash; :meth:`Device.authenticate` refuses them, so an app that approves authentications
without asking never signs data unseen.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar, assert_never

from pydantic import TypeAdapter, ValidationError

from keybound import protocol
from keybound.client import pin as pins
from keybound.client.activation import Activation, read_activation
from keybound.client.keystores import KeyHandle, KeyStore, open_keystore
from keybound.client.keystores.base import (
    ActivationCredential,
    AndroidKeyChain,
    AttestationKey,
    KeyEvidence,
    TpmCertification,
)
from keybound.client.keystores.software import SoftwareKey
from keybound.client.profiles import DeviceProfile
from keybound.client.state import ClientState, Registration, StateStore
from keybound.client.transport import Transport, outcome_unknown
from keybound.errors import (
    ClientError,
    ErrorCode,
    KeyboundError,
    KeyGenerationFailed,
    KeyStoreError,
    SigningFailed,
)
from keybound.protocol import (
    AttestationFormat,
    AuthLevel,
    AuthMethod,
    DevicePaths,
    HwKeyClientStatus,
    Message,
    OperationContext,
    OperationState,
    OperationType,
    Platform,
    Purpose,
)

log = logging.getLogger(__name__)

M = TypeVar("M", bound=Message)
T = TypeVar("T")
R = TypeVar("R")

#: Called with the pre-operation context (what the user is asked to approve); return True
#: to approve. ``authenticate(approve=...)`` also takes a plain True or False, and None
#: (approve everything).
Approve = Callable[[OperationContext | None], bool]

_APPLICATION_ID: TypeAdapter[str] = TypeAdapter(protocol.ApplicationId)


# --------------------------------------------------------------------------- results


@dataclass(frozen=True, kw_only=True)
class ActivationResult:
    """A completed (re)activation."""

    operation_id: str
    device_id: str
    reactivated: bool
    hardware_key_registered: bool
    hw_key_client_status: HwKeyClientStatus
    auth_methods: tuple[AuthMethod, ...]
    #: The attestation evidence the finish carried, None when it carried none (whether the
    #: server verified or required it is the relying party's to read, as risk data).
    attestation_format: AttestationFormat | None = None


@dataclass(frozen=True, kw_only=True)
class AuthenticationResult:
    """A completed authentication. ``post_operation_context`` is released by the server only
    after success."""

    operation_id: str
    auth_method: AuthMethod
    auth_level: AuthLevel
    post_operation_context: OperationContext | None
    hw_key_client_status: HwKeyClientStatus
    #: a signature operation's data, as shown and signed (None for an authentication)
    signed_data: OperationContext | None = None


@dataclass(frozen=True, kw_only=True)
class PendingOperation:
    """A backend-initiated operation waiting for this device."""

    operation_id: str
    expires_at: datetime
    pre_operation_context: OperationContext | None
    required_auth_method: AuthMethod | None
    #: SIGNATURE: answer with :meth:`Device.sign`, which shows ``data_to_sign``
    operation_type: OperationType = OperationType.AUTHENTICATION
    data_to_sign: OperationContext | None = None


class OperationDeclined(ClientError):
    """The ``approve`` callback declined the operation. A backend-initiated operation is
    declined at the server too (it fails with ``declined``); nothing else is sent."""

    code = ErrorCode.INVALID_STATE


@dataclass(frozen=True, kw_only=True)
class _Candidate:
    """A (registration, software key) pair the server may consider current."""

    registration: int
    key: int


# --------------------------------------------------------------------------- device


class Device:
    """A keybound device. Build one with :meth:`create` (new) or :meth:`load` (existing).

    Its properties (``activated``, ``device_id``, ...) describe the state as of this object's
    last ceremony or load; each ceremony re-reads the state as saved."""

    def __init__(
        self,
        *,
        store: StateStore,
        state: ClientState,
        transport: Transport,
        hardware: KeyStore | None,
    ) -> None:
        self._store = store
        self._state = state
        self._transport = transport
        self._hardware = hardware

    @classmethod
    def create(
        cls,
        state_dir: Path | str,
        *,
        application_id: str,
        transport: Transport,
        profile: DeviceProfile,
        hardware: KeyStore | None = None,
    ) -> Device:
        """A new, not yet activated device with its state in ``state_dir`` (created 0700).

        ``hardware`` is the secure-hardware key store, or None for a software-only device.
        Raises CLIENT_CONFIGURATION if ``state_dir`` already holds a device.
        """
        store = StateStore(state_dir)
        try:
            _APPLICATION_ID.validate_python(application_id)
        except ValidationError:
            raise ClientError(
                f"invalid application id {application_id!r}", code=ErrorCode.CLIENT_CONFIGURATION
            ) from None
        state = ClientState(application_id=application_id, profile=profile)
        with store.lock():  # two creators: one creates, the other is refused
            if store.exists():
                raise ClientError(
                    f"{store.directory} already holds a device; use Device.load",
                    code=ErrorCode.CLIENT_CONFIGURATION,
                )
            store.save(state)
        return cls(store=store, state=state, transport=transport, hardware=hardware)

    @classmethod
    def load(
        cls,
        state_dir: Path | str,
        *,
        transport: Transport,
        hardware: KeyStore | None = None,
        profile: DeviceProfile | None = None,
    ) -> Device:
        """The device whose state is in ``state_dir``.

        Without ``hardware``, the key store of the stored hardware key (if any) is reopened
        by kind with default options; if that fails the hardware key counts as unavailable.
        A new ``profile`` (say, after an OS update) replaces the stored one.
        """
        store = StateStore(state_dir)
        with store.lock():
            state = store.load()
            if profile is not None and profile != state.profile:
                state = replace(state, profile=profile)
                store.save(state)
        handle = _newest_handle(state)
        if hardware is None and handle is not None:
            hardware = _reopen(handle.store, store.directory)
        elif hardware is not None and handle is not None and handle.store != hardware.kind:
            raise ClientError(
                f"the device's hardware key is in a {handle.store!r} store, not {hardware.kind!r}",
                code=ErrorCode.CLIENT_CONFIGURATION,
            )
        return cls(store=store, state=state, transport=transport, hardware=hardware)

    # ------------------------------------------------------------------ properties

    @property
    def state_dir(self) -> Path:
        return self._store.directory

    @property
    def application_id(self) -> str:
        return self._state.application_id

    @property
    def profile(self) -> DeviceProfile:
        return self._state.profile

    @property
    def hardware(self) -> KeyStore | None:
        return self._hardware

    @property
    def activated(self) -> bool:
        """True once a (re)activation was accepted, or may have been (outcome unknown)."""
        return self._state.current is not None

    @property
    def device_id(self) -> str | None:
        current = self._state.current
        return None if current is None else current.device_id

    @property
    def has_hardware_key(self) -> bool:
        current = self._state.current
        return current is not None and current.hardware_key is not None

    # ------------------------------------------------------------------ activation

    def activate(
        self,
        activation: str,
        *,
        hint: str | None = None,
        pin: str | None = None,
        push_token: protocol.PushToken | None = None,
    ) -> ActivationResult:
        """(Re)activate with what the relying party issued (docs/protocol.md §3.2.5): the
        activation link or its token, or the typed code with its hint (``HINT-CODE``, or the
        code and ``hint=``); with ``pin``, set up DEVICE:PIN; with ``push_token``, the server
        wakes the app through it when a backend-initiated operation waits (docs/protocol.md
        §3.1.8; a reactivation without one removes the old one).

        On an activated device only a reactivation for the same device id is accepted
        (INVALID_STATE otherwise); success replaces every old key. Raises ClientError with
        the server's code when refused.
        """
        given = read_activation(activation, hint=hint, application_id=self.application_id)
        with self._ceremony():
            return self._activate(given, pin, push_token)

    def _activate(
        self, given: Activation, pin: str | None, push_token: protocol.PushToken | None
    ) -> ActivationResult:
        pin_salt: bytes | None = None
        pin_key: bytes | None = None
        if pin is not None:
            pin_salt = pins.new_salt()
            pin_key = pins.derive_pin_key(pin, pin_salt)
        attestation_key = self._attestation_key()
        start = self._post(
            DevicePaths.ACTIVATION_START,
            _request(
                protocol.ActivationStartRequest,
                application_id=self.application_id,
                activation_token=given.token,
                activation_code=given.code,
                activation_hint=given.hint,
                tpm=_tpm_wire(attestation_key),
            ),
            protocol.ActivationStartResponse,
        )
        reactivation = self._check_activation_target(start.device_id)
        registration, request = self._activation_finish(start, pin_salt, pin_key, attestation_key)
        if push_token is not None:
            request = request.model_copy(update={"push_token": push_token})
        finish = self._send_activation(registration, request)
        if finish.device_id != start.device_id:
            raise ClientError("server activated another device id", code=ErrorCode.CLIENT_TRANSPORT)
        confirmed = self._confirm_activation(registration, finish)
        return ActivationResult(
            operation_id=start.operation_id,
            device_id=finish.device_id,
            reactivated=reactivation,
            hardware_key_registered=confirmed.hardware_key is not None,
            hw_key_client_status=registration.activation_hw_status,
            auth_methods=confirmed.auth_methods,
            attestation_format=None if request.attestation is None else request.attestation.format,
        )

    def _check_activation_target(self, device_id: str) -> bool:
        """True for a reactivation; refuses a new device id on an activated device."""
        confirmed = [r for r in self._state.registrations if r.confirmed]
        if not confirmed:
            return False
        if confirmed[0].device_id != device_id:
            raise ClientError(
                "this device is already activated; the code is not a reactivation code for it"
                " (deactivate or forget() the device first)",
                code=ErrorCode.INVALID_STATE,
            )
        return True

    def _activation_finish(
        self,
        start: protocol.ActivationStartResponse,
        pin_salt: bytes | None,
        pin_key: bytes | None,
        attestation_key: AttestationKey | None,
    ) -> tuple[Registration, protocol.ActivationFinishRequest]:
        software = SoftwareKey.generate()
        handle, status = self._generate_hardware_key(start.device_id)
        registration = Registration(
            device_id=start.device_id,
            confirmed=False,
            software_keys=(software.to_pem(),),
            hardware_key=handle,
            activation_hw_status=status,
            pin_salt=pin_salt,
        )
        message = self._activation_transcript(start, software, registration)
        hardware_signature = None
        if handle is not None:
            hardware_signature = self._sign_new_hardware_key(handle, message)
            if hardware_signature is None:
                registration = replace(
                    registration,
                    hardware_key=None,
                    activation_hw_status=HwKeyClientStatus.GENERATION_FAILED,
                )
                message = self._activation_transcript(start, software, registration)
        hardware_key = registration.hardware_key
        attestation = (
            None if hardware_key is None else self._attest(hardware_key, start, attestation_key)
        )
        request = protocol.ActivationFinishRequest(
            application_id=self.application_id,
            operation_id=start.operation_id,
            device_id=start.device_id,
            software_public_key=software.public_key,
            software_signature=software.sign(message),
            hardware_public_key=None if hardware_key is None else hardware_key.public_key,
            hardware_signature=hardware_signature,
            hw_key_client_status=registration.activation_hw_status,
            pin_key=pin_key,
            device_profile=self.profile.to_protocol(),
            attestation=attestation,
        )
        return registration, request

    def _activation_transcript(
        self,
        start: protocol.ActivationStartResponse,
        software: SoftwareKey,
        registration: Registration,
    ) -> bytes:
        handle = registration.hardware_key
        return protocol.transcript(
            Purpose.ACTIVATION,
            application_id=self.application_id,
            device_id=start.device_id,
            operation_id=start.operation_id,
            challenge=start.challenge,
            context_digest=protocol.NO_CONTEXT_HASH,
            software_public_key=software.public_key,
            hardware_public_key=b"" if handle is None else handle.public_key,
            auth_method="",
            hw_key_client_status=registration.activation_hw_status.value,
        )

    def _generate_hardware_key(self, device_id: str) -> tuple[KeyHandle | None, HwKeyClientStatus]:
        store = self._hardware
        if store is None or self.profile.expects_secure_hardware() is False:
            return None, HwKeyClientStatus.NOT_SUPPORTED
        try:
            if not store.configured():
                return None, HwKeyClientStatus.NOT_SUPPORTED
            if not store.available():
                raise KeyGenerationFailed(f"secure hardware not reachable: {store.describe()}")
            handle = store.generate(f"keybound:{self.application_id}:{device_id}")
        except KeyStoreError as exc:
            log.warning("hardware key generation failed: %s", exc.code.value)
            return None, HwKeyClientStatus.GENERATION_FAILED
        return handle, HwKeyClientStatus.OK

    def _attestation_key(self) -> AttestationKey | None:
        """What the store presents at start to attest the key it is about to make (a TPM's
        EK certificate and a fresh AK); None if no hardware key will be made or the store
        needs or has none."""
        store = self._hardware
        if store is None or self.profile.expects_secure_hardware() is False:
            return None
        try:
            key = store.attestation_key() if store.configured() else None
            _tpm_wire(key)  # what does not fit the protocol is not offered
        except KeyStoreError as exc:
            log.warning("hardware key attestation unavailable: %s", exc.detail)
            return None
        except ValidationError:
            log.warning("the TPM's attestation key exceeds the protocol's limits; not sent")
            return None
        return key

    def _attest(
        self,
        handle: KeyHandle,
        start: protocol.ActivationStartResponse,
        attestation_key: AttestationKey | None,
    ) -> protocol.AndroidKeyAttestation | protocol.TpmAttestation | None:
        """The store's evidence for the new hardware key, bound to the activation challenge,
        in wire form; None when there is none. Attestation never fails an activation."""
        store = self._hardware
        if store is None:
            return None
        credential = start.tpm_credential
        try:
            evidence = store.attest(
                handle,
                challenge=start.challenge,
                attestation_key=attestation_key,
                credential=None
                if credential is None
                else ActivationCredential(
                    credential_blob=credential.credential_blob,
                    encrypted_secret=credential.encrypted_secret,
                ),
            )
            return None if evidence is None else _attestation_wire(evidence, self.profile)
        except KeyStoreError as exc:
            log.warning("hardware key attestation failed: %s", exc.detail)
        except ValidationError:
            log.warning("hardware key attestation exceeds the protocol's limits; not sent")
        return None

    def _sign_new_hardware_key(self, handle: KeyHandle, message: bytes) -> bytes | None:
        """Proof of possession for a fresh hardware key; None (key deleted) if it cannot
        sign, which the device reports as GENERATION_FAILED."""
        signature, _ = self._hardware_sign(handle, message)
        if signature is not None:
            return signature
        self._delete_hardware_key(handle)
        return None

    def _send_activation(
        self, registration: Registration, request: protocol.ActivationFinishRequest
    ) -> protocol.ActivationFinishResponse:
        self._save(replace(self._state, registrations=(*self._state.registrations, registration)))
        try:
            return self._post(
                DevicePaths.ACTIVATION_FINISH, request, protocol.ActivationFinishResponse
            )
        except ClientError as exc:
            if not outcome_unknown(exc):
                self._discard_registration(registration)
            raise

    def _confirm_activation(
        self, registration: Registration, finish: protocol.ActivationFinishResponse
    ) -> Registration:
        confirmed = replace(registration, confirmed=True, auth_methods=tuple(finish.auth_methods))
        if confirmed.hardware_key is not None and not finish.hardware_key_registered:
            self._delete_hardware_key(confirmed.hardware_key)
            confirmed = replace(confirmed, hardware_key=None)
        self._keep_only(confirmed)
        return confirmed

    # ------------------------------------------------------------------ authentication

    def authenticate(
        self,
        *,
        operation_id: str | None = None,
        pin: str | None = None,
        approve: Approve | bool | None = None,
    ) -> AuthenticationResult:
        """Authenticate: device-initiated, or answering the backend-initiated
        ``operation_id``. With ``pin`` the auth method is DEVICE:PIN, else DEVICE.

        ``approve``: True (or None) approves, False declines, a callable is shown the
        pre-operation context and decides; a decline raises :class:`OperationDeclined`.
        Raises ClientError with the server's code when refused (``pin_invalid`` for a wrong
        PIN: only the server can tell).
        """
        return self._answer(
            operation_id,
            pin,
            _Approval(approve),
            _Expected(kind=OperationType.AUTHENTICATION, data=None),
        )

    def sign(
        self,
        operation_id: str,
        *,
        approve: Approve,
        pin: str | None = None,
        expected_data: OperationContext | None = None,
    ) -> AuthenticationResult:
        """Answer the signature operation ``operation_id`` (docs/protocol.md §3.2.6): the
        data to sign is shown to ``approve``, and the device's keys sign a transcript that
        binds its hash, which the result's JWS carries to the relying party.

        ``expected_data``: what the app already showed (say, from :meth:`pending`); other
        data from the server is refused before anything is signed (``invalid_state``).
        Returning False from ``approve`` declines it (:class:`OperationDeclined`).
        """
        return self._answer(
            operation_id,
            pin,
            _Approval(approve),
            _Expected(kind=OperationType.SIGNATURE, data=expected_data),
        )

    def _answer(
        self, operation_id: str | None, pin: str | None, approval: _Approval, expected: _Expected
    ) -> AuthenticationResult:
        method = AuthMethod.DEVICE_PIN if pin is not None else AuthMethod.DEVICE

        def attempt() -> AuthenticationResult:
            self._require_activated()
            return _newest_accepted(
                self._candidates(),
                lambda candidate: self._authenticate_with(
                    candidate, operation_id, method, pin, approval, expected
                ),
                "authentication",
            )

        with self._ceremony():
            known = self._software_keys()
            try:
                return attempt()
            except ClientError as exc:
                if exc.code is not ErrorCode.SOFTWARE_KEY_SUPERSEDED:
                    raise
                self._reload()
                if not self._software_keys() - known:
                    # Rotated by a holder of these keys that did not save here (a copy of
                    # this directory): the old key again would be a copy (§4.5).
                    log.warning("the software key was rotated outside this state directory")
                    raise
                log.info("the software key was rotated meanwhile; trying the current one")
                return attempt()

    def _decline(
        self,
        device_id: str,
        start: protocol.AuthenticationStartResponse,
        shown: OperationContext | None,
    ) -> None:
        """Decline a backend-initiated operation at the server (§3.1.7), signing with each
        candidate key of ``device_id``, newest first, as finish does; the challenge stays
        the same while it is valid, so no new start (and no new question) is needed.

        When the server cannot be told (the operation then expires there), raises
        OperationDeclined chained to the failure: a decline never becomes anything else."""
        keys = [
            SoftwareKey.from_pem(self._state.registrations[c.registration].software_keys[c.key])
            for c in self._candidates()
            if self._state.registrations[c.registration].device_id == device_id
        ]
        message = protocol.transcript(
            Purpose.DECLINE,
            application_id=self.application_id,
            device_id=device_id,
            operation_id=start.operation_id,
            challenge=start.challenge,
            context_digest=protocol.context_hash(shown),
            software_public_key=b"",
        )

        def send(key: SoftwareKey) -> None:
            self._post(
                DevicePaths.AUTHENTICATION_DECLINE,
                _request(
                    protocol.DeclineRequest,
                    application_id=self.application_id,
                    device_id=device_id,
                    operation_id=start.operation_id,
                    software_key_id=key.key_id,
                    software_signature=key.sign(message),
                ),
                protocol.DeclineResponse,
            )

        try:
            _newest_accepted(keys, send, "decline")
        except ClientError as exc:
            log.warning("the server could not be told of the decline: %s", exc.code.value)
            raise OperationDeclined(
                "the operation was declined on the device (the server could not be"
                f" told: {exc.code.value})"
            ) from exc

    def _authenticate_with(
        self,
        candidate: _Candidate,
        operation_id: str | None,
        method: AuthMethod,
        pin: str | None,
        approval: _Approval,
        expected: _Expected,
    ) -> AuthenticationResult:
        registration = self._state.registrations[candidate.registration]
        current = SoftwareKey.from_pem(registration.software_keys[candidate.key])
        pin_key = _pin_key(registration, pin)
        start = self._post(
            DevicePaths.AUTHENTICATION_START,
            _request(
                protocol.AuthenticationStartRequest,
                application_id=self.application_id,
                device_id=registration.device_id,
                operation_id=operation_id,
            ),
            protocol.AuthenticationStartResponse,
        )
        shown = expected.check(start)
        _check_method(method, start.allowed_auth_methods)
        try:
            approval.check(shown)
        except OperationDeclined:
            if operation_id is not None:  # tell the relying party now (§3.1.7)
                self._decline(registration.device_id, start, shown)
            raise
        following = SoftwareKey.generate()
        signed = self._sign_authentication(
            start, registration, following, method, expected.kind, shown
        )
        request = protocol.AuthenticationFinishRequest(
            application_id=self.application_id,
            device_id=registration.device_id,
            operation_id=start.operation_id,
            auth_method=method,
            software_key_id=current.key_id,
            next_software_public_key=following.public_key,
            software_signature=current.sign(signed.message),
            hardware_signature=signed.hardware_signature,
            hw_key_client_status=signed.status,
            pin_proof=None if pin_key is None else pins.proof(pin_key, signed.message),
        )
        finish = self._send_authentication(
            registration.software_keys[candidate.key], following, request
        )
        return AuthenticationResult(
            operation_id=finish.operation_id,
            auth_method=finish.auth_method,
            auth_level=finish.auth_level,
            post_operation_context=finish.post_operation_context,
            hw_key_client_status=signed.status,
            signed_data=shown if expected.kind is OperationType.SIGNATURE else None,
        )

    def _sign_authentication(
        self,
        start: protocol.AuthenticationStartResponse,
        registration: Registration,
        following: SoftwareKey,
        method: AuthMethod,
        kind: OperationType,
        shown: OperationContext | None,
    ) -> _HardwareSigned:
        """The transcript and the hardware part of an authentication (or signature). The
        status is in the transcript, so a failed hardware signature means a new transcript
        without one."""

        def transcript(status: HwKeyClientStatus) -> bytes:
            return self._authentication_transcript(
                start, registration, following, method, status, kind, shown
            )

        handle = registration.hardware_key
        if handle is None:
            status = self._status_without_hardware_key(registration)
            return _HardwareSigned(
                message=transcript(status), hardware_signature=None, status=status
            )
        message = transcript(HwKeyClientStatus.OK)
        signature, status = self._hardware_sign(handle, message)
        if signature is None:
            message = transcript(status)
        return _HardwareSigned(message=message, hardware_signature=signature, status=status)

    def _authentication_transcript(
        self,
        start: protocol.AuthenticationStartResponse,
        registration: Registration,
        following: SoftwareKey,
        method: AuthMethod,
        status: HwKeyClientStatus,
        kind: OperationType,
        shown: OperationContext | None,
    ) -> bytes:
        # §4.1.1: a signature signs the hash of the data shown, under its own purpose
        return protocol.transcript(
            Purpose.SIGNATURE if kind is OperationType.SIGNATURE else Purpose.AUTHENTICATION,
            application_id=self.application_id,
            device_id=registration.device_id,
            operation_id=start.operation_id,
            challenge=start.challenge,
            context_digest=protocol.context_hash(shown),
            software_public_key=following.public_key,
            hardware_public_key=b"",
            auth_method=method.value,
            hw_key_client_status=status.value,
        )

    def _hardware_sign(
        self, handle: KeyHandle, message: bytes
    ) -> tuple[bytes | None, HwKeyClientStatus]:
        hardware = self._hardware
        if hardware is None or hardware.kind != handle.store:
            return None, HwKeyClientStatus.KEY_UNAVAILABLE
        try:
            return hardware.sign(handle, message), HwKeyClientStatus.OK
        except SigningFailed:
            log.warning("hardware key signing failed")
            return None, HwKeyClientStatus.SIGNING_FAILED
        except KeyStoreError as exc:
            log.warning("hardware key unavailable: %s", exc.code.value)
            return None, HwKeyClientStatus.KEY_UNAVAILABLE

    def _status_without_hardware_key(self, registration: Registration) -> HwKeyClientStatus:
        """A registration without a hardware key reports why: generation failed at
        activation, the device has no (usable) secure hardware, or it has now but the
        registration predates it (reactivate to get a hardware key)."""
        if registration.activation_hw_status is HwKeyClientStatus.GENERATION_FAILED:
            return HwKeyClientStatus.GENERATION_FAILED
        if self._wants_hardware():
            return HwKeyClientStatus.NOT_ACTIVATED_WITH_HW_KEY
        return HwKeyClientStatus.NOT_SUPPORTED

    def _send_authentication(
        self,
        signer: str,
        following: SoftwareKey,
        request: protocol.AuthenticationFinishRequest,
    ) -> protocol.AuthenticationFinishResponse:
        """Persist the next key as a candidate beside the signing key, send, then promote or
        discard it."""
        pending = self._add_software_key(signer, following.to_pem())
        try:
            finish = self._post(
                DevicePaths.AUTHENTICATION_FINISH, request, protocol.AuthenticationFinishResponse
            )
        except ClientError as exc:
            if not outcome_unknown(exc):
                self._drop_software_key(following.to_pem())
            raise
        if finish.state is not OperationState.COMPLETED:
            # A 2xx that is not a completion is no protocol answer: keep the candidate.
            raise ClientError(
                f"server answered finish with state {finish.state.value}",
                code=ErrorCode.CLIENT_TRANSPORT,
            )
        self._keep_only(replace(pending, confirmed=True, software_keys=(following.to_pem(),)))
        return finish

    # ------------------------------------------------------------------ pending, deactivation

    def pending(self) -> list[PendingOperation]:
        """Backend-initiated operations waiting for this device (answer one with
        ``authenticate(operation_id=...)``, or a signature operation with ``sign``)."""
        current = self._store.load().current  # as saved; no lock: nothing is written
        if current is None:
            raise ClientError("the device is not activated", code=ErrorCode.CLIENT_NOT_ACTIVATED)
        response = self._post(
            DevicePaths.PENDING_OPERATIONS,
            protocol.PendingOperationsRequest(
                application_id=self.application_id, device_id=current.device_id
            ),
            protocol.PendingOperationsResponse,
        )
        return [
            PendingOperation(
                operation_id=op.operation_id,
                expires_at=op.expires_at,
                pre_operation_context=op.pre_operation_context,
                required_auth_method=op.required_auth_method,
                operation_type=op.operation_type or OperationType.AUTHENTICATION,
                data_to_sign=op.data_to_sign,
            )
            for op in response.operations
        ]

    def deactivate(self) -> None:
        """Deactivate this device on the server, then :meth:`forget` it locally. Raises
        ClientError (state kept) when the server refuses or cannot be reached."""
        with self._ceremony():
            self._require_activated()
            _newest_accepted(self._candidates(), self._deactivate_with, "deactivation")
            self.forget()

    def _deactivate_with(self, candidate: _Candidate) -> None:
        registration = self._state.registrations[candidate.registration]
        key = SoftwareKey.from_pem(registration.software_keys[candidate.key])
        message = protocol.transcript(
            Purpose.DEACTIVATION,
            application_id=self.application_id,
            device_id=registration.device_id,
            operation_id="",
            challenge=b"",
            context_digest=protocol.NO_CONTEXT_HASH,
            software_public_key=key.public_key,
        )
        self._post(
            DevicePaths.DEACTIVATE,
            protocol.DeactivateRequest(
                application_id=self.application_id,
                device_id=registration.device_id,
                software_key_id=key.key_id,
                software_signature=key.sign(message),
            ),
            protocol.DeactivateResponse,
        )

    def update_push_token(self, push_token: protocol.PushToken | None) -> None:
        """Register a new push token (the platform rotated it, or the user allowed
        notifications), or remove it with None; signed by the current software key
        (docs/protocol.md §3.1.8). Raises ClientError when the server refuses."""
        with self._ceremony():  # signed by the key the state as saved says is current
            self._require_activated()
            _newest_accepted(
                self._candidates(),
                lambda candidate: self._push_token_with(candidate, push_token),
                "push token update",
            )

    def _push_token_with(
        self, candidate: _Candidate, push_token: protocol.PushToken | None
    ) -> None:
        registration = self._state.registrations[candidate.registration]
        key = SoftwareKey.from_pem(registration.software_keys[candidate.key])
        message = protocol.transcript(
            Purpose.PUSH_TOKEN,
            application_id=self.application_id,
            device_id=registration.device_id,
            operation_id="",
            challenge=b"",
            context_digest=protocol.push_token_hash(push_token),
            software_public_key=key.public_key,
        )
        self._post(
            DevicePaths.PUSH_TOKEN,
            protocol.PushTokenRequest(
                application_id=self.application_id,
                device_id=registration.device_id,
                software_key_id=key.key_id,
                push_token=push_token,
                software_signature=key.sign(message),
            ),
            protocol.PushTokenResponse,
        )

    def forget(self) -> None:
        """Drop every credential locally without telling the server (e.g. after the relying
        party deactivated the device): hardware keys are deleted, software keys and the PIN
        salt removed from the state file. The device can then be activated anew."""
        with self._ceremony():
            for registration in self._state.registrations:
                if registration.hardware_key is not None:
                    self._delete_hardware_key(registration.hardware_key)
            self._save(replace(self._state, registrations=()))

    # ------------------------------------------------------------------ state bookkeeping

    @contextmanager
    def _ceremony(self) -> Iterator[None]:
        """Hold the state directory's lock, working on the state as saved: another Device,
        thread or process may have changed it since this object last looked."""
        with self._store.lock():
            self._reload()
            yield

    def _reload(self) -> None:
        state = self._store.load()
        if state.application_id != self._state.application_id:
            raise ClientError(
                f"{self._store.directory} now holds a device of application "
                f"{state.application_id!r}, not {self._state.application_id!r}",
                code=ErrorCode.CLIENT_CONFIGURATION,
            )
        self._state = state

    def _software_keys(self) -> set[str]:
        return {key for r in self._state.registrations for key in r.software_keys}

    def _require_activated(self) -> Registration:
        current = self._state.current
        if current is None:
            raise ClientError("the device is not activated", code=ErrorCode.CLIENT_NOT_ACTIVATED)
        return current

    def _candidates(self) -> list[_Candidate]:
        """Every (registration, software key) the server may consider current, newest first."""
        return [
            _Candidate(registration=r, key=k)
            for r in reversed(range(len(self._state.registrations)))
            for k in reversed(range(len(self._state.registrations[r].software_keys)))
        ]

    def _save(self, state: ClientState) -> None:
        self._store.save(state)
        self._state = state

    def _replace_registration(self, index: int, registration: Registration) -> None:
        registrations = list(self._state.registrations)
        registrations[index] = registration
        self._save(replace(self._state, registrations=tuple(registrations)))

    # The candidate key is added to and dropped from the state as saved, not from this
    # object's copy, which a writer that ignores the lock (an older SDK) may have outdated:
    # its rotation is kept, and then seen (authenticate's retry).

    def _add_software_key(self, signer: str, pem: str) -> Registration:
        """Save ``pem`` as the newest candidate of the registration that holds ``signer``.
        Raises SOFTWARE_KEY_SUPERSEDED, sending nothing, when none does any more: another
        ceremony rotated the signer away (and signing with it could look like a copy)."""
        self._reload()
        for index, registration in enumerate(self._state.registrations):
            if signer in registration.software_keys:
                pending = replace(registration, software_keys=(*registration.software_keys, pem))
                self._replace_registration(index, pending)
                return pending
        raise ClientError(
            "another ceremony of this device rotated its software key meanwhile",
            code=ErrorCode.SOFTWARE_KEY_SUPERSEDED,
        )

    def _drop_software_key(self, pem: str) -> None:
        """Forget a candidate key the server definitely refused."""
        self._reload()
        registrations = tuple(
            replace(r, software_keys=tuple(k for k in r.software_keys if k != pem))
            if pem in r.software_keys and len(r.software_keys) > 1
            else r
            for r in self._state.registrations
        )
        self._save(replace(self._state, registrations=registrations))

    def _discard_registration(self, registration: Registration) -> None:
        """Drop a (re)activation the server definitely refused, and its hardware key."""
        remaining = tuple(r for r in self._state.registrations if r != registration)
        self._save(replace(self._state, registrations=remaining))
        if registration.hardware_key is not None:
            self._delete_hardware_key(registration.hardware_key)

    def _keep_only(self, registration: Registration) -> None:
        """Make ``registration`` the only one (the server confirmed it); delete the hardware
        keys of all others after the state is saved."""
        dropped = [
            r.hardware_key
            for r in self._state.registrations
            if r.hardware_key is not None and r.hardware_key != registration.hardware_key
        ]
        self._save(replace(self._state, registrations=(registration,)))
        for handle in dropped:
            self._delete_hardware_key(handle)

    # ------------------------------------------------------------------ hardware

    def _wants_hardware(self) -> bool:
        """Whether this device should have a hardware key now: its profile expects secure
        hardware (or leaves it to the store) and the store is available."""
        if self._hardware is None or self.profile.expects_secure_hardware() is False:
            return False
        try:
            return self._hardware.available()
        except KeyStoreError:
            return False

    def _delete_hardware_key(self, handle: KeyHandle) -> None:
        """Best effort: a key that cannot be deleted now is useless to the server anyway."""
        if self._hardware is None or self._hardware.kind != handle.store:
            log.warning("cannot delete a hardware key in store %r: store not open", handle.store)
            return
        try:
            self._hardware.delete(handle)
        except KeyStoreError as exc:
            log.warning("deleting a hardware key failed: %s", exc.code.value)

    def _post(self, path: str, request: Message, response_type: type[M]) -> M:
        return self._transport.post(path, request, response_type)


# --------------------------------------------------------------------------- helpers


@dataclass(frozen=True, kw_only=True)
class _HardwareSigned:
    message: bytes
    hardware_signature: bytes | None
    status: HwKeyClientStatus


@dataclass(frozen=True, kw_only=True)
class _Expected:
    """What the caller answers: an authentication, or a signature (of this data, if
    given). Checked against the start's answer before anything is signed."""

    kind: OperationType
    data: OperationContext | None

    def check(self, start: protocol.AuthenticationStartResponse) -> OperationContext | None:
        """What the user is shown: the pre-operation context, or the data to sign."""
        kind = start.operation_type or OperationType.AUTHENTICATION
        if kind is not self.kind:
            raise ClientError(
                f"operation {start.operation_id} is a {kind.value.lower()} operation: answer "
                f"it with {'sign' if kind is OperationType.SIGNATURE else 'authenticate'}",
                code=ErrorCode.INVALID_STATE,
            )
        if kind is not OperationType.SIGNATURE:
            return start.pre_operation_context
        if start.data_to_sign is None:
            raise ClientError(
                "a signature operation without data to sign", code=ErrorCode.CLIENT_TRANSPORT
            )
        if self.data is not None and start.data_to_sign != self.data:
            raise ClientError(
                "the server sent other data to sign than the app showed",
                code=ErrorCode.INVALID_STATE,
            )
        return start.data_to_sign


class _Approval:
    """Asks the ``approve`` callback once per distinct context (or data to sign) and remembers
    the answer, declines included: a retry with an older key does not ask again, and a
    decline stays a decline."""

    def __init__(self, approve: Approve | bool | None) -> None:
        if approve is not None and not isinstance(approve, bool) and not callable(approve):
            raise ClientError(
                "approve must be True, False or a callable", code=ErrorCode.CLIENT_CONFIGURATION
            )
        self._approve = approve
        self._decisions: dict[bytes, bool] = {}

    def check(self, context: OperationContext | None) -> None:
        if self._approve is None:
            return
        if isinstance(self._approve, bool):
            if self._approve:
                return
            raise OperationDeclined("the operation was declined on the device")
        digest = protocol.context_hash(context)
        decision = self._decisions.get(digest)
        if decision is None:
            decision = self._decisions[digest] = bool(self._approve(context))
        if not decision:
            raise OperationDeclined("the operation was declined on the device")


def _newest_accepted(candidates: Sequence[T], attempt: Callable[[T], R], what: str) -> R:
    """``attempt`` the candidate keys, newest first, until the server does not refuse one as
    ``authentication_failed`` (the newest is unconfirmed when the request that rotated it
    never reached the server; an older one is then current). Any other error, or the refusal
    of the last candidate, propagates."""
    for number, candidate in enumerate(candidates, start=1):
        try:
            return attempt(candidate)
        except ClientError as exc:
            if exc.code is not ErrorCode.AUTHENTICATION_FAILED or number == len(candidates):
                raise
            log.info("%s failed with an unconfirmed key; trying an older one", what)
    raise AssertionError("no candidate key")  # pragma: no cover - callers are activated


def _request(model: type[M], **fields: Any) -> M:
    """Build a request from caller input; invalid input is the caller's error."""
    try:
        return model(**fields)
    except ValidationError as exc:
        error = exc.errors()[0]
        where = ".".join(str(part) for part in error["loc"])
        raise ClientError(
            f"invalid {where}: {error['msg']}", code=ErrorCode.CLIENT_CONFIGURATION
        ) from None


def _tpm_wire(key: AttestationKey | None) -> protocol.TpmAttestationKey | None:
    if key is None:
        return None
    return protocol.TpmAttestationKey(ek_certificate=key.ek_certificate, ak_public=key.ak_public)


def _attestation_wire(
    evidence: KeyEvidence, profile: DeviceProfile
) -> protocol.AndroidKeyAttestation | protocol.TpmAttestation | None:
    """The finish's ``attestation`` object for ``evidence`` (ValidationError if it does not
    fit the protocol's bounds)."""
    if isinstance(evidence, AndroidKeyChain):
        # Only an Android device has Android key attestation: the emulated element also
        # stands in for iOS's Secure Enclave, which attests nothing of the kind.
        if profile.platform is not Platform.ANDROID:
            return None
        return protocol.AndroidKeyAttestation(certificate_chain=list(evidence.certificate_chain))
    if isinstance(evidence, TpmCertification):
        return protocol.TpmAttestation(
            certify_info=evidence.certify_info,
            signature=evidence.signature,
            public_area=evidence.public_area,
            activated_secret=evidence.activated_secret,
        )
    assert_never(evidence)


def _pin_key(registration: Registration, pin: str | None) -> bytes | None:
    if pin is None:
        return None
    if registration.pin_salt is None:
        raise ClientError("this device was activated without a PIN", code=ErrorCode.INVALID_STATE)
    return pins.derive_pin_key(pin, registration.pin_salt)


def _check_method(method: AuthMethod, allowed: list[AuthMethod]) -> None:
    """Refuse locally what the server would refuse, before a key is spent on it."""
    if not allowed or method in allowed:
        return
    if method is AuthMethod.DEVICE and AuthMethod.DEVICE_PIN in allowed:
        raise ClientError("this operation needs the PIN", code=ErrorCode.PIN_REQUIRED)
    raise ClientError(
        f"auth method {method.value} is not allowed for this operation",
        code=ErrorCode.AUTH_METHOD_NOT_ALLOWED,
    )


def _newest_handle(state: ClientState) -> KeyHandle | None:
    current = state.current
    return None if current is None else current.hardware_key


def _reopen(kind: str, directory: Path) -> KeyStore | None:
    try:
        return open_keystore(kind, directory, {}, require_usable=False)
    except KeyboundError as exc:
        log.warning("cannot reopen key store %r: %s", kind, exc.code.value)
        return None
