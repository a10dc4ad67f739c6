"""Authentication ceremonies through the real HTTP app on a real SQLite database."""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from sqlalchemy import func, select

from keybound import crypto
from keybound import protocol as p
from keybound.server.services import Keybound
from keybound.storage import tables as t
from tests.helpers import RawDevice, RelyingParty, problem_code

S = p.HwKeyValidationStrategy
R = p.HwKeyServerResult
C = p.HwKeyClientStatus

PASS = {
    (S.SUPPORTED, R.VALID),
    (S.SUPPORTED, R.NO_KEY_REGISTERED),
    (S.RISK_PARAMS, R.VALID),
    (S.RISK_PARAMS, R.INVALID),
    (S.RISK_PARAMS, R.MISSING),
    (S.RISK_PARAMS, R.NO_KEY_REGISTERED),
    (S.REQUIRED, R.VALID),
}


def activated(rp: RelyingParty, *, hardware: bool = True, **kwargs: Any) -> RawDevice:
    device = RawDevice(rp.http, rp.app_id, hw=crypto.generate_p256() if hardware else None)
    response = device.activate(rp.activation_code(), **kwargs)
    assert response.status_code == 200, response.text
    return device


#: what a refused request may still write: its event (or anonymous count), and its replay
#: mark, so that it cannot be replayed either; and the audit chain's checkpoints, which the
#: server's housekeeping signs meanwhile
RECORDS = {"events", "noise", "seen_requests", "audit_checkpoints", "audit_head"}


def snapshot(kb: Keybound) -> dict[str, Any]:
    """Everything but the records of requests: refused requests must leave this unchanged."""
    with kb.db.read() as conn:
        return {
            name: sorted(tuple(map(repr, row)) for row in conn.execute(select(table)))
            for name, table in t.metadata.tables.items()
            if name not in RECORDS
        }


# -- the whole decision table, end to end ------------------------------------------------

HW_MODE = {R.VALID: "sign", R.INVALID: "corrupt", R.MISSING: "omit"}


@pytest.mark.parametrize(("strategy", "result", "status"), list(itertools.product(S, R, C)))
def test_decision_table(make_rp: Any, strategy: S, result: R, status: C) -> None:
    # activate under RISK_PARAMS so a software-only device exists even for REQUIRED,
    # then switch the strategy: it applies to the next operation.
    rp = make_rp(hwKeyValidationStrategy="RISK_PARAMS")
    device = activated(rp, hardware=result is not R.NO_KEY_REGISTERED)
    rp_kb = rp.http.app.state.kb
    rp_kb.admin.update_application(rp.app_id, {"hwKeyValidationStrategy": strategy.value})
    if result is R.NO_KEY_REGISTERED:
        device.hw = crypto.generate_p256()  # signs with a key the server never registered
    start = device.start_auth()
    response = device.finish_auth(
        *device.auth_request(start, status=status, hw_mode=HW_MODE.get(result, "sign"))
    )
    op = rp.operation(start.operation_id)
    assert op["riskData"] == {"hwKeyClientStatus": status.value, "hwKeyServerResult": result.value}
    if (strategy, result) in PASS:
        assert response.status_code == 200, response.text
        assert op["state"] == "COMPLETED"
        assert op["result"] == {"authMethod": "DEVICE", "authLevel": "ONE_FACTOR"}
    else:
        expected = "hardware_key_invalid" if result is R.INVALID else "hardware_key_required"
        assert problem_code(response) == expected
        assert op["state"] == "FAILED"
        assert op["result"]["failureCode"] == expected


@pytest.mark.parametrize("enabled", [[], ["hwKeyServerResult"], ["hwKeyClientStatus"]])
def test_risk_data_setting_changes_reporting_not_decision(make_rp: Any, enabled: list[str]) -> None:
    rp = make_rp(enabledRiskData=enabled)
    device = activated(rp)
    start = device.start_auth()
    response = device.finish_auth(*device.auth_request(start, hw_mode="corrupt"))
    assert problem_code(response) == "hardware_key_invalid"
    op = rp.operation(start.operation_id)
    assert op["state"] == "FAILED"
    assert set(op["riskData"]) == set(enabled)


# -- single use, expiry, binding ---------------------------------------------------------


def test_replayed_finish_is_refused_and_changes_nothing(rp: RelyingParty, kb: Keybound) -> None:
    device = activated(rp)
    start = device.start_auth()
    request, next_key = device.auth_request(start)
    assert device.finish_auth(request, next_key).status_code == 200
    before = snapshot(kb)
    replay = device.post(p.DevicePaths.AUTHENTICATION_FINISH, request)
    assert replay.status_code == 409
    assert problem_code(replay) == "challenge_used"
    assert snapshot(kb) == before
    assert rp.device(device.device_id)["state"] == "ACTIVE"  # a replay is not a clone


def test_expired_challenge(rp: RelyingParty, kb: Keybound, clock: Any) -> None:
    device = activated(rp)
    start = device.start_auth()
    request, _ = device.auth_request(start)
    clock.advance(121)  # default challengeLifetimeSeconds is 120
    before = snapshot(kb)
    response = device.post(p.DevicePaths.AUTHENTICATION_FINISH, request)
    assert problem_code(response) == "challenge_expired"
    assert snapshot(kb) == before
    assert rp.operation(start.operation_id)["state"] == "EXPIRED"
    assert device.authenticate().status_code == 200  # the same key still works


def test_challenge_from_another_ceremony_is_refused(rp: RelyingParty, kb: Keybound) -> None:
    device = activated(rp)
    first, second = device.start_auth(), device.start_auth()
    # sign over the first challenge but present it as the second operation
    forged = first.model_copy(update={"operation_id": second.operation_id})
    request, _ = device.auth_request(forged)
    code = rp.activation_code()
    other = RawDevice(rp.http, rp.app_id)
    act = other.activation_request(other.start_activation(code))
    before = snapshot(kb)
    assert (
        problem_code(device.post(p.DevicePaths.AUTHENTICATION_FINISH, request))
        == "authentication_failed"
    )
    # and an activation-purpose signature is no authentication
    stolen = request.model_copy(update={"software_signature": act.software_signature})
    assert (
        problem_code(device.post(p.DevicePaths.AUTHENTICATION_FINISH, stolen))
        == "authentication_failed"
    )
    assert snapshot(kb) == before


def test_operation_of_another_device_is_refused(rp: RelyingParty) -> None:
    alice, mallory = activated(rp), activated(rp)
    start = alice.start_auth()
    mallory_view = start.model_copy()
    request, _ = mallory.auth_request(mallory_view)
    assert (
        problem_code(mallory.post(p.DevicePaths.AUTHENTICATION_FINISH, request))
        == "authentication_failed"
    )
    assert alice.finish_auth(*alice.auth_request(start)).status_code == 200


def test_unknown_device_looks_like_a_wrong_signature(rp: RelyingParty) -> None:
    real = activated(rp)
    ghost = RawDevice(rp.http, rp.app_id, device_id="00000000-0000-4000-8000-000000000000")
    ghost_start = ghost.start_auth()  # a decoy challenge, indistinguishable in shape
    real_start = real.start_auth()
    assert set(ghost_start.to_wire()) == set(real_start.to_wire())
    ghost_resp = ghost.post(p.DevicePaths.AUTHENTICATION_FINISH, ghost.auth_request(ghost_start)[0])
    wrong_key = real.auth_request(real_start, signer=crypto.generate_p256())[0]
    real_resp = real.post(p.DevicePaths.AUTHENTICATION_FINISH, wrong_key)
    assert ghost_resp.status_code == real_resp.status_code == 401
    assert ghost_resp.json() == real_resp.json()


def test_wrong_software_signature_changes_nothing(rp: RelyingParty, kb: Keybound) -> None:
    device = activated(rp)
    start = device.start_auth()
    request, _ = device.auth_request(start)
    bad = request.model_copy(
        update={"software_signature": crypto.sign_p256(crypto.generate_p256(), b"other")}
    )
    before = snapshot(kb)
    assert (
        problem_code(device.post(p.DevicePaths.AUTHENTICATION_FINISH, bad))
        == "authentication_failed"
    )
    assert snapshot(kb) == before
    # nobody proved who they are: counted as anonymous noise, not audited as an actor
    with kb.db.read() as conn:
        audited = conn.execute(
            select(func.count()).where(t.events.c.code == "authentication_failed")
        ).scalar_one()
    assert audited == 0
    counted = {r.cause: r.total for r in kb.admin.noise(since_ms=0)}
    assert counted == {"device authentication.finish:authentication_failed": 1}
    # the challenge was not burnt by the attacker: the real device can still finish
    assert device.finish_auth(*device.auth_request(start)).status_code == 200


# -- software key rotation and copies -----------------------------------------------------


def test_software_key_rotates_on_every_success(rp: RelyingParty) -> None:
    device = activated(rp)
    first = device.sw
    assert device.authenticate().status_code == 200
    assert device.sw is not first
    assert device.authenticate().status_code == 200
    assert device.history[0] is first


def test_copied_software_key_is_detected_and_locks(rp: RelyingParty, kb: Keybound) -> None:
    device = activated(rp)
    copy = RawDevice(rp.http, rp.app_id, sw=device.sw, hw=None, device_id=device.device_id)
    assert device.authenticate().status_code == 200  # the real device moves on
    response = copy.authenticate(status=C.NOT_SUPPORTED)  # the copy uses the old key
    assert problem_code(response) == "software_key_cloned"
    info = rp.device(device.device_id)
    assert info["state"] == "LOCKED"
    assert info["lockReason"] == "SOFTWARE_KEY_CLONED"
    with kb.db.read() as conn:
        events = (
            conn.execute(select(t.events.c.type).where(t.events.c.code == "software_key_cloned"))
            .scalars()
            .all()
        )
    # the relying party hears of it: the suspicion, the failed operation, the lock
    assert events == ["device.clone_suspected", "operation.failed", "device.locked"]
    # now even the real device is locked out until a reactivation
    assert problem_code(device.authenticate()) == "device_locked"
    assert (
        problem_code(rp.http.post(f"/rp/v1/devices/{device.device_id}/unlock", headers=rp.headers))
        == "invalid_state"
    )


def test_overlapping_ceremonies_of_the_genuine_device_are_refused_not_locked(
    make_rp: Any, kb: Keybound, clock: Any
) -> None:
    """§4.5 "Copy or overlap": two holders of the same genuine keys (two processes of one
    device) race: both get a challenge, one finishes and rotates, the other finishes with
    the key that was current when its challenge was issued. That is an overlap: 409
    software_key_superseded, nothing locked or counted, the operation stays pending and can
    be finished with the current key (reported as softwareKeyOverlap). The same old key used
    for a ceremony that began after the rotation is a copy, and still locks."""
    rp = make_rp(enabledRiskData="hwKeyClientStatus,hwKeyServerResult,softwareKeyOverlap")
    first = activated(rp)
    second = RawDevice(rp.http, rp.app_id, sw=first.sw, hw=first.hw, device_id=first.device_id)
    start_first, start_second = first.start_auth(), second.start_auth()
    clock.advance(1)  # the rotation comes after both challenges (same millisecond = a copy)
    assert first.finish_auth(*first.auth_request(start_first)).status_code == 200
    late, _ = second.auth_request(start_second)
    before = snapshot(kb)
    refused = second.post(p.DevicePaths.AUTHENTICATION_FINISH, late)
    assert (refused.status_code, problem_code(refused)) == (409, "software_key_superseded")
    info = rp.device(first.device_id)
    assert (info["state"], info.get("lockReason")) == ("ACTIVE", None)
    with kb.db.read() as conn:
        failures = conn.execute(select(t.registrations.c.failures)).scalars().all()
        audited = conn.execute(
            select(t.events.c.type, t.events.c.outcome).where(
                t.events.c.code == "software_key_superseded"
            )
        ).all()
    assert failures == [0]
    assert [tuple(row) for row in audited] == [("authentication.finish", "REJECTED")]
    changed = {name for name, rows in snapshot(kb).items() if rows != before[name]}
    assert changed == {"operations"}  # the overlap note on the pending operation, only
    assert rp.operation(start_second.operation_id)["state"] == "PENDING"
    # the retry: the same pending operation, signed with the current key
    retried = first.finish_auth(*first.auth_request(start_second))
    assert retried.status_code == 200, retried.text
    assert rp.operation(start_second.operation_id)["riskData"]["softwareKeyOverlap"] is True
    # a ceremony that begins after the rotation, signed with the old key: a copy
    clock.advance(1)
    copied = second.authenticate()
    assert (copied.status_code, problem_code(copied)) == (403, "software_key_cloned")
    info = rp.device(first.device_id)
    assert (info["state"], info["lockReason"]) == ("LOCKED", "SOFTWARE_KEY_CLONED")


def test_next_key_must_be_new(rp: RelyingParty) -> None:
    device = activated(rp)
    start = device.start_auth()
    request, _ = device.auth_request(start, next_key=device.sw)
    assert (
        problem_code(device.post(p.DevicePaths.AUTHENTICATION_FINISH, request))
        == "malformed_request"
    )


# -- PIN ----------------------------------------------------------------------------------

PIN_KEY = bytes(range(32))
WRONG_PIN_KEY = bytes(32)


def test_pin_lockout_after_consecutive_failures(make_rp: Any) -> None:
    rp = make_rp(amountFailuresAllowed=3)
    device = activated(rp, pin_key=PIN_KEY)
    pin = {"method": p.AuthMethod.DEVICE_PIN}
    for attempt in range(3):
        response = device.authenticate(**pin, pin_key=WRONG_PIN_KEY)
        assert problem_code(response) == "pin_invalid", attempt
    info = rp.device(device.device_id)
    assert (info["state"], info["lockReason"]) == ("LOCKED", "FAILURES")
    assert problem_code(device.authenticate(**pin)) == "device_locked"  # right PIN, too late
    rp.call("POST", f"/rp/v1/devices/{device.device_id}/unlock", expect=200)
    ok = device.authenticate(**pin)
    assert ok.status_code == 200
    assert ok.json()["authLevel"] == "TWO_FACTOR"


def test_success_resets_failure_count(make_rp: Any) -> None:
    rp = make_rp(amountFailuresAllowed=3)
    device = activated(rp, pin_key=PIN_KEY)
    pin = {"method": p.AuthMethod.DEVICE_PIN}
    for _ in range(2):
        assert problem_code(device.authenticate(**pin, pin_key=WRONG_PIN_KEY)) == "pin_invalid"
    assert device.authenticate(**pin).status_code == 200
    for _ in range(2):
        assert problem_code(device.authenticate(**pin, pin_key=WRONG_PIN_KEY)) == "pin_invalid"
    assert rp.device(device.device_id)["state"] == "ACTIVE"


def test_pin_method_needs_a_registered_pin_and_a_proof(rp: RelyingParty) -> None:
    device = activated(rp)  # no PIN at activation
    response = device.authenticate(method=p.AuthMethod.DEVICE_PIN, pin_key=PIN_KEY)
    assert problem_code(response) == "auth_method_not_allowed"
    with_pin = activated(rp, pin_key=PIN_KEY)
    start = with_pin.start_auth()
    request, _ = with_pin.auth_request(start, method=p.AuthMethod.DEVICE_PIN)
    no_proof = request.model_copy(update={"pin_proof": None})
    assert (
        problem_code(with_pin.post(p.DevicePaths.AUTHENTICATION_FINISH, no_proof)) == "pin_required"
    )


def test_auth_method_not_allowed_by_application(make_rp: Any) -> None:
    rp = make_rp(allowedAuthMethods=["DEVICE:PIN"])
    device = activated(rp, pin_key=PIN_KEY)
    assert problem_code(device.authenticate()) == "auth_method_not_allowed"
    assert device.authenticate(method=p.AuthMethod.DEVICE_PIN).status_code == 200


# -- backend-initiated operations ---------------------------------------------------------


def test_backend_operation_with_contexts(rp: RelyingParty) -> None:
    device = activated(rp, pin_key=PIN_KEY)
    pre = {"content": "Pay 100 EUR to ACME", "mimeType": "text/plain"}
    post = {"content": "secret-token-123", "mimeType": "text/plain"}
    op = rp.start_operation(
        device.device_id,
        preOperationContext=pre,
        postOperationContext=post,
        requiredAuthMethod="DEVICE:PIN",
    )
    assert op["state"] == "PENDING"
    pending = device.post(
        p.DevicePaths.PENDING_OPERATIONS,
        p.PendingOperationsRequest(application_id=rp.app_id, device_id=device.device_id),
    ).json()["operations"]
    assert [o["operationId"] for o in pending] == [op["operationId"]]
    assert pending[0]["preOperationContext"] == pre
    assert "postOperationContext" not in pending[0]
    start = device.start_auth(op["operationId"])
    assert start.pre_operation_context is not None
    assert start.allowed_auth_methods == [p.AuthMethod.DEVICE_PIN]
    # one-factor is refused when the operation requires DEVICE:PIN
    one_factor, _ = device.auth_request(start)
    assert (
        problem_code(device.post(p.DevicePaths.AUTHENTICATION_FINISH, one_factor))
        == "auth_method_not_allowed"
    )
    # a signature over a different pre-operation context does not verify
    tampered = start.model_copy(
        update={
            "pre_operation_context": p.OperationContext(
                content="Pay 1 EUR to ACME", mime_type="text/plain"
            )
        }
    )
    wrong_ctx, _ = device.auth_request(tampered, method=p.AuthMethod.DEVICE_PIN)
    assert (
        problem_code(device.post(p.DevicePaths.AUTHENTICATION_FINISH, wrong_ctx))
        == "authentication_failed"
    )
    done = device.finish_auth(*device.auth_request(start, method=p.AuthMethod.DEVICE_PIN))
    assert done.status_code == 200
    assert done.json()["postOperationContext"] == post
    result = rp.operation(op["operationId"])
    assert result["state"] == "COMPLETED"
    assert result["result"] == {"authMethod": "DEVICE:PIN", "authLevel": "TWO_FACTOR"}
    assert device.post(
        p.DevicePaths.PENDING_OPERATIONS,
        p.PendingOperationsRequest(application_id=rp.app_id, device_id=device.device_id),
    ).json() == {"operations": []}


def test_backend_operation_expires(make_rp: Any, clock: Any) -> None:
    rp = make_rp(operationLifetimeSeconds=60)
    device = activated(rp)
    op = rp.start_operation(device.device_id)
    clock.advance(61)
    assert rp.operation(op["operationId"])["state"] == "EXPIRED"
    start = device.start_auth(op["operationId"])  # a decoy: the operation is gone
    assert problem_code(device.finish_auth(*device.auth_request(start))) == "authentication_failed"


def test_config_change_applies_to_next_operation(make_rp: Any, kb: Keybound) -> None:
    rp = make_rp()
    device = activated(rp)
    start = device.start_auth()
    kb.admin.update_application(rp.app_id, {"hwKeyValidationStrategy": "RISK_PARAMS"})
    assert (
        problem_code(device.finish_auth(*device.auth_request(start, hw_mode="corrupt")))
        == "hardware_key_invalid"
    )  # started under SUPPORTED
    assert device.authenticate(hw_mode="corrupt").status_code == 200  # next one: RISK_PARAMS


# -- hardening found in review --------------------------------------------------------------


def test_relying_party_cannot_clear_a_clone_lock_by_relocking(rp: RelyingParty) -> None:
    device = activated(rp)
    copy = RawDevice(rp.http, rp.app_id, sw=device.sw, hw=None, device_id=device.device_id)
    assert device.authenticate().status_code == 200
    assert problem_code(copy.authenticate(status=C.NOT_SUPPORTED)) == "software_key_cloned"
    base = f"/rp/v1/devices/{device.device_id}"
    assert rp.call("POST", base + "/lock", expect=200)["lockReason"] == "SOFTWARE_KEY_CLONED"
    assert problem_code(rp.http.post(base + "/unlock", headers=rp.headers)) == "invalid_state"
    assert problem_code(device.authenticate()) == "device_locked"


def test_copied_key_is_detected_even_when_the_challenge_expired(
    rp: RelyingParty, clock: Any
) -> None:
    device = activated(rp)
    copy = RawDevice(rp.http, rp.app_id, sw=device.sw, hw=None, device_id=device.device_id)
    assert device.authenticate().status_code == 200
    start = copy.start_auth()
    request, _ = copy.auth_request(start, status=C.NOT_SUPPORTED)
    clock.advance(500)
    response = copy.post(p.DevicePaths.AUTHENTICATION_FINISH, request)
    assert problem_code(response) == "software_key_cloned"
    assert rp.device(device.device_id)["lockReason"] == "SOFTWARE_KEY_CLONED"


def test_second_start_of_a_backend_operation_keeps_the_challenge(rp: RelyingParty) -> None:
    device = activated(rp)
    op = rp.start_operation(device.device_id)["operationId"]
    first = device.start_auth(op)
    meddler = RawDevice(rp.http, rp.app_id, device_id=device.device_id)
    again = meddler.start_auth(op)  # anyone who knows the ids
    assert again.challenge == first.challenge
    assert device.finish_auth(*device.auth_request(first)).status_code == 200


def test_decoy_for_unknown_backend_operation_echoes_the_request(make_rp: Any) -> None:
    rp = make_rp(allowedAuthMethods=["DEVICE"])
    device = activated(rp)
    missing = "00000000-0000-4000-8000-00000000abcd"
    decoy = device.start_auth(missing)
    real = device.start_auth(rp.start_operation(device.device_id)["operationId"])
    assert decoy.operation_id == missing
    assert decoy.allowed_auth_methods == real.allowed_auth_methods == [p.AuthMethod.DEVICE]


def test_bad_next_key_is_not_reported_before_the_signature(rp: RelyingParty) -> None:
    device = activated(rp)
    start = device.start_auth()
    request, _ = device.auth_request(start)
    forged = request.model_copy(
        update={
            "next_software_public_key": b"\x30" * 40,
            "software_signature": crypto.sign_p256(crypto.generate_p256(), b"x"),
        }
    )
    unsigned = device.post(p.DevicePaths.AUTHENTICATION_FINISH, forged)
    wrong_sig = device.post(
        p.DevicePaths.AUTHENTICATION_FINISH,
        request.model_copy(update={"software_signature": forged.software_signature}),
    )
    assert unsigned.json() == wrong_sig.json()
    assert problem_code(unsigned) == "authentication_failed"


def test_failed_operation_reports_no_auth_level(rp: RelyingParty) -> None:
    device = activated(rp, pin_key=PIN_KEY)
    start = device.start_auth()
    response = device.finish_auth(
        *device.auth_request(start, method=p.AuthMethod.DEVICE_PIN, pin_key=WRONG_PIN_KEY)
    )
    assert problem_code(response) == "pin_invalid"
    assert rp.operation(start.operation_id)["result"] == {
        "authMethod": "DEVICE:PIN",
        "failureCode": "pin_invalid",
    }


# -- decline (§3.1.7) ---------------------------------------------------------------------------


def _decline_request(
    device: RawDevice, start: p.AuthenticationStartResponse, signer: Any = None
) -> p.DeclineRequest:
    key = signer or device.sw
    tbs = p.transcript(
        p.Purpose.DECLINE,
        application_id=device.app_id,
        device_id=device.device_id,
        operation_id=start.operation_id,
        challenge=start.challenge,
        context_digest=p.context_hash(start.pre_operation_context),
        software_public_key=b"",
    )
    return p.DeclineRequest(
        application_id=device.app_id,
        device_id=device.device_id,
        operation_id=start.operation_id,
        software_key_id=crypto.key_id(crypto.public_der(key)),
        software_signature=crypto.sign_p256(key, tbs),
    )


def test_declined_backend_operation_fails_at_once(rp: RelyingParty, kb: Keybound) -> None:
    device = activated(rp)
    op = rp.start_operation(
        device.device_id, preOperationContext={"content": "Pay 100 EUR", "mimeType": "text/plain"}
    )["operationId"]
    start = device.start_auth(op)
    forged = _decline_request(device, start, signer=crypto.generate_p256())
    before = snapshot(kb)
    assert (
        problem_code(device.post(p.DevicePaths.AUTHENTICATION_DECLINE, forged))
        == "authentication_failed"
    )
    assert snapshot(kb) == before
    request = _decline_request(device, start)
    response = device.post(p.DevicePaths.AUTHENTICATION_DECLINE, request)
    assert response.json() == {"operationId": op, "state": "FAILED"}
    result = rp.operation(op)
    assert (result["state"], result["result"]) == ("FAILED", {"failureCode": "declined"})
    assert (
        problem_code(device.post(p.DevicePaths.AUTHENTICATION_DECLINE, request)) == "challenge_used"
    )
    assert problem_code(device.finish_auth(*device.auth_request(start))) == "challenge_used"
    assert rp.device(device.device_id)["state"] == "ACTIVE"


def test_device_initiated_operation_cannot_be_declined(rp: RelyingParty) -> None:
    device = activated(rp)
    start = device.start_auth()
    response = device.post(p.DevicePaths.AUTHENTICATION_DECLINE, _decline_request(device, start))
    assert problem_code(response) == "authentication_failed"
    assert device.finish_auth(*device.auth_request(start)).status_code == 200


def test_next_key_may_not_be_a_superseded_key(rp: RelyingParty, kb: Keybound) -> None:
    """Rotating back to an earlier key would make it current and superseded at once."""
    device = activated(rp)
    first = device.sw
    assert device.authenticate().status_code == 200  # first is superseded now
    start = device.start_auth()
    request, _ = device.auth_request(start, next_key=first)
    before = snapshot(kb)
    assert (
        problem_code(device.post(p.DevicePaths.AUTHENTICATION_FINISH, request))
        == "malformed_request"
    )
    assert snapshot(kb) == before
    assert device.finish_auth(*device.auth_request(start)).status_code == 200
