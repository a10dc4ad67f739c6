"""The attestation fields of the activation messages, exactly as the wire contract
(issue 15) names them: ``tpm`` at start, ``tpmCredential`` in its answer, ``attestation`` at
finish with ``format`` choosing the kind; bytes as base64url without padding."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import TypeAdapter, ValidationError

from keybound import protocol as p

UUID = "00000000-0000-4000-8000-000000000001"
ATTESTATION: TypeAdapter[Any] = TypeAdapter(p.Attestation)


def b64(data: bytes) -> str:
    return p.b64u_encode(data)


def finish(**fields: Any) -> p.ActivationFinishRequest:
    return p.ActivationFinishRequest(
        application_id="bank",
        operation_id=UUID,
        device_id=UUID,
        software_public_key=bytes(91),
        software_signature=bytes(70),
        hw_key_client_status=p.HwKeyClientStatus.OK,
        device_profile=p.DeviceProfile(platform=p.Platform.LINUX, os_version="6"),
        **fields,
    )


def test_start_request_with_tpm() -> None:
    request = p.ActivationStartRequest(
        application_id="bank",
        activation_code="483920",
        activation_hint="7KQ2MX",
        tpm=p.TpmAttestationKey(ek_certificate=b"\x30\x82cert", ak_public=b"\x00\x23ak"),
    )
    assert request.to_wire() == {
        "applicationId": "bank",
        "activationCode": "483920",
        "activationHint": "7KQ2MX",
        "tpm": {"ekCertificate": b64(b"\x30\x82cert"), "akPublic": b64(b"\x00\x23ak")},
    }
    assert p.ActivationStartRequest.model_validate(request.to_wire()) == request
    plain = p.ActivationStartRequest(
        application_id="bank", activation_code="483920", activation_hint="7KQ2MX"
    )
    assert "tpm" not in plain.to_wire()


def test_start_response_with_and_without_a_credential() -> None:
    base = {
        "operationId": UUID,
        "deviceId": UUID,
        "challenge": b64(bytes(32)),
        "expiresAt": "2030-01-01T00:00:00Z",
        "allowedAuthMethods": ["DEVICE"],
        "hardwareKeyRequired": False,
    }
    assert p.ActivationStartResponse.model_validate(base).tpm_credential is None
    answer = p.ActivationStartResponse.model_validate(
        {**base, "tpmCredential": {"credentialBlob": b64(b"blob"), "encryptedSecret": b64(b"seed")}}
    )
    assert answer.tpm_credential == p.TpmCredential(
        credential_blob=b"blob", encrypted_secret=b"seed"
    )


@pytest.mark.parametrize(
    ("evidence", "wire"),
    [
        (
            p.AndroidKeyAttestation(certificate_chain=[b"leaf", b"ca"]),
            {"format": "android-key", "certificateChain": [b64(b"leaf"), b64(b"ca")]},
        ),
        (
            p.TpmAttestation(
                certify_info=b"info",
                signature=b"sig",
                public_area=b"pub",
                activated_secret=bytes(range(32)),
            ),
            {
                "format": "tpm",
                "certifyInfo": b64(b"info"),
                "signature": b64(b"sig"),
                "publicArea": b64(b"pub"),
                "activatedSecret": b64(bytes(range(32))),
            },
        ),
        (
            p.AppleAppAttestation(key_id=bytes(32), attestation_object=b"cbor"),
            {
                "format": "apple-appattest",
                "keyId": b64(bytes(32)),
                "attestationObject": b64(b"cbor"),
            },
        ),
    ],
)
def test_finish_attestation_formats(evidence: Any, wire: dict[str, Any]) -> None:
    request = finish(attestation=evidence)
    assert request.to_wire()["attestation"] == wire
    # the server side reads it back as the same kind, chosen by "format"
    assert p.ActivationFinishRequest.model_validate(request.to_wire()).attestation == evidence
    assert type(ATTESTATION.validate_python(wire)) is type(evidence)
    assert "attestation" not in finish().to_wire()


@pytest.mark.parametrize(
    "wire",
    [
        {"format": "none"},
        {"format": "packed", "certificateChain": [b64(b"x")]},
        {"certificateChain": [b64(b"x")]},
        {"format": "android-key", "certificateChain": []},
        {"format": "android-key", "certificateChain": [b64(b"x")] * (p.MAX_ATTESTATION_CHAIN + 1)},
        {"format": "android-key", "certificateChain": ["padded=="]},
        {"format": "android-key", "certificateChain": [b64(b"x")], "extra": 1},
        {
            "format": "tpm",
            "certifyInfo": b64(b"i"),
            "signature": b64(b"s"),
            "publicArea": b64(b"p"),
            "activatedSecret": b64(bytes(31)),
        },
        {
            "format": "tpm",
            "certifyInfo": b64(bytes(p.MAX_TPM_STRUCTURE_BYTES + 1)),
            "signature": b64(b"s"),
            "publicArea": b64(b"p"),
            "activatedSecret": b64(bytes(32)),
        },
        {"format": "apple-appattest", "keyId": b64(bytes(31)), "attestationObject": b64(b"c")},
    ],
)
def test_malformed_attestation_is_refused(wire: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        ATTESTATION.validate_python(wire)


def test_certificate_size_bound() -> None:
    too_big = bytes(p.MAX_ATTESTATION_CERTIFICATE_BYTES + 1)
    with pytest.raises(ValidationError):
        p.TpmAttestationKey(ek_certificate=too_big, ak_public=b"ak")
    with pytest.raises(ValidationError):
        p.AndroidKeyAttestation(certificate_chain=[too_big])
