"""The device API: a small ASGI app of its own, with one dispatcher for every device route.

A device request enters here (``app.create_app`` routes ``/device/`` to :class:`DeviceApp`)
and goes through exactly one path: codec -> dispatcher -> handler -> service in its unit of
work -> codec. The codec is chosen by the body's media type:

- :class:`SealedCodec` (``application/keybound-sealed``, docs/channel.md): the request is
  opened with the E2E key it names, which also names the application (§3.4); its request id
  becomes the unit's replay mark (§6); the answer, success or problem, is sealed to the
  request and sent as an outer 200 (§4.4). A request that cannot be opened, or a replay, gets
  the one unsealed ``decryption_failed`` problem.
- :class:`PlaintextCodec` (``application/json``): only with the development switch
  ``allow_plaintext``; otherwise ``secure_channel_required``.

Sealed requests never enter FastAPI's stack: it costs more than the channel's AEAD, and a
sealed request uses none of it.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final, Protocol

from pydantic import ValidationError

from keybound.channel import (
    SEALED_MEDIA_TYPE,
    DecryptionFailed,
    OpenedRequest,
    open_request,
    request_key_id,
    seal_response,
)
from keybound.errors import ErrorCode, KeyboundError
from keybound.protocol import (
    MAX_BODY_BYTES,
    ActivationFinishRequest,
    ActivationFinishResponse,
    ActivationStartRequest,
    ActivationStartResponse,
    AuthenticationFinishRequest,
    AuthenticationFinishResponse,
    AuthenticationStartRequest,
    AuthenticationStartResponse,
    DeactivateRequest,
    DeactivateResponse,
    DeclineRequest,
    DeclineResponse,
    DevicePaths,
    Message,
    PendingOperationsRequest,
    PendingOperationsResponse,
    PushTokenRequest,
    PushTokenResponse,
)
from keybound.server.events.model import Actor, EventType
from keybound.server.services import Keybound
from keybound.server.unit import Replayed, ReplayMark, Unit, perform
from keybound.server.web.asgi import Scope, blocking, content_type, read_body, respond, route_path
from keybound.server.web.problems import PROBLEM_JSON, invalid_params, problem_body, refusal

log = logging.getLogger("keybound.server")

SEALED: Final = SEALED_MEDIA_TYPE.encode("ascii")
JSON: Final = b"application/json"
#: The one answer to every request that cannot be opened (docs/channel.md §4.4, §5): no
#: cause, no request id, byte-identical every time.
DECRYPTION_FAILED_DETAIL: Final = "the sealed request could not be opened"


@dataclass(frozen=True, kw_only=True)
class DeviceRoute:
    """One device endpoint: its action (the audit event), messages and the service call."""

    action: EventType
    request: type[Message]
    response: type[Message]
    call: Callable[[Keybound, Unit, Any], Message]


#: The device API, once: the dispatcher and the OpenAPI document (web.openapi) read it.
DEVICE_ROUTES: Final[dict[str, DeviceRoute]] = {
    DevicePaths.ACTIVATION_START: DeviceRoute(
        action=EventType.ACTIVATION_START,
        request=ActivationStartRequest,
        response=ActivationStartResponse,
        call=lambda kb, u, r: kb.activation.start(u, r),
    ),
    DevicePaths.ACTIVATION_FINISH: DeviceRoute(
        action=EventType.ACTIVATION_FINISH,
        request=ActivationFinishRequest,
        response=ActivationFinishResponse,
        call=lambda kb, u, r: kb.activation.finish(u, r),
    ),
    DevicePaths.AUTHENTICATION_START: DeviceRoute(
        action=EventType.AUTHENTICATION_START,
        request=AuthenticationStartRequest,
        response=AuthenticationStartResponse,
        call=lambda kb, u, r: kb.authentication.start(u, r),
    ),
    DevicePaths.AUTHENTICATION_FINISH: DeviceRoute(
        action=EventType.AUTHENTICATION_FINISH,
        request=AuthenticationFinishRequest,
        response=AuthenticationFinishResponse,
        call=lambda kb, u, r: kb.authentication.finish(u, r),
    ),
    DevicePaths.AUTHENTICATION_DECLINE: DeviceRoute(
        action=EventType.AUTHENTICATION_DECLINE,
        request=DeclineRequest,
        response=DeclineResponse,
        call=lambda kb, u, r: kb.authentication.decline(u, r),
    ),
    DevicePaths.PENDING_OPERATIONS: DeviceRoute(
        action=EventType.AUTHENTICATION_PENDING,
        request=PendingOperationsRequest,
        response=PendingOperationsResponse,
        call=lambda kb, u, r: kb.authentication.pending(u, r),
    ),
    DevicePaths.DEACTIVATE: DeviceRoute(
        action=EventType.DEVICE_DEACTIVATE,
        request=DeactivateRequest,
        response=DeactivateResponse,
        call=lambda kb, u, r: kb.registrations.device_deactivate(u, r),
    ),
    DevicePaths.PUSH_TOKEN: DeviceRoute(
        action=EventType.PUSH_TOKEN_UPDATE,
        request=PushTokenRequest,
        response=PushTokenResponse,
        call=lambda kb, u, r: kb.registrations.update_push_token(u, r),
    ),
}


# --------------------------------------------------------------------------- codecs


@dataclass(frozen=True, kw_only=True)
class Decoded:
    """A request the codec could read: its inner JSON body and what it is bound to."""

    body: bytes
    application_id: str | None  # sealed: the application of the E2E key (§3.4)
    mark: ReplayMark | None
    opened: OpenedRequest | None = None


class Codec(Protocol):
    def decode(self, kb: Keybound, wire: bytes, path: str) -> Decoded:
        """The inner request, or DecryptionFailed."""
        ...

    def encode(
        self, decoded: Decoded, status: int, body: bytes
    ) -> tuple[int, bytes, list[tuple[bytes, bytes]]]:
        """(outer status, outer body, headers) for the inner answer."""
        ...


class SealedCodec:
    """docs/channel.md: HPKE-sealed requests, AEAD-sealed answers (an outer 200)."""

    def decode(self, kb: Keybound, wire: bytes, path: str) -> Decoded:
        found = kb.e2e_keys.keyring.lookup(request_key_id(wire))  # §3.4
        if found is None:
            raise DecryptionFailed()
        application_id, key = found
        opened = open_request(
            {key.key_id: key}, application_id, "POST", path, wire, now=int(kb.clock())
        )
        return Decoded(
            body=opened.body,
            application_id=application_id,
            opened=opened,
            mark=ReplayMark(
                request_id=opened.request_id, expires_at=opened.replay_expires_at * 1000
            ),
        )

    def encode(
        self, decoded: Decoded, status: int, body: bytes
    ) -> tuple[int, bytes, list[tuple[bytes, bytes]]]:
        assert decoded.opened is not None
        return (
            200,
            seal_response(decoded.opened, status, body),
            [(b"content-type", SEALED), (b"cache-control", b"no-store")],
        )


class PlaintextCodec:
    """The development switch: the inner JSON on the wire, unprotected."""

    def decode(self, kb: Keybound, wire: bytes, path: str) -> Decoded:
        return Decoded(body=wire, application_id=None, mark=None)

    def encode(
        self, decoded: Decoded, status: int, body: bytes
    ) -> tuple[int, bytes, list[tuple[bytes, bytes]]]:
        ctype = JSON if status < 400 else PROBLEM_JSON.encode()
        return status, body, [(b"content-type", ctype), (b"cache-control", b"no-store")]


# --------------------------------------------------------------------------- the app


class DeviceApp:
    """Pure ASGI: every request under ``/device/``."""

    def __init__(self, kb: Keybound, *, allow_plaintext: bool = False) -> None:
        self.kb = kb
        self.codecs: dict[bytes, Codec] = {SEALED: SealedCodec()}
        if allow_plaintext:
            self.codecs[JSON] = PlaintextCodec()

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        path = route_path(scope)
        route = DEVICE_ROUTES.get(path)
        if route is None:
            await self._refuse(
                send, "device unrouted", ErrorCode.NOT_FOUND, f"no device endpoint {path}"
            )
        elif scope["method"] != "POST":
            await self._refuse(
                send,
                f"device {route.action.value}",
                ErrorCode.METHOD_NOT_ALLOWED,
                "device endpoints take POST",
                headers={"allow": "POST"},
            )
        elif (codec := self.codecs.get(content_type(scope))) is not None:
            wire = await read_body(receive)
            status, body, headers = await blocking(
                self.kb.db, functools.partial(self.handle, codec, wire, path, route)
            )
            await respond(send, status, body, headers)
        elif content_type(scope) == JSON:
            await self._refuse(
                send,
                f"device {route.action.value}",
                ErrorCode.SECURE_CHANNEL_REQUIRED,
                f"device requests must be sealed ({SEALED_MEDIA_TYPE}); see docs/channel.md",
            )
        else:
            await self._refuse(
                send,
                f"device {route.action.value}",
                ErrorCode.UNSUPPORTED_MEDIA_TYPE,
                f"device requests must be {SEALED_MEDIA_TYPE}",
            )

    async def _refuse(
        self,
        send: Any,
        cause: str,
        code: ErrorCode,
        detail: str,
        *,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.kb.noise.count(f"{cause}:{code.value}", int(self.kb.clock() * 1000))
        status, body = problem_body(code, detail)
        extra = [(k.encode(), v.encode()) for k, v in (headers or {}).items()]
        await respond(send, status, body, [(b"content-type", PROBLEM_JSON.encode()), *extra])

    def handle(
        self, codec: Codec, wire: bytes, path: str, route: DeviceRoute
    ) -> tuple[int, bytes, list[tuple[bytes, bytes]]]:
        """Decode, dispatch, encode: one request, off the event loop when the database is
        networked (asgi.blocking)."""
        cause = f"device {route.action.value}"
        try:
            decoded = codec.decode(self.kb, wire, path)
        except DecryptionFailed:
            self.kb.noise.count(
                f"{cause}:{ErrorCode.DECRYPTION_FAILED.value}", int(self.kb.clock() * 1000)
            )
            return _decryption_failed()
        try:
            status, body = self.dispatch(route, decoded, cause)
        except Replayed:  # counted as noise by perform
            return _decryption_failed()
        finally:
            self.kb.maintenance.poke()
        return codec.encode(decoded, status, body)

    def dispatch(self, route: DeviceRoute, decoded: Decoded, cause: str) -> tuple[int, bytes]:
        """The inner request: parsed, bound to its application, handled by its service in a
        unit of work (server.unit.perform); the inner status and JSON body."""
        now = int(self.kb.clock() * 1000)
        if len(decoded.body) > MAX_BODY_BYTES:
            self.kb.noise.count(f"{cause}:{ErrorCode.PAYLOAD_TOO_LARGE.value}", now)
            return problem_body(ErrorCode.PAYLOAD_TOO_LARGE, f"body exceeds {MAX_BODY_BYTES} bytes")
        try:
            request = route.request.model_validate_json(decoded.body)
        except ValidationError as exc:
            self.kb.noise.count(f"{cause}:{ErrorCode.MALFORMED_REQUEST.value}", now)
            return problem_body(
                ErrorCode.MALFORMED_REQUEST,
                "request does not match the schema",
                invalidParams=invalid_params(exc.errors()),
            )
        application_id = getattr(request, "application_id", None)
        if decoded.application_id is not None and application_id != decoded.application_id:
            # a pin for one application can never act on another
            self.kb.noise.count(f"{cause}:{ErrorCode.MALFORMED_REQUEST.value}", now)
            return problem_body(
                ErrorCode.MALFORMED_REQUEST,
                "applicationId must be the application of the E2E key the request is sealed to",
            )
        unit = Unit(
            self.kb.db,
            self.kb.clock,
            actor=Actor.DEVICE,
            action=route.action,
            mark=decoded.mark,
            application_id=application_id,
        )
        try:
            response = perform(
                unit, lambda u: route.call(self.kb, u, request), noise=self.kb.noise, cause=cause
            )
        except Replayed:
            raise
        except KeyboundError as exc:
            return refusal(exc)
        return 200, response.model_dump_json(by_alias=True, exclude_none=True).encode()


def _decryption_failed() -> tuple[int, bytes, list[tuple[bytes, bytes]]]:
    status, body = problem_body(ErrorCode.DECRYPTION_FAILED, DECRYPTION_FAILED_DETAIL)
    return status, body, [(b"content-type", PROBLEM_JSON.encode())]
