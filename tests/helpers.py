"""Test drivers that speak the wire protocol directly.

``RawDevice`` is a device written from docs/protocol.md alone, with every knob exposed, so tests
can build the exact request an attacker or a broken device would send. The SDK
(``keybound.client``) is tested end to end separately.
"""

from __future__ import annotations

import json as jsonlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec
from fastapi.testclient import TestClient

from keybound import crypto
from keybound import protocol as p
from keybound.channel import SEALED_MEDIA_TYPE, ChannelPin, seal_request


class SealedReply:
    """The inner answer of a sealed response, read like an HTTP response (the channel carries
    a status and a JSON body: a problem document from 400 on)."""

    def __init__(self, status: int, body: bytes) -> None:
        self.status_code = status
        self.content = body
        self.text = body.decode("utf-8", errors="replace")
        self.headers = {
            "content-type": "application/problem+json" if status >= 400 else "application/json"
        }

    def json(self) -> Any:
        return jsonlib.loads(self.content)


class SealingClient:
    """A TestClient whose device requests go through the secure channel: a JSON body posted
    to ``/device/...`` is sealed with the pin of the application it names (``pins``, filled
    by the ``make_rp`` fixture), as an app built for that application would; the answer is
    opened (:class:`SealedReply`) unless it is an unsealed refusal (decryption_failed, the
    edge's 4xx). Everything else, and ``raw``, is the TestClient itself."""

    def __init__(self, client: TestClient, clock: Callable[[], float]) -> None:
        self.raw = client
        self.clock = clock
        self.pins: dict[str, ChannelPin] = {}

    def post(self, url: str, *, json: Any = None, **kwargs: Any) -> Any:
        if not url.startswith("/device/") or json is None or kwargs or not self.pins:
            return self.raw.post(url, json=json, **kwargs)
        return self.sealed(
            url,
            jsonlib.dumps(json).encode(),
            json.get("applicationId") if isinstance(json, dict) else None,
        )

    def sealed(self, path: str, body: bytes, application_id: str | None = None) -> Any:
        pin = self.pins.get(application_id or "") or next(iter(self.pins.values()))
        wire, opener = seal_request(pin, "POST", path, body, now=int(self.clock()))
        outer = self.raw.post(path, content=wire, headers={"content-type": SEALED_MEDIA_TYPE})
        if outer.status_code != 200 or outer.headers["content-type"] != SEALED_MEDIA_TYPE:
            return outer
        inner = opener.open(outer.content)
        return SealedReply(inner.status, inner.body)

    def request(self, method: str, url: str, **kwargs: Any) -> Any:
        if method.upper() == "POST":
            return self.post(url, **kwargs)
        return self.raw.request(method, url, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.raw, name)


class RelyingParty:
    def __init__(
        self, http: SealingClient, app_id: str, token: str, pin: ChannelPin | None = None
    ) -> None:
        self.http = http
        self.app_id = app_id
        self.headers = {"Authorization": f"Bearer {token}"}
        self.pin = pin  # the pin of the application's E2E key, for devices

    def call(self, method: str, path: str, json: Any = None, expect: int | None = None) -> Any:
        response = self.http.request(method, path, json=json, headers=self.headers)
        if expect is not None:
            assert response.status_code == expect, response.text
        return response.json()

    def new_user(self) -> str:
        return str(self.call("POST", "/rp/v1/users", {}, expect=201)["userId"])

    def activation_code(self, user_id: str | None = None) -> dict[str, Any]:
        user_id = user_id or self.new_user()
        result: dict[str, Any] = self.call(
            "POST", f"/rp/v1/users/{user_id}/activation-codes", expect=201
        )
        return result

    def operation(self, op_id: str) -> dict[str, Any]:
        result: dict[str, Any] = self.call("GET", f"/rp/v1/operations/{op_id}", expect=200)
        return result

    def device(self, device_id: str) -> dict[str, Any]:
        result: dict[str, Any] = self.call("GET", f"/rp/v1/devices/{device_id}", expect=200)
        return result

    def start_operation(self, device_id: str, **body: Any) -> dict[str, Any]:
        result: dict[str, Any] = self.call(
            "POST", f"/rp/v1/devices/{device_id}/operations", body, expect=201
        )
        return result

    def start_signature(
        self, device_id: str, content: str, mime_type: str = "text/plain", **body: Any
    ) -> dict[str, Any]:
        result: dict[str, Any] = self.call(
            "POST",
            f"/rp/v1/devices/{device_id}/signatures",
            {"dataToSign": {"content": content, "mimeType": mime_type}, **body},
            expect=201,
        )
        return result

    def jwks(self) -> dict[str, Any]:
        """The published result-signing keys: unauthenticated, as any verifier fetches them."""
        response = self.http.get("/.well-known/jwks.json")
        assert response.status_code == 200, response.text
        return response.json()  # type: ignore[no-any-return]


#: builds a finish's attestation evidence once the start's answer is known (docs/protocol.md
#: §6.5): what a device's platform would produce for this activation
Attester = Callable[
    [p.ActivationStartResponse],
    p.AndroidKeyAttestation | p.TpmAttestation | p.AppleAppAttestation | None,
]


@dataclass
class RawDevice:
    http: SealingClient
    app_id: str
    sw: ec.EllipticCurvePrivateKey = field(default_factory=crypto.generate_p256)
    hw: ec.EllipticCurvePrivateKey | None = field(default_factory=crypto.generate_p256)
    device_id: str = ""
    pin_key: bytes | None = None
    history: list[ec.EllipticCurvePrivateKey] = field(default_factory=list)
    #: the hardware key's proof over a transcript: ES256 by ``hw`` unless set (an App Attest
    #: key proves by assertions, §4.6; a TPM-resident key signs in the TPM)
    hw_prover: Callable[[bytes], bytes] | None = None
    #: the hardware key's SPKI when ``hw`` is not a software key object (a key in a TPM)
    hw_spki: bytes | None = None

    def post(self, path: str, message: p.Message | dict[str, Any]) -> Any:
        body = message.to_wire() if isinstance(message, p.Message) else message
        return self.http.post(path, json=body)

    @property
    def has_hw(self) -> bool:
        return self.hw is not None or self.hw_spki is not None

    def hw_public(self) -> bytes:
        if self.hw_spki is not None:
            return self.hw_spki
        assert self.hw is not None
        return crypto.public_der(self.hw)

    def hw_proof(self, tbs: bytes) -> bytes:
        if self.hw_prover is not None:
            return self.hw_prover(tbs)
        assert self.hw is not None
        return crypto.sign_p256(self.hw, tbs)

    # -- activation ----------------------------------------------------------------------

    def start_activation(
        self, issued: dict[str, Any], *, typed: bool = False, tpm: p.TpmAttestationKey | None = None
    ) -> p.ActivationStartResponse:
        """Start with what the relying party issued: the link's token, or (``typed``) the
        fallback code with its hint; a TPM that can attest offers ``tpm`` (§6.5.3)."""
        body = start_body(self.app_id, issued, typed=typed)
        if tpm is not None:
            body["tpm"] = tpm.to_wire()
        r = self.post(p.DevicePaths.ACTIVATION_START, body)
        assert r.status_code == 200, r.text
        start = p.ActivationStartResponse.model_validate(r.json())
        self.device_id = start.device_id
        return start

    def activation_request(
        self,
        start: p.ActivationStartResponse,
        *,
        status: p.HwKeyClientStatus | None = None,
        send_hw: bool = True,
        corrupt_hw: bool = False,
        pin_key: bytes | None = None,
        profile: p.DeviceProfile | None = None,
        attest: Attester | None = None,
    ) -> p.ActivationFinishRequest:
        hw_pub = self.hw_public() if (self.has_hw and send_hw) else None
        if status is None:
            status = p.HwKeyClientStatus.OK if hw_pub else p.HwKeyClientStatus.NOT_SUPPORTED
        tbs = p.transcript(
            p.Purpose.ACTIVATION,
            application_id=self.app_id,
            device_id=start.device_id,
            operation_id=start.operation_id,
            challenge=start.challenge,
            context_digest=p.NO_CONTEXT_HASH,
            software_public_key=crypto.public_der(self.sw),
            hardware_public_key=hw_pub or b"",
            hw_key_client_status=status.value,
        )
        hw_sig = None
        if hw_pub is not None:
            hw_sig = self.hw_proof(tbs + b"x" if corrupt_hw else tbs)
        self.pin_key = pin_key
        return p.ActivationFinishRequest(
            application_id=self.app_id,
            operation_id=start.operation_id,
            device_id=start.device_id,
            software_public_key=crypto.public_der(self.sw),
            software_signature=crypto.sign_p256(self.sw, tbs),
            hardware_public_key=hw_pub,
            hardware_signature=hw_sig,
            hw_key_client_status=status,
            pin_key=pin_key,
            device_profile=profile or p.DeviceProfile(platform=p.Platform.ANDROID, os_version="14"),
            attestation=attest(start) if attest is not None else None,
        )

    def activate(
        self,
        issued: dict[str, Any],
        *,
        typed: bool = False,
        tpm: p.TpmAttestationKey | None = None,
        **kwargs: Any,
    ) -> Any:
        start = self.start_activation(issued, typed=typed, tpm=tpm)
        return self.post(p.DevicePaths.ACTIVATION_FINISH, self.activation_request(start, **kwargs))

    # -- authentication -------------------------------------------------------------------

    def start_auth(self, operation_id: str | None = None) -> p.AuthenticationStartResponse:
        r = self.post(
            p.DevicePaths.AUTHENTICATION_START,
            p.AuthenticationStartRequest(
                application_id=self.app_id, device_id=self.device_id, operation_id=operation_id
            ),
        )
        assert r.status_code == 200, r.text
        return p.AuthenticationStartResponse.model_validate(r.json())

    def auth_request(
        self,
        start: p.AuthenticationStartResponse,
        *,
        status: p.HwKeyClientStatus = p.HwKeyClientStatus.OK,
        hw_mode: str = "sign",  # sign | omit | corrupt
        method: p.AuthMethod = p.AuthMethod.DEVICE,
        pin_key: bytes | None = None,
        signer: ec.EllipticCurvePrivateKey | None = None,
        next_key: ec.EllipticCurvePrivateKey | None = None,
        purpose: p.Purpose | None = None,
        shown: p.OperationContext | str | None = "as started",
    ) -> tuple[p.AuthenticationFinishRequest, ec.EllipticCurvePrivateKey]:
        """The finish of ``start``: by default signed as the start says (a signature
        operation's purpose and data, §4.1.1); ``purpose``/``shown`` sign something else."""
        signer = signer or self.sw
        next_key = next_key or crypto.generate_p256()
        signature = start.operation_type is p.OperationType.SIGNATURE
        if purpose is None:
            purpose = p.Purpose.SIGNATURE if signature else p.Purpose.AUTHENTICATION
        if isinstance(shown, str):
            shown = start.data_to_sign if signature else start.pre_operation_context
        tbs = p.transcript(
            purpose,
            application_id=self.app_id,
            device_id=self.device_id,
            operation_id=start.operation_id,
            challenge=start.challenge,
            context_digest=p.context_hash(shown),
            software_public_key=crypto.public_der(next_key),
            auth_method=method.value,
            hw_key_client_status=status.value,
        )
        hw_sig = None
        if self.has_hw and hw_mode != "omit":
            hw_sig = self.hw_proof(tbs if hw_mode == "sign" else tbs + b"!")
        proof = None
        if method is p.AuthMethod.DEVICE_PIN:
            key = pin_key if pin_key is not None else self.pin_key
            assert key is not None
            proof = crypto.pin_proof(key, p.pin_proof_message(tbs))
        request = p.AuthenticationFinishRequest(
            application_id=self.app_id,
            device_id=self.device_id,
            operation_id=start.operation_id,
            auth_method=method,
            software_key_id=crypto.key_id(crypto.public_der(signer)),
            next_software_public_key=crypto.public_der(next_key),
            software_signature=crypto.sign_p256(signer, tbs),
            hardware_signature=hw_sig,
            hw_key_client_status=status,
            pin_proof=proof,
        )
        return request, next_key

    def finish_auth(
        self, request: p.AuthenticationFinishRequest, next_key: ec.EllipticCurvePrivateKey
    ) -> Any:
        r = self.post(p.DevicePaths.AUTHENTICATION_FINISH, request)
        if r.status_code == 200:
            self.history.append(self.sw)
            self.sw = next_key
        return r

    def authenticate(self, operation_id: str | None = None, **kwargs: Any) -> Any:
        start = self.start_auth(operation_id)
        return self.finish_auth(*self.auth_request(start, **kwargs))


def start_body(
    application_id: str, issued: dict[str, Any], *, typed: bool = False
) -> dict[str, Any]:
    """An activation start's body (§3.1.1) from an ActivationCodeResponse: its token (as
    the activation link carries it), or the typed code and its hint."""
    if typed:
        return {
            "applicationId": application_id,
            "activationCode": issued["activationCode"],
            "activationHint": issued["activationHint"],
        }
    return {"applicationId": application_id, "activationToken": issued["activationToken"]}


def problem_code(response: Any) -> str:
    assert response.headers["content-type"].startswith("application/problem+json"), response.text
    body = response.json()
    assert body["status"] == response.status_code
    return str(body["code"])
