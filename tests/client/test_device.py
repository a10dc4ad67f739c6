"""The SDK Device end to end against the real server app (TestClient), through the secure
channel (SealedTransport, the application's pinned E2E key), including lost responses (outcome
unknown) and hardware-key faults."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from keybound.channel import ChannelPin
from keybound.client import Device, OperationDeclined, SealedTransport, Transport, preset
from keybound.client.keystores.emulated import EmulatedSecureElement
from keybound.client.transport import RawResponse
from keybound.errors import ClientError, ErrorCode
from keybound.protocol import DevicePaths, HwKeyClientStatus, OperationContext
from tests.helpers import RelyingParty


class LossyTransport(SealedTransport):
    """Delivers sealed requests but can lose the answer to the next request on a path.
    Without a pin it speaks plaintext JSON (for servers with the development switch on)."""

    def __init__(self, client: Any, pin: ChannelPin | None = None) -> None:
        if pin is None:
            Transport.__init__(self, client)
        else:
            super().__init__(pin, client)
        self.plaintext = pin is None
        self.lose: set[str] = set()
        self.paths: list[str] = []

    def exchange(self, path: str, body: bytes) -> RawResponse:
        self.paths.append(path)
        raw = (
            Transport.exchange(self, path, body) if self.plaintext else super().exchange(path, body)
        )
        if path in self.lose:
            self.lose.discard(path)
            raise ClientError("answer lost", code=ErrorCode.CLIENT_TRANSPORT)
        return raw


class DropFinish(LossyTransport):
    """Never delivers the first finish (the server does not see it): an unsent request."""

    drop = True

    def exchange(self, path: str, body: bytes) -> RawResponse:
        if self.drop and path == DevicePaths.AUTHENTICATION_FINISH:
            self.drop = False
            raise ClientError("connection refused", code=ErrorCode.CLIENT_TRANSPORT)
        return super().exchange(path, body)


@pytest.fixture
def transport(http: Any, rp: RelyingParty) -> LossyTransport:
    assert rp.pin is not None
    return LossyTransport(http.raw, rp.pin)


@pytest.fixture
def element(tmp_path: Path) -> EmulatedSecureElement:
    return EmulatedSecureElement(tmp_path / "dev" / "emulated-se")


def new_device(
    tmp_path: Path,
    rp: RelyingParty,
    transport: Transport,
    element: EmulatedSecureElement | None,
    profile: str = "android-14",
) -> Device:
    return Device.create(
        tmp_path / "dev",
        application_id=rp.app_id,
        transport=transport,
        profile=preset(profile),
        hardware=element,
    )


def unsent_finish(
    tmp_path: Path, rp: RelyingParty, transport: LossyTransport, element: EmulatedSecureElement
) -> tuple[Device, DropFinish]:
    """An activated device whose last authentication finish never reached the server: its
    newest software key is unconfirmed, the server still expects the older one."""
    new_device(tmp_path, rp, transport, element).activate(code(rp))
    dropping = DropFinish(transport._client, transport.pin)
    device = Device.load(tmp_path / "dev", transport=dropping, hardware=element)
    with pytest.raises(ClientError) as info:
        device.authenticate()
    assert info.value.code is ErrorCode.CLIENT_TRANSPORT
    return device, dropping


def code(rp: RelyingParty) -> str:
    """The activation link, as the user scans it."""
    return str(rp.activation_code()["activationLink"])


def risk(rp: RelyingParty, op_id: str) -> dict[str, Any]:
    return rp.operation(op_id)["riskData"]  # type: ignore[no-any-return]


def test_activate_and_authenticate_with_hardware(tmp_path, rp, transport, element) -> None:
    device = new_device(tmp_path, rp, transport, element)
    result = device.activate(code(rp))
    assert result.hardware_key_registered and result.hw_key_client_status is HwKeyClientStatus.OK
    assert device.has_hardware_key and device.device_id == result.device_id
    for _ in range(3):
        auth = device.authenticate()
        assert auth.hw_key_client_status is HwKeyClientStatus.OK
        assert risk(rp, auth.operation_id) == {
            "hwKeyClientStatus": "OK",
            "hwKeyServerResult": "VALID",
        }
    # reload from disk and keep going
    again = Device.load(tmp_path / "dev", transport=transport)
    assert isinstance(again.hardware, EmulatedSecureElement)
    assert again.authenticate().hw_key_client_status is HwKeyClientStatus.OK


@pytest.mark.parametrize(
    ("profile", "with_element", "status"),
    [
        ("ios-9", True, "NOT_SUPPORTED"),
        ("android-6-no-tee", True, "NOT_SUPPORTED"),
        ("linux", False, "NOT_SUPPORTED"),
    ],
)
def test_software_only(tmp_path, rp, transport, element, profile, with_element, status) -> None:
    device = new_device(tmp_path, rp, transport, element if with_element else None, profile)
    result = device.activate(code(rp))
    assert not result.hardware_key_registered
    auth = device.authenticate()
    assert risk(rp, auth.operation_id) == {
        "hwKeyClientStatus": status,
        "hwKeyServerResult": "NO_KEY_REGISTERED",
    }


def test_generation_failed(tmp_path, rp, transport, element) -> None:
    element.fail_generation = True
    device = new_device(tmp_path, rp, transport, element)
    assert device.activate(code(rp)).hw_key_client_status is HwKeyClientStatus.GENERATION_FAILED
    element.fail_generation = False
    auth = device.authenticate()
    assert auth.hw_key_client_status is HwKeyClientStatus.GENERATION_FAILED


def test_not_activated_with_hw_key(tmp_path, rp, transport, element) -> None:
    element.present = False
    device = new_device(tmp_path, rp, transport, element)
    device.activate(code(rp))
    element.present = True
    auth = device.authenticate()
    assert auth.hw_key_client_status is HwKeyClientStatus.NOT_ACTIVATED_WITH_HW_KEY
    # reactivation is the way to a hardware key
    reactivation = rp.call("POST", f"/rp/v1/devices/{device.device_id}/reactivation", expect=201)
    result = device.activate(reactivation["activationLink"])
    assert result.reactivated and result.hardware_key_registered
    assert device.authenticate().hw_key_client_status is HwKeyClientStatus.OK


def test_key_unavailable_and_signing_failed(tmp_path, make_rp, http, element) -> None:
    rp = make_rp(hwKeyValidationStrategy="RISK_PARAMS")
    transport = LossyTransport(http.raw, rp.pin)
    device = new_device(tmp_path, rp, transport, element)
    device.activate(code(rp))
    element.fail_signing = True
    auth = device.authenticate()
    assert risk(rp, auth.operation_id) == {
        "hwKeyClientStatus": "SIGNING_FAILED",
        "hwKeyServerResult": "MISSING",
    }
    element.fail_signing = False
    element.corrupt_signatures = True
    auth = device.authenticate()
    assert risk(rp, auth.operation_id)["hwKeyServerResult"] == "INVALID"
    element.corrupt_signatures = False
    element.lose_keys()
    auth = device.authenticate()
    assert risk(rp, auth.operation_id) == {
        "hwKeyClientStatus": "KEY_UNAVAILABLE",
        "hwKeyServerResult": "MISSING",
    }


def test_default_strategy_refuses_missing_hw_signature(tmp_path, rp, transport, element) -> None:
    device = new_device(tmp_path, rp, transport, element)
    device.activate(code(rp))
    state_before = (tmp_path / "dev" / "device.json").read_text()
    element.lose_keys()
    with pytest.raises(ClientError) as info:
        device.authenticate()
    assert info.value.code is ErrorCode.HARDWARE_KEY_REQUIRED
    # definite refusal: the pending key is discarded, current key unchanged
    assert json.loads((tmp_path / "dev" / "device.json").read_text()) == json.loads(state_before)


def test_pin(tmp_path, rp, transport, element) -> None:
    device = new_device(tmp_path, rp, transport, element)
    device.activate(code(rp), pin="2468")
    text = (tmp_path / "dev" / "device.json").read_text()
    assert "2468" not in text
    assert device.authenticate(pin="2468").auth_level.value == "TWO_FACTOR"
    with pytest.raises(ClientError) as info:
        device.authenticate(pin="1111")
    assert info.value.code is ErrorCode.PIN_INVALID
    assert device.authenticate(pin="2468").auth_method.value == "DEVICE:PIN"
    assert device.authenticate().auth_level.value == "ONE_FACTOR"


def test_pin_without_pin_at_activation(tmp_path, rp, transport, element) -> None:
    device = new_device(tmp_path, rp, transport, element)
    device.activate(code(rp))
    with pytest.raises(ClientError) as info:
        device.authenticate(pin="2468")
    assert info.value.code is ErrorCode.INVALID_STATE


def test_backend_initiated(tmp_path, rp, transport, element) -> None:
    device = new_device(tmp_path, rp, transport, element)
    device.activate(code(rp), pin="2468")
    pre = {"content": "Pay 10 EUR to ACME", "mimeType": "text/plain"}
    post = {"content": "receipt 42", "mimeType": "text/plain"}
    op = rp.start_operation(
        device.device_id,
        preOperationContext=pre,
        postOperationContext=post,
        requiredAuthMethod="DEVICE:PIN",
    )
    pending = device.pending()
    assert [p.operation_id for p in pending] == [op["operationId"]]
    assert pending[0].pre_operation_context == OperationContext(
        content=pre["content"], mime_type="text/plain"
    )
    seen: list[Any] = []
    with pytest.raises(ClientError) as info:
        device.authenticate(operation_id=op["operationId"])
    assert info.value.code in {ErrorCode.PIN_REQUIRED, ErrorCode.AUTH_METHOD_NOT_ALLOWED}
    with pytest.raises(OperationDeclined):
        device.authenticate(
            operation_id=op["operationId"], pin="2468", approve=lambda c: seen.append(c) or False
        )
    # declining is signed and immediate: the relying party sees it, and it is final
    declined = rp.operation(op["operationId"])
    assert (declined["state"], declined["result"]) == ("FAILED", {"failureCode": "declined"})
    assert rp.device(device.device_id)["state"] == "ACTIVE"  # not a counted failure
    with pytest.raises(ClientError) as final:
        device.authenticate(operation_id=op["operationId"], pin="2468")
    assert final.value.code is ErrorCode.AUTHENTICATION_FAILED
    op = rp.start_operation(
        device.device_id,
        preOperationContext=pre,
        postOperationContext=post,
        requiredAuthMethod="DEVICE:PIN",
    )
    result = device.authenticate(
        operation_id=op["operationId"], pin="2468", approve=lambda c: seen.append(c) or True
    )
    assert result.post_operation_context is not None
    assert result.post_operation_context.content == "receipt 42"
    assert seen and seen[0].content == pre["content"]
    assert device.pending() == []


def test_approve_takes_a_bool(tmp_path, rp, transport, element) -> None:
    """Issue 14: ``authenticate(operation_id=..., approve=True)`` raised TypeError ('bool'
    object is not callable). True approves, False declines (at the server too), anything
    else that cannot decide is the caller's error, refused before a request is sent."""
    device = new_device(tmp_path, rp, transport, element)
    device.activate(code(rp))
    pre = {"content": "Pay 10 EUR to ACME", "mimeType": "text/plain"}
    approved = rp.start_operation(device.device_id, preOperationContext=pre)["operationId"]
    result = device.authenticate(operation_id=approved, approve=True)
    assert result.operation_id == approved
    assert rp.operation(approved)["state"] == "COMPLETED"
    declined = rp.start_operation(device.device_id, preOperationContext=pre)["operationId"]
    with pytest.raises(OperationDeclined):
        device.authenticate(operation_id=declined, approve=False)
    assert rp.operation(declined)["result"] == {"failureCode": "declined"}
    sent = len(transport.paths)
    with pytest.raises(ClientError) as info:
        device.authenticate(approve="yes")  # type: ignore[arg-type]
    assert info.value.code is ErrorCode.CLIENT_CONFIGURATION
    assert len(transport.paths) == sent
    assert device.authenticate(approve=True).auth_method.value == "DEVICE"


def test_sign_shows_the_data_and_the_result_carries_its_hash(
    tmp_path, rp, transport, element
) -> None:
    """Device.sign end to end (docs/protocol.md §3.2.6): the data is in pending() and shown
    to approve; the signed result's dataHash is the hash of exactly that data."""
    import base64
    import hashlib

    from keybound.protocol import OperationType
    from keybound.server.events.results import verify_result
    from keybound.server.services.resultkeys import DEFAULT_ISSUER

    device = new_device(tmp_path, rp, transport, element)
    device.activate(code(rp))
    data = OperationContext(content="Sign contract #4711", mime_type="text/plain")
    op = rp.start_signature(device.device_id, data.content)["operationId"]
    (pending,) = device.pending()
    assert (pending.operation_type, pending.data_to_sign) == (OperationType.SIGNATURE, data)
    assert pending.pre_operation_context is None
    # authenticate() never answers a signature: an app approving logins unseen signs nothing
    with pytest.raises(ClientError) as info:
        device.authenticate(operation_id=op)
    assert info.value.code is ErrorCode.INVALID_STATE
    # nor does sign() answer an authentication
    auth = rp.start_operation(device.device_id)["operationId"]
    with pytest.raises(ClientError) as info:
        device.sign(auth, approve=lambda c: True)
    assert info.value.code is ErrorCode.INVALID_STATE
    # data other than what the app showed is refused before anything is signed
    with pytest.raises(ClientError) as info:
        device.sign(
            op,
            approve=lambda c: True,
            expected_data=OperationContext(content="Sign contract #4712", mime_type="text/plain"),
        )
    assert info.value.code is ErrorCode.INVALID_STATE
    assert rp.operation(op)["state"] == "PENDING"
    seen: list[Any] = []
    result = device.sign(op, approve=lambda c: seen.append(c) or True, expected_data=data)
    assert seen == [data] and result.signed_data == data
    token = rp.operation(op)["resultJws"]
    claims = verify_result(
        token, rp.jwks(), expected_issuer=DEFAULT_ISSUER, expected_operation_id=op
    ).claims
    encoded = b"".join(
        len(v).to_bytes(4, "big") + v for v in (b"text/plain", data.content.encode())
    )
    assert (
        claims["dataHash"]
        == base64.urlsafe_b64encode(hashlib.sha256(encoded).digest()).rstrip(b"=").decode()
    )
    assert claims["hwKeyServerResult"] == "VALID"  # the hardware key signed it too
    # a declined signature fails at once, as a declined authentication does
    op = rp.start_signature(device.device_id, "Sign contract #4713")["operationId"]
    with pytest.raises(OperationDeclined):
        device.sign(op, approve=lambda c: False)
    assert rp.operation(op)["result"] == {"failureCode": "declined"}


def test_lost_finish_answer_after_server_rotated(tmp_path, rp, transport, element) -> None:
    device = new_device(tmp_path, rp, transport, element)
    device.activate(code(rp))
    transport.lose.add(DevicePaths.AUTHENTICATION_FINISH)
    with pytest.raises(ClientError) as info:
        device.authenticate()
    assert info.value.code is ErrorCode.CLIENT_TRANSPORT
    state = json.loads((tmp_path / "dev" / "device.json").read_text())
    assert len(state["registrations"][0]["software_keys"]) == 2
    transport.paths.clear()
    device.authenticate()  # the uncertain key is current on the server: one attempt
    assert transport.paths.count(DevicePaths.AUTHENTICATION_START) == 1
    state = json.loads((tmp_path / "dev" / "device.json").read_text())
    assert len(state["registrations"][0]["software_keys"]) == 1
    assert rp.device(device.device_id)["state"] == "ACTIVE"


def test_lost_finish_answer_before_server_rotated(tmp_path, rp, transport, element) -> None:
    """A 5xx-like unknown outcome where the server did NOT rotate: the device tries the
    uncertain key, gets authentication_failed, and retries with the old key."""
    device, dropping = unsent_finish(tmp_path, rp, transport, element)
    dropping.paths.clear()
    result = device.authenticate()
    assert dropping.paths.count(DevicePaths.AUTHENTICATION_START) == 2
    assert risk(rp, result.operation_id)["hwKeyServerResult"] == "VALID"
    assert rp.device(device.device_id)["state"] == "ACTIVE"
    state = json.loads((tmp_path / "dev" / "device.json").read_text())
    assert len(state["registrations"][0]["software_keys"]) == 1
    device.authenticate()


def test_two_lost_answers_in_a_row(tmp_path, rp, transport, element) -> None:
    device = new_device(tmp_path, rp, transport, element)
    device.activate(code(rp))
    for _ in range(2):
        transport.lose.add(DevicePaths.AUTHENTICATION_FINISH)
        with pytest.raises(ClientError):
            device.authenticate()
    device.authenticate()
    device.authenticate()
    assert rp.device(device.device_id)["state"] == "ACTIVE"


def test_lost_activation_answer(tmp_path, rp, transport, element) -> None:
    device = new_device(tmp_path, rp, transport, element)
    transport.lose.add(DevicePaths.ACTIVATION_FINISH)
    with pytest.raises(ClientError):
        device.activate(code(rp))
    assert device.activated  # maybe: the keys are kept
    device.authenticate()


def test_lost_reactivation_answer(tmp_path, rp, transport, element) -> None:
    device = new_device(tmp_path, rp, transport, element)
    device.activate(code(rp))
    old_handle_dir = list((element.directory / "keys").iterdir())
    reactivation = rp.call("POST", f"/rp/v1/devices/{device.device_id}/reactivation", expect=201)
    transport.lose.add(DevicePaths.ACTIVATION_FINISH)
    with pytest.raises(ClientError):
        device.activate(reactivation["activationCode"], hint=reactivation["activationHint"])
    assert len(list((element.directory / "keys").iterdir())) == 2
    assert device.authenticate().hw_key_client_status is HwKeyClientStatus.OK
    # the old registration's hardware key is deleted after the new one is confirmed
    assert len(list((element.directory / "keys").iterdir())) == 1
    assert list((element.directory / "keys").iterdir()) != old_handle_dir
    assert rp.device(device.device_id)["state"] == "ACTIVE"


def test_refused_activation_keeps_nothing(tmp_path, rp, transport, element) -> None:
    device = new_device(tmp_path, rp, transport, element)
    with pytest.raises(ClientError) as info:
        device.activate("7KQ2MX-00000000")
    assert info.value.code is ErrorCode.ACTIVATION_CODE_INVALID
    assert not device.activated


@pytest.mark.parametrize("form", ["link", "token", "typed", "typed with a space", "hint="])
def test_every_form_the_user_holds_activates(tmp_path, rp, transport, element, form: str) -> None:
    issued = rp.activation_code()
    device = new_device(tmp_path, rp, transport, element)
    typed_hint = issued["activationHint"].lower()
    given = {
        "link": (issued["activationLink"], None),
        "token": (issued["activationToken"], None),
        "typed": (f"{typed_hint}-{issued['activationCode']}", None),
        "typed with a space": (f" {typed_hint} {issued['activationCode']} ", None),
        "hint=": (issued["activationCode"], typed_hint),
    }[form]
    assert device.activate(given[0], hint=given[1]).device_id == issued["deviceId"]


@pytest.mark.parametrize(
    ("given", "code"),
    [
        ("483920", ErrorCode.MALFORMED_REQUEST),  # a typed code without its hint
        ("keybound://activate?app=x&token=short", ErrorCode.MALFORMED_REQUEST),
        (
            "keybound://activate?app=another&token=q1XTxZ4ONHPOwYJnFXHYv1mlRl8cU9mF2Ysv7aaVe0U",
            ErrorCode.CLIENT_CONFIGURATION,
        ),
    ],
)
def test_what_cannot_be_an_activation_is_refused_before_sending(
    tmp_path, rp, transport, element, given: str, code: ErrorCode
) -> None:
    device = new_device(tmp_path, rp, transport, element)
    with pytest.raises(ClientError) as info:
        device.activate(given)
    assert info.value.code is code
    assert not device.activated and transport.paths == []


def test_new_code_on_activated_device_is_refused(tmp_path, rp, transport, element) -> None:
    device = new_device(tmp_path, rp, transport, element)
    device.activate(code(rp))
    with pytest.raises(ClientError) as info:
        device.activate(code(rp))
    assert info.value.code is ErrorCode.INVALID_STATE
    device.authenticate()


def test_deactivate(tmp_path, rp, transport, element) -> None:
    device = new_device(tmp_path, rp, transport, element)
    device.activate(code(rp))
    device_id = device.device_id
    device.authenticate()
    device.deactivate()
    assert not device.activated
    assert rp.device(device_id)["state"] == "DEACTIVATED"
    assert list((element.directory / "keys").iterdir()) == []
    assert "PRIVATE KEY" not in (tmp_path / "dev" / "device.json").read_text()


def test_deactivate_after_lost_answer(tmp_path, rp, transport, element) -> None:
    device = new_device(tmp_path, rp, transport, element)
    device.activate(code(rp))
    transport.lose.add(DevicePaths.AUTHENTICATION_FINISH)
    with pytest.raises(ClientError):
        device.authenticate()
    device_id = device.device_id
    device.deactivate()
    assert rp.device(device_id)["state"] == "DEACTIVATED"


def test_locked_device_problem_code(tmp_path, rp, transport, element) -> None:
    device = new_device(tmp_path, rp, transport, element)
    device.activate(code(rp))
    rp.call("POST", f"/rp/v1/devices/{device.device_id}/lock", expect=200)
    with pytest.raises(ClientError) as info:
        device.authenticate()
    assert info.value.code is ErrorCode.DEVICE_LOCKED


def test_backend_initiated_after_unsent_finish(tmp_path, rp, transport, element) -> None:
    device, dropping = unsent_finish(tmp_path, rp, transport, element)
    op = rp.start_operation(device.device_id)
    asked: list[Any] = []
    dropping.paths.clear()
    result = device.authenticate(
        operation_id=op["operationId"], approve=lambda c: asked.append(c) or True
    )
    assert result.operation_id == op["operationId"]
    assert dropping.paths.count(DevicePaths.AUTHENTICATION_START) == 2  # newest key refused
    assert len(asked) == 1  # ... yet the user was asked once
    assert rp.operation(op["operationId"])["state"] == "COMPLETED"


def test_decline_after_unsent_finish_asks_once(tmp_path, rp, transport, element) -> None:
    """The newest key is unconfirmed (the server never saw the finish): the decline signed
    with it is refused, the older key declines, and the user was asked once."""
    device, dropping = unsent_finish(tmp_path, rp, transport, element)
    op = rp.start_operation(device.device_id)
    asked: list[Any] = []
    dropping.paths.clear()
    with pytest.raises(OperationDeclined):
        device.authenticate(
            operation_id=op["operationId"], approve=lambda c: asked.append(c) or False
        )
    assert len(asked) == 1
    assert dropping.paths.count(DevicePaths.AUTHENTICATION_DECLINE) == 2
    assert dropping.paths.count(DevicePaths.AUTHENTICATION_FINISH) == 0
    declined = rp.operation(op["operationId"])
    assert (declined["state"], declined["result"]) == ("FAILED", {"failureCode": "declined"})
    assert rp.device(device.device_id)["state"] == "ACTIVE"
    device.authenticate()  # the older key is still good


def test_decline_that_cannot_be_sent_is_still_a_decline(tmp_path, rp, transport, element) -> None:
    device = new_device(tmp_path, rp, transport, element)
    device.activate(code(rp))
    op = rp.start_operation(device.device_id)
    asked: list[Any] = []
    transport.lose.add(DevicePaths.AUTHENTICATION_DECLINE)
    transport.paths.clear()
    with pytest.raises(OperationDeclined) as info:
        device.authenticate(
            operation_id=op["operationId"], approve=lambda c: asked.append(c) or False
        )
    assert isinstance(info.value.__cause__, ClientError)
    assert info.value.__cause__.code is ErrorCode.CLIENT_TRANSPORT
    assert len(asked) == 1
    assert DevicePaths.AUTHENTICATION_FINISH not in transport.paths


def _push_token(kb: Any, device_id: str) -> tuple[str, str] | None:
    from sqlalchemy import select

    from keybound.storage import tables as t

    with kb.db.read() as conn:
        row = conn.execute(
            select(t.push_tokens.c.provider, t.push_tokens.c.token).where(
                t.push_tokens.c.device_id == device_id
            )
        ).first()
    return None if row is None else (row.provider, row.token)


def test_push_token_at_activation_then_updated_and_removed(
    tmp_path, rp, transport, element, kb
) -> None:
    from keybound.protocol import PushProvider, PushToken

    device = new_device(tmp_path, rp, transport, element)
    device.activate(
        code(rp), push_token=PushToken(provider=PushProvider.FCM, token="first:" + "a" * 40)
    )
    assert _push_token(kb, device.device_id) == ("fcm", "first:" + "a" * 40)
    device.authenticate()  # the key rotates; the next update signs with the new one
    device.update_push_token(PushToken(provider=PushProvider.FCM, token="second:" + "b" * 40))
    assert _push_token(kb, device.device_id) == ("fcm", "second:" + "b" * 40)
    device.update_push_token(None)
    assert _push_token(kb, device.device_id) is None


def test_push_token_update_after_a_lost_answer_uses_the_key_the_server_knows(
    tmp_path, rp, transport, element, kb
) -> None:
    from keybound.protocol import PushProvider, PushToken

    device, _dropping = unsent_finish(tmp_path, rp, transport, element)
    device.update_push_token(PushToken(provider=PushProvider.APNS, token="c3" * 32))
    assert _push_token(kb, device.device_id) == ("apns", "c3" * 32)
    with pytest.raises(ClientError) as info:
        device.update_push_token(PushToken(provider=PushProvider.APNS, token="not-hex"))
    assert info.value.code is ErrorCode.MALFORMED_REQUEST
