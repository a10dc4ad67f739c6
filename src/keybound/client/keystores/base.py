"""The key-store interface every SDK back end implements.

A key store holds *hardware-class* keys: it generates an ECDSA P-256 key pair inside its
secure element, hands out only the public key (SPKI DER) and an opaque ``KeyHandle`` the
SDK persists, and signs inside the element. It never exposes private key material.

Failures map onto ``hwKeyClientStatus`` (docs/protocol.md §6):
- :class:`~keybound.errors.KeyGenerationFailed` -> ``GENERATION_FAILED``
- :class:`~keybound.errors.KeyUnavailable`      -> ``KEY_UNAVAILABLE``
- :class:`~keybound.errors.SigningFailed`       -> ``SIGNING_FAILED``
and ``available()`` False -> ``NOT_SUPPORTED``.

Key attestation (docs/attestation.md): a store whose hardware can prove where a key lives
overrides :meth:`KeyStore.attestation_key` (TPM: the EK certificate and a fresh attestation
key, sent at activation start) and :meth:`KeyStore.attest` (the evidence for a hardware key,
bound to the activation challenge, sent at finish). The defaults say "cannot attest": the
device then sends no evidence and the server records ``NOT_PROVIDED``. A store that cannot
attest this time raises :class:`~keybound.errors.KeyStoreError`; the device logs it and
activates without evidence, since attestation never decides whether a key may be used.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from keybound.errors import ClientError, ErrorCode, KeyStoreError


@dataclass(frozen=True, kw_only=True)
class KeyHandle:
    """What the SDK persists about a hardware key: the store kind, the public key, and a
    store-specific reference (a wrapped TPM blob, a PKCS#11 object id, ...). Never a private
    key in the clear."""

    store: str
    public_key: bytes
    ref: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class AttestationKey:
    """What a TPM presents at activation start: its EK certificate (DER, from the TPM's NV)
    and the public area (marshalled TPMT_PUBLIC) of a fresh attestation key. ``ref`` is the
    store's own reference to that key (wrapped blobs), opaque to the SDK."""

    ek_certificate: bytes
    ak_public: bytes
    ref: Mapping[str, str] = field(default_factory=dict, repr=False)


@dataclass(frozen=True, kw_only=True)
class ActivationCredential:
    """The server's answer to an :class:`AttestationKey`: TPM2_MakeCredential's output,
    which only the TPM holding the EK can open, and only for that attestation key."""

    credential_blob: bytes  # TPM2B_ID_OBJECT's buffer
    encrypted_secret: bytes  # TPM2B_ENCRYPTED_SECRET's buffer


@dataclass(frozen=True, kw_only=True)
class AndroidKeyChain:
    """Android key attestation: the certificate chain, DER, leaf (the hardware key) first."""

    certificate_chain: tuple[bytes, ...]


@dataclass(frozen=True, kw_only=True)
class TpmCertification:
    """TPM2_Certify of the hardware key by the attestation key, over the activation
    challenge, plus the secret TPM2_ActivateCredential returned for that attestation key."""

    certify_info: bytes  # TPMS_ATTEST
    signature: bytes  # TPMT_SIGNATURE
    public_area: bytes  # TPMT_PUBLIC of the hardware key
    activated_secret: bytes


#: Evidence a store produces for a hardware key.
KeyEvidence = AndroidKeyChain | TpmCertification


class KeyStore(ABC):
    """A secure-hardware key store. Subclasses register themselves in :data:`REGISTRY`."""

    kind: ClassVar[str]

    def configured(self) -> bool:
        """True when this device was set up with secure hardware (a TPM address, a PKCS#11
        module). A configured store that is not available when a key must be generated is
        reported as ``GENERATION_FAILED``; an unconfigured one as ``NOT_SUPPORTED``."""
        return True

    @abstractmethod
    def available(self) -> bool:
        """True when the secure hardware is present and usable right now."""

    @abstractmethod
    def generate(self, label: str) -> KeyHandle:
        """Generate a non-exportable P-256 signing key; raise KeyGenerationFailed."""

    @abstractmethod
    def sign(self, handle: KeyHandle, message: bytes) -> bytes:
        """ECDSA-SHA256 over ``message`` inside the hardware; DER signature.

        Raise KeyUnavailable when the key is gone (deleted, TPM cleared, token removed) and
        SigningFailed on any other device error at sign time."""

    @abstractmethod
    def delete(self, handle: KeyHandle) -> None:
        """Destroy the key if it still exists (idempotent)."""

    def describe(self) -> str:
        return self.kind

    def attestation_key(self) -> AttestationKey | None:
        """The attestation key to present at activation start, or None when this store
        needs none (or cannot attest at all). Raise KeyStoreError when it should have one
        but cannot make it now."""
        return None

    def attest(
        self,
        handle: KeyHandle,
        *,
        challenge: bytes,
        attestation_key: AttestationKey | None = None,
        credential: ActivationCredential | None = None,
    ) -> KeyEvidence | None:
        """Evidence that ``handle``'s key was generated in this hardware, bound to
        ``challenge`` (the activation challenge); None when this store cannot attest (or
        the server sent no ``credential`` for its ``attestation_key``). Raise KeyStoreError
        when attesting fails."""
        return None

    def options(self) -> Mapping[str, Any]:
        """The options that open this store again with ``open_keystore`` (what a device
        configuration stores): never a secret such as a token PIN."""
        return {}

    def check_usable(self) -> None:
        """Raise KeyStoreError (``keystore_unavailable``) unless this store can make a key
        now. Opening a store by name checks it: a store that was asked for and cannot be
        used is the caller's error, never a quiet fall-back to software keys."""
        if not self.configured() or not self.available():
            raise KeyStoreError(f"{self.describe()} cannot be used now")


KeyStoreFactory = Callable[[Path, Mapping[str, Any]], KeyStore]

#: kind -> factory(state_dir, options). Back ends add themselves on import.
REGISTRY: dict[str, KeyStoreFactory] = {}


def register(kind: str) -> Callable[[KeyStoreFactory], KeyStoreFactory]:
    def deco(factory: KeyStoreFactory) -> KeyStoreFactory:
        REGISTRY[kind] = factory
        return factory

    return deco


def option_error(kind: str, detail: str) -> ClientError:
    """The error every back end raises for bad options: ClientError(CLIENT_CONFIGURATION)."""
    return ClientError(f"key store {kind!r}: {detail}", code=ErrorCode.CLIENT_CONFIGURATION)


def check_options(kind: str, options: Mapping[str, Any], allowed: Iterable[str]) -> None:
    """Refuse option names ``kind`` does not take (names only: values may be secrets)."""
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise option_error(kind, f"unknown option(s) {', '.join(unknown)}")
