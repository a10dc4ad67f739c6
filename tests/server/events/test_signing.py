"""Standard Webhooks signatures: vectors from the reference libraries, v1 checked by the
reference ``standardwebhooks`` package, v1a by an Ed25519 check written here against
``cryptography`` directly, and the receiver-side verifier's refusals."""

from __future__ import annotations

import base64
import json
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from keybound.errors import ErrorCode, KeyboundError
from keybound.server.events.signing import (
    AsymmetricSecret,
    SignatureScheme,
    SymmetricSecret,
    generate_ed25519_secret,
    generate_symmetric_secret,
    parse_signing_secret,
    parse_verifying_key,
    sign,
    verify_webhook,
    webhook_headers,
)
from tests.server.events.receiver import v1a_signatures_valid

VECTORS = json.loads(
    (Path(__file__).parents[2] / "vectors" / "standardwebhooks" / "vectors.json").read_text()
)
BODY = b'{"type":"operation.completed","data":{"operationId":"op_1"}}'


@pytest.mark.parametrize("case", VECTORS["v1"] + VECTORS["v1a"], ids=lambda c: c["secret"][:5])
def test_reference_vectors(case: dict[str, object]) -> None:
    secret = parse_signing_secret(str(case["secret"]))
    signature = sign(
        msg_id=str(case["msg_id"]),
        timestamp=int(str(case["timestamp"])),
        body=str(case["payload"]).encode(),
        secrets=[secret],
    )
    assert signature == case["signature"]


def test_reference_vectors_in_one_header_keep_order() -> None:
    v1, v1a = VECTORS["v1"][0], VECTORS["v1a"][0]
    secrets = [parse_signing_secret(v1a["secret"]), parse_signing_secret(v1["secret"])]
    header = sign(
        msg_id=v1["msg_id"], timestamp=v1["timestamp"], body=v1["payload"].encode(), secrets=secrets
    )
    assert header == f"{v1a['signature']} {v1['signature']}"


def test_v1_verified_by_the_reference_package() -> None:
    secret = generate_symmetric_secret()
    headers = webhook_headers(
        msg_id="evt_1", timestamp=int(time.time()), body=BODY, secrets=[secret]
    )
    Webhook(secret.serialize()).verify(BODY, headers, json_parse=False)
    with pytest.raises(WebhookVerificationError):
        Webhook(secret.serialize()).verify(BODY + b" ", headers, json_parse=False)


def test_rotation_every_secret_signs_and_each_verifies_alone() -> None:
    old, new, stranger = (generate_symmetric_secret() for _ in range(3))
    signer = generate_ed25519_secret()
    headers = webhook_headers(
        msg_id="evt_rot", timestamp=int(time.time()), body=BODY, secrets=[old, new, signer]
    )
    assert len(headers["webhook-signature"].split(" ")) == 3
    for secret in (old, new):  # a receiver that knows either one accepts
        Webhook(secret.serialize()).verify(BODY, headers, json_parse=False)
    with pytest.raises(WebhookVerificationError):
        Webhook(stranger.serialize()).verify(BODY, headers, json_parse=False)
    assert v1a_signatures_valid(signer.public_key().serialize(), headers, BODY) == 1


def test_v1a_verified_independently() -> None:
    secret = generate_ed25519_secret()
    public = secret.public_key().serialize()
    assert public.startswith("whpk_") and len(base64.b64decode(public[5:])) == 32
    headers = webhook_headers(
        msg_id="evt_2", timestamp=int(time.time()), body=BODY, secrets=[secret]
    )
    assert v1a_signatures_valid(public, headers, BODY) == 1
    assert v1a_signatures_valid(public, headers, BODY.replace(b"op_1", b"op_2")) == 0
    other = generate_ed25519_secret().public_key().serialize()
    assert v1a_signatures_valid(other, headers, BODY) == 0


def test_our_verifier_accepts_what_the_reference_package_signs() -> None:
    secret = generate_symmetric_secret()
    now = int(time.time())
    signature = Webhook(secret.serialize()).sign(
        "evt_3", datetime.fromtimestamp(now, UTC), BODY.decode()
    )
    headers = {"Webhook-Id": "evt_3", "Webhook-Timestamp": str(now), "Webhook-Signature": signature}
    verified = verify_webhook(
        body=BODY, headers=headers, expected_keys=[parse_verifying_key(secret.serialize())]
    )
    assert (verified.msg_id, verified.timestamp, verified.scheme) == (
        "evt_3",
        now,
        SignatureScheme.V1,
    )


def _signed(
    *secrets: SymmetricSecret | AsymmetricSecret, at: int = 1_700_000_000, msg_id: str = "evt_4"
) -> dict[str, str]:
    return webhook_headers(msg_id=msg_id, timestamp=at, body=BODY, secrets=list(secrets))


def test_verify_webhook_v1a_with_the_public_key() -> None:
    secret = generate_ed25519_secret()
    key = parse_verifying_key(secret.public_key().serialize())
    verified = verify_webhook(
        body=BODY, headers=_signed(secret), expected_keys=[key], now=1_700_000_000
    )
    assert verified.scheme is SignatureScheme.V1A and verified.body == BODY


def _refused(code: ErrorCode, **kwargs: object) -> None:
    with pytest.raises(KeyboundError) as caught:
        verify_webhook(**kwargs)  # type: ignore[arg-type]
    assert caught.value.code is code


SECRET = generate_symmetric_secret()
SIGNED = _signed(SECRET)
INVALID = ErrorCode.WEBHOOK_SIGNATURE_INVALID


@pytest.mark.parametrize(
    ("name", "body", "headers", "now", "code"),
    [
        ("body altered", BODY + b"x", SIGNED, 1_700_000_000, INVALID),
        ("id altered", BODY, {**SIGNED, "webhook-id": "evt_5"}, 1_700_000_000, INVALID),
        (
            "timestamp altered",
            BODY,
            {**SIGNED, "webhook-timestamp": "1700000001"},
            1_700_000_000,
            INVALID,
        ),
        ("too old", BODY, SIGNED, 1_700_000_301, ErrorCode.WEBHOOK_TIMESTAMP_INVALID),
        ("too new", BODY, SIGNED, 1_699_999_699, ErrorCode.WEBHOOK_TIMESTAMP_INVALID),
        (
            "no id",
            BODY,
            {k: v for k, v in SIGNED.items() if k != "webhook-id"},
            1_700_000_000,
            INVALID,
        ),
        ("no signature", BODY, {**SIGNED, "webhook-signature": ""}, 1_700_000_000, INVALID),
        ("id with a dot", BODY, {**SIGNED, "webhook-id": "evt.4"}, 1_700_000_000, INVALID),
        (
            "timestamp not an integer",
            BODY,
            {**SIGNED, "webhook-timestamp": "1.7e9"},
            1_700_000_000,
            INVALID,
        ),
        (
            "hmac sent as v1a",
            BODY,
            {**SIGNED, "webhook-signature": SIGNED["webhook-signature"].replace("v1,", "v1a,")},
            1_700_000_000,
            INVALID,
        ),
        (
            "unknown scheme only",
            BODY,
            {**SIGNED, "webhook-signature": SIGNED["webhook-signature"].replace("v1,", "v2,")},
            1_700_000_000,
            INVALID,
        ),
        (
            "too many signatures",
            BODY,
            {
                **SIGNED,
                "webhook-signature": " ".join(["v1,AAAA"] * 16 + [SIGNED["webhook-signature"]]),
            },
            1_700_000_000,
            INVALID,
        ),
    ],
)
def test_verify_webhook_refuses(
    name: str, body: bytes, headers: dict[str, str], now: int, code: ErrorCode
) -> None:
    _refused(code, body=body, headers=headers, expected_keys=[SECRET], now=now)


def test_verify_webhook_tolerance_edges_and_garbage_entries() -> None:
    garbage = "v1,not-base64!! v9,zzz v1a " + SIGNED["webhook-signature"]
    for now in (1_700_000_300, 1_699_999_700):
        verify_webhook(
            body=BODY,
            headers={**SIGNED, "webhook-signature": garbage},
            expected_keys=[SECRET],
            now=now,
        )
    _refused(
        INVALID,
        body=BODY,
        headers=SIGNED,
        expected_keys=[generate_symmetric_secret()],
        now=1_700_000_000,
    )


@pytest.mark.parametrize(
    "text",
    [
        "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",  # no prefix
        "whsec_not base64",
        "whsec_" + base64.b64encode(b"x" * 23).decode(),  # shorter than the spec's 24 bytes
        "whsec_" + base64.b64encode(b"x" * 65).decode(),
        "whsk_" + base64.b64encode(b"x" * 31).decode(),
        "whpk_" + base64.b64encode(b"x" * 32).decode(),  # a public key cannot sign
    ],
)
def test_parse_signing_secret_refuses(text: str) -> None:
    with pytest.raises(KeyboundError) as caught:
        parse_signing_secret(text)
    assert caught.value.code is ErrorCode.MALFORMED_REQUEST


def test_parse_verifying_key_refuses_a_private_key() -> None:
    with pytest.raises(KeyboundError):
        parse_verifying_key(generate_ed25519_secret().serialize())


def test_generated_secrets_round_trip_and_hide_in_repr() -> None:
    symmetric, asymmetric = generate_symmetric_secret(), generate_ed25519_secret()
    assert len(symmetric.key) == 32 and symmetric.serialize().startswith("whsec_")
    assert parse_signing_secret(symmetric.serialize()) == symmetric
    parsed = parse_signing_secret(asymmetric.serialize())
    assert isinstance(parsed, AsymmetricSecret)
    assert parsed.serialize() == asymmetric.serialize()
    assert symmetric.serialize()[6:] not in repr(symmetric)
    assert generate_symmetric_secret() != symmetric


@pytest.mark.parametrize("msg_id", ["", "evt.1", "evt 1", "é", "x" * 129])
def test_sign_refuses_ids_that_would_break_the_signed_string(msg_id: str) -> None:
    with pytest.raises(KeyboundError):
        sign(msg_id=msg_id, timestamp=1, body=BODY, secrets=[SECRET])
