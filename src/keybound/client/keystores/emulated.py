"""An emulated secure element (kind ``emulated``) for tests and the demo. NOT secure hardware.

It behaves like one from the SDK's side: keys are generated inside it and never leave it; the
:class:`~keybound.client.keystores.base.KeyHandle` holds only an opaque key id. Inside, each
private key is wrapped with AES-256-GCM under an element-internal key and kept in the
element's own directory ``<state_dir>/emulated-se/`` (files 0600, directory 0700)::

    emulated-se/element.key          32-byte element-internal wrapping key
    emulated-se/keys/<key id>.key    nonce(12) || AES-GCM(PKCS#8 DER), AAD = key id

Key attestation, as an Android TEE (``emulated_attestation``): :meth:`attest` returns the
Android-format chain of a key, leaf (KeyDescription with the activation challenge, security
level TRUSTED_ENVIRONMENT, origin GENERATED, purpose SIGN, the app's package name and signing
digest, verified boot and locked bootloader, patch levels), the element's attestation key
(an intermediate CA it provisions on first use, kept wrapped in
``emulated-se/attestation-ca.{key,pem}``) and the TEST root that ships with the package
(``ATTESTATION_ROOT``). A server trusts that root only when its operator adds it as an Android
anchor. Attesting needs pyasn1 (imported only then); without it the element does not attest.

Fault injection and device state (attributes, or factory options of the same names)::

    present = False             available() is False; sign raises KeyUnavailable
    fail_generation = True      generate raises KeyGenerationFailed
    fail_signing = True         sign raises SigningFailed
    corrupt_signatures = True   sign returns a well-formed signature over other bytes
    lose_keys()                 wipe the element (TEE reset): later signs raise KeyUnavailable
    attestation = False         attest returns None (a device without key attestation)
    device_locked = False       the attested bootloader is unlocked
    verified_boot = False       the attested verified boot state is UNVERIFIED
    package_name = "..."        the attested app (default DEMO_PACKAGE_NAME)
    signing_digest = "hex"      SHA-256 of its signing certificate (default DEMO_SIGNING_DIGEST)
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
import secrets
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from cryptography import x509
from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from keybound import crypto
from keybound.client.files import write_private
from keybound.client.keystores.base import (
    ActivationCredential,
    AndroidKeyChain,
    AttestationKey,
    KeyEvidence,
    KeyHandle,
    KeyStore,
    check_options,
    option_error,
    register,
)
from keybound.errors import (
    KeyGenerationFailed,
    KeyStoreError,
    KeyUnavailable,
    SigningFailed,
)

if TYPE_CHECKING:
    from keybound.client.keystores import emulated_attestation

ELEMENT_DIR = "emulated-se"
#: The TEST attestation root that ships with the package (and its key, next to it).
ATTESTATION_ROOT = Path(__file__).with_name("emulated_attestation_root.pem")
#: The app the element attests by default (what a demo server's Android policy allows).
DEMO_PACKAGE_NAME = "org.keybound.demo"
DEMO_SIGNING_DIGEST = hashlib.sha256(b"keybound demo app signing certificate").digest()
_KEY_ID = re.compile(r"^[0-9a-f]{32}$")
_NONCE_BYTES = 12
_CORRUPTION_PREFIX = b"keybound-emulated-se-corrupted"
_CA_ID = "attestation-ca"  # AAD of the wrapped attestation CA key
_FLAGS = ("present", "fail_generation", "fail_signing", "corrupt_signatures", "attestation",
          "device_locked", "verified_boot")  # fmt: skip
_STRINGS = ("package_name", "signing_digest")


class EmulatedSecureElement(KeyStore):
    """A file-backed emulation of a secure element, with fault injection for tests."""

    kind: ClassVar[str] = "emulated"

    def __init__(
        self,
        directory: Path | str,
        *,
        present: bool = True,
        fail_generation: bool = False,
        fail_signing: bool = False,
        corrupt_signatures: bool = False,
        attestation: bool = True,
        device_locked: bool = True,
        verified_boot: bool = True,
        package_name: str = DEMO_PACKAGE_NAME,
        signing_digest: bytes = DEMO_SIGNING_DIGEST,
    ) -> None:
        self.directory = Path(directory)
        self.present = present
        self.fail_generation = fail_generation
        self.fail_signing = fail_signing
        self.corrupt_signatures = corrupt_signatures
        self.attestation = attestation
        self.device_locked = device_locked
        self.verified_boot = verified_boot
        self.package_name = package_name
        self.signing_digest = signing_digest

    # ------------------------------------------------------------------ KeyStore

    def configured(self) -> bool:
        """An absent element (``present = False``) models a device without one."""
        return self.present

    def available(self) -> bool:
        return self.present

    def options(self) -> Mapping[str, Any]:
        return {
            **{name: getattr(self, name) for name in _FLAGS},
            "package_name": self.package_name,
            "signing_digest": self.signing_digest.hex(),
        }

    def generate(self, label: str) -> KeyHandle:
        if not self.present:
            raise KeyGenerationFailed("emulated secure element is not present")
        if self.fail_generation:
            raise KeyGenerationFailed("emulated secure element: injected generation failure")
        private_key = crypto.generate_p256()
        key_id = secrets.token_hex(16)
        self._store(key_id, private_key)
        return KeyHandle(
            store=self.kind, public_key=crypto.public_der(private_key), ref={"key_id": key_id}
        )

    def sign(self, handle: KeyHandle, message: bytes) -> bytes:
        if not self.present:
            raise KeyUnavailable("emulated secure element is not present")
        private_key = self._load(handle)
        if self.fail_signing:
            raise SigningFailed("emulated secure element: injected signing failure")
        if self.corrupt_signatures:
            message = _CORRUPTION_PREFIX + message
        return crypto.sign_p256(private_key, message)

    def delete(self, handle: KeyHandle) -> None:
        key_id = _key_id(handle)
        if key_id is not None:
            self._key_path(key_id).unlink(missing_ok=True)

    def describe(self) -> str:
        return f"emulated secure element at {self.directory} (NOT secure hardware)"

    def attest(
        self,
        handle: KeyHandle,
        *,
        challenge: bytes,
        attestation_key: AttestationKey | None = None,
        credential: ActivationCredential | None = None,
    ) -> KeyEvidence | None:
        """The key's Android attestation chain (leaf, the element's attestation CA, the test
        root), the leaf bound to ``challenge``; None when ``attestation`` is off."""
        if not self.attestation:
            return None
        if not self.present:
            raise KeyUnavailable("emulated secure element is not present")
        private_key = self._load(handle)  # only a key inside the element is attested
        try:
            from keybound.client.keystores import emulated_attestation as android
        except ImportError as exc:
            raise KeyStoreError(
                f"the emulated secure element attests with pyasn1, which is missing: {exc}"
            ) from exc
        root = android.TestRoot.load()
        ca_key, ca_certificate = self._attestation_ca(android, root)
        device = android.DeviceState(
            package_name=self.package_name,
            signing_digest=self.signing_digest,
            verified_boot=self.verified_boot,
            device_locked=self.device_locked,
        )
        leaf = android.issue_leaf(
            ca_key, ca_certificate, private_key.public_key(), challenge=challenge,
            device=device, created=dt.datetime.now(dt.UTC),
        )  # fmt: skip
        chain = (leaf, ca_certificate, root.certificate)
        return AndroidKeyChain(
            certificate_chain=tuple(c.public_bytes(serialization.Encoding.DER) for c in chain)
        )

    # ------------------------------------------------------------------ faults

    def lose_keys(self) -> None:
        """Simulate a wiped TEE: every key and the wrapping key are gone."""
        shutil.rmtree(self.directory, ignore_errors=True)

    # ------------------------------------------------------------------ inside the element

    def _key_path(self, key_id: str) -> Path:
        return self.directory / "keys" / f"{key_id}.key"

    def _store(self, key_id: str, private_key: ec.EllipticCurvePrivateKey) -> None:
        self._seal(self._key_path(key_id), key_id, private_key)

    def _seal(self, path: Path, aad: str, private_key: ec.EllipticCurvePrivateKey) -> None:
        """Write ``nonce || AES-GCM(PKCS#8 DER)`` under the wrapping key, AAD ``aad``."""
        der = private_key.private_bytes(
            serialization.Encoding.DER,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        nonce = secrets.token_bytes(_NONCE_BYTES)
        write_private(path, nonce + AESGCM(self._wrapping_key()).encrypt(nonce, der, aad.encode()))

    def _unseal(self, path: Path, aad: str) -> PrivateKeyTypes:
        """What :meth:`_seal` wrote; OSError, InvalidTag or ValueError when it cannot be read."""
        sealed = path.read_bytes()
        wrapping_key = (self.directory / "element.key").read_bytes()
        der = AESGCM(wrapping_key).decrypt(
            sealed[:_NONCE_BYTES], sealed[_NONCE_BYTES:], aad.encode()
        )
        return serialization.load_der_private_key(der, password=None)

    def _load(self, handle: KeyHandle) -> ec.EllipticCurvePrivateKey:
        key_id = _key_id(handle)
        if handle.store != self.kind or key_id is None:
            raise KeyUnavailable("not a key of the emulated secure element")
        try:
            private_key = self._unseal(self._key_path(key_id), key_id)
        except (OSError, ValueError, InvalidTag) as exc:
            raise KeyUnavailable("key is gone from the emulated secure element") from exc
        if not isinstance(private_key, ec.EllipticCurvePrivateKey):
            raise KeyUnavailable("key in the emulated secure element is not an EC key")
        if not crypto.constant_time_equal(crypto.public_der(private_key), handle.public_key):
            raise KeyUnavailable("key in the emulated secure element does not match the handle")
        return private_key

    def _attestation_ca(
        self, android: Any, root: emulated_attestation.TestRoot
    ) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
        """The element's attestation key and its certificate under ``root``, provisioned
        on first use (and again after :meth:`lose_keys` or when the root changed)."""
        key_path, cert_path = (self.directory / f"{_CA_ID}.{ext}" for ext in ("key", "pem"))
        try:
            key = self._unseal(key_path, _CA_ID)
            certificate = x509.load_pem_x509_certificate(cert_path.read_bytes())
            certificate.verify_directly_issued_by(root.certificate)
            if isinstance(key, ec.EllipticCurvePrivateKey):
                return key, certificate
        except (OSError, ValueError, TypeError, InvalidTag, InvalidSignature):
            pass  # not provisioned yet, or for another root: provision anew
        key = crypto.generate_p256()
        certificate = android.issue_intermediate(
            root, key.public_key(), serial=secrets.token_hex(16)
        )
        self._seal(key_path, _CA_ID, key)
        write_private(cert_path, certificate.public_bytes(serialization.Encoding.PEM))
        return key, certificate

    def _wrapping_key(self) -> bytes:
        path = self.directory / "element.key"
        if not path.exists():
            write_private(path, AESGCM.generate_key(bit_length=256))
        return path.read_bytes()


def _key_id(handle: KeyHandle) -> str | None:
    """The handle's key id if it is well-formed (it becomes a file name)."""
    key_id = handle.ref.get("key_id", "")
    return key_id if _KEY_ID.match(key_id) else None


@register(EmulatedSecureElement.kind)
def _factory(state_dir: Path, options: Mapping[str, Any]) -> KeyStore:
    kind = EmulatedSecureElement.kind
    check_options(kind, options, _FLAGS + _STRINGS)
    flags: dict[str, bool] = {}
    for name in _FLAGS:
        value = options.get(name)
        if value is None:
            continue
        if not isinstance(value, bool):
            raise option_error(kind, f"option {name!r} must be true or false")
        flags[name] = value
    package_name = options.get("package_name", DEMO_PACKAGE_NAME)
    if not isinstance(package_name, str) or not package_name:
        raise option_error(kind, "option 'package_name' must be a non-empty string")
    digest = options.get("signing_digest", DEMO_SIGNING_DIGEST.hex())
    if not isinstance(digest, str) or not re.fullmatch(r"[0-9a-fA-F]{64}", digest):
        raise option_error(kind, "option 'signing_digest' must be 64 hex digits (SHA-256)")
    return EmulatedSecureElement(
        Path(state_dir) / ELEMENT_DIR, package_name=package_name,
        signing_digest=bytes.fromhex(digest), **flags,
    )  # fmt: skip
