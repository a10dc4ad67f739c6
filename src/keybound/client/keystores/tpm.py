"""TPM 2.0 key store (kind ``"tpm"``), through tpm2-pytss's ESAPI.

Key hierarchy. Each operation re-creates the storage primary key in the owner hierarchy
from the TCG reference ECC SRK template (TCG TPM v2.0 Provisioning Guidance, ECC NIST P-256
SRK: restricted decrypt key, AES-128-CFB, ``unique`` = 32 zero bytes for x and y). A primary
is a deterministic function of the TPM's owner seed and its template, so nothing is made
persistent in the TPM (no NV or persistent handle is used) and any tool that knows the
template can re-create the same parent.

The hardware key is an ordinary (unrestricted) ECC P-256 signing key created under that
parent, with attributes ``fixedTPM | fixedParent | sensitiveDataOrigin | userWithAuth |
sign`` and the fixed scheme ECDSA-SHA256, and an empty auth value. ``TPM2_Create`` returns
its public area and its private area *wrapped* (encrypted and integrity-protected) under the
parent's seed: the pair is what :attr:`KeyHandle.ref` carries (base64 of the marshalled
``TPM2B_PUBLIC`` / ``TPM2B_PRIVATE``). Only the TPM that created the blob, with the same
owner seed, can load it; after ``TPM2_Clear`` or on another TPM, ``TPM2_Load`` fails with an
integrity error, which this store reports as :class:`~keybound.errors.KeyUnavailable`. The
store writes nothing to disk; the SDK persists the handle.

Signing hashes the message with SHA-256 on the host and asks ``TPM2_Sign`` to sign that
digest with a NULL hash-check ticket (allowed because the key is not restricted); the TPM's
``(r, s)`` is returned DER-encoded. Every operation opens its own ESAPI connection and closes
it (and flushes the transient objects it loaded) before returning.

Error mapping (``hwKeyClientStatus``, see :mod:`keybound.client.keystores.base`):

=========================================================  =======================
no TPM configured / TPM unreachable / TPM error at create  KeyGenerationFailed
handle corrupt, blob rejected by ``TPM2_Load``              KeyUnavailable
TPM unreachable or failing at sign time                    SigningFailed
=========================================================  =======================
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from keybound.client.keystores.base import (
    KeyHandle,
    KeyStore,
    check_options,
    option_error,
    register,
)
from keybound.crypto import der_signature, p256_public_from_point
from keybound.errors import (
    KeyGenerationFailed,
    KeyStoreError,
    KeyUnavailable,
    SigningFailed,
)

try:
    from tpm2_pytss import (  # type: ignore[import-untyped,import-not-found,unused-ignore]
        ESAPI,
        TCTILdr,
        TSS2_Exception,
    )
    from tpm2_pytss.constants import (  # type: ignore[import-untyped,import-not-found,unused-ignore]
        TPM2_ALG,
        TPM2_ECC,
        TPMA_OBJECT,
    )
    from tpm2_pytss.types import (  # type: ignore[import-untyped,import-not-found,unused-ignore]
        TPM2B_PRIVATE,
        TPM2B_PUBLIC,
        TPMS_ECC_PARMS,
        TPMS_ECC_POINT,
        TPMS_SCHEME_HASH,
        TPMT_ECC_SCHEME,
        TPMT_KDF_SCHEME,
        TPMT_PUBLIC,
        TPMT_PUBLIC_PARMS,
        TPMT_SIG_SCHEME,
        TPMT_SYM_DEF_OBJECT,
        TPMU_ASYM_SCHEME,
        TPMU_PUBLIC_ID,
        TPMU_PUBLIC_PARMS,
        TPMU_SYM_KEY_BITS,
        TPMU_SYM_MODE,
    )
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    _IMPORT_ERROR: ImportError | None = exc
else:
    _IMPORT_ERROR = None

KIND = "tpm"
#: The kernel's TPM resource manager; used when no ``tcti`` option is given and it exists.
DEFAULT_DEVICE = Path("/dev/tpmrm0")
#: Names the parent template and blob encoding in every handle this store writes.
REF_FORMAT = "tpm2b/owner-ecc-srk/v1"

_TSS2_RC_LAYER_MASK = 0xFF0000
_TPM_RC_FMT1 = 0x080
_TPM_RC_WARN = 0x800


@dataclass(frozen=True, kw_only=True)
class TpmOptions:
    """Parsed ``options`` of the ``tpm`` store."""

    tcti: str | None

    @classmethod
    def parse(cls, options: Mapping[str, Any]) -> TpmOptions:
        check_options(KIND, options, ("tcti",))
        tcti = options.get("tcti")
        if tcti is not None and (not isinstance(tcti, str) or not tcti):
            raise option_error(
                KIND, "option 'tcti' must be a non-empty string such as 'device:/dev/tpmrm0'"
            )
        if tcti is None and DEFAULT_DEVICE.exists():
            tcti = f"device:{DEFAULT_DEVICE}"
        return cls(tcti=tcti)


@dataclass(frozen=True, kw_only=True)
class _Blobs:
    public: Any  # TPM2B_PUBLIC
    private: Any  # TPM2B_PRIVATE


class TpmKeyStore(KeyStore):
    """P-256 signing keys wrapped by a TPM 2.0's storage root key. See the module docs."""

    kind = KIND

    def __init__(self, *, tcti: str | None) -> None:
        if _IMPORT_ERROR is not None:
            raise KeyStoreError(
                f"the tpm key store needs tpm2-pytss (pip install 'keybound[tpm]'): {_IMPORT_ERROR}"
            )
        self._tcti = tcti

    def describe(self) -> str:
        return f"{KIND} ({self._tcti or 'no TPM found'})"

    def configured(self) -> bool:
        return self._tcti is not None

    def available(self) -> bool:
        if self._tcti is None:
            return False
        try:
            with _esapi(self._tcti) as ectx:
                ectx.test_parms(_key_parms())
        except TSS2_Exception:
            return False
        return True

    def generate(self, label: str) -> KeyHandle:
        tcti = self._require_tcti(KeyGenerationFailed)
        try:
            with _esapi(tcti) as ectx, _primary(ectx) as parent:
                private, public, *_ = ectx.create(parent, None, _key_template())
        except TSS2_Exception as exc:
            raise KeyGenerationFailed(
                f"TPM at {tcti} could not create the key: {exc}", tpm_rc=_rc(exc)
            ) from exc
        return KeyHandle(
            store=KIND,
            public_key=_spki(public),
            ref={
                "format": REF_FORMAT,
                "label": label,
                "public": base64.b64encode(public.marshal()).decode("ascii"),
                "private": base64.b64encode(private.marshal()).decode("ascii"),
            },
        )

    def sign(self, handle: KeyHandle, message: bytes) -> bytes:
        blobs = _decode_handle(handle)
        tcti = self._require_tcti(SigningFailed)
        digest = hashlib.sha256(message).digest()
        try:
            with (
                _esapi(tcti) as ectx,
                _primary(ectx) as parent,
                _loaded(ectx, parent, blobs) as key,
            ):
                signature = ectx.sign(key, digest, TPMT_SIG_SCHEME(scheme=TPM2_ALG.NULL))
        except TSS2_Exception as exc:
            raise SigningFailed(f"TPM at {tcti} could not sign: {exc}", tpm_rc=_rc(exc)) from exc
        ecdsa = signature.signature.ecdsa
        return der_signature(_int(ecdsa.signatureR), _int(ecdsa.signatureS))

    def delete(self, handle: KeyHandle) -> None:
        """Nothing to destroy inside the TPM: the key exists only as the wrapped blob in
        ``handle``, which the SDK discards. (A copy of the blob stays usable on this TPM
        until its owner hierarchy is cleared.)"""

    def _require_tcti(self, error: type[KeyStoreError]) -> str:
        if self._tcti is None:
            raise error(f"no TPM: {DEFAULT_DEVICE} does not exist and no 'tcti' option was given")
        return self._tcti


@register(KIND)
def open_tpm_store(state_dir: Path, options: Mapping[str, Any]) -> KeyStore:
    """Registry factory. ``state_dir`` is unused: this store keeps no files."""
    return TpmKeyStore(tcti=TpmOptions.parse(options).tcti)


# ------------------------------------------------------------------------- ESAPI helpers


@contextmanager
def _esapi(tcti: str) -> Iterator[Any]:
    """An ESAPI context on ``tcti``; the context and its TCTI are always finalized."""
    with TCTILdr.parse(tcti) as loader, ESAPI(loader) as ectx:
        yield ectx


@contextmanager
def _transient(ectx: Any, handle: Any) -> Iterator[Any]:
    """Flush a transient object on exit (there may be no resource manager, e.g. swtpm)."""
    try:
        yield handle
    finally:
        with suppress(TSS2_Exception):
            ectx.flush_context(handle)


@contextmanager
def _primary(ectx: Any) -> Iterator[Any]:
    handle, *_ = ectx.create_primary(None, _srk_template())
    with _transient(ectx, handle) as parent:
        yield parent


@contextmanager
def _loaded(ectx: Any, parent: Any, blobs: _Blobs) -> Iterator[Any]:
    try:
        handle = ectx.load(parent, blobs.private, blobs.public)
    except TSS2_Exception as exc:
        if _blob_rejected(exc):
            raise KeyUnavailable(
                "the TPM rejected the key blob: it was made by another TPM or before the TPM "
                f"was cleared ({exc})",
                tpm_rc=_rc(exc),
            ) from exc
        raise
    with _transient(ectx, handle) as key:
        yield key


def _blob_rejected(exc: Any) -> bool:
    """True for a TPM (not TSS/transport) error that is not a transient warning."""
    rc = int(exc.rc)
    from_tpm = rc & _TSS2_RC_LAYER_MASK == 0
    warning = not rc & _TPM_RC_FMT1 and bool(rc & _TPM_RC_WARN)
    return from_tpm and not warning


def _rc(exc: Any) -> str:
    return f"0x{int(exc.rc):08x}"


# ------------------------------------------------------------------------ handle <-> TPM


def _decode_handle(handle: KeyHandle) -> _Blobs:
    """The wrapped key in ``handle``, or KeyUnavailable if the handle is not usable."""
    if handle.store != KIND:
        raise KeyUnavailable(f"handle belongs to key store {handle.store!r}, not {KIND!r}")
    if handle.ref.get("format") != REF_FORMAT:
        raise KeyUnavailable(f"TPM key handle has unknown format {handle.ref.get('format')!r}")
    try:
        public = _unmarshal(TPM2B_PUBLIC, handle.ref["public"])
        private = _unmarshal(TPM2B_PRIVATE, handle.ref["private"])
        spki = _spki(public)
    except (KeyError, ValueError, binascii.Error, TSS2_Exception) as exc:
        raise KeyUnavailable(f"TPM key handle is missing or has a corrupt key blob: {exc}") from exc
    if spki != handle.public_key:
        raise KeyUnavailable("TPM key blob does not belong to the handle's public key")
    return _Blobs(public=public, private=private)


def _unmarshal(cls: Any, text: str) -> Any:
    raw = base64.b64decode(text, validate=True)
    value, used = cls.unmarshal(raw)
    if used != len(raw):
        raise ValueError(f"{cls.__name__} has {len(raw) - used} trailing bytes")
    return value


def _spki(public: Any) -> bytes:
    area = public.publicArea
    if area.type != TPM2_ALG.ECC or area.parameters.eccDetail.curveID != TPM2_ECC.NIST_P256:
        raise ValueError("TPM key is not an ECC P-256 key")
    point = area.unique.ecc
    return p256_public_from_point(_int(point.x), _int(point.y))


def _int(buffer: Any) -> int:
    return int.from_bytes(bytes(buffer), "big")


# ----------------------------------------------------------------------------- templates


def _srk_template() -> Any:
    """TCG reference ECC P-256 storage root key template (owner hierarchy)."""
    attributes = (
        TPMA_OBJECT.FIXEDTPM
        | TPMA_OBJECT.FIXEDPARENT
        | TPMA_OBJECT.SENSITIVEDATAORIGIN
        | TPMA_OBJECT.USERWITHAUTH
        | TPMA_OBJECT.NODA
        | TPMA_OBJECT.RESTRICTED
        | TPMA_OBJECT.DECRYPT
    )
    aes128cfb = TPMT_SYM_DEF_OBJECT(
        algorithm=TPM2_ALG.AES,
        keyBits=TPMU_SYM_KEY_BITS(aes=128),
        mode=TPMU_SYM_MODE(aes=TPM2_ALG.CFB),
    )
    parms = TPMS_ECC_PARMS(
        symmetric=aes128cfb,
        scheme=TPMT_ECC_SCHEME(scheme=TPM2_ALG.NULL),
        curveID=TPM2_ECC.NIST_P256,
        kdf=TPMT_KDF_SCHEME(scheme=TPM2_ALG.NULL),
    )
    return TPM2B_PUBLIC(
        publicArea=TPMT_PUBLIC(
            type=TPM2_ALG.ECC,
            nameAlg=TPM2_ALG.SHA256,
            objectAttributes=attributes,
            parameters=TPMU_PUBLIC_PARMS(eccDetail=parms),
            unique=TPMU_PUBLIC_ID(ecc=TPMS_ECC_POINT(x=bytes(32), y=bytes(32))),
        )
    )


def _key_attributes() -> Any:
    return (
        TPMA_OBJECT.FIXEDTPM
        | TPMA_OBJECT.FIXEDPARENT
        | TPMA_OBJECT.SENSITIVEDATAORIGIN
        | TPMA_OBJECT.USERWITHAUTH
        | TPMA_OBJECT.SIGN_ENCRYPT
    )


def _key_ecc_parms() -> Any:
    ecdsa_sha256 = TPMT_ECC_SCHEME(
        scheme=TPM2_ALG.ECDSA,
        details=TPMU_ASYM_SCHEME(ecdsa=TPMS_SCHEME_HASH(hashAlg=TPM2_ALG.SHA256)),
    )
    return TPMS_ECC_PARMS(
        symmetric=TPMT_SYM_DEF_OBJECT(algorithm=TPM2_ALG.NULL),
        scheme=ecdsa_sha256,
        curveID=TPM2_ECC.NIST_P256,
        kdf=TPMT_KDF_SCHEME(scheme=TPM2_ALG.NULL),
    )


def _key_parms() -> Any:
    """The key's algorithm parameters, for TPM2_TestParms."""
    return TPMT_PUBLIC_PARMS(
        type=TPM2_ALG.ECC, parameters=TPMU_PUBLIC_PARMS(eccDetail=_key_ecc_parms())
    )


def _key_template() -> Any:
    return TPM2B_PUBLIC(
        publicArea=TPMT_PUBLIC(
            type=TPM2_ALG.ECC,
            nameAlg=TPM2_ALG.SHA256,
            objectAttributes=_key_attributes(),
            parameters=TPMU_PUBLIC_PARMS(eccDetail=_key_ecc_parms()),
        )
    )
