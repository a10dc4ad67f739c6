"""The key-store interface every SDK back end implements.

A key store holds *hardware-class* keys: it generates an ECDSA P-256 key pair inside its
secure element, hands out only the public key (SPKI DER) and an opaque ``KeyHandle`` the
SDK persists, and signs inside the element. It never exposes private key material.

Failures map onto ``hwKeyClientStatus`` (docs/protocol.md §6):
- :class:`~keybound.errors.KeyGenerationFailed` -> ``GENERATION_FAILED``
- :class:`~keybound.errors.KeyUnavailable`      -> ``KEY_UNAVAILABLE``
- :class:`~keybound.errors.SigningFailed`       -> ``SIGNING_FAILED``
and ``available()`` False -> ``NOT_SUPPORTED``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from keybound.errors import ClientError, ErrorCode


@dataclass(frozen=True, kw_only=True)
class KeyHandle:
    """What the SDK persists about a hardware key: the store kind, the public key, and a
    store-specific reference (a wrapped TPM blob, a PKCS#11 object id, ...). Never a private
    key in the clear."""

    store: str
    public_key: bytes
    ref: Mapping[str, str] = field(default_factory=dict)


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
