"""Activation and reactivation through the real HTTP app on a real SQLite database."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest
from sqlalchemy import select

from keybound import crypto
from keybound import protocol as p
from keybound.server.core.codes import (
    GUESS_BOUND,
    HINT_ALPHABET,
    HINT_LENGTH,
    MAX_CODE_ATTEMPTS,
    code_attempts,
    code_space,
)
from keybound.server.events.model import EventType
from keybound.server.secrets import MasterKey, Purpose, SecretBox
from keybound.server.services import Keybound
from keybound.storage import tables as t
from tests.helpers import RawDevice, RelyingParty, problem_code, start_body
from tests.server.services.test_authentication import activated, snapshot

C = p.HwKeyClientStatus


def test_activation_registers_both_keys(rp: RelyingParty) -> None:
    code = rp.activation_code()
    device = RawDevice(rp.http, rp.app_id)
    response = device.activate(code)
    assert response.status_code == 200
    assert response.json() == {
        "deviceId": code["deviceId"],
        "hardwareKeyRegistered": True,
        "authMethods": ["DEVICE"],
    }
    info = rp.device(code["deviceId"])
    assert (info["state"], info["hardwareKey"], info["hardwareKeyAlgorithm"]) == (
        "ACTIVE",
        True,
        "ES256",
    )
    op = rp.operation(code["operationId"])
    assert op["state"] == "COMPLETED"
    assert op["riskData"] == {"hwKeyClientStatus": "OK", "hwKeyServerResult": "VALID"}


@pytest.mark.parametrize("typed", [False, True], ids=["link", "typed"])
def test_activation_is_single_use_whichever_form_started_it(
    rp: RelyingParty, kb: Keybound, typed: bool
) -> None:
    """A start consumes the activation: neither its token nor its typed code works again."""
    code = rp.activation_code()
    RawDevice(rp.http, rp.app_id).start_activation(code, typed=typed)
    before = snapshot(kb)
    for again in (False, True):
        response = rp.http.post(
            p.DevicePaths.ACTIVATION_START, json=start_body(rp.app_id, code, typed=again)
        )
        assert problem_code(response) == "activation_code_invalid"
    assert snapshot(kb) == before


@pytest.mark.parametrize("typed", [False, True], ids=["link", "typed"])
def test_activation_expires(make_rp: Any, clock: Any, typed: bool) -> None:
    rp = make_rp(activationCodeLifetimeSeconds=60)
    code = rp.activation_code()
    clock.advance(61)
    response = rp.http.post(
        p.DevicePaths.ACTIVATION_START, json=start_body(rp.app_id, code, typed=typed)
    )
    assert problem_code(response) == "activation_code_invalid"


@pytest.mark.parametrize("typed", [False, True], ids=["link", "typed"])
def test_activation_of_another_application_is_invalid(make_rp: Any, typed: bool) -> None:
    a, b = make_rp(), make_rp()
    code = a.activation_code()
    response = b.http.post(
        p.DevicePaths.ACTIVATION_START, json=start_body(b.app_id, code, typed=typed)
    )
    assert problem_code(response) == "activation_code_invalid"
    assert RawDevice(a.http, a.app_id).activate(code, typed=typed).status_code == 200


@pytest.mark.parametrize(
    ("kind", "pattern"),
    [
        ("NUMERIC", "0123456789"),
        ("ALPHA", "ABCDEFGHIJKLMNOPQRSTUVWXYZ"),
        ("ALPHANUMERIC", "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"),
    ],
)
def test_activation_code_format_follows_config(make_rp: Any, kind: str, pattern: str) -> None:
    rp = make_rp(activationCodeType=kind, activationCodeLength=10)
    for _ in range(5):
        code = rp.activation_code()["activationCode"]
        assert len(code) == 10
        assert set(code) <= set(pattern)


def test_required_refuses_activation_without_hardware_key(make_rp: Any) -> None:
    rp = make_rp(hwKeyValidationStrategy="REQUIRED")
    code = rp.activation_code()
    device = RawDevice(rp.http, rp.app_id, hw=None)
    start = device.start_activation(code)
    assert start.hardware_key_required is True
    response = device.post(p.DevicePaths.ACTIVATION_FINISH, device.activation_request(start))
    assert problem_code(response) == "hardware_key_required"
    assert rp.operation(code["operationId"])["state"] == "FAILED"
    assert rp.call("GET", f"/rp/v1/devices/{code['deviceId']}")["code"] == "not_found"


@pytest.mark.parametrize(
    ("strategy", "ok"), [("SUPPORTED", False), ("REQUIRED", False), ("RISK_PARAMS", True)]
)
def test_invalid_hardware_proof_at_activation(make_rp: Any, strategy: str, ok: bool) -> None:
    rp = make_rp(hwKeyValidationStrategy=strategy)
    code = rp.activation_code()
    response = RawDevice(rp.http, rp.app_id).activate(code, corrupt_hw=True)
    op = rp.operation(code["operationId"])
    assert op["riskData"]["hwKeyServerResult"] == "INVALID"
    if ok:
        assert response.status_code == 200
        assert response.json()["hardwareKeyRegistered"] is False  # never store an unproven key
    else:
        assert problem_code(response) == "hardware_key_invalid"


def test_software_only_device_under_supported(rp: RelyingParty) -> None:
    device = activated(rp, hardware=False)
    response = device.authenticate(status=C.NOT_SUPPORTED)
    assert response.status_code == 200
    assert rp.device(device.device_id)["hardwareKey"] is False


def test_wrong_software_proof_at_activation_changes_nothing(rp: RelyingParty, kb: Keybound) -> None:
    device = RawDevice(rp.http, rp.app_id)
    start = device.start_activation(rp.activation_code())
    request = device.activation_request(start)
    bad = request.model_copy(update={"software_signature": crypto.sign_p256(device.sw, b"x")})
    before = snapshot(kb)
    assert (
        problem_code(device.post(p.DevicePaths.ACTIVATION_FINISH, bad)) == "authentication_failed"
    )
    assert snapshot(kb) == before
    assert device.post(p.DevicePaths.ACTIVATION_FINISH, request).status_code == 200


def test_non_p256_key_is_refused(rp: RelyingParty) -> None:
    from cryptography.hazmat.primitives.asymmetric import ec

    device = RawDevice(rp.http, rp.app_id)
    start = device.start_activation(rp.activation_code())
    request = device.activation_request(start)
    p384 = crypto.public_der(ec.generate_private_key(ec.SECP384R1()))
    response = device.post(
        p.DevicePaths.ACTIVATION_FINISH, request.model_copy(update={"software_public_key": p384})
    )
    assert problem_code(response) == "unsupported_algorithm"


def test_reactivation_invalidates_old_keys(rp: RelyingParty) -> None:
    device = activated(rp, hardware=False)
    old_sw, device_id = device.sw, device.device_id
    assert device.authenticate(status=C.NOT_SUPPORTED).status_code == 200
    superseded = device.history[-1]
    code = rp.call("POST", f"/rp/v1/devices/{device_id}/reactivation", expect=201)
    assert code["deviceId"] == device_id
    new = RawDevice(rp.http, rp.app_id)  # now with a hardware key
    assert new.activate(code).status_code == 200
    assert new.device_id == device_id
    assert rp.device(device_id)["hardwareKey"] is True
    # the old current key and the old superseded key are simply unknown now
    for key in (device.sw, superseded, old_sw):
        stale = RawDevice(rp.http, rp.app_id, sw=key, hw=None, device_id=device_id)
        assert problem_code(stale.authenticate(status=C.NOT_SUPPORTED)) == "authentication_failed"
    assert rp.device(device_id)["state"] == "ACTIVE"  # old keys do not lock the new ones
    assert new.authenticate().status_code == 200


def test_hardware_key_only_through_reactivation(rp: RelyingParty) -> None:
    device = activated(rp, hardware=False)
    device.hw = crypto.generate_p256()
    response = device.authenticate(status=C.OK)
    assert response.status_code == 200  # SUPPORTED + NO_KEY_REGISTERED passes...
    assert rp.device(device.device_id)["hardwareKey"] is False  # ...and adds no key


def test_deactivated_device_cannot_be_reactivated(rp: RelyingParty) -> None:
    device = activated(rp)
    rp.call("POST", f"/rp/v1/devices/{device.device_id}/deactivate", expect=200)
    response = rp.http.post(f"/rp/v1/devices/{device.device_id}/reactivation", headers=rp.headers)
    assert problem_code(response) == "invalid_state"


def test_device_deactivates_itself(rp: RelyingParty) -> None:
    device = activated(rp)
    tbs = p.transcript(
        p.Purpose.DEACTIVATION,
        application_id=rp.app_id,
        device_id=device.device_id,
        operation_id="",
        challenge=b"",
        context_digest=p.NO_CONTEXT_HASH,
        software_public_key=crypto.public_der(device.sw),
    )
    request = p.DeactivateRequest(
        application_id=rp.app_id,
        device_id=device.device_id,
        software_key_id=crypto.key_id(crypto.public_der(device.sw)),
        software_signature=crypto.sign_p256(device.sw, tbs),
    )
    forged = request.model_copy(
        update={"software_signature": crypto.sign_p256(crypto.generate_p256(), tbs)}
    )
    assert problem_code(device.post(p.DevicePaths.DEACTIVATE, forged)) == "authentication_failed"
    assert rp.device(device.device_id)["state"] == "ACTIVE"
    response = device.post(p.DevicePaths.DEACTIVATE, request)
    assert response.json() == {"deviceId": device.device_id, "state": "DEACTIVATED"}
    assert rp.device(device.device_id)["state"] == "DEACTIVATED"
    start = device.start_auth()  # decoy now
    assert problem_code(device.finish_auth(*device.auth_request(start))) == "authentication_failed"


def test_pin_only_application_needs_a_pin_at_activation(make_rp: Any) -> None:
    rp = make_rp(allowedAuthMethods=["DEVICE:PIN"])
    refused = RawDevice(rp.http, rp.app_id).activate(rp.activation_code())
    assert problem_code(refused) == "pin_required"
    ok = RawDevice(rp.http, rp.app_id).activate(rp.activation_code(), pin_key=bytes(32))
    assert ok.json()["authMethods"] == ["DEVICE:PIN"]


def test_pin_is_not_registered_where_the_application_does_not_allow_it(make_rp: Any) -> None:
    rp = make_rp(allowedAuthMethods=["DEVICE"])
    device = RawDevice(rp.http, rp.app_id)
    response = device.activate(rp.activation_code(), pin_key=bytes(32))
    assert response.json()["authMethods"] == ["DEVICE"]
    assert rp.device(device.device_id)["pinEnabled"] is False


def test_pin_key_is_stored_only_wrapped(rp: RelyingParty, kb: Keybound) -> None:
    from sqlalchemy import select

    from keybound.errors import ErrorCode, KeyboundError
    from keybound.storage import tables as t

    pin_key = bytes(range(100, 132))
    device = RawDevice(rp.http, rp.app_id)
    assert device.activate(rp.activation_code(), pin_key=pin_key).status_code == 200
    other = RawDevice(rp.http, rp.app_id)
    assert other.activate(rp.activation_code(), pin_key=pin_key).status_code == 200
    with kb.db.read() as conn:
        rows = dict(conn.execute(select(t.registrations.c.id, t.registrations.c.pin_key)).all())
    with kb.db.read() as conn:  # the raw PIN key is in no column of any table
        for table in t.metadata.tables.values():
            for row in conn.execute(select(table)):
                assert not any(isinstance(v, bytes) and pin_key in v for v in row), table.name
    assert rows[device.device_id] != rows[other.device_id]  # fresh nonce per wrap
    assert (
        kb.box.unwrap(Purpose.PIN_KEY, rows[device.device_id], binding=device.device_id.encode())
        == pin_key
    )
    with pytest.raises(KeyboundError) as moved:  # a wrapped key is bound to its registration
        kb.box.unwrap(Purpose.PIN_KEY, rows[device.device_id], binding=other.device_id.encode())
    assert moved.value.code is ErrorCode.INTERNAL


def test_a_pin_key_that_does_not_open_is_a_server_fault_without_detail(
    rp: RelyingParty, kb: Keybound
) -> None:
    """A wrapped PIN key moved to another registration does not open: 500 internal_error,
    nothing about the inside in the answer, and nothing counted against the device."""
    from sqlalchemy import select, update

    from keybound.storage import tables as t
    from tests.server.services.test_authentication import activated

    first = activated(rp, pin_key=bytes(32))
    second = activated(rp, pin_key=bytes(32))
    r = t.registrations
    with kb.db.write() as conn:
        blob = conn.execute(select(r.c.pin_key).where(r.c.id == first.device_id)).scalar_one()
        conn.execute(update(r).where(r.c.id == second.device_id).values(pin_key=blob))
    response = second.authenticate(method=p.AuthMethod.DEVICE_PIN)
    assert response.status_code == 500
    assert response.json()["code"] == "internal_error"
    assert "detail" not in response.json()
    assert rp.device(second.device_id)["state"] == "ACTIVE"


# -- the link and the typed fallback (§3.2.5): guessing is bounded per code (§10) ----------


def code_failures(kb: Keybound, operation_id: str) -> list[dict[str, Any]]:
    """The audit trail's counted typed attempts of one activation."""
    with kb.db.read() as conn:
        rows = (
            conn.execute(
                select(t.events.c.payload)
                .where(
                    t.events.c.operation_id == operation_id,
                    t.events.c.type == EventType.ACTIVATION_CODE_FAILED.value,
                )
                .order_by(t.events.c.seq)
            )
            .scalars()
            .all()
        )
    return [json.loads(row) for row in rows]


def wrong_code(code: str) -> str:
    """A code of the same shape that is certainly not ``code``."""
    return ("1" if code[0] != "1" else "2") + code[1:]


def test_issued_activation_has_a_link_and_a_typed_code_with_its_hint(rp: RelyingParty) -> None:
    code = rp.activation_code()
    app, token = p.read_activation_link(code["activationLink"])
    assert (app, p.b64u_encode(token)) == (rp.app_id, code["activationToken"])
    assert len(token) == 32  # 256 bits: §10
    assert len(code["activationHint"]) == HINT_LENGTH
    assert set(code["activationHint"]) <= set(HINT_ALPHABET)
    assert code["activationCodeAttempts"] == MAX_CODE_ATTEMPTS


def test_typed_code_activates_with_its_hint_as_a_user_types_it(rp: RelyingParty) -> None:
    code = rp.activation_code()
    hint = code["activationHint"].lower().replace("0", "o").replace("1", "l")  # misread
    response = rp.http.post(
        p.DevicePaths.ACTIVATION_START,
        json={
            "applicationId": rp.app_id,
            "activationCode": code["activationCode"],
            "activationHint": hint,
        },
    )
    assert response.status_code == 200, response.text
    assert response.json()["deviceId"] == code["deviceId"]


TOKEN = "q1XTxZ4ONHPOwYJnFXHYv1mlRl8cU9mF2Ysv7aaVe0U"


@pytest.mark.parametrize(
    "body",
    [
        {"activationCode": "483920"},
        {"activationHint": "7KQ2MX"},
        {"activationCode": "483920", "activationHint": "7KQ2MX", "activationToken": TOKEN},
        {"activationHint": "7KQ2MX", "activationToken": TOKEN},
        {},
    ],
)
def test_start_needs_the_token_alone_or_the_code_with_its_hint(
    rp: RelyingParty, body: dict[str, str]
) -> None:
    """A bare code -- the request that could be guessed against every pending code at once
    -- is not even read."""
    response = rp.http.post(
        p.DevicePaths.ACTIVATION_START, json={"applicationId": rp.app_id, **body}
    )
    assert problem_code(response) == "malformed_request"


def issue(rp: RelyingParty, kind: str) -> dict[str, Any]:
    """A new activation, or a reactivation of a device activated for the purpose."""
    if kind == "ACTIVATION":
        return rp.activation_code()
    device = activated(rp)
    issued: dict[str, Any] = rp.call(
        "POST", f"/rp/v1/devices/{device.device_id}/reactivation", expect=201
    )
    return issued


@pytest.mark.parametrize("kind", ["ACTIVATION", "REACTIVATION"])
def test_guessing_burns_the_typed_code_and_the_link_still_activates(
    rp: RelyingParty, kb: Keybound, kind: str
) -> None:
    """The attack, one code: an attacker who knows the victim's hint sends wrong codes; after
    the budget even the right code is refused, every refusal reads the same, and the victim
    still (re)activates through the link."""
    victim, bystander = issue(rp, kind), issue(rp, kind)
    assert victim["type"] == kind
    attacker = {"applicationId": rp.app_id, "activationHint": victim["activationHint"]}
    wrong = wrong_code(victim["activationCode"])
    unknown_hint = rp.http.post(
        p.DevicePaths.ACTIVATION_START,
        json={**attacker, "activationHint": "ZZZZZZZZ", "activationCode": wrong},
    )
    answers = [
        rp.http.post(p.DevicePaths.ACTIVATION_START, json={**attacker, "activationCode": wrong})
        for _ in range(MAX_CODE_ATTEMPTS)
    ]
    # the budget is spent: the right code now fails like any other guess
    lucky = rp.http.post(
        p.DevicePaths.ACTIVATION_START,
        json={**attacker, "activationCode": victim["activationCode"]},
    )
    for answer in (*answers, lucky):
        assert (answer.status_code, answer.content) == (401, unknown_hint.content)
    assert [f["attemptsLeft"] for f in code_failures(kb, victim["operationId"])] == list(
        range(MAX_CODE_ATTEMPTS - 1, -1, -1)
    )  # counted: exactly the budget, no more
    assert code_failures(kb, victim["operationId"])[-1]["burnt"] is True
    assert rp.operation(victim["operationId"])["state"] == "PENDING"
    # the victim: the link works; the other user: the typed code works (no global lockout)
    assert RawDevice(rp.http, rp.app_id).activate(victim).status_code == 200
    assert RawDevice(rp.http, rp.app_id).activate(bystander, typed=True).status_code == 200
    assert code_failures(kb, bystander["operationId"]) == []


def test_a_mistyped_code_leaves_the_rest_of_its_budget(rp: RelyingParty, kb: Keybound) -> None:
    code = rp.activation_code()
    typo = {
        **start_body(rp.app_id, code, typed=True),
        "activationCode": wrong_code(code["activationCode"]),
    }
    for _ in range(MAX_CODE_ATTEMPTS - 1):
        assert (
            problem_code(rp.http.post(p.DevicePaths.ACTIVATION_START, json=typo))
            == "activation_code_invalid"
        )
    assert RawDevice(rp.http, rp.app_id).activate(code, typed=True).status_code == 200
    assert len(code_failures(kb, code["operationId"])) == MAX_CODE_ATTEMPTS - 1


def test_unknown_hints_and_tokens_leave_no_state(rp: RelyingParty, kb: Keybound) -> None:
    """Counting failures is no DoS vector: only an activation the relying party issued has a
    budget; guesses at anything else change nothing but the anonymous noise counts."""
    rp.activation_code()
    before = snapshot(kb)
    for i in range(20):
        assert (
            problem_code(
                rp.http.post(
                    p.DevicePaths.ACTIVATION_START,
                    json={
                        "applicationId": rp.app_id,
                        "activationHint": f"Q{i:05d}",
                        "activationCode": "123456",
                    },
                )
            )
            == "activation_code_invalid"
        )
        assert (
            problem_code(
                rp.http.post(
                    p.DevicePaths.ACTIVATION_START,
                    json={
                        "applicationId": rp.app_id,
                        "activationToken": p.b64u_encode(bytes([i]) * 32),
                    },
                )
            )
            == "activation_code_invalid"
        )
    assert snapshot(kb) == before


@pytest.mark.parametrize(
    ("kind", "length", "attempts"),
    [
        ("NUMERIC", 4, 1),
        ("NUMERIC", 5, 5),
        ("NUMERIC", 6, 5),
        ("ALPHA", 4, 5),
        ("ALPHANUMERIC", 4, 5),
    ],
)
def test_the_budget_keeps_the_bound_under_every_configuration(
    make_rp: Any, kind: str, length: int, attempts: int
) -> None:
    rp = make_rp(activationCodeType=kind, activationCodeLength=length)
    assert rp.activation_code()["activationCodeAttempts"] == attempts
    assert attempts / code_space(p.ActivationCodeType(kind), length) <= 1 / GUESS_BOUND
    for kind_ in p.ActivationCodeType:
        for n in range(4, 65):
            assert code_attempts(kind_, n) / code_space(kind_, n) <= 1 / GUESS_BOUND


def test_a_database_copy_yields_no_code(rp: RelyingParty, kb: Keybound) -> None:
    """Issue 14 defect 6: the old unsalted SHA-256 gave every pending code back from a copy
    of the database in a second. Now the stored values are keyed hashes under the master key:
    the same search over all 10^6 codes finds nothing, and the token is not stored at all."""
    issued = [rp.activation_code() for _ in range(3)]
    with kb.db.read() as conn:
        rows = conn.execute(select(t.activation_secrets)).all()
    stored = {row.code_hash for row in rows} | {row.token_hash for row in rows}
    for code in range(10**6):  # the attack of defect 6, unchanged
        digest = hashlib.sha256(f"{rp.app_id}\x00{code:06d}".encode()).digest()
        assert digest not in stored
    tokens = {p.b64u_decode(i["activationToken"]) for i in issued}
    assert not any(token in row for row in rows for token in tokens)
    box = SecretBox(kb.master_key)  # with the master key, and only with it, they match
    for i in issued:
        assert (
            box.keyed_hash(
                Purpose.ACTIVATION_CODE,
                i["activationCode"].encode(),
                binding=i["operationId"].encode(),
            )
            in stored
        )
    other = SecretBox(MasterKey.of(bytes(32)))
    assert (
        other.keyed_hash(
            Purpose.ACTIVATION_CODE,
            issued[0]["activationCode"].encode(),
            binding=issued[0]["operationId"].encode(),
        )
        not in stored
    )
