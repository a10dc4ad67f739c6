"""TPM attestation end to end with a real TPM (swtpm via tpm2-pytss) through the real server:
the device offers its EK certificate and AK at activation start, its TPM recovers the
server's credential with TPM2_ActivateCredential, certifies its hardware key (created in the
TPM, sign-only P-256) over the challenge with TPM2_Certify, and signs every transcript in
the TPM (docs/protocol.md §6.5.3).

The device side is driven here at the protocol level (RawDevice); the SDK's TPM key store
producing the same evidence is the SDK's own test. The EK certificate is issued by a test
manufacturer CA that the operator's trust directory adds."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from keybound import protocol as p
from keybound.attestation.tpm_structures import parse_public
from keybound.crypto import der_signature
from keybound.server.attestation_trust import AttestationTrust
from keybound.server.services import Keybound
from tests.attestation import factory
from tests.attestation.test_tpm_credential import _activate, _ek_and_ak, _esapi
from tests.client.keystores.conftest import SwtpmBed, swtpm, swtpm_available  # noqa: F401 (fixtures)
from tests.conftest import FakeClock
from tests.helpers import RawDevice, problem_code
from tests.server.services.attestation_devices import write_trust_dir

pytestmark = pytest.mark.swtpm

MANUFACTURER = factory.issue(factory.name("Test TPM Manufacturer CA"))


@pytest.fixture
def kb(database_url: str, tmp_path: Path, clock: FakeClock) -> Iterator[Keybound]:
    trust = AttestationTrust.configured(
        trust_dir=write_trust_dir(tmp_path / "trust", tpm=MANUFACTURER)
    )
    service = Keybound.open(
        database_url, clock=clock, master_key_file=tmp_path / "master.key", attestation=trust
    )
    yield service
    service.close()


def _hardware_key(ectx: Any) -> tuple[Any, bytes]:
    """A sign-only P-256 key inside the TPM, as keybound's TPM key store makes it."""
    from tpm2_pytss.constants import ESYS_TR, TPMA_OBJECT
    from tpm2_pytss.types import TPM2B_PUBLIC, TPM2B_SENSITIVE_CREATE, TPMT_PUBLIC

    attributes = (
        TPMA_OBJECT.FIXEDTPM
        | TPMA_OBJECT.FIXEDPARENT
        | TPMA_OBJECT.SENSITIVEDATAORIGIN
        | TPMA_OBJECT.USERWITHAUTH
        | TPMA_OBJECT.SIGN_ENCRYPT
    )
    template = TPM2B_PUBLIC(
        TPMT_PUBLIC.parse(alg="ecc256:ecdsa-sha256:null", objectAttributes=attributes)
    )
    key, public, *_ = ectx.create_primary(TPM2B_SENSITIVE_CREATE(), template, ESYS_TR.OWNER)
    return key, public.publicArea.marshal()


def _tpm_signer(ectx: Any, key: Any) -> Any:
    from tpm2_pytss.constants import TPM2_ALG
    from tpm2_pytss.types import TPMT_SIG_SCHEME

    def sign(tbs: bytes) -> bytes:
        signature = ectx.sign(
            key, hashlib.sha256(tbs).digest(), TPMT_SIG_SCHEME(scheme=TPM2_ALG.NULL)
        )
        ecdsa = signature.signature.ecdsa
        return der_signature(
            int.from_bytes(bytes(ecdsa.signatureR), "big"),
            int.from_bytes(bytes(ecdsa.signatureS), "big"),
        )

    return sign


@pytest.mark.parametrize("mode", ["OPTIONAL", "REQUIRED"])
def test_swtpm_activation_authentication_and_a_wrong_secret(
    swtpm: SwtpmBed,  # noqa: F811
    make_rp: Any,
    mode: str,
) -> None:
    from tpm2_pytss.constants import TPM2_ALG
    from tpm2_pytss.types import TPMT_SIG_SCHEME

    rp = make_rp(
        attestationTpmMode=mode,
        hwKeyValidationStrategy="REQUIRED",
        enabledRiskData=[r.value for r in p.RiskAttribute],
    )
    with _esapi(swtpm) as ectx:
        ek, ek_public, ak, ak_public = _ek_and_ak(ectx, "EK-RSA2048")
        ek_certificate = factory.tpm_certificate(
            MANUFACTURER,
            eku="2.23.133.8.1",
            public_key=parse_public(ek_public).public_key(),
            san=factory.tpm_san(manufacturer="id:00001014", model="swtpm", version="id:20191023"),
        ).der
        key, key_public = _hardware_key(ectx)
        device = RawDevice(
            rp.http,
            rp.app_id,
            hw=None,
            hw_spki=parse_public(key_public).spki(),
            hw_prover=_tpm_signer(ectx, key),
        )
        offer = p.TpmAttestationKey(ek_certificate=ek_certificate, ak_public=ak_public)

        def attest(
            start: p.ActivationStartResponse, *, secret: bytes | None = None
        ) -> p.TpmAttestation:
            assert start.tpm_credential is not None
            recovered = _activate(
                ectx,
                ek,
                ak,
                start.tpm_credential.credential_blob,
                start.tpm_credential.encrypted_secret,
            )
            info, signature = ectx.certify(
                key, ak, start.challenge, TPMT_SIG_SCHEME(scheme=TPM2_ALG.NULL)
            )
            return p.TpmAttestation(
                format="tpm",
                certify_info=bytes(info),
                signature=signature.marshal(),
                public_area=key_public,
                activated_secret=secret or recovered,
            )

        # a secret that is not what the TPM recovered is refused
        start = device.start_activation(rp.activation_code(), tpm=offer)
        wrong = device.activation_request(
            start,
            profile=p.DeviceProfile(platform=p.Platform.LINUX, os_version="6.8"),
            attest=lambda s: attest(s, secret=b"\x00" * 32),
        )
        refused = device.post(p.DevicePaths.ACTIVATION_FINISH, wrong)
        assert problem_code(refused) == "attestation_invalid"
        assert refused.json()["reason"] == "TPM_CREDENTIAL_MISMATCH"

        start = device.start_activation(rp.activation_code(), tpm=offer)
        finish = device.post(
            p.DevicePaths.ACTIVATION_FINISH,
            device.activation_request(
                start,
                profile=p.DeviceProfile(platform=p.Platform.LINUX, os_version="6.8"),
                attest=attest,
            ),
        )
        assert finish.status_code == 200, finish.text
        risk = rp.operation(start.operation_id)["riskData"]
        assert (risk["hwKeyAttestation"], risk["hwKeySecurityLevel"]) == ("VERIFIED", "TPM")
        assert rp.device(start.device_id)["hardwareKeyAttestation"] == "VERIFIED"
        for _ in range(2):  # the TPM-resident key signs every authentication
            auth = device.authenticate()
            assert auth.status_code == 200, auth.text
            data = rp.operation(auth.json()["operationId"])["riskData"]
            assert (data["hwKeyServerResult"], data["hwKeyAttestation"]) == ("VALID", "VERIFIED")
