"""What a device's platform produces for an activation, built in software with
`cryptography` for tests through the real server (docs/protocol.md §6.5).

The shared vectors cannot be replayed against a fresh challenge, so every piece is made here,
bound to the activation at hand: an Android attestation chain from a test root, an App
Attest attestation object and assertions from a test "App Attestation" CA, and a software
TPM (an RSA-2048 EK certified by a test manufacturer CA, a P-256 AK) that recovers the
server's credential as TPM2_ActivateCredential does and certifies the hardware key as
TPM2_Certify does. The roots are trusted only through the operator's trust directory
(server.attestation_trust), as in production.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cbor2
from cryptography.hazmat.decrepit.ciphers.modes import CFB
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms

from keybound import crypto
from keybound import protocol as p
from keybound.attestation.tpm_credential import kdfa
from tests.attestation import factory

PACKAGE = "com.example.bank"
SIGNER_DIGEST = hashlib.sha256(b"signer").digest()  # factory.KeyDescriptionSpec's default
TEAM_ID = "TEAM123456"
BUNDLE_ID = "com.example.bank"
APP_ID = f"{TEAM_ID}.{BUNDLE_ID}"

#: application settings that check each platform's evidence (modes set per test)
ANDROID_POLICY: dict[str, Any] = {
    "attestationAndroidPackageNames": [PACKAGE],
    "attestationAndroidSigningDigests": [SIGNER_DIGEST.hex()],
}
APPLE_POLICY: dict[str, Any] = {
    "attestationAppleTeamId": TEAM_ID,
    "attestationAppleBundleId": BUNDLE_ID,
    "attestationAppleEnvironment": "DEVELOPMENT",
}


@dataclass
class AndroidPlatform:
    """root (the operator's added anchor) -> intermediate -> batch key -> the key's leaf."""

    pki: factory.AndroidPki = field(default_factory=factory.AndroidPki.create)

    def attest(
        self, key: ec.EllipticCurvePrivateKey, challenge: bytes, **spec: Any
    ) -> p.AndroidKeyAttestation:
        leaf = self.pki.leaf(factory.KeyDescriptionSpec(challenge=challenge, **spec), key=key)
        return p.AndroidKeyAttestation(
            format="android-key", certificate_chain=list(self.pki.chain(leaf))
        )


@dataclass
class ApplePlatform:
    """An App Attestation-like root and CA, and App Attest keys with their counters."""

    root: factory.Issued = field(
        default_factory=lambda: factory.issue(factory.name("Test App Attestation Root"))
    )
    intermediate: factory.Issued = field(init=False)

    def __post_init__(self) -> None:
        self.intermediate = factory.issue(
            factory.name("Test App Attestation CA 1"), issuer=self.root, path_length=0
        )

    def attest(
        self,
        key: ec.EllipticCurvePrivateKey,
        start: p.ActivationStartResponse,
        *,
        application_id: str,
        client_data: bytes | None = None,
        apple_app_id: str = APP_ID,
        **changes: Any,
    ) -> p.AppleAppAttestation:
        """attestKey over SHA-256 of the activation's client data (§6.5.2)."""
        data = (
            client_data
            if client_data is not None
            else p.app_attest_client_data(
                application_id=application_id,
                device_id=start.device_id,
                operation_id=start.operation_id,
                challenge=start.challenge,
            )
        )
        obj, key_id = factory.app_attest_object(
            self.root,
            self.intermediate,
            key=key,
            app_id=apple_app_id,
            client_data_hash=hashlib.sha256(data).digest(),
            valid_at=dt.datetime.now(dt.UTC),
            **changes,
        )
        return p.AppleAppAttestation(
            format="apple-appattest", key_id=key_id, attestation_object=obj
        )


@dataclass
class AppAttestKey:
    """A Secure Enclave App Attest key as seen from outside: it signs only assertions, and
    its counter goes up with each one."""

    key: ec.EllipticCurvePrivateKey
    counter: int = 0
    rp_id: str = APP_ID

    def assertion(self, tbs: bytes, *, counter: int | None = None) -> bytes:
        """An assertion over ``tbs`` (its client data, §4.6); the next counter unless given."""
        if counter is None:
            self.counter += 1
            counter = self.counter
        auth = (
            hashlib.sha256(self.rp_id.encode()).digest()
            + bytes([0x40])
            + counter.to_bytes(4, "big")
        )
        nonce = hashlib.sha256(auth + hashlib.sha256(tbs).digest()).digest()
        signature = self.key.sign(nonce, ec.ECDSA(hashes.SHA256()))
        return cbor2.dumps({"signature": signature, "authenticatorData": auth})


@dataclass
class SoftwareTpm:
    """A TPM in software: an RSA-2048 EK with a certificate from ``manufacturer``, a P-256
    restricted signing AK, and what TPM2_ActivateCredential / TPM2_Certify do with them."""

    manufacturer: factory.Issued = field(
        default_factory=lambda: factory.issue(factory.name("Test TPM Manufacturer CA"))
    )
    ek: rsa.RSAPrivateKey = field(
        default_factory=lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048)
    )
    ak: ec.EllipticCurvePrivateKey = field(default_factory=crypto.generate_p256)

    @property
    def ek_certificate(self) -> bytes:
        return factory.tpm_certificate(
            self.manufacturer, eku="2.23.133.8.1", public_key=self.ek.public_key()
        ).der

    @property
    def ak_public(self) -> bytes:
        return factory.tpmt_public_ecc(self.ak.public_key(), attributes=factory.TPM_AK)

    def keys(self) -> p.TpmAttestationKey:
        return p.TpmAttestationKey(ek_certificate=self.ek_certificate, ak_public=self.ak_public)

    def activate(self, credential: p.TpmCredential) -> bytes:
        """TPM2_ActivateCredential [TPM 2.0 Part 1 §24]: the seed by RSA-OAEP with the EK,
        the outer HMAC checked against this AK's name, the identity decrypted."""
        seed = self.ek.decrypt(
            credential.encrypted_secret,
            padding.OAEP(
                mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=b"IDENTITY\x00"
            ),
        )
        name = factory.tpm_name(self.ak_public)
        blob = credential.credential_blob
        size = int.from_bytes(blob[:2], "big")
        outer, encrypted = blob[2 : 2 + size], blob[2 + size :]
        hmac_key = kdfa(hashes.SHA256, seed, b"INTEGRITY", b"", b"", 256)
        if not hmac.compare_digest(outer, hmac.new(hmac_key, encrypted + name, "sha256").digest()):
            raise ValueError("integrity check failed: not for this TPM or this AK")
        sym = kdfa(hashes.SHA256, seed, b"STORAGE", name, b"", 128)
        decryptor = Cipher(algorithms.AES(sym), CFB(bytes(16))).decryptor()
        identity = decryptor.update(encrypted) + decryptor.finalize()
        return identity[2 : 2 + int.from_bytes(identity[:2], "big")]

    def certify(
        self, key: ec.EllipticCurvePrivateKey, challenge: bytes, secret: bytes
    ) -> p.TpmAttestation:
        """TPM2_Certify of a sign-only P-256 key by the AK, qualifyingData = challenge."""
        public = factory.tpmt_public_ecc(key.public_key())
        info = factory.tpms_attest(extra_data=challenge, name=factory.tpm_name(public))
        signature = factory.tpmt_signature_ecdsa(self.ak.sign(info, ec.ECDSA(hashes.SHA256())))
        return p.TpmAttestation(
            format="tpm",
            certify_info=info,
            signature=signature,
            public_area=public,
            activated_secret=secret,
        )


def write_trust_dir(
    directory: Path,
    *,
    android: factory.Issued | None = None,
    apple: factory.Issued | None = None,
    tpm: factory.Issued | None = None,
) -> Path:
    """The operator's trust directory with these roots added (server.attestation_trust)."""
    for name, root in (("android", android), ("apple", apple), ("tpm", tpm)):
        if root is not None:
            (directory / name).mkdir(parents=True, exist_ok=True)
            (directory / name / "test-root.pem").write_bytes(root.pem())
    return directory
