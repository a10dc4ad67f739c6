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

Key attestation (issue 15; wire in docs/protocol.md, verifier ``keybound.attestation.tpm``).
A TPM that holds an endorsement key (EK) certificate in NV, as manufacturers provision them,
proves its hardware keys to the server:

1. :meth:`TpmKeyStore.attestation_key` (activation start) reads the EK certificate from its
   NV index (TCG EK Credential Profile 2.x, Annex B: the first of templates L-1, L-2,
   H-1..H-4, H-6, H-7 that has one, or the one the ``ek`` option names) and creates a fresh
   attestation key (AK): a restricted ECDSA P-256 signing key, fixedTPM, fixedParent,
   sensitiveDataOrigin, wrapped under the same SRK as the hardware keys.
2. The server answers with TPM2_MakeCredential for the EK and the AK's Name;
   :meth:`TpmKeyStore.attest` re-creates the EK from its template (checking it is the key the
   certificate names), opens the credential with TPM2_ActivateCredential (the EK's USER
   role: the EK policy PolicySecret(TPM_RH_ENDORSEMENT) in a policy session for the L
   templates, whose userWithAuth is clear; the empty auth value for the H templates), and
   has the AK certify the hardware key with TPM2_Certify, qualifyingData = the activation
   challenge.

The AK lives only for the one activation (its wrapped blob in :class:`AttestationKey.ref`);
nothing is written to the TPM's NV or persistent handles. A TPM without an EK certificate
simply does not attest.

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
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization

from keybound.client.keystores.base import (
    ActivationCredential,
    AttestationKey,
    KeyEvidence,
    KeyHandle,
    KeyStore,
    TpmCertification,
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
        ESYS_TR,
        TPM2_ALG,
        TPM2_CAP,
        TPM2_ECC,
        TPM2_HC,
        TPM2_SE,
        TPMA_OBJECT,
    )
    from tpm2_pytss.types import (  # type: ignore[import-untyped,import-not-found,unused-ignore]
        TPM2B_ENCRYPTED_SECRET,
        TPM2B_ID_OBJECT,
        TPM2B_PRIVATE,
        TPM2B_PUBLIC,
        TPM2B_SENSITIVE_CREATE,
        TPMS_ECC_PARMS,
        TPMS_ECC_POINT,
        TPMS_SCHEME_HASH,
        TPMT_ECC_SCHEME,
        TPMT_KDF_SCHEME,
        TPMT_PUBLIC,
        TPMT_PUBLIC_PARMS,
        TPMT_SIG_SCHEME,
        TPMT_SYM_DEF,
        TPMT_SYM_DEF_OBJECT,
        TPMU_ASYM_SCHEME,
        TPMU_PUBLIC_ID,
        TPMU_PUBLIC_PARMS,
        TPMU_SYM_KEY_BITS,
        TPMU_SYM_MODE,
    )
    from tpm2_pytss.utils import (  # type: ignore[import-untyped,import-not-found,unused-ignore]
        NoSuchIndex,
        NVReadEK,
        create_ek_template,
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
#: The same for the attestation key's reference (:attr:`AttestationKey.ref`).
AK_REF_FORMAT = "tpm2b/owner-ecc-srk/ak/v1"
#: TCG EK templates (EK Credential Profile 2.x, Annex B) in the order their certificates are
#: looked for; H-5 (SM2) is left out, the server cannot make credentials for it.
EK_TEMPLATES = ("L-1", "L-2", "H-1", "H-2", "H-3", "H-4", "H-6", "H-7")

_TSS2_RC_LAYER_MASK = 0xFF0000
_TPM_RC_FMT1 = 0x080
_TPM_RC_WARN = 0x800


@dataclass(frozen=True, kw_only=True)
class TpmOptions:
    """Parsed ``options`` of the ``tpm`` store."""

    tcti: str | None
    #: The EK templates whose certificate attestation may use, in order of preference.
    ek_templates: tuple[str, ...] = EK_TEMPLATES

    @classmethod
    def parse(cls, options: Mapping[str, Any]) -> TpmOptions:
        check_options(KIND, options, ("tcti", "ek"))
        tcti = options.get("tcti")
        if tcti is not None and (not isinstance(tcti, str) or not tcti):
            raise option_error(
                KIND, "option 'tcti' must be a non-empty string such as 'device:/dev/tpmrm0'"
            )
        if tcti is None and DEFAULT_DEVICE.exists():
            tcti = f"device:{DEFAULT_DEVICE}"
        ek = options.get("ek")
        if ek is not None and ek not in EK_TEMPLATES:
            raise option_error(
                KIND, f"option 'ek' must name a TCG EK template: {', '.join(EK_TEMPLATES)}"
            )
        return cls(tcti=tcti, ek_templates=EK_TEMPLATES if ek is None else (ek,))


@dataclass(frozen=True, kw_only=True)
class _Blobs:
    public: Any  # TPM2B_PUBLIC
    private: Any  # TPM2B_PRIVATE


class TpmKeyStore(KeyStore):
    """P-256 signing keys wrapped by a TPM 2.0's storage root key. See the module docs."""

    kind = KIND

    def __init__(self, *, tcti: str | None, ek_templates: tuple[str, ...] = EK_TEMPLATES) -> None:
        if _IMPORT_ERROR is not None:
            raise KeyStoreError(
                f"the tpm key store needs tpm2-pytss (pip install 'keybound[tpm]'): {_IMPORT_ERROR}"
            )
        self._tcti = tcti
        self._ek_templates = ek_templates

    def describe(self) -> str:
        return f"{KIND} ({self._tcti or 'no TPM found'})"

    def configured(self) -> bool:
        return self._tcti is not None

    def options(self) -> Mapping[str, Any]:
        tcti = {} if self._tcti is None else {"tcti": self._tcti}
        ek = {} if self._ek_templates == EK_TEMPLATES else {"ek": self._ek_templates[0]}
        return {**tcti, **ek}

    def check_usable(self) -> None:
        if self._tcti is None:
            raise KeyStoreError(
                f"no TPM 2.0 on this machine: {DEFAULT_DEVICE} does not exist and no 'tcti' "
                "option names one (e.g. swtpm:host=127.0.0.1,port=2321); without secure "
                "hardware use the 'software' store"
            )
        if not self.available():
            raise KeyStoreError(
                f"the TPM 2.0 at {self._tcti} cannot be used: not reachable, or no permission "
                f"(access to {DEFAULT_DEVICE} usually needs membership of the 'tss' group)"
            )

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
                "public": _b64(public.marshal()),
                "private": _b64(private.marshal()),
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

    def attestation_key(self) -> AttestationKey | None:
        """The EK certificate and a new AK (module docs, step 1); None without a TPM or
        when the TPM has no EK certificate."""
        if self._tcti is None:
            return None
        try:
            with _esapi(self._tcti) as ectx:
                found = _find_ek_certificate(ectx, self._ek_templates)
                if found is None:
                    return None
                template, certificate = found
                with _primary(ectx) as parent:
                    private, public, *_ = ectx.create(parent, None, _ak_template())
        except TSS2_Exception as exc:
            raise KeyStoreError(
                f"TPM at {self._tcti} could not make an attestation key: {exc}", tpm_rc=_rc(exc)
            ) from exc
        return AttestationKey(
            ek_certificate=certificate,
            ak_public=public.publicArea.marshal(),
            ref={
                "format": AK_REF_FORMAT,
                "ek": template,
                "public": _b64(public.marshal()),
                "private": _b64(private.marshal()),
            },
        )

    def attest(
        self,
        handle: KeyHandle,
        *,
        challenge: bytes,
        attestation_key: AttestationKey | None = None,
        credential: ActivationCredential | None = None,
    ) -> KeyEvidence | None:
        """ActivateCredential, then TPM2_Certify of ``handle`` by the AK over ``challenge``
        (module docs, step 2). None without an attestation key or the server's credential:
        the server cannot trust an AK it has not seen activated."""
        if attestation_key is None or credential is None:
            return None
        blobs = _decode_handle(handle)
        ak_blobs, template = _decode_attestation_key(attestation_key)
        tcti = self._require_tcti(KeyStoreError)
        try:
            # At most three transient objects at a time: the TPM 2.0 minimum (libtpms' too).
            with (
                _esapi(tcti) as ectx,
                _primary(ectx) as parent,
                _loaded(ectx, parent, ak_blobs) as ak,
            ):
                with _endorsement_key(ectx, template, attestation_key.ek_certificate) as ek:
                    secret = _activate_credential(ectx, ek, ak, credential)
                with _loaded(ectx, parent, blobs) as key:
                    info, signature = ectx.certify(
                        key, ak, challenge, TPMT_SIG_SCHEME(scheme=TPM2_ALG.NULL)
                    )
        except TSS2_Exception as exc:
            raise KeyStoreError(
                f"TPM at {tcti} could not attest the key: {exc}", tpm_rc=_rc(exc)
            ) from exc
        return TpmCertification(
            certify_info=bytes(info),
            signature=signature.marshal(),
            public_area=blobs.public.publicArea.marshal(),
            activated_secret=bytes(secret),
        )

    def _require_tcti(self, error: type[KeyStoreError]) -> str:
        if self._tcti is None:
            raise error(f"no TPM: {DEFAULT_DEVICE} does not exist and no 'tcti' option was given")
        return self._tcti


@register(KIND)
def open_tpm_store(state_dir: Path, options: Mapping[str, Any]) -> KeyStore:
    """Registry factory. ``state_dir`` is unused: this store keeps no files."""
    parsed = TpmOptions.parse(options)
    return TpmKeyStore(tcti=parsed.tcti, ek_templates=parsed.ek_templates)


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


@dataclass(frozen=True, kw_only=True)
class _EndorsementKey:
    handle: Any  # ESYS_TR of the transient EK
    user_with_auth: bool  # the template's userWithAuth: USER role by (empty) auth value
    name_alg: Any  # TPM2_ALG of the template's name and policy hash


@contextmanager
def _endorsement_key(
    ectx: Any, template_name: str, certificate: bytes
) -> Iterator[_EndorsementKey]:
    """The EK of ``template_name`` as a transient primary, checked to be the key of its
    certificate (a TPM whose EK changed cannot open a credential made for the old one)."""
    _, template = create_ek_template(template_name, _nv_reader(ectx))
    handle, public, *_ = ectx.create_primary(
        TPM2B_SENSITIVE_CREATE(), template, ESYS_TR.ENDORSEMENT
    )
    with _transient(ectx, handle) as ek:
        if _canonical_spki(public.publicArea.to_der()) != _certificate_spki(certificate):
            raise KeyStoreError(
                f"the TPM's EK ({template_name}) is not the key its EK certificate names"
            )
        area = template.publicArea
        yield _EndorsementKey(
            handle=ek,
            user_with_auth=bool(area.objectAttributes & TPMA_OBJECT.USERWITHAUTH),
            name_alg=area.nameAlg,
        )


def _activate_credential(
    ectx: Any, ek: _EndorsementKey, ak: Any, credential: ActivationCredential
) -> Any:
    """TPM2_ActivateCredential [TPM 2.0 Part 3 §12.5]: the AK in its ADMIN role (its empty
    auth value) and the EK in its USER role, which for the L templates is only their policy
    PolicySecret(TPM_RH_ENDORSEMENT) [EK Credential Profile 2.x, Annex B, policy A]."""
    blob = TPM2B_ID_OBJECT(credential=credential.credential_blob)
    secret = TPM2B_ENCRYPTED_SECRET(secret=credential.encrypted_secret)
    if ek.user_with_auth:
        return ectx.activate_credential(ak, ek.handle, blob, secret)
    session = ectx.start_auth_session(
        ESYS_TR.NONE, ESYS_TR.NONE, TPM2_SE.POLICY, TPMT_SYM_DEF(algorithm=TPM2_ALG.NULL),
        ek.name_alg,
    )  # fmt: skip
    try:
        ectx.policy_secret(ESYS_TR.ENDORSEMENT, session)
        return ectx.activate_credential(
            ak, ek.handle, blob, secret, session1=ESYS_TR.PASSWORD, session2=session
        )
    finally:
        with suppress(TSS2_Exception):
            ectx.flush_context(session)


def _find_ek_certificate(ectx: Any, templates: tuple[str, ...]) -> tuple[str, bytes] | None:
    """The first of ``templates`` with an EK certificate in NV: (template, certificate DER)."""
    reader = _nv_reader(ectx)
    for name in templates:
        try:
            stored, _ = create_ek_template(name, reader)
        except (NoSuchIndex, ValueError):  # ValueError: an H template without a certificate
            continue
        if stored:
            return name, _trim_certificate(bytes(stored))
    return None


def _nv_reader(ectx: Any) -> Callable[[int], bytes]:
    """An NV read callback for ``create_ek_template`` that raises NoSuchIndex for indices the
    TPM does not have without asking for them (the TSS logs every failed lookup as an
    error), and reads the others with the index's own (empty) auth value."""
    present: set[int] = set()
    more = True
    first = int(TPM2_HC.NV_INDEX_FIRST)
    while more:
        more, data = ectx.get_capability(TPM2_CAP.HANDLES, first, 64)
        handles = [int(h) for h in data.data.handles]
        present.update(handles)
        if not handles:
            break
        first = max(handles) + 1
    read = NVReadEK(ectx)

    def reader(index: int) -> bytes:
        if int(index) not in present:
            raise NoSuchIndex(index)
        return bytes(read(index))

    return reader


def _trim_certificate(data: bytes) -> bytes:
    """The DER certificate at the start of an NV index: some TPMs' indices are larger than
    their certificate and padded after it. Raises KeyStoreError when it is no certificate."""
    if len(data) >= 4 and data[0] == 0x30 and data[1] in (0x81, 0x82):
        width = data[1] & 0x7F
        end = 2 + width + int.from_bytes(data[2 : 2 + width], "big")
        if end <= len(data):
            return data[:end]
    raise KeyStoreError("the TPM's EK certificate index does not hold a DER certificate")


def _certificate_spki(certificate: bytes) -> bytes:
    try:
        key = x509.load_der_x509_certificate(certificate).public_key()
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise KeyStoreError(f"the TPM's EK certificate does not parse: {exc}") from exc
    return key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _canonical_spki(der: bytes) -> bytes:
    return serialization.load_der_public_key(der).public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


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


def _decode_attestation_key(key: AttestationKey) -> tuple[_Blobs, str]:
    """The AK's wrapped blobs and the EK template, or KeyStoreError if ``key`` is not one of
    this store's (or does not match its public area)."""
    ref = key.ref
    if ref.get("format") != AK_REF_FORMAT or ref.get("ek") not in EK_TEMPLATES:
        raise KeyStoreError(f"not an attestation key of this store ({ref.get('format')!r})")
    try:
        public = _unmarshal(TPM2B_PUBLIC, ref["public"])
        private = _unmarshal(TPM2B_PRIVATE, ref["private"])
    except (KeyError, ValueError, binascii.Error, TSS2_Exception) as exc:
        raise KeyStoreError(f"attestation key reference is corrupt: {exc}") from exc
    if public.publicArea.marshal() != key.ak_public:
        raise KeyStoreError("attestation key blob does not belong to its public area")
    return _Blobs(public=public, private=private), ref["ek"]


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


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


def _ak_template() -> Any:
    """The attestation key: a restricted ECDSA-SHA256 P-256 signing key (it signs only what
    the TPM itself produced, such as TPM2_Certify's TPMS_ATTEST), born in and bound to this
    TPM [TCG TPM 2.0 Keys for Device Identity and Attestation, 3.8]."""
    attributes = _key_attributes() | TPMA_OBJECT.RESTRICTED
    return TPM2B_PUBLIC(
        publicArea=TPMT_PUBLIC(
            type=TPM2_ALG.ECC,
            nameAlg=TPM2_ALG.SHA256,
            objectAttributes=attributes,
            parameters=TPMU_PUBLIC_PARMS(eccDetail=_key_ecc_parms()),
        )
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
