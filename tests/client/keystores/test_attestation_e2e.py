"""Devices on real secure hardware send what the attestation wire contract says, through the
real server app and the secure channel:

- a TPM that can attest (swtpm manufactured with EK certificates) presents ``tpm`` at start;
  with the server's ``tpmCredential`` it sends the ``tpm`` evidence at finish, which keybound's
  verifiers accept; without one (a server whose attestationTpmMode is DISABLED, the default,
  ignores the fields) it sends none and activates as before;
- a TPM without EK certificate and a PKCS#11 token send nothing (``NOT_PROVIDED``).

Here ``CredentialServer`` plays the server's part of activation start on top of the real
server's answer, exactly as the contract specifies it (verify the EK certificate, check the
AK, make_credential with a fresh secret kept aside), to look at what the device sends; the
server's own credential activation with the SDK's devices is test_attestation_server.py."""

from __future__ import annotations

import datetime as dt
import hmac
import logging
import os
from pathlib import Path
from typing import Any, TypeVar

import pytest
from cryptography.hazmat.primitives import serialization
from fastapi.testclient import TestClient

from keybound import protocol
from keybound.attestation import (
    ActivatedAk,
    AkTrust,
    TpmEvidence,
    TpmVerifier,
    TrustStore,
    make_credential,
    verify_ek_certificate,
)
from keybound.attestation.tpm import check_ak_public
from keybound.attestation.tpm_structures import object_name, parse_public
from keybound.client import Device, preset
from keybound.client.keystores import KeyStore, open_keystore
from keybound.protocol import AttestationFormat, DevicePaths, Message
from tests.client.keystores.conftest import ManufacturedSwtpm, SoftHsmBed, SwtpmBed
from tests.client.test_device_attestation import RecordingTransport
from tests.helpers import RelyingParty

M = TypeVar("M", bound=Message)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class CredentialServer(RecordingTransport):
    """Adds to the real server's activation-start answer what the contract's server adds: a
    TPM2_MakeCredential for the start's EK certificate and AK, keeping the secret, the AK and
    the verified EK aside (server state, never taken from a later request)."""

    def __init__(
        self, pin: Any, client: Any, *, ek_trust: TrustStore, wrong_ak: bool = False
    ) -> None:
        super().__init__(pin, client)
        self.ek_trust = ek_trust
        self.wrong_ak = wrong_ak
        self.secret = b""
        self.activated: ActivatedAk | None = None

    def answer(self, path: str, request: Message, answer: M) -> M:
        if not isinstance(request, protocol.ActivationStartRequest) or request.tpm is None:
            return answer
        ek = verify_ek_certificate(request.tpm.ek_certificate, trust=self.ek_trust, now=_now())
        ak = parse_public(request.tpm.ak_public, what="AK")
        check_ak_public(ak)
        name = object_name(ak.name_alg, request.tpm.ak_public)
        if self.wrong_ak:
            name = name[:2] + bytes(len(name) - 2)
        self.secret = os.urandom(32)
        made = make_credential(serialization.load_der_public_key(ek.public_key), name, self.secret)
        self.activated = ActivatedAk(public_area=request.tpm.ak_public, ek=ek)
        credential = protocol.TpmCredential(
            credential_blob=made.credential_blob, encrypted_secret=made.encrypted_secret
        )
        return answer.model_copy(update={"tpm_credential": credential})


def _device(
    tmp_path: Path, rp: RelyingParty, transport: RecordingTransport, store: KeyStore
) -> Device:
    return Device.create(
        tmp_path / "device",
        application_id=rp.app_id,
        transport=transport,
        profile=preset("linux"),
        hardware=store,
    )


def _tpm(bed: SwtpmBed, tmp_path: Path) -> KeyStore:
    return open_keystore("tpm", tmp_path / "device", {"tcti": bed.tcti})


def _code(rp: RelyingParty) -> str:
    return str(rp.activation_code()["activationLink"])


def _trust(bed: ManufacturedSwtpm) -> TrustStore:
    return TrustStore.from_files([bed.ca.issuer_certificate])


@pytest.mark.swtpm
def test_tpm_device_attests_with_credential_activation(
    tmp_path: Path, http: TestClient, rp: RelyingParty, manufactured_swtpm: ManufacturedSwtpm
) -> None:
    assert rp.pin is not None
    transport = CredentialServer(rp.pin, http.raw, ek_trust=_trust(manufactured_swtpm))
    device = _device(tmp_path, rp, transport, _tpm(manufactured_swtpm, tmp_path))
    result = device.activate(_code(rp))
    assert result.hardware_key_registered and result.attestation_format is AttestationFormat.TPM
    start = transport.last(DevicePaths.ACTIVATION_START, protocol.ActivationStartRequest)
    assert start.tpm is not None
    assert set(start.to_wire()["tpm"]) == {"ekCertificate", "akPublic"}
    challenge = transport.last(
        DevicePaths.ACTIVATION_START, protocol.ActivationStartResponse
    ).challenge
    finish = transport.last(DevicePaths.ACTIVATION_FINISH, protocol.ActivationFinishRequest)
    attestation = finish.attestation
    assert isinstance(attestation, protocol.TpmAttestation)
    assert set(finish.to_wire()["attestation"]) == {
        "format",
        "certifyInfo",
        "signature",
        "publicArea",
        "activatedSecret",
    }
    # what the server does at finish: the secret it kept, then TPM2_Certify by that AK
    assert hmac.compare_digest(attestation.activated_secret, transport.secret)
    assert transport.activated is not None and finish.hardware_public_key is not None
    verified = TpmVerifier(trust=TrustStore()).verify(
        TpmEvidence(
            certify_info=attestation.certify_info,
            signature=attestation.signature,
            public_area=attestation.public_area,
            activated_ak=transport.activated,
        ),
        expected_challenge=challenge,
        expected_public_key=finish.hardware_public_key,
        now=_now(),
    )
    assert verified.ak_trust is AkTrust.ACTIVATION and verified.tpm.model == "swtpm"
    assert device.authenticate().hw_key_client_status.value == "OK"


@pytest.mark.swtpm
def test_tpm_device_against_a_server_that_ignores_the_fields(
    tmp_path: Path, http: TestClient, rp: RelyingParty, manufactured_swtpm: ManufacturedSwtpm
) -> None:
    assert rp.pin is not None
    transport = RecordingTransport(rp.pin, http.raw)
    device = _device(tmp_path, rp, transport, _tpm(manufactured_swtpm, tmp_path))
    result = device.activate(_code(rp))
    assert result.hardware_key_registered and result.attestation_format is None
    start = transport.last(DevicePaths.ACTIVATION_START, protocol.ActivationStartRequest)
    assert start.tpm is not None  # offered, but the server made no credential
    assert (
        transport.last(
            DevicePaths.ACTIVATION_START, protocol.ActivationStartResponse
        ).tpm_credential
        is None
    )
    finish = transport.last(DevicePaths.ACTIVATION_FINISH, protocol.ActivationFinishRequest)
    assert finish.attestation is None
    assert device.authenticate().hw_key_client_status.value == "OK"


@pytest.mark.swtpm
def test_a_credential_for_another_ak_leaves_the_activation_unattested(
    tmp_path: Path,
    http: TestClient,
    rp: RelyingParty,
    manufactured_swtpm: ManufacturedSwtpm,
    caplog: pytest.LogCaptureFixture,
) -> None:
    assert rp.pin is not None
    transport = CredentialServer(
        rp.pin, http.raw, ek_trust=_trust(manufactured_swtpm), wrong_ak=True
    )
    device = _device(tmp_path, rp, transport, _tpm(manufactured_swtpm, tmp_path))
    with caplog.at_level(logging.WARNING, logger="keybound.client"):
        result = device.activate(_code(rp))
    assert result.hardware_key_registered and result.attestation_format is None
    assert "attestation failed" in caplog.text
    finish = transport.last(DevicePaths.ACTIVATION_FINISH, protocol.ActivationFinishRequest)
    assert finish.attestation is None


@pytest.mark.swtpm
def test_tpm_without_ek_certificate_sends_nothing(
    tmp_path: Path, http: TestClient, rp: RelyingParty, swtpm: SwtpmBed
) -> None:
    assert rp.pin is not None
    transport = RecordingTransport(rp.pin, http.raw)
    device = _device(tmp_path, rp, transport, _tpm(swtpm, tmp_path))
    result = device.activate(_code(rp))
    assert result.hardware_key_registered and result.attestation_format is None
    start = transport.last(DevicePaths.ACTIVATION_START, protocol.ActivationStartRequest)
    assert "tpm" not in start.to_wire()
    finish = transport.last(DevicePaths.ACTIVATION_FINISH, protocol.ActivationFinishRequest)
    assert "attestation" not in finish.to_wire()


@pytest.mark.softhsm
def test_pkcs11_token_sends_nothing(
    tmp_path: Path, http: TestClient, rp: RelyingParty, softhsm: SoftHsmBed
) -> None:
    """PKCS#11 tokens have no key attestation here: no ``tpm``, no ``attestation`` object,
    which the server records as NOT_PROVIDED."""
    assert rp.pin is not None
    transport = RecordingTransport(rp.pin, http.raw)
    store = open_keystore(
        "pkcs11",
        tmp_path / "device",
        {
            "module": softhsm.module,
            "token_label": softhsm.main.label,
            "user_pin": softhsm.main.user_pin,
        },
    )
    assert store.attestation_key() is None
    device = _device(tmp_path, rp, transport, store)
    result = device.activate(_code(rp))
    assert result.hardware_key_registered and result.attestation_format is None
    start = transport.last(DevicePaths.ACTIVATION_START, protocol.ActivationStartRequest)
    finish = transport.last(DevicePaths.ACTIVATION_FINISH, protocol.ActivationFinishRequest)
    assert "tpm" not in start.to_wire() and "attestation" not in finish.to_wire()
    assert store.attest(store.generate("label"), challenge=bytes(32)) is None
