"""The wire protocol against its test vectors (docs/protocol.md §1, §4, §5).

The vectors in tests/vectors/protocol/transcripts.json are produced by an independent
implementation (tests/vectors/protocol/make_vectors.py); here the library has to reproduce
every signed byte, verify every signature, and agree on context hashes, key ids, the PIN key
and PIN proofs. Plus the strictness of base64url and the injectivity of the transcript.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.util
import itertools
import json
import struct
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt
from pydantic import ValidationError

from keybound import crypto
from keybound import protocol as p
from keybound.client import pin
from keybound.errors import InvalidSignature, MalformedRequest

ROOT = Path(__file__).resolve().parent.parent
VECTOR_DIR = ROOT / "tests" / "vectors" / "protocol"
VECTOR_FILE = VECTOR_DIR / "transcripts.json"
VECTORS: dict[str, Any] = json.loads(VECTOR_FILE.read_text("utf-8"))
TRANSCRIPTS: list[dict[str, Any]] = VECTORS["transcripts"]
BY_NAME = {case["name"]: case for case in TRANSCRIPTS}

REQUEST_MODEL: dict[str, type[p.Message]] = {
    "activation-with-hardware-key": p.ActivationFinishRequest,
    "activation-without-hardware-key": p.ActivationFinishRequest,
    "authentication-pin-with-context": p.AuthenticationFinishRequest,
    "authentication-without-context": p.AuthenticationFinishRequest,
    "deactivation": p.DeactivateRequest,
    "decline": p.DeclineRequest,
    "push-token": p.PushTokenRequest,
    "signature": p.AuthenticationFinishRequest,
}


def shown(inputs: dict[str, Any]) -> p.OperationContext | None:
    """Field 7's input: the pre-operation context, or a signature's data to sign (§4.1.1)."""
    context = inputs["dataToSign"] if "dataToSign" in inputs else inputs["preOperationContext"]
    return None if context is None else p.OperationContext.model_validate(context)


def ids(cases: list[dict[str, Any]]) -> list[str]:
    return [case["name"] for case in cases]


def library_transcript(case: dict[str, Any]) -> bytes:
    """Rebuild the signed bytes of a vector with keybound.protocol alone."""
    inputs = case["inputs"]
    return p.transcript(
        p.Purpose(case["purpose"]),
        application_id=inputs["applicationId"],
        device_id=inputs["deviceId"],
        operation_id=inputs["operationId"],
        challenge=bytes.fromhex(inputs["challengeHex"]),
        context_digest=field7(case),
        software_public_key=bytes.fromhex(inputs["softwarePublicKeyHex"]),
        hardware_public_key=bytes.fromhex(inputs["hardwarePublicKeyHex"]),
        auth_method=inputs["authMethod"],
        hw_key_client_status=inputs["hwKeyClientStatus"],
    )


def field7(case: dict[str, Any]) -> bytes:
    """The library's field 7: the push token's hash (§3.1.8), or the hash of the context
    shown (§4.1.2): the pre-operation context, or a signature's data to sign."""
    inputs = case["inputs"]
    if case["purpose"] == p.Purpose.PUSH_TOKEN.value:
        token = inputs["pushToken"]
        return p.push_token_hash(None if token is None else p.PushToken.model_validate(token))
    return p.context_hash(shown(inputs))


def split_fields(tbs: bytes) -> list[bytes]:
    """Parse a transcript back into its length-prefixed fields (an independent decoder)."""
    fields, offset = [], 0
    while offset < len(tbs):
        (length,) = struct.unpack_from(">I", tbs, offset)
        offset += 4
        assert offset + length <= len(tbs), "field runs past the end"
        fields.append(tbs[offset : offset + length])
        offset += length
    return fields


# -- coverage of the vector file itself ---------------------------------------------------


def test_vector_file_covers_the_required_cases() -> None:
    assert set(BY_NAME) == set(REQUEST_MODEL)
    purposes = {case["purpose"] for case in TRANSCRIPTS}
    assert purposes == {purpose.value for purpose in p.Purpose}
    assert BY_NAME["activation-with-hardware-key"]["inputs"]["hardwarePublicKeyHex"]
    assert (
        BY_NAME["activation-without-hardware-key"]["inputs"]["hwKeyClientStatus"] == "NOT_SUPPORTED"
    )
    pin_case = BY_NAME["authentication-pin-with-context"]
    assert pin_case["inputs"]["authMethod"] == "DEVICE:PIN"
    assert pin_case["inputs"]["preOperationContext"] is not None
    assert BY_NAME["authentication-without-context"]["inputs"]["preOperationContext"] is None
    assert BY_NAME["signature"]["inputs"]["dataToSign"] is not None
    assert VECTORS["contextHashes"] and VECTORS["keyIds"] and VECTORS["pinKeyDerivation"]


def test_constants_match_the_library() -> None:
    constants = VECTORS["constants"]
    assert constants["signatureLabel"].encode() == p.SIGNATURE_LABEL
    assert bytes.fromhex(constants["signatureLabelHex"]) == p.SIGNATURE_LABEL
    assert constants["pinProofLabel"].encode() == p.PIN_PROOF_LABEL
    assert bytes.fromhex(constants["pinProofLabelHex"]) == p.PIN_PROOF_LABEL
    assert bytes.fromhex(constants["noContextHashHex"]) == p.NO_CONTEXT_HASH
    assert hashlib.sha256(b"").digest() == p.NO_CONTEXT_HASH
    assert len(constants["fieldOrder"]) == 11


def test_generator_reproduces_the_file_byte_for_byte() -> None:
    spec = importlib.util.spec_from_file_location("make_vectors", VECTOR_DIR / "make_vectors.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.render(module.build(VECTORS)) == VECTOR_FILE.read_text("utf-8")


def test_docs_reference_the_vectors_and_inline_the_deactivation_vector() -> None:
    doc = (ROOT / "docs" / "protocol.md").read_text("utf-8")
    assert "tests/vectors/protocol/transcripts.json" in doc
    compact = "".join(doc.split())
    case = BY_NAME["deactivation"]
    assert case["tbsHex"] in compact
    assert case["signatures"][0]["signatureHex"] in compact
    assert case["signatures"][0]["privateKeyHex"] in compact


# -- transcripts, byte for byte -----------------------------------------------------------


@pytest.mark.parametrize("case", TRANSCRIPTS, ids=ids(TRANSCRIPTS))
def test_transcript_bytes(case: dict[str, Any]) -> None:
    tbs = library_transcript(case)
    assert tbs.hex() == case["tbsHex"]
    assert hashlib.sha256(tbs).hexdigest() == case["tbsSha256Hex"]
    assert field7(case).hex() == case["inputs"]["contextHashHex"]
    # the per-field breakdown is the same bytes, in the documented order
    assert [f["name"] for f in case["fields"]] == VECTORS["constants"]["fieldOrder"]
    assert "".join(f["encodedHex"] for f in case["fields"]) == case["tbsHex"]
    assert [f.hex() for f in split_fields(tbs)] == [f["valueHex"] for f in case["fields"]]
    assert split_fields(tbs)[0] == p.SIGNATURE_LABEL
    assert split_fields(tbs)[1] == case["purpose"].encode()


@pytest.mark.parametrize("case", TRANSCRIPTS, ids=ids(TRANSCRIPTS))
def test_empty_fields_per_purpose(case: dict[str, Any]) -> None:
    fields = split_fields(bytes.fromhex(case["tbsHex"]))
    empty = {i + 1 for i, f in enumerate(fields) if not f}
    purpose = case["purpose"]
    if purpose in ("deactivation", "push-token"):
        assert empty == {5, 6, 9, 10, 11}
    elif purpose in ("authentication", "signature"):
        assert empty == {9}  # the hardware key is never in an authentication transcript
    else:
        assert 10 in empty  # activation signs no auth method
        assert (9 in empty) == (case["inputs"]["hwKeyClientStatus"] != "OK")
    assert len(fields[6]) == 32
    if shown(case["inputs"]) is None and purpose != "push-token":
        assert fields[6] == p.NO_CONTEXT_HASH


# -- signatures and keys ------------------------------------------------------------------

SIGNATURES = [(case, sig) for case in TRANSCRIPTS for sig in case["signatures"]]
SIGNATURE_IDS = [f"{case['name']}-{sig['role']}" for case, sig in SIGNATURES]


@pytest.mark.parametrize(("case", "sig"), SIGNATURES, ids=SIGNATURE_IDS)
def test_signature_verifies(case: dict[str, Any], sig: dict[str, Any]) -> None:
    tbs = bytes.fromhex(case["tbsHex"])
    public = bytes.fromhex(sig["publicKeySpkiHex"])
    signature = bytes.fromhex(sig["signatureHex"])
    crypto.verify_signature(
        public_key=public, algorithm=p.Algorithm.ES256, message=tbs, signature=signature
    )
    with pytest.raises(InvalidSignature):
        crypto.verify_signature(
            public_key=public,
            algorithm=p.Algorithm.ES256,
            message=tbs[:-1] + bytes([tbs[-1] ^ 1]),
            signature=signature,
        )
    # the same bytes under another purpose are another message (domain separation)
    fields = split_fields(tbs)
    other = b"".join(
        struct.pack(">I", len(f)) + f
        for f in [
            fields[0],
            b"activation" if case["purpose"] != "activation" else b"authentication",
            *fields[2:],
        ]
    )
    with pytest.raises(InvalidSignature):
        crypto.verify_signature(
            public_key=public, algorithm=p.Algorithm.ES256, message=other, signature=signature
        )


@pytest.mark.parametrize(("case", "sig"), SIGNATURES, ids=SIGNATURE_IDS)
def test_key_material_is_consistent(case: dict[str, Any], sig: dict[str, Any]) -> None:
    scalar = int(sig["privateKeyHex"], 16)
    from_scalar = ec.derive_private_key(scalar, ec.SECP256R1())
    from_pkcs8 = serialization.load_der_private_key(bytes.fromhex(sig["pkcs8Hex"]), None)
    assert isinstance(from_pkcs8, ec.EllipticCurvePrivateKey)
    assert from_pkcs8.private_numbers().private_value == scalar
    public = bytes.fromhex(sig["publicKeySpkiHex"])
    assert crypto.public_der(from_scalar) == public
    assert crypto.parse_public_key(public) == public  # canonical uncompressed SPKI
    assert crypto.key_id(public).hex() == sig["keyIdHex"]


@pytest.mark.parametrize("case", TRANSCRIPTS, ids=ids(TRANSCRIPTS))
def test_request_body_matches_the_transcript(case: dict[str, Any]) -> None:
    model = REQUEST_MODEL[case["name"]]
    request = model.model_validate(case["request"])
    assert request.to_wire() == case["request"]  # canonical base64url round trip
    wire = case["request"]
    software = next(s for s in case["signatures"] if s["role"] == "software")
    assert p.b64u_decode(wire["softwareSignature"]).hex() == software["signatureHex"]
    inputs = case["inputs"]
    assert (wire["applicationId"], wire["deviceId"]) == (
        inputs["applicationId"],
        inputs["deviceId"],
    )
    if case["purpose"] == "activation":
        assert wire["operationId"] == inputs["operationId"]
        assert p.b64u_decode(wire["softwarePublicKey"]).hex() == inputs["softwarePublicKeyHex"]
        assert wire["hwKeyClientStatus"] == inputs["hwKeyClientStatus"]
        hw = inputs["hardwarePublicKeyHex"]
        assert p.b64u_decode(wire.get("hardwarePublicKey", "")).hex() == hw
    else:
        assert p.b64u_decode(wire["softwareKeyId"]).hex() == software["keyIdHex"]
    if case["purpose"] == "authentication":
        assert wire["operationId"] == inputs["operationId"]
        assert wire["authMethod"] == inputs["authMethod"]
        assert wire["hwKeyClientStatus"] == inputs["hwKeyClientStatus"]
        assert (
            p.b64u_decode(wire["nextSoftwarePublicKey"]).hex()
            == inputs["softwarePublicKeyHex"]
            == case["nextSoftwareKey"]["publicKeySpkiHex"]
        )
        assert software["publicKeySpkiHex"] != inputs["softwarePublicKeyHex"]
    if case["purpose"] == "deactivation":
        assert software["publicKeySpkiHex"] == inputs["softwarePublicKeyHex"]
    hardware = [s for s in case["signatures"] if s["role"] == "hardware"]
    if hardware:
        assert p.b64u_decode(wire["hardwareSignature"]).hex() == hardware[0]["signatureHex"]
    else:
        assert "hardwareSignature" not in wire


def test_chain_of_keys_across_vectors() -> None:
    """The vectors form one story: the key registered at activation signs the first
    authentication, whose next key is the one that deactivates."""

    def spki(case: str, role: str = "software") -> str:
        return str(
            next(s["publicKeySpkiHex"] for s in BY_NAME[case]["signatures"] if s["role"] == role)
        )

    assert spki("authentication-pin-with-context") == spki("activation-with-hardware-key")
    assert (
        spki("authentication-pin-with-context", "hardware")
        == BY_NAME["activation-with-hardware-key"]["inputs"]["hardwarePublicKeyHex"]
    )
    assert spki("authentication-without-context") == spki("activation-without-hardware-key")
    assert (
        spki("deactivation")
        == BY_NAME["authentication-without-context"]["inputs"]["softwarePublicKeyHex"]
    )


# -- context hash, key id -----------------------------------------------------------------


@pytest.mark.parametrize("vector", VECTORS["contextHashes"])
def test_context_hash(vector: dict[str, Any]) -> None:
    raw = vector["context"]
    context = None if raw is None else p.OperationContext.model_validate(raw)
    assert p.context_hash(context).hex() == vector["sha256Hex"]
    if raw is not None:
        canonical = bytes.fromhex(vector["canonicalHex"])
        assert split_fields(canonical) == [raw["mimeType"].encode(), raw["content"].encode()]
        assert hashlib.sha256(canonical).hexdigest() == vector["sha256Hex"]


@pytest.mark.parametrize("vector", VECTORS["keyIds"], ids=lambda v: v["key"])
def test_key_id(vector: dict[str, Any]) -> None:
    spki = bytes.fromhex(vector["publicKeySpkiHex"])
    assert crypto.key_id(spki).hex() == vector["keyIdHex"]
    assert p.b64u_encode(crypto.key_id(spki)) == vector["keyIdB64u"]


def test_key_id_requires_the_canonical_uncompressed_encoding() -> None:
    spki = bytes.fromhex(VECTORS["keyIds"][0]["publicKeySpkiHex"])
    key = serialization.load_der_public_key(spki)
    assert isinstance(key, ec.EllipticCurvePublicKey)
    compressed = _compressed_spki(key)
    assert serialization.load_der_public_key(compressed) == key  # the same key...
    assert crypto.key_id(compressed) != crypto.key_id(spki)  # ...another key id
    with pytest.raises(MalformedRequest):
        crypto.parse_public_key(compressed)


def _compressed_spki(key: ec.EllipticCurvePublicKey) -> bytes:
    """SPKI DER with a compressed point: same key, a different encoding (and key id)."""
    point = key.public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.CompressedPoint
    )
    prefix = bytes.fromhex("3039301306072a8648ce3d020106082a8648ce3d030107032200")
    return prefix + point


# -- PIN ----------------------------------------------------------------------------------


@pytest.mark.parametrize("vector", VECTORS["pinKeyDerivation"], ids=lambda v: v["pin"])
def test_pin_key_derivation(vector: dict[str, Any]) -> None:
    salt = bytes.fromhex(vector["saltHex"])
    assert vector["pin"].encode("utf-8").hex() == vector["pinUtf8Hex"]
    assert (vector["n"], vector["r"], vector["p"], vector["length"]) == (2**14, 8, 1, 32)
    kdf = Scrypt(salt=salt, length=32, n=2**14, r=8, p=1)
    assert kdf.derive(vector["pin"].encode("utf-8")).hex() == vector["pinKeyHex"]
    assert (
        hashlib.scrypt(vector["pin"].encode(), salt=salt, n=2**14, r=8, p=1, dklen=32).hex()
        == vector["pinKeyHex"]
    )
    assert pin.derive_pin_key(vector["pin"], salt).hex() == vector["pinKeyHex"]


def test_pin_proof() -> None:
    case = BY_NAME["authentication-pin-with-context"]
    vector = case["pin"]
    pin_key = bytes.fromhex(vector["pinKeyHex"])
    salt = bytes.fromhex(vector["pinSaltHex"])
    tbs = bytes.fromhex(case["tbsHex"])
    assert Scrypt(salt=salt, length=32, n=2**14, r=8, p=1).derive(vector["pin"].encode()) == pin_key
    message = p.pin_proof_message(tbs)
    assert message.hex() == vector["pinProofMessageHex"]
    assert split_fields(message) == [p.PIN_PROOF_LABEL, tbs]
    proof = crypto.pin_proof(pin_key, message)
    assert proof.hex() == vector["pinProofHex"]
    assert p.b64u_decode(case["request"]["pinProof"]) == proof
    assert crypto.verify_pin_proof(pin_key=pin_key, message=message, proof=proof)
    wrong = Scrypt(salt=salt, length=32, n=2**14, r=8, p=1).derive(b"2469")
    assert not crypto.verify_pin_proof(pin_key=wrong, message=message, proof=proof)
    # the activation request registered this PIN key
    registered = BY_NAME["activation-with-hardware-key"]["request"]["pinKey"]
    assert p.b64u_decode(registered) == pin_key


# -- base64url without padding (§1) -------------------------------------------------------


@pytest.mark.parametrize("vector", VECTORS["base64url"]["valid"], ids=lambda v: v["text"] or "''")
def test_b64u_valid_vectors(vector: dict[str, str]) -> None:
    assert p.b64u_decode(vector["text"]).hex() == vector["hex"]
    assert p.b64u_encode(bytes.fromhex(vector["hex"])) == vector["text"]


@pytest.mark.parametrize("vector", VECTORS["base64url"]["invalid"], ids=lambda v: repr(v["text"]))
def test_b64u_invalid_vectors(vector: dict[str, str]) -> None:
    with pytest.raises(ValueError):
        p.b64u_decode(vector["text"])


@pytest.mark.parametrize("text", ["AA==", "AAA=", "AAAA====", "AA=A", "=AAA"])
def test_b64u_rejects_padding(text: str) -> None:
    with pytest.raises(ValueError):
        p.b64u_decode(text)


@pytest.mark.parametrize(
    "text",
    [" AAA", "AAA ", "AA AA", "AAAA\n", "AAA\n", "AA\nAA", "AAAA\r\n", "\tAAAA", "AAAA\u00a0"],
)
def test_b64u_rejects_whitespace(text: str) -> None:
    with pytest.raises(ValueError):
        p.b64u_decode(text)


@pytest.mark.parametrize("text", ["+/+/", "AA+A", "AA/A", "++", "//8"])
def test_b64u_rejects_the_standard_alphabet(text: str) -> None:
    assert base64.b64decode(text + "=" * (-len(text) % 4))  # valid standard base64
    with pytest.raises(ValueError):
        p.b64u_decode(text)


def test_b64u_rejects_other_characters_and_impossible_lengths() -> None:
    for text in ["A", "AAAAA", "AA.A", "AA%3D", "\uff21\uff21\uff21\uff21", "AA\x00A"]:
        with pytest.raises(ValueError):
            p.b64u_decode(text)


def test_b64u_rejects_non_canonical_trailing_bits() -> None:
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    accepted = 0
    for a, b in itertools.product(alphabet, repeat=2):  # every 2-character string: 1 byte
        text = a + b
        canonical = alphabet.index(b) & 0b1111 == 0
        if canonical:
            assert p.b64u_encode(p.b64u_decode(text)) == text
            accepted += 1
        else:
            with pytest.raises(ValueError):
                p.b64u_decode(text)
    assert accepted == 256  # exactly one encoding per byte value
    for text in ["AAB", "AAC", "AAD", "_-_-_-B"]:  # 3-character (2-byte) tails
        with pytest.raises(ValueError):
            p.b64u_decode(text)


def test_b64u_round_trip() -> None:
    for length in range(0, 70):
        data = (
            hashlib.sha512(bytes([length])).digest()[:length]
            if length <= 64
            else bytes(range(length))
        )
        text = p.b64u_encode(data)
        assert "=" not in text and "+" not in text and "/" not in text
        assert p.b64u_decode(text) == data


def test_message_fields_decode_strictly() -> None:
    wire = dict(BY_NAME["deactivation"]["request"])
    assert p.DeactivateRequest.model_validate(wire)
    for bad in (
        wire["softwareSignature"] + "=",
        wire["softwareSignature"].replace("-", "+").replace("_", "/"),
        wire["softwareSignature"] + "\n",
    ):
        if bad == wire["softwareSignature"]:
            continue
        with pytest.raises(ValidationError):
            p.DeactivateRequest.model_validate({**wire, "softwareSignature": bad})
    short_key_id = p.b64u_encode(bytes(31))
    with pytest.raises(ValidationError):
        p.DeactivateRequest.model_validate({**wire, "softwareKeyId": short_key_id})
    with pytest.raises(ValidationError):
        p.DeactivateRequest.model_validate({**wire, "unknownField": 1})


# -- the transcript encoding is injective -------------------------------------------------

BASE: dict[str, Any] = {
    "application_id": "bank.example",
    "device_id": "3f2c6f1e-8a4b-4c2d-9e1f-0a1b2c3d4e5f",
    "operation_id": "c0ffee00-0000-4000-8000-00000000000a",
    "challenge": bytes(range(32)),
    "context_digest": p.NO_CONTEXT_HASH,
    "software_public_key": b"\x30\x59software",
    "hardware_public_key": b"\x30\x59hardware",
    "auth_method": "DEVICE",
    "hw_key_client_status": "OK",
}
ORDER = list(BASE)


def _shifted(left: str, right: str) -> dict[str, Any]:
    """Move the last byte of field ``left`` to the front of field ``right``."""
    fields = dict(BASE)
    a, b = fields[left], fields[right]
    if isinstance(a, str):
        moved, fields[left] = a[-1], a[:-1]
    else:
        moved, fields[left] = a[-1:], a[:-1]
    if isinstance(b, str):
        fields[right] = (moved if isinstance(moved, str) else moved.decode()) + b
    else:
        fields[right] = (moved.encode() if isinstance(moved, str) else moved) + b
    return fields


def test_moving_a_byte_between_application_and_device_id_changes_the_bytes() -> None:
    original = p.transcript(p.Purpose.AUTHENTICATION, **BASE)
    shifted = p.transcript(
        p.Purpose.AUTHENTICATION,
        **{**BASE, "application_id": "bank.exampl", "device_id": "e" + BASE["device_id"]},
    )
    assert shifted != original
    assert b"".join(split_fields(shifted)) == b"".join(split_fields(original))


@pytest.mark.parametrize(("left", "right"), list(itertools.pairwise(ORDER)))
def test_adjacent_field_shifts_change_the_bytes(left: str, right: str) -> None:
    original = p.transcript(p.Purpose.AUTHENTICATION, **BASE)
    shifted = p.transcript(p.Purpose.AUTHENTICATION, **_shifted(left, right))
    assert shifted != original
    # the raw concatenation of the values is the same: only the length prefixes differ
    assert b"".join(split_fields(shifted)) == b"".join(split_fields(original))


@pytest.mark.parametrize("name", ORDER)
def test_every_field_is_recoverable(name: str) -> None:
    """A decodable encoding is injective: parsing gives back exactly the 11 inputs."""
    for value in ("", "x", "DEVICE:PIN") if isinstance(BASE[name], str) else (b"", b"\x00"):
        fields = {**BASE, name: value}
        tbs = p.transcript(p.Purpose.ACTIVATION, **fields)
        parsed = split_fields(tbs)
        assert len(parsed) == 11
        expected = [p.SIGNATURE_LABEL, b"activation"] + [
            v.encode() if isinstance(v, str) else v for v in (fields[k] for k in ORDER)
        ]
        assert parsed == expected


def test_purposes_are_distinct() -> None:
    encodings = {p.transcript(purpose, **BASE) for purpose in p.Purpose}
    assert len(encodings) == len(p.Purpose)


def test_utf8_fields() -> None:
    tbs = p.transcript(p.Purpose.AUTHENTICATION, **{**BASE, "application_id": "bank.ø"})
    assert split_fields(tbs)[2] == "bank.ø".encode()
    assert struct.unpack_from(">I", tbs, 4 + len(p.SIGNATURE_LABEL) + 4 + 14)[0] == 7
