"""Software keys, and the ``software`` key-store kind (a device without secure hardware).

:class:`SoftwareKey` is the rotating software key every device has: an ECDSA P-256 key held
in process memory and persisted as unencrypted PEM PKCS#8 in the device state file. It is a
*software* key: the state file's permissions (0600 in a 0700 directory) are its only
protection, and the protocol assumes it can be copied (hence rotation on every
authentication and clone detection on the server).

The ``software`` kind is *not* a hardware store: :class:`NoSecureHardware` is never
available, so a device configured with it reports ``hwKeyClientStatus=NOT_SUPPORTED`` and
signs with its software key only. It exists so that configuration (CLI flags, demo files)
can say "no hardware" explicitly. It never pretends a software key is a hardware key.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from keybound import crypto
from keybound.client.keystores.base import KeyHandle, KeyStore, check_options, register
from keybound.errors import KeyGenerationFailed, KeyUnavailable


@dataclass(frozen=True, kw_only=True, repr=False)
class SoftwareKey:
    """An ECDSA P-256 software key. ``repr`` shows only the key id."""

    private_key: ec.EllipticCurvePrivateKey

    @classmethod
    def generate(cls) -> SoftwareKey:
        return cls(private_key=crypto.generate_p256())

    @classmethod
    def from_pem(cls, pem: str) -> SoftwareKey:
        """Load a PEM PKCS#8 P-256 key; raises ValueError for anything else."""
        key = serialization.load_pem_private_key(pem.encode("ascii"), password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(
            key.curve, ec.SECP256R1
        ):
            raise ValueError("not an ECDSA P-256 private key")
        return cls(private_key=key)

    def to_pem(self) -> str:
        return self.private_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ).decode("ascii")

    @property
    def public_key(self) -> bytes:
        """SubjectPublicKeyInfo DER."""
        return crypto.public_der(self.private_key)

    @property
    def key_id(self) -> bytes:
        """How requests name this key: SHA-256 of the SPKI DER."""
        return crypto.key_id(self.public_key)

    def sign(self, message: bytes) -> bytes:
        """ECDSA-SHA256, DER signature."""
        return crypto.sign_p256(self.private_key, message)

    def __repr__(self) -> str:
        return f"SoftwareKey(key_id={self.key_id.hex()[:16]}...)"


class NoSecureHardware(KeyStore):
    """The ``software`` kind: a device with no secure hardware (never available)."""

    kind: ClassVar[str] = "software"

    def available(self) -> bool:
        return False

    def check_usable(self) -> None:
        """Nothing to check: this store is the absence of secure hardware."""

    def generate(self, label: str) -> KeyHandle:
        raise KeyGenerationFailed("this device has no secure hardware")

    def sign(self, handle: KeyHandle, message: bytes) -> bytes:
        raise KeyUnavailable("this device has no secure hardware")

    def delete(self, handle: KeyHandle) -> None:
        return None

    def describe(self) -> str:
        return "software (no secure hardware)"


@register(NoSecureHardware.kind)
def _factory(state_dir: Path, options: Mapping[str, Any]) -> KeyStore:
    check_options(NoSecureHardware.kind, options, ())
    return NoSecureHardware()
