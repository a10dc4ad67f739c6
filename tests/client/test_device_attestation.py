"""The Device sends what its hardware key store attests, per the attestation wire contract:
``attestation`` at finish when the store produced evidence (here the emulated, Android-format
secure element), nothing when it cannot, and it keeps activating against a server that
ignores the fields (an application whose attestation modes are DISABLED, the default).
Through the real server app and the secure channel; the recorded requests are checked with
keybound's verifier."""

from __future__ import annotations

import datetime as dt
import logging
from pathlib import Path
from typing import Any, TypeVar

import pytest

from keybound import protocol
from keybound.attestation import (
    AndroidKeyEvidence,
    AndroidKeyPolicy,
    AndroidKeyVerifier,
    TrustStore,
)
from keybound.channel import ChannelPin
from keybound.client import Device, SealedTransport, preset
from keybound.client.keystores.emulated import ATTESTATION_ROOT, EmulatedSecureElement
from keybound.protocol import AttestationFormat, DevicePaths, HwKeyClientStatus, Message
from tests.helpers import RelyingParty

M = TypeVar("M", bound=Message)


class RecordingTransport(SealedTransport):
    """The SDK's sealed transport, keeping every request and decoded answer by path (what
    the device sent, as the server decrypted it)."""

    def __init__(self, pin: ChannelPin, client: Any) -> None:
        super().__init__(pin, client)
        self.sent: dict[str, list[Message]] = {}
        self.answers: dict[str, list[Message]] = {}

    def post(self, path: str, request: Message, response_type: type[M]) -> M:
        self.sent.setdefault(path, []).append(request)
        answer = self.answer(path, request, super().post(path, request, response_type))
        self.answers.setdefault(path, []).append(answer)
        return answer

    def answer(self, path: str, request: Message, answer: M) -> M:
        """Override to change an answer before the device sees it."""
        return answer

    def last(self, path: str, kind: type[M]) -> M:
        """The newest request or answer of type ``kind`` on ``path``."""
        for message in [*self.sent.get(path, []), *self.answers.get(path, [])][::-1]:
            if isinstance(message, kind):
                return message
        raise AssertionError(f"no {kind.__name__} on {path}")


@pytest.fixture
def transport(http: Any, rp: RelyingParty) -> RecordingTransport:
    assert rp.pin is not None
    return RecordingTransport(rp.pin, http.raw)


def activation_code(rp: RelyingParty) -> str:
    return str(rp.activation_code()["activationLink"])


def device_with(
    tmp_path: Path,
    rp: RelyingParty,
    transport: RecordingTransport,
    element: EmulatedSecureElement | None,
    profile: str = "android-14",
) -> Device:
    return Device.create(
        tmp_path / "dev",
        application_id=rp.app_id,
        transport=transport,
        profile=preset(profile),
        hardware=element,
    )


def test_android_device_sends_its_attestation_chain(
    tmp_path: Path, rp: RelyingParty, transport: RecordingTransport
) -> None:
    element = EmulatedSecureElement(tmp_path / "dev" / "emulated-se")
    device = device_with(tmp_path, rp, transport, element)
    result = device.activate(activation_code(rp))
    assert result.hardware_key_registered
    assert result.attestation_format is AttestationFormat.ANDROID_KEY
    start_request = transport.last(DevicePaths.ACTIVATION_START, protocol.ActivationStartRequest)
    assert start_request.tpm is None  # only a TPM presents anything at start
    start = transport.last(DevicePaths.ACTIVATION_START, protocol.ActivationStartResponse)
    finish = transport.last(DevicePaths.ACTIVATION_FINISH, protocol.ActivationFinishRequest)
    attestation = finish.attestation
    assert isinstance(attestation, protocol.AndroidKeyAttestation)
    wire = finish.to_wire()["attestation"]
    assert wire["format"] == "android-key" and len(wire["certificateChain"]) == 3
    assert finish.hardware_public_key is not None
    verifier = AndroidKeyVerifier(
        trust=TrustStore.configured("android-key", add_files=[ATTESTATION_ROOT]),
        policy=AndroidKeyPolicy(),
    )
    verified = verifier.verify(
        AndroidKeyEvidence(chain=tuple(attestation.certificate_chain)),
        expected_challenge=start.challenge,
        expected_public_key=finish.hardware_public_key,
        now=dt.datetime.now(dt.UTC),
    )
    assert verified.challenge == start.challenge
    # the application's Android mode is DISABLED: the device works as before
    auth = device.authenticate()
    assert auth.hw_key_client_status is HwKeyClientStatus.OK


@pytest.mark.parametrize(
    ("profile", "attestation"),
    [
        ("android-14", False),  # an element without key attestation
        ("ios-17", True),  # the element as an iPhone's Secure Enclave: no Android attestation
    ],
)
def test_no_attestation_object_when_there_is_none(
    tmp_path: Path, rp: RelyingParty, transport: RecordingTransport, profile: str, attestation: bool
) -> None:
    element = EmulatedSecureElement(tmp_path / "dev" / "emulated-se", attestation=attestation)
    device = device_with(tmp_path, rp, transport, element, profile)
    result = device.activate(activation_code(rp))
    assert result.hardware_key_registered and result.attestation_format is None
    finish = transport.last(DevicePaths.ACTIVATION_FINISH, protocol.ActivationFinishRequest)
    assert finish.attestation is None and "attestation" not in finish.to_wire()


def test_software_only_device_sends_no_attestation(
    tmp_path: Path, rp: RelyingParty, transport: RecordingTransport
) -> None:
    element = EmulatedSecureElement(tmp_path / "dev" / "emulated-se")
    device = device_with(tmp_path, rp, transport, element, "android-5")
    result = device.activate(activation_code(rp))
    assert not result.hardware_key_registered and result.attestation_format is None
    finish = transport.last(DevicePaths.ACTIVATION_FINISH, protocol.ActivationFinishRequest)
    assert finish.attestation is None


def test_failing_attestation_does_not_fail_activation(
    tmp_path: Path,
    rp: RelyingParty,
    transport: RecordingTransport,
    caplog: pytest.LogCaptureFixture,
) -> None:
    class Failing(EmulatedSecureElement):
        def attest(self, handle: Any, **kwargs: Any) -> Any:
            from keybound.errors import KeyStoreError

            raise KeyStoreError("attestation key gone")

    device = device_with(tmp_path, rp, transport, Failing(tmp_path / "dev" / "emulated-se"))
    with caplog.at_level(logging.WARNING, logger="keybound.client"):
        result = device.activate(activation_code(rp))
    assert result.hardware_key_registered and result.attestation_format is None
    assert "attestation failed: attestation key gone" in caplog.text


def test_reactivation_attests_the_new_key(
    tmp_path: Path, rp: RelyingParty, transport: RecordingTransport
) -> None:
    element = EmulatedSecureElement(tmp_path / "dev" / "emulated-se")
    device = device_with(tmp_path, rp, transport, element)
    device.activate(activation_code(rp))
    first = transport.last(DevicePaths.ACTIVATION_FINISH, protocol.ActivationFinishRequest)
    code = rp.call("POST", f"/rp/v1/devices/{device.device_id}/reactivation", expect=201)[
        "activationLink"
    ]
    assert device.activate(code).attestation_format is AttestationFormat.ANDROID_KEY
    second = transport.last(DevicePaths.ACTIVATION_FINISH, protocol.ActivationFinishRequest)
    assert isinstance(first.attestation, protocol.AndroidKeyAttestation)
    assert isinstance(second.attestation, protocol.AndroidKeyAttestation)
    assert second.attestation.certificate_chain[0] != first.attestation.certificate_chain[0]


class OfferingElement(EmulatedSecureElement):
    """An element that presents an attestation key at start the way ``offer`` says."""

    offer: Any = None

    def attestation_key(self) -> Any:
        if isinstance(self.offer, Exception):
            raise self.offer
        return self.offer


@pytest.mark.parametrize(
    "offer",
    [
        "too-big",  # an EK certificate beyond the protocol's bound is not offered
        "failing",  # a TPM that cannot make its attestation key now
    ],
)
def test_an_unusable_attestation_key_is_not_offered(
    tmp_path: Path,
    rp: RelyingParty,
    transport: RecordingTransport,
    offer: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    from keybound.client.keystores.base import AttestationKey
    from keybound.errors import KeyStoreError

    element = OfferingElement(tmp_path / "dev" / "emulated-se")
    element.offer = (
        AttestationKey(
            ek_certificate=bytes(protocol.MAX_ATTESTATION_CERTIFICATE_BYTES + 1), ak_public=b"ak"
        )
        if offer == "too-big"
        else KeyStoreError("TPM busy")
    )
    device = device_with(tmp_path, rp, transport, element)
    with caplog.at_level(logging.WARNING, logger="keybound.client"):
        result = device.activate(activation_code(rp))
    assert result.hardware_key_registered
    start = transport.last(DevicePaths.ACTIVATION_START, protocol.ActivationStartRequest)
    assert start.tpm is None
    assert "attestation" in caplog.text
