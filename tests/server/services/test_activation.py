"""Activation and reactivation through the real HTTP app on a real SQLite database."""

from __future__ import annotations

from typing import Any

import pytest

from keybound import crypto
from keybound import protocol as p
from keybound.server.secrets import Purpose
from keybound.server.services import Keybound
from tests.helpers import RawDevice, RelyingParty, problem_code
from tests.server.services.test_authentication import activated, snapshot

C = p.HwKeyClientStatus


def test_activation_registers_both_keys(rp: RelyingParty) -> None:
    code = rp.activation_code()
    device = RawDevice(rp.http, rp.app_id)
    response = device.activate(code["activationCode"])
    assert response.status_code == 200
    assert response.json() == {"deviceId": code["deviceId"], "hardwareKeyRegistered": True,
                               "authMethods": ["DEVICE"]}
    info = rp.device(code["deviceId"])
    assert (info["state"], info["hardwareKey"], info["hardwareKeyAlgorithm"]) == \
        ("ACTIVE", True, "ES256")
    op = rp.operation(code["operationId"])
    assert op["state"] == "COMPLETED"
    assert op["riskData"] == {"hwKeyClientStatus": "OK", "hwKeyServerResult": "VALID"}


def test_activation_code_is_single_use(rp: RelyingParty, kb: Keybound) -> None:
    code = rp.activation_code()["activationCode"]
    RawDevice(rp.http, rp.app_id).start_activation(code)
    before = snapshot(kb)
    again = rp.http.post(p.DevicePaths.ACTIVATION_START,
                         json={"applicationId": rp.app_id, "activationCode": code})
    assert problem_code(again) == "activation_code_invalid"
    assert snapshot(kb) == before


def test_activation_code_expires(make_rp: Any, clock: Any) -> None:
    rp = make_rp(activationCodeLifetimeSeconds=60)
    code = rp.activation_code()["activationCode"]
    clock.advance(61)
    response = rp.http.post(p.DevicePaths.ACTIVATION_START,
                            json={"applicationId": rp.app_id, "activationCode": code})
    assert problem_code(response) == "activation_code_invalid"


def test_activation_code_of_another_application_is_invalid(make_rp: Any) -> None:
    a, b = make_rp(), make_rp()
    code = a.activation_code()["activationCode"]
    response = b.http.post(p.DevicePaths.ACTIVATION_START,
                           json={"applicationId": b.app_id, "activationCode": code})
    assert problem_code(response) == "activation_code_invalid"


@pytest.mark.parametrize(("kind", "pattern"), [("NUMERIC", "0123456789"),
                                               ("ALPHA", "ABCDEFGHIJKLMNOPQRSTUVWXYZ"),
                                               ("ALPHANUMERIC",
                                                "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ")])
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
    start = device.start_activation(code["activationCode"])
    assert start.hardware_key_required is True
    response = device.post(p.DevicePaths.ACTIVATION_FINISH, device.activation_request(start))
    assert problem_code(response) == "hardware_key_required"
    assert rp.operation(code["operationId"])["state"] == "FAILED"
    assert rp.call("GET", f"/rp/v1/devices/{code['deviceId']}")["code"] == "not_found"


@pytest.mark.parametrize(("strategy", "ok"), [("SUPPORTED", False), ("REQUIRED", False),
                                              ("RISK_PARAMS", True)])
def test_invalid_hardware_proof_at_activation(make_rp: Any, strategy: str, ok: bool) -> None:
    rp = make_rp(hwKeyValidationStrategy=strategy)
    code = rp.activation_code()
    response = RawDevice(rp.http, rp.app_id).activate(code["activationCode"], corrupt_hw=True)
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


def test_wrong_software_proof_at_activation_changes_nothing(rp: RelyingParty,
                                                            kb: Keybound) -> None:
    device = RawDevice(rp.http, rp.app_id)
    start = device.start_activation(rp.activation_code()["activationCode"])
    request = device.activation_request(start)
    bad = request.model_copy(update={"software_signature": crypto.sign_p256(device.sw, b"x")})
    before = snapshot(kb)
    assert problem_code(device.post(p.DevicePaths.ACTIVATION_FINISH, bad)) == \
        "authentication_failed"
    assert snapshot(kb) == before
    assert device.post(p.DevicePaths.ACTIVATION_FINISH, request).status_code == 200


def test_non_p256_key_is_refused(rp: RelyingParty) -> None:
    from cryptography.hazmat.primitives.asymmetric import ec

    device = RawDevice(rp.http, rp.app_id)
    start = device.start_activation(rp.activation_code()["activationCode"])
    request = device.activation_request(start)
    p384 = crypto.public_der(ec.generate_private_key(ec.SECP384R1()))
    response = device.post(p.DevicePaths.ACTIVATION_FINISH,
                           request.model_copy(update={"software_public_key": p384}))
    assert problem_code(response) == "unsupported_algorithm"


def test_reactivation_invalidates_old_keys(rp: RelyingParty) -> None:
    device = activated(rp, hardware=False)
    old_sw, device_id = device.sw, device.device_id
    assert device.authenticate(status=C.NOT_SUPPORTED).status_code == 200
    superseded = device.history[-1]
    code = rp.call("POST", f"/rp/v1/devices/{device_id}/reactivation", expect=201)
    assert code["deviceId"] == device_id
    new = RawDevice(rp.http, rp.app_id)  # now with a hardware key
    assert new.activate(code["activationCode"]).status_code == 200
    assert new.device_id == device_id
    assert rp.device(device_id)["hardwareKey"] is True
    # the old current key and the old superseded key are simply unknown now
    for key in (device.sw, superseded, old_sw):
        stale = RawDevice(rp.http, rp.app_id, sw=key, hw=None, device_id=device_id)
        assert problem_code(stale.authenticate(status=C.NOT_SUPPORTED)) == \
            "authentication_failed"
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
    response = rp.http.post(f"/rp/v1/devices/{device.device_id}/reactivation",
                            headers=rp.headers)
    assert problem_code(response) == "invalid_state"


def test_device_deactivates_itself(rp: RelyingParty) -> None:
    device = activated(rp)
    tbs = p.transcript(p.Purpose.DEACTIVATION, application_id=rp.app_id,
                       device_id=device.device_id, operation_id="", challenge=b"",
                       context_digest=p.NO_CONTEXT_HASH,
                       software_public_key=crypto.public_der(device.sw))
    request = p.DeactivateRequest(application_id=rp.app_id, device_id=device.device_id,
                                  software_key_id=crypto.key_id(crypto.public_der(device.sw)),
                                  software_signature=crypto.sign_p256(device.sw, tbs))
    forged = request.model_copy(update={"software_signature": crypto.sign_p256(
        crypto.generate_p256(), tbs)})
    assert problem_code(device.post(p.DevicePaths.DEACTIVATE, forged)) == "authentication_failed"
    assert rp.device(device.device_id)["state"] == "ACTIVE"
    response = device.post(p.DevicePaths.DEACTIVATE, request)
    assert response.json() == {"deviceId": device.device_id, "state": "DEACTIVATED"}
    assert rp.device(device.device_id)["state"] == "DEACTIVATED"
    start = device.start_auth()  # decoy now
    assert problem_code(device.finish_auth(*device.auth_request(start))) == \
        "authentication_failed"


def test_pin_only_application_needs_a_pin_at_activation(make_rp: Any) -> None:
    rp = make_rp(allowedAuthMethods=["DEVICE:PIN"])
    refused = RawDevice(rp.http, rp.app_id).activate(rp.activation_code()["activationCode"])
    assert problem_code(refused) == "pin_required"
    ok = RawDevice(rp.http, rp.app_id).activate(rp.activation_code()["activationCode"],
                                                pin_key=bytes(32))
    assert ok.json()["authMethods"] == ["DEVICE:PIN"]


def test_pin_is_not_registered_where_the_application_does_not_allow_it(make_rp: Any) -> None:
    rp = make_rp(allowedAuthMethods=["DEVICE"])
    device = RawDevice(rp.http, rp.app_id)
    response = device.activate(rp.activation_code()["activationCode"], pin_key=bytes(32))
    assert response.json()["authMethods"] == ["DEVICE"]
    assert rp.device(device.device_id)["pinEnabled"] is False


def test_pin_key_is_stored_only_wrapped(rp: RelyingParty, kb: Keybound) -> None:
    from sqlalchemy import select

    from keybound.errors import ErrorCode, KeyboundError
    from keybound.storage import tables as t

    pin_key = bytes(range(100, 132))
    device = RawDevice(rp.http, rp.app_id)
    assert device.activate(rp.activation_code()["activationCode"],
                           pin_key=pin_key).status_code == 200
    other = RawDevice(rp.http, rp.app_id)
    assert other.activate(rp.activation_code()["activationCode"],
                          pin_key=pin_key).status_code == 200
    with kb.db.read() as conn:
        rows = dict(conn.execute(select(t.registrations.c.id, t.registrations.c.pin_key)).all())
    with kb.db.read() as conn:  # the raw PIN key is in no column of any table
        for table in t.metadata.tables.values():
            for row in conn.execute(select(table)):
                assert not any(isinstance(v, bytes) and pin_key in v for v in row), table.name
    assert rows[device.device_id] != rows[other.device_id]  # fresh nonce per wrap
    assert kb.box.unwrap(Purpose.PIN_KEY, rows[device.device_id],
                         binding=device.device_id.encode()) == pin_key
    with pytest.raises(KeyboundError) as moved:  # a wrapped key is bound to its registration
        kb.box.unwrap(Purpose.PIN_KEY, rows[device.device_id],
                      binding=other.device_id.encode())
    assert moved.value.code is ErrorCode.INTERNAL



def test_a_pin_key_that_does_not_open_is_a_server_fault_without_detail(
        rp: RelyingParty, kb: Keybound) -> None:
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
