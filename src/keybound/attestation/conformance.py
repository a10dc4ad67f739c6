"""``keybound attestation check MANIFEST.json``: verify a manifest of attestation samples.

The manifest format is the one of ``shared/testvectors/attestation/manifest.json``: sections
``android``, ``apple`` and ``tpm``, each a list of entries with ``id``, ``files`` (relative
to the manifest), ``verify_at`` (UTC), ``trust_anchor`` (text naming ``.pem`` files, or
absent: then the section's ``trust-anchor`` entries are the roots), optional ``inputs`` and
``expected.result``. Every entry is verified at its pinned time with only the roots it
names; one JSON line per entry is printed (``id``, ``expected``, ``got``, ``match``,
``reason``, plus ``detail``), and the exit status is 1 if any line does not match (2 if the
manifest itself is unusable).

How an ``expected.result`` is judged (keybound's decisions where the manifest leaves one):

- ``valid`` / ``invalid``: the verifier's outcome.
- ``parser-policy``: keybound parses strictly, so the entry must be refused as MALFORMED.
- ``valid-structure/untrusted-root``: refused as CHAIN_UNTRUSTED with the named roots, and
  valid when the chain's own top certificate is made the anchor (``structure``).
- ``valid-structure/policy``: refused for one of keybound's policy reasons, and valid as a
  structure with that policy lifted and the chain's top certificate as anchor.
- ``revoked-lookup``: the status list answers as documented (SUSPENDED, not found, REVOKED).
- ``trust-anchor(s)``: each file is a self-signed CA certificate whose key keybound ships.

Android entries are checked with ``AndroidKeyPolicy.structure_only()`` (the samples come
from developer phones; boot and lock state are compared with ``expected`` instead), the
leaf's own key as the expected key, and the manifest's challenge when it gives one. A
``.json`` beside an Android chain must equal the parsed KeyDescription (Google's Gson form).
A ``negative_variant`` like "same chain at 2030-01-01T00:00:00Z -> EXPIRED" adds a line.
"""

from __future__ import annotations

import argparse
import base64
import datetime as dt
import hashlib
import json
import re
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from keybound.attestation import chain as paths
from keybound.attestation._der import certificate_parts
from keybound.attestation.android_key import (
    AndroidKeyEvidence,
    AndroidKeyPolicy,
    AndroidKeyVerifier,
    VerifiedAndroidKey,
)
from keybound.attestation.android_keydescription import (
    KEY_DESCRIPTION_OID,
    AuthorizationList,
    KeyDescription,
    Origin,
    parse_key_description,
)
from keybound.attestation.apple_app_attest import AppAttestEvidence, AppAttestVerifier, AppleApp
from keybound.attestation.base import (
    AppleEnvironment,
    AttestationFailed,
    AttestationFormat,
    Reason,
)
from keybound.attestation.revocation import RevocationList, RevocationStatus
from keybound.attestation.tpm import TpmPolicy, TpmVerifier
from keybound.attestation.trust import TrustAnchor, TrustStore

MAX_FILE_BYTES = 4 * 1024 * 1024
SECTIONS = {
    "android": AttestationFormat.ANDROID_KEY,
    "apple": AttestationFormat.APPLE_APP_ATTEST,
    "tpm": AttestationFormat.TPM,
}
#: Refusals that are keybound policy rather than a broken statement.
POLICY_REASONS = frozenset(
    {
        Reason.TPM_KEY_ATTRIBUTES,
        Reason.AK_CERTIFICATE_INVALID,
        Reason.CHAIN_UNTRUSTED,
        Reason.UNSUPPORTED_ALGORITHM,
    }
)
_ANCHOR_KINDS = ("trust-anchor", "trust-anchors")
_VARIANT = re.compile(r"at (\S+) -> ([A-Z_]+)")
_PEM_NAME = re.compile(r"[\w./+-]+\.pem")


class ManifestError(Exception):
    """The manifest (not an entry) cannot be used."""


@dataclass(frozen=True, kw_only=True)
class Attempt:
    """One verification: None reason means it verified."""

    reason: Reason | None
    detail: str = ""
    mismatches: tuple[str, ...] = ()

    @property
    def valid(self) -> bool:
        return self.reason is None and not self.mismatches


@dataclass(frozen=True, kw_only=True)
class Outcome:
    id: str
    expected: str
    got: str
    match: bool
    reason: str | None
    detail: str = ""
    extra: Mapping[str, str] = field(default_factory=dict)

    def as_json(self) -> str:
        line: dict[str, Any] = {
            "id": self.id,
            "expected": self.expected,
            "got": self.got,
            "match": self.match,
            "reason": self.reason,
        }
        line.update(self.extra)
        if self.detail:
            line["detail"] = self.detail
        return json.dumps(line, ensure_ascii=False)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="keybound attestation check",
        description="Verify every entry of an attestation vector manifest at its pinned time.",
    )
    parser.add_argument("manifest", type=Path, help="manifest.json (paths relative to it)")
    args = parser.parse_args(argv)
    try:
        outcomes = list(check_manifest(args.manifest))
    except ManifestError as exc:
        print(f"keybound attestation check: {exc}", file=sys.stderr)
        return 2
    for outcome in outcomes:
        print(outcome.as_json())
    return 0 if outcomes and all(outcome.match for outcome in outcomes) else 1


def check_manifest(path: Path) -> Iterator[Outcome]:
    manifest = _json(_read(path))
    if not isinstance(manifest, dict):
        raise ManifestError(f"{path}: not a JSON object")
    base = path.parent
    for section, entries in manifest.items():
        if not isinstance(entries, list):
            continue
        fmt = SECTIONS.get(section)
        anchors = _section_anchor_files(entries, base)
        for entry in entries:
            if not isinstance(entry, dict) or not isinstance(entry.get("id"), str):
                raise ManifestError(f"{section}: an entry without an id")
            if fmt is None:
                yield Outcome(
                    id=entry["id"],
                    expected=_expected(entry),
                    got="unsupported",
                    match=False,
                    reason=None,
                    detail=f"unknown section {section}",
                )
                continue
            yield from _check_entry(fmt, entry, base, anchors)


def _check_entry(
    fmt: AttestationFormat, entry: dict[str, Any], base: Path, anchors: list[Path]
) -> Iterator[Outcome]:
    expected = _expected(entry)
    try:
        if expected in _ANCHOR_KINDS:
            yield _judged(entry, _check_anchors(fmt, entry, base))
            return
        if expected == "revoked-lookup":
            yield _judged(entry, _check_revocation(entry, base))
            return
        named = _named_roots(entry, base) or anchors
        trust = TrustStore.from_files(named)
        check = _CHECKERS[fmt]
        moment = _time(entry.get("verify_at"))
        main_attempt = check(entry, base, trust, moment, False)
        structure = None
        if expected.startswith("valid-structure/"):
            structure = check(entry, base, None, moment, expected.endswith("/policy"))
        yield _judge(entry, main_attempt, structure)
        variant = _VARIANT.search(str(entry.get("expected", {}).get("negative_variant", "")))
        if variant:
            at, wanted = _time(variant.group(1)), variant.group(2)
            attempt = check(entry, base, trust, at, False)
            reason = Reason.CHAIN_EXPIRED if wanted == "EXPIRED" else Reason(wanted)
            yield Outcome(
                id=f"{entry['id']}@{variant.group(1)}",
                expected=f"invalid:{reason}",
                got=_got(attempt),
                match=attempt.reason is reason,
                reason=attempt.reason,
                detail=attempt.detail,
            )
    except (ManifestError, OSError, ValueError, KeyError, TypeError) as exc:
        yield Outcome(
            id=entry["id"],
            expected=expected,
            got="error",
            match=False,
            reason=None,
            detail=f"{type(exc).__name__}: {exc}",
        )


def _judge(entry: dict[str, Any], attempt: Attempt, structure: Attempt | None) -> Outcome:
    expected = _expected(entry)
    if expected == "valid":
        match = attempt.valid
    elif expected == "invalid":
        match = attempt.reason is not None
    elif expected == "parser-policy":
        match = attempt.reason is Reason.MALFORMED  # keybound parses strictly
    elif expected == "valid-structure/untrusted-root":
        match = (
            attempt.reason is Reason.CHAIN_UNTRUSTED and structure is not None and structure.valid
        )
    elif expected == "valid-structure/policy":
        match = attempt.reason in POLICY_REASONS and structure is not None and structure.valid
    else:
        match = False
    extra = {"structure": _got(structure)} if structure is not None else {}
    detail = "; ".join([attempt.detail, *attempt.mismatches]).strip("; ")
    if structure is not None and not structure.valid:
        detail = f"{detail}; structure: {structure.reason} {structure.detail}".strip("; ")
    return Outcome(
        id=entry["id"],
        expected=expected,
        got=_got(attempt),
        match=match,
        reason=attempt.reason,
        detail=detail,
        extra=extra,
    )


def _judged(entry: dict[str, Any], problems: list[str]) -> Outcome:
    expected = _expected(entry)
    return Outcome(
        id=entry["id"],
        expected=expected,
        got=expected if not problems else "mismatch",
        match=not problems,
        reason=None,
        detail="; ".join(problems),
    )


def _got(attempt: Attempt | None) -> str:
    if attempt is None:
        return "n/a"
    if attempt.reason is None:
        return "valid" if not attempt.mismatches else "mismatch"
    return "invalid"


def _attempt(run: Callable[[], list[str]]) -> Attempt:
    try:
        mismatches = run()
    except AttestationFailed as exc:
        return Attempt(reason=exc.reason, detail=exc.detail)
    return Attempt(reason=None, mismatches=tuple(mismatches))


# ------------------------------------------------------------------------------ Android


def _check_android(
    entry: dict[str, Any], base: Path, trust: TrustStore | None, now: dt.datetime, _: bool
) -> Attempt:
    files = [base / name for name in entry.get("files", [])]
    pem = next(path for path in files if path.suffix == ".pem")
    ders = [
        certificate.public_bytes(serialization.Encoding.DER)
        for certificate in x509.load_pem_x509_certificates(_read(pem))
    ]
    expected = entry.get("expected", {})
    challenge = _android_challenge(expected, ders[0])
    store = trust if trust is not None else _top_anchor(ders)
    verifier = AndroidKeyVerifier(trust=store, policy=AndroidKeyPolicy.structure_only())

    def run() -> list[str]:
        result = verifier.verify(
            AndroidKeyEvidence(chain=tuple(ders)),
            expected_challenge=challenge,
            expected_public_key=certificate_parts(ders[0]).spki,
            now=now,
        )
        mismatches = _android_expectations(expected, result)
        description = next((path for path in files if path.suffix == ".json"), None)
        if description is not None:
            wanted = _json(_strip_comments(_read(description)))
            for part in ("softwareEnforced", "hardwareEnforced"):
                # Google's parser records whether tags were in order; strict DER implies it.
                if wanted.get(part, {}).pop("areTagsOrdered", True) is not True:
                    mismatches.append(f"{description.name}: {part} tags out of order")
            got = key_description_gson(result.key_description)
            if got != wanted:
                mismatches.append(
                    f"KeyDescription differs from {description.name}: "
                    f"{_first_difference(wanted, got)}"
                )
        return mismatches

    return _attempt(run)


def _android_challenge(expected: Mapping[str, Any], leaf: bytes) -> bytes:
    if "attestationChallenge_utf8" in expected:
        return str(expected["attestationChallenge_utf8"]).encode("utf-8")
    if "attestationChallenge_base64" in expected:
        return base64.b64decode(expected["attestationChallenge_base64"])
    try:  # no challenge in the manifest: the leaf's own (the check then proves nothing)
        raw = (
            x509.load_der_x509_certificate(leaf)
            .extensions.get_extension_for_oid(x509.ObjectIdentifier(KEY_DESCRIPTION_OID))
            .value
        )
        return parse_key_description(raw.value).attestation_challenge  # type: ignore[attr-defined]
    except Exception:  # a malformed leaf fails verification on its own
        return b""


def _android_expectations(expected: Mapping[str, Any], result: VerifiedAndroidKey) -> list[str]:
    mismatches = []
    if "verifiedBootState" in expected and expected["verifiedBootState"] != getattr(
        result.verified_boot_state, "value", None
    ):
        mismatches.append(f"verifiedBootState {result.verified_boot_state}")
    if "deviceLocked" in expected and expected["deviceLocked"] != result.device_locked:
        mismatches.append(f"deviceLocked {result.device_locked}")
    ids = expected.get("attestedDeviceIds")
    if isinstance(ids, dict):
        hardware = result.key_description.hardware_enforced
        for name, value in ids.items():
            got = getattr(hardware, f"attestation_id_{name}", None)
            if got is None or got.decode("utf-8", "replace") != value:
                mismatches.append(f"attestationId {name} {got!r}")
    return mismatches


def key_description_gson(description: KeyDescription) -> dict[str, Any]:
    """A KeyDescription in Google's Gson form (android/keyattestation test data)."""
    return {
        "attestationVersion": str(description.attestation_version),
        "attestationSecurityLevel": description.attestation_security_level.value,
        "keyMintVersion": str(description.keymint_version),
        "keyMintSecurityLevel": description.keymint_security_level.value,
        "attestationChallenge": _b64(description.attestation_challenge),
        "uniqueId": _b64(description.unique_id),
        "softwareEnforced": _authorization_gson(description.software_enforced),
        "hardwareEnforced": _authorization_gson(description.hardware_enforced),
    }


_GSON_NAMES = {
    "purposes": "purposes",
    "algorithm": "algorithms",
    "key_size": "keySize",
    "block_modes": "blockModes",
    "digests": "digests",
    "paddings": "paddings",
    "ec_curve": "ecCurve",
    "ml_dsa_variant": "mlDsaVariant",
    "rsa_public_exponent": "rsaPublicExponent",
    "rsa_oaep_mgf_digests": "rsaOaepMgfDigests",
    "active_date_time": "activeDateTime",
    "origination_expire_date_time": "originationExpireDateTime",
    "usage_expire_date_time": "usageExpireDateTime",
    "no_auth_required": "noAuthRequired",
    "user_auth_type": "userAuthType",
    "auth_timeout": "authTimeout",
    "trusted_user_presence_required": "trustedUserPresenceRequired",
    "unlocked_device_required": "unlockedDeviceRequired",
    "creation_date_time": "creationDateTime",
    "origin": "origin",
    "rollback_resistant": "rollbackResistant",
    "root_of_trust": "rootOfTrust",
    "os_version": "osVersion",
    "os_patch_level": "osPatchLevel",
    "attestation_application_id": "attestationApplicationId",
    "attestation_id_brand": "attestationIdBrand",
    "attestation_id_device": "attestationIdDevice",
    "attestation_id_product": "attestationIdProduct",
    "attestation_id_serial": "attestationIdSerial",
    "attestation_id_imei": "attestationIdImei",
    "attestation_id_meid": "attestationIdMeid",
    "attestation_id_manufacturer": "attestationIdManufacturer",
    "attestation_id_model": "attestationIdModel",
    "vendor_patch_level": "vendorPatchLevel",
    "boot_patch_level": "bootPatchLevel",
    "attestation_id_second_imei": "attestationIdSecondImei",
    "module_hash": "moduleHash",
}


def _authorization_gson(authorizations: AuthorizationList) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for attribute, name in _GSON_NAMES.items():
        value = getattr(authorizations, attribute)
        if value is None or value is False:
            continue
        if attribute == "origin":
            out[name] = Origin(value).name
        elif attribute == "root_of_trust":
            out[name] = {
                "verifiedBootKey": _b64(value.verified_boot_key),
                "deviceLocked": value.device_locked,
                "verifiedBootState": value.verified_boot_state.value,
            }
            if value.verified_boot_hash is not None:
                out[name]["verifiedBootHash"] = _b64(value.verified_boot_hash)
        elif attribute == "attestation_application_id":
            out[name] = {
                "packages": [{"name": p.name, "version": str(p.version)} for p in value.packages],
                "signatures": sorted(_b64(d) for d in value.signature_digests),
            }
        elif attribute.startswith("attestation_id_"):
            out[name] = value.decode("utf-8", "replace")
        elif attribute == "module_hash":
            out[name] = _b64(value)
        elif isinstance(value, frozenset):
            out[name] = [str(item) for item in sorted(value)]
        elif value is True:
            out[name] = True
        else:
            out[name] = str(value)
    return out


# -------------------------------------------------------------------------------- Apple


def _check_apple(
    entry: dict[str, Any], base: Path, trust: TrustStore | None, now: dt.datetime, _: bool
) -> Attempt:
    import yaml  # only the conformance command reads YAML samples

    inputs = entry.get("inputs", {})
    source = next(base / name for name in entry.get("files", []) if name.endswith(".yaml"))
    documents = list(yaml.safe_load_all(_read(source)))
    attestation = next(d for d in documents if d.get("type") == "attestation")
    assertions = [d for d in documents if d.get("type") == "assertion"]
    team, _dot, bundle = str(
        inputs.get("app_id") or f"{attestation['teamIdentifier']}.{attestation['bundleIdentifier']}"
    ).partition(".")
    environment = (
        AppleEnvironment.PRODUCTION
        if str(inputs.get("environment", "")).startswith("production")
        else AppleEnvironment.DEVELOPMENT
    )
    public_key = serialization.load_pem_public_key(attestation["publicKey"].encode()).public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    attestation_object = base64.b64decode(attestation["attestationBase64"])
    store = trust if trust is not None else _top_anchor(_apple_x5c(attestation_object))
    verifier = AppAttestVerifier(
        trust=store, app=AppleApp(team_id=team, bundle_id=bundle), environment=environment
    )

    def run() -> list[str]:
        verifier.verify(
            AppAttestEvidence(
                attestation_object=attestation_object,
                key_id=base64.b64decode(attestation["keyIdBase64"]),
            ),
            expected_challenge=_client_data_hash(attestation),
            expected_public_key=public_key,
            now=now,
        )
        counter = int(inputs.get("assertion_previous_counter", 0))
        for document in assertions:
            counter = verifier.verify_assertion(
                base64.b64decode(document["assertionBase64"]),
                expected_client_data_hash=_client_data_hash(document),
                expected_public_key=public_key,
                previous_counter=counter,
            ).counter
        return []

    return _attempt(run)


def _client_data_hash(document: Mapping[str, Any]) -> bytes:
    if "clientDataHashSha256Base64" in document:
        return base64.b64decode(document["clientDataHashSha256Base64"])
    return hashlib.sha256(base64.b64decode(document["clientDataBase64"])).digest()


def _apple_x5c(attestation_object: bytes) -> list[bytes]:
    import cbor2

    return list(cbor2.loads(attestation_object)["attStmt"]["x5c"])


# ---------------------------------------------------------------------------------- TPM


def _check_tpm(
    entry: dict[str, Any], base: Path, trust: TrustStore | None, now: dt.datetime, lift: bool
) -> Attempt:
    import cbor2

    attestation_object, client_data_hash = load_webauthn_sample([base / f for f in entry["files"]])
    x5c = list(cbor2.loads(attestation_object)["attStmt"]["x5c"])
    store = trust if trust is not None else _top_anchor(x5c)
    policy = TpmPolicy.webauthn()
    if lift:  # the structure check of a policy entry: keybound's key policy lifted
        policy = TpmPolicy(require_resident_key=False, require_sign_only=False, allow_sha1=True)
    verifier = TpmVerifier(trust=store, policy=policy)

    def run() -> list[str]:
        verifier.verify_webauthn(attestation_object, client_data_hash=client_data_hash, now=now)
        return []

    return _attempt(run)


def load_webauthn_sample(files: list[Path]) -> tuple[bytes, bytes]:
    """(attestationObject, clientDataHash) from the sample shapes of the shared manifest."""
    documents = [_json(_read(path)) for path in files if path.suffix == ".json"]
    for document in documents:
        if "statement" in document:  # python-fido2: hex statement, authData, clientDataHash
            import cbor2

            statement = {
                key: bytes.fromhex(value) if isinstance(value, str) else value
                for key, value in document["statement"].items()
            }
            statement["x5c"] = [bytes.fromhex(item) for item in document["statement"]["x5c"]]
            attestation = cbor2.dumps(
                {
                    "fmt": "tpm",
                    "attStmt": statement,
                    "authData": bytes.fromhex(document["authData"]),
                }
            )
            return attestation, bytes.fromhex(document["clientDataHash"])
        if "registration" in document:  # W3C test vector: hex
            registration = document["registration"]
            return (
                bytes.fromhex(registration["attestationObject"]),
                hashlib.sha256(bytes.fromhex(registration["clientDataJSON"])).digest(),
            )
        response = (
            document.get("credential")
            or document.get("verifyRegistrationResponse_args", {}).get("response")
            or (document if "response" in document else None)
        )
        if response is not None and "attestationObject" in response.get("response", {}):
            inner = response["response"]
            return (
                _b64_any(inner["attestationObject"]),
                hashlib.sha256(_b64_any(inner["clientDataJSON"])).digest(),
            )
    raise ManifestError("no WebAuthn attestation object in the entry's files")


# ------------------------------------------------------------------- anchors, revocation


def _check_anchors(fmt: AttestationFormat, entry: dict[str, Any], base: Path) -> list[str]:
    shipped = TrustStore.builtin(fmt)
    problems = []
    for name in entry.get("files", []):
        if not name.endswith(".pem"):
            continue
        for certificate in x509.load_pem_x509_certificates(_read(base / name)):
            der = certificate.public_bytes(serialization.Encoding.DER)
            try:
                paths.verify_certificate_signature(certificate, certificate.public_key())
            except AttestationFailed:
                problems.append(f"{name}: not self-signed")
            if shipped.by_spki(certificate_parts(der).spki) is None:
                problems.append(f"{name}: keybound does not ship this key")
    return problems


def _check_revocation(entry: dict[str, Any], base: Path) -> list[str]:
    files = [base / name for name in entry.get("files", [])]
    status = next(path for path in files if path.suffix == ".json")
    listing = RevocationList.parse(
        _read(status), fetched_at=dt.datetime.now(dt.UTC), source=str(status)
    )
    problems = []
    for path in files:
        if path.suffix != ".pem":
            continue
        for certificate in x509.load_pem_x509_certificates(_read(path)):
            found = listing.lookup(certificate.serial_number)
            if found is None or found.status is not RevocationStatus.SUSPENDED:
                problems.append(f"{path.name}: serial {certificate.serial_number:x} -> {found}")
    if listing.lookup(0xBADBEEF) is not None:
        problems.append("badbeef is listed")
    raw = _json(_read(status))["entries"]
    for key, value in raw.items():
        if key.isdigit() and value.get("status") == "REVOKED":
            found = listing.lookup(int(key))
            if found is None or found.status is not RevocationStatus.REVOKED:
                problems.append(f"decimal serial {key} -> {found}")
    return problems


# ---------------------------------------------------------------------------- helpers


_CHECKERS: dict[AttestationFormat, Callable[..., Attempt]] = {
    AttestationFormat.ANDROID_KEY: _check_android,
    AttestationFormat.APPLE_APP_ATTEST: _check_apple,
    AttestationFormat.TPM: _check_tpm,
}


def _expected(entry: Mapping[str, Any]) -> str:
    expected = entry.get("expected", {})
    return str(expected.get("result", "")) if isinstance(expected, dict) else ""


def _section_anchor_files(entries: list[Any], base: Path) -> list[Path]:
    return [
        base / name
        for entry in entries
        if isinstance(entry, dict) and _expected(entry) in _ANCHOR_KINDS
        for name in entry.get("files", [])
        if name.endswith(".pem")
    ]


def _named_roots(entry: Mapping[str, Any], base: Path) -> list[Path]:
    text = entry.get("trust_anchor")
    if not isinstance(text, str) or text.startswith("NOT INCLUDED"):
        return []
    return [base / name for name in _PEM_NAME.findall(text)]


def _top_anchor(ders: Sequence[bytes]) -> TrustStore:
    """The chain's own top certificate as the only anchor (the structure check)."""
    return TrustStore((TrustAnchor.from_spki(certificate_parts(ders[-1]).spki, label="top"),))


def _time(value: object) -> dt.datetime:
    if not isinstance(value, str):
        raise ManifestError("entry has no verify_at time")
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone(dt.UTC)


def _read(path: Path) -> bytes:
    try:
        if path.stat().st_size > MAX_FILE_BYTES:
            raise ManifestError(f"{path}: larger than {MAX_FILE_BYTES} bytes")
        return path.read_bytes()
    except OSError as exc:
        raise ManifestError(f"{path}: {exc.strerror}") from exc


def _json(data: bytes) -> Any:
    try:
        return json.loads(data)
    except ValueError as exc:
        raise ManifestError(f"not JSON: {exc}") from exc


def _strip_comments(data: bytes) -> bytes:
    """Google's tegu sample starts with a // comment line."""
    return b"\n".join(line for line in data.splitlines() if not line.lstrip().startswith(b"//"))


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _b64_any(text: str) -> bytes:
    """Standard or URL-safe base64, padded or not (the samples use both)."""
    normalised = text.replace("-", "+").replace("_", "/")
    return base64.b64decode(normalised + "=" * (-len(normalised) % 4), validate=True)


def _first_difference(wanted: Any, got: Any, where: str = "") -> str:
    if isinstance(wanted, dict) and isinstance(got, dict):
        for key in sorted(set(wanted) | set(got)):
            if wanted.get(key) != got.get(key):
                return _first_difference(wanted.get(key), got.get(key), f"{where}.{key}")
    return f"{where or '.'}: expected {wanted!r}, got {got!r}"


if __name__ == "__main__":
    raise SystemExit(main())
