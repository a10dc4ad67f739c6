"""The ASGI application: routes, thin handlers, and the one table mapping error codes to HTTP
status (RFC 9457 problem+json). Handlers parse, call a domain service, serialise."""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Callable, MutableMapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, TypeVar

import anyio.to_thread
from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from keybound import __version__
from keybound.channel import (
    SEALED_MEDIA_TYPE,
    DecryptionFailed,
    OpenedRequest,
    open_request,
    request_key_id,
    seal_response,
)
from keybound.errors import ErrorCode, KeyboundError, Unauthorized
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
)
from keybound.rpapi import (
    ActivationCodeResponse,
    CreateOperationRequest,
    CreateUserRequest,
    Device,
    DeviceList,
    Operation,
    User,
)
from keybound.server import audit
from keybound.server.durable import GroupCommit
from keybound.server.service import Keybound

log = logging.getLogger("keybound.server")
T = TypeVar("T")

#: The one table from error code to HTTP status (docs/protocol.md §8).
STATUS: dict[ErrorCode, int] = {
    ErrorCode.MALFORMED_REQUEST: 400,
    ErrorCode.CONFIGURATION_INVALID: 400,
    ErrorCode.UNSUPPORTED_ALGORITHM: 400,
    ErrorCode.PIN_REQUIRED: 400,
    ErrorCode.UNAUTHORIZED: 401,
    ErrorCode.AUTHENTICATION_FAILED: 401,
    ErrorCode.ACTIVATION_CODE_INVALID: 401,
    ErrorCode.PIN_INVALID: 403,
    ErrorCode.HARDWARE_KEY_REQUIRED: 403,
    ErrorCode.HARDWARE_KEY_INVALID: 403,
    ErrorCode.AUTH_METHOD_NOT_ALLOWED: 403,
    ErrorCode.DEVICE_LOCKED: 403,
    ErrorCode.DEVICE_INACTIVE: 403,
    ErrorCode.SOFTWARE_KEY_CLONED: 403,
    ErrorCode.NOT_FOUND: 404,
    ErrorCode.METHOD_NOT_ALLOWED: 405,
    ErrorCode.REQUEST_TIMEOUT: 408,
    ErrorCode.CHALLENGE_USED: 409,
    ErrorCode.CHALLENGE_EXPIRED: 409,
    ErrorCode.INVALID_STATE: 409,
    ErrorCode.CONFLICT: 409,
    ErrorCode.PAYLOAD_TOO_LARGE: 413,
    ErrorCode.UNSUPPORTED_MEDIA_TYPE: 415,
    ErrorCode.REQUEST_HEADER_FIELDS_TOO_LARGE: 431,
    ErrorCode.SERVICE_UNAVAILABLE: 503,
    ErrorCode.DECRYPTION_FAILED: 400,
    ErrorCode.SECURE_CHANNEL_REQUIRED: 415,
}

PROBLEM_JSON = "application/problem+json"


def problem(code: ErrorCode, detail: str, **extra: Any) -> Response:
    status, body = problem_body(code, detail, **extra)
    headers = {"WWW-Authenticate": "Bearer"} if code is ErrorCode.UNAUTHORIZED else None
    return Response(body, status_code=status, media_type=PROBLEM_JSON, headers=headers)


#: Room for the secure channel's framing around a device request (docs/channel.md §3.1:
#: 132 bytes for the X25519 suites, 1220 for the hybrid suite, plus a long key id).
SEALED_OVERHEAD_BYTES = 4096


def _content_type(scope: MutableMapping[str, Any]) -> bytes:
    for name, value in scope["headers"]:
        if name == b"content-type":
            ctype: bytes = value.split(b";")[0].strip().lower()
            return ctype
    return b""


@dataclass(frozen=True, kw_only=True)
class DeviceRoute:
    """One device endpoint: its request and response messages and the service call."""

    request: type[Message]
    response: type[Message]
    call: Callable[[Keybound, Any], Message]


#: The device API, once: FastAPI builds its routes (OpenAPI, plaintext switch) from this
#: table, and the secure channel dispatches opened requests through it directly.
DEVICE_ROUTES: dict[str, DeviceRoute] = {
    DevicePaths.ACTIVATION_START: DeviceRoute(
        request=ActivationStartRequest, response=ActivationStartResponse,
        call=lambda kb, r: kb.activation.start(r)),
    DevicePaths.ACTIVATION_FINISH: DeviceRoute(
        request=ActivationFinishRequest, response=ActivationFinishResponse,
        call=lambda kb, r: kb.activation.finish(r)),
    DevicePaths.AUTHENTICATION_START: DeviceRoute(
        request=AuthenticationStartRequest, response=AuthenticationStartResponse,
        call=lambda kb, r: kb.authentication.start(r)),
    DevicePaths.AUTHENTICATION_FINISH: DeviceRoute(
        request=AuthenticationFinishRequest, response=AuthenticationFinishResponse,
        call=lambda kb, r: kb.authentication.finish(r)),
    DevicePaths.AUTHENTICATION_DECLINE: DeviceRoute(
        request=DeclineRequest, response=DeclineResponse,
        call=lambda kb, r: kb.authentication.decline(r)),
    DevicePaths.PENDING_OPERATIONS: DeviceRoute(
        request=PendingOperationsRequest, response=PendingOperationsResponse,
        call=lambda kb, r: kb.authentication.pending(r)),
    DevicePaths.DEACTIVATE: DeviceRoute(
        request=DeactivateRequest, response=DeactivateResponse,
        call=lambda kb, r: kb.registrations.device_deactivate(r)),
}


def problem_body(code: ErrorCode, detail: str, **extra: Any) -> tuple[int, bytes]:
    status = STATUS.get(code, 500)
    body = {"type": f"urn:keybound:problem:{code.value}", "title": code.value.replace("_", " "),
            "status": status, "code": code.value, **extra}
    if status < 500:  # a server fault says nothing about its inside (§8)
        body["detail"] = detail
    return status, json.dumps(body, separators=(",", ":")).encode()


def refusal(exc: KeyboundError) -> tuple[int, bytes]:
    """The problem answering a domain error (the same on the sealed and plaintext paths)."""
    if exc.code not in STATUS:
        log.error("unexpected %s: %s", exc.code.value, exc.detail)
    extra = {"operationId": exc.fields["operation_id"]} if "operation_id" in exc.fields else {}
    return problem_body(exc.code, exc.detail, **extra)


def invalid_params(errors: Sequence[Any], skip: int = 0) -> list[dict[str, str]]:
    """pydantic errors as RFC 9457 ``invalidParams`` (``skip`` drops FastAPI's "body")."""
    return [{"name": ".".join(str(p) for p in err.get("loc", ())[skip:]),
             "reason": str(err.get("msg", ""))} for err in errors[:20]]


class BodyLimit:
    """Pure ASGI middleware: refuse bodies over ``limit`` bytes (413) and POSTs that are
    neither JSON nor, on the device API, sealed (415) before any handler runs."""

    def __init__(self, app: Any, limit: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] not in ("POST", "PUT", "PATCH"):
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        ctype = _content_type(scope)
        sealed = ctype == _SEALED and _route_path(scope).startswith("/device/")
        limit = self.limit + SEALED_OVERHEAD_BYTES if sealed else self.limit
        length = headers.get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > limit):
            await problem(ErrorCode.PAYLOAD_TOO_LARGE, f"body exceeds {limit} bytes")(
                scope, receive, send)
            return
        has_body = (b"transfer-encoding" in headers) if length is None else int(length) > 0
        if ctype != b"application/json" and not sealed and has_body:
            await problem(ErrorCode.UNSUPPORTED_MEDIA_TYPE,
                          "request bodies must be application/json (device API: "
                          f"{SEALED_MEDIA_TYPE})")(scope, receive, send)
            return
        received = 0

        async def limited_receive() -> Any:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > limit:
                raise _TooLarge
            return message

        try:
            await self.app(scope, limited_receive, send)
        except _TooLarge:
            await problem(ErrorCode.PAYLOAD_TOO_LARGE, f"body exceeds {limit} bytes")(
                scope, receive, send)


class _TooLarge(Exception):
    pass


async def _blocking(kb: Keybound, call: Callable[[], T]) -> T:
    """Run blocking service code (database, crypto) from the event loop: right there with the
    embedded SQLite database, whose work per request is in-process calls plus one commit --
    a hand-off to a worker thread and back cost more than all of it (server CPU per
    authentication 3.8 -> 1.7 ms, bench/loadgen.py) --, in a worker thread with a networked
    database (PostgreSQL), whose statements wait on the network."""
    if kb.db.is_sqlite:
        return call()
    return await anyio.to_thread.run_sync(call)


# --------------------------------------------------------------------------- secure channel

_SEALED = SEALED_MEDIA_TYPE.encode("ascii")
_DEVICE_PATHS = frozenset(
    value for name, value in vars(DevicePaths).items() if not name.startswith("_"))
#: The one answer to every request that cannot be opened (docs/channel.md §4.4, §5): no
#: cause, no request id, byte-identical every time.
DECRYPTION_FAILED_DETAIL = "the sealed request could not be opened"


def _route_path(scope: MutableMapping[str, Any]) -> str:
    """The path the router dispatches on, without a reverse-proxy prefix (ASGI root_path)."""
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    return path[len(root):] if root and path.startswith(root) else path


class SecureChannel:
    """Pure ASGI middleware: the secure channel in front of the device API (docs/channel.md).

    A POST to a device route with ``Content-Type: application/keybound-sealed`` is opened
    (the key id names the key and so the application, §3.4), checked against replay (§6),
    and its inner JSON dispatched through ``DEVICE_ROUTES`` to the same service call the
    plaintext route makes; the answer -- success or problem -- is sealed to the request and
    sent as an outer 200 (§4.4). A request that cannot be opened
    gets the one unsealed ``decryption_failed`` problem, audited. Plaintext JSON to a device
    route is refused (``secure_channel_required``) unless ``allow_plaintext`` (development).
    Other routes, methods and unknown paths pass through untouched (404/405 as usual).
    """

    def __init__(self, app: Any, *, kb: Keybound, allow_plaintext: bool = False) -> None:
        self.app = app
        self.kb = kb
        self.allow_plaintext = allow_plaintext

    async def __call__(self, scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
        path = _route_path(scope) if scope["type"] == "http" else ""
        if scope.get("method") != "POST" or path not in _DEVICE_PATHS:
            await self.app(scope, receive, send)
        elif _content_type(scope) == _SEALED:
            await self._sealed(scope, receive, send, path)
        elif self.allow_plaintext:
            await self.app(scope, receive, send)
        else:
            await _blocking(self.kb, functools.partial(
                self._audit, path, ErrorCode.SECURE_CHANNEL_REQUIRED, None, None))
            await problem(ErrorCode.SECURE_CHANNEL_REQUIRED,
                          f"device requests must be sealed ({SEALED_MEDIA_TYPE}); see "
                          "docs/channel.md")(scope, receive, send)

    async def _sealed(self, scope: MutableMapping[str, Any], receive: Any, send: Any,
                      path: str) -> None:
        wire = await _read_body(receive)
        # opening, handling and sealing in one step (one thread hop, if any: _blocking)
        sealed = await _blocking(self.kb, functools.partial(
            self._handle, wire, scope["method"], path))
        if sealed is None:
            await problem(ErrorCode.DECRYPTION_FAILED, DECRYPTION_FAILED_DETAIL)(
                scope, receive, send)
            return
        await send({"type": "http.response.start", "status": 200, "headers": [
            (b"content-type", _SEALED), (b"content-length", str(len(sealed)).encode()),
            (b"cache-control", b"no-store")]})
        await send({"type": "http.response.body", "body": sealed})

    def _handle(self, wire: bytes, method: str, path: str) -> bytes | None:
        """Open (§3.4), dispatch to the device route with the replay mark riding on its
        commit (§6), seal the answer (§4.4); None when the request cannot be opened or was
        seen before (audited)."""
        try:
            opened = self._open(wire, method, path)
            with self.kb.e2e_keys.replay_guard.remembering(opened.request_id,
                                                           opened.replay_expires_at):
                status, body = self._dispatch(opened, path)
        except DecryptionFailed:
            self._audit_decryption_failure(wire, path)
            return None
        return seal_response(opened, status, body)

    def _dispatch(self, opened: OpenedRequest, path: str) -> tuple[int, bytes]:
        """The inner request, checked and handled exactly as the plaintext route would."""
        route = DEVICE_ROUTES[path]
        if len(opened.body) > MAX_BODY_BYTES:
            self._audit(path, ErrorCode.PAYLOAD_TOO_LARGE, opened.application_id, None)
            return problem_body(ErrorCode.PAYLOAD_TOO_LARGE, f"body exceeds {MAX_BODY_BYTES} bytes")
        try:
            request = route.request.model_validate_json(opened.body)
        except ValidationError as exc:
            self._audit(path, ErrorCode.MALFORMED_REQUEST, opened.application_id, None)
            return problem_body(ErrorCode.MALFORMED_REQUEST, "request does not match the schema",
                                invalidParams=invalid_params(exc.errors()))
        if getattr(request, "application_id", None) != opened.application_id:
            # a pin for one application can never act on another
            self._audit(path, ErrorCode.MALFORMED_REQUEST, opened.application_id, opened.key_id)
            return problem_body(ErrorCode.MALFORMED_REQUEST, "applicationId must be the "
                                "application of the E2E key the request is sealed to")
        try:
            response = route.call(self.kb, request)
        except DecryptionFailed:
            raise  # a replay, found when its mark was stored: _handle answers it
        except KeyboundError as exc:
            if not exc.fields.get("audited"):
                self._audit(path, exc.code, opened.application_id, None)
            return refusal(exc)
        except Exception:  # pragma: no cover - a bug; never leak details
            log.exception("unexpected error on sealed POST %s", path)
            return problem_body(ErrorCode.INTERNAL, "")
        return 200, response.model_dump_json(by_alias=True, exclude_none=True).encode()

    def _open(self, wire: bytes, method: str, path: str) -> OpenedRequest:
        """§3.4, off the event loop (the keyring may hit the database)."""
        found = self.kb.e2e_keys.keyring.lookup(request_key_id(wire))
        if found is None:
            raise DecryptionFailed()
        application_id, key = found
        return open_request({key.key_id: key}, application_id, method, path, wire,
                            now=int(self.kb.clock()))

    def _audit_decryption_failure(self, wire: bytes, path: str) -> None:
        try:
            key_id: str | None = request_key_id(wire)  # public; helps spot retired-key apps
        except DecryptionFailed:
            key_id = None
        self._audit(path, ErrorCode.DECRYPTION_FAILED, None, key_id)

    def _audit(self, path: str, code: ErrorCode, application_id: str | None,
               key_id: str | None) -> None:
        audit.record_alone(self.kb.db, at=int(self.kb.clock() * 1000), actor=audit.Actor.DEVICE,
                           event=f"http.post {path}"[:48], outcome=audit.Outcome.REJECTED,
                           code=code.value, application_id=application_id,
                           details={"keyId": key_id} if key_id else None)


async def _read_body(receive: Any) -> bytes:
    chunks = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break  # client went away; what arrived cannot open
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


def _actor_for(path: str) -> audit.Actor:
    return audit.Actor.DEVICE if path.startswith("/device/") else audit.Actor.RELYING_PARTY


def create_app(kb: Keybound, *, allow_plaintext: bool = False) -> KeyboundAPI:
    """The keybound ASGI app. Device requests must come through the secure channel;
    ``allow_plaintext`` (development only, off by default) also accepts plaintext JSON."""
    if allow_plaintext:
        log.warning("INSECURE: plaintext device requests are allowed (development switch); "
                    "device traffic is not end-to-end encrypted. Never use this in production.")
    app = KeyboundAPI(
        title="keybound",
        version=__version__,
        summary="Device authentication with hardware-protected keys",
        description="Device API (`/device/v1`), relying-party API (`/rp/v1`, bearer API key). "
        "Errors are RFC 9457 problem+json with a stable `code`; see docs/protocol.md.",
        openapi_url="/openapi.json",
        docs_url="/docs",
        redoc_url=None,
    )
    app.state.kb = kb

    async def audit_rejection(request: Request, code: ErrorCode) -> None:
        """Audit a refused request (see _blocking for where the write runs)."""
        await _blocking(kb, functools.partial(
            audit.record_alone, kb.db, at=int(kb.clock() * 1000),
            actor=_actor_for(request.url.path),
            event=f"http.{request.method.lower()} {request.url.path}"[:48],
            outcome=audit.Outcome.REJECTED, code=code.value))

    @app.exception_handler(KeyboundError)
    async def _keybound_error(request: Request, exc: KeyboundError) -> Response:
        if not exc.fields.get("audited"):
            await audit_rejection(request, exc.code)
        status, body = refusal(exc)
        headers = {"WWW-Authenticate": "Bearer"} if exc.code is ErrorCode.UNAUTHORIZED else None
        return Response(body, status_code=status, media_type=PROBLEM_JSON, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> Response:
        await audit_rejection(request, ErrorCode.MALFORMED_REQUEST)
        return problem(ErrorCode.MALFORMED_REQUEST, "request does not match the schema",
                       invalidParams=invalid_params(exc.errors(), skip=1))

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
        code = {404: ErrorCode.NOT_FOUND, 405: ErrorCode.METHOD_NOT_ALLOWED}.get(
            exc.status_code, ErrorCode.MALFORMED_REQUEST)
        await audit_rejection(request, code)
        return problem(code, str(exc.detail))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> Response:  # pragma: no cover
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return problem(ErrorCode.INTERNAL, "")

    _device_routes(app, kb)
    _rp_routes(app, kb)

    @app.get("/healthz", tags=["meta"])
    async def healthz() -> dict[str, str]:
        return {"status": "ok", "version": __version__}

    _document_problems(app)
    front: Any = SecureChannel(functools.partial(FastAPI.__call__, app), kb=kb,
                               allow_plaintext=allow_plaintext)
    front = BodyLimit(front)  # limits apply to sealed bodies too
    if kb.db.defer_sync():  # every response waits for its commits (group commit)
        front = GroupCommit(front, db=kb.db)
    app.front = LastResort(front)
    return app


class KeyboundAPI(FastAPI):
    """FastAPI with keybound's own pure ASGI layers in front of its whole stack:
    ``LastResort`` -> ``GroupCommit`` -> ``BodyLimit`` -> ``SecureChannel`` -> FastAPI.

    A sealed device request is answered by ``SecureChannel`` without entering FastAPI's
    stack (its telemetry check, error and body-limit middleware, exception middleware and
    router): that stack cost more per request than the secure channel's AEAD, and a sealed
    request uses none of it. Everything else passes through to FastAPI unchanged."""

    front: Any = None  # set by create_app

    async def __call__(self, scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
        await self.front(scope, receive, send)


class LastResort:
    """Pure ASGI, outermost: an exception that escapes every other layer (a failed fsync in
    ``GroupCommit``, a database fault around the secure channel) is logged and answered with
    the ``internal_error`` problem -- which says nothing of the inside -- if no response has
    started; otherwise the connection is closed by the server. FastAPI's own error
    middleware does the same for its routes, inside."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def watched_send(message: MutableMapping[str, Any]) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, watched_send)
        except Exception:
            if started:
                raise
            log.exception("unexpected error on %s %s", scope.get("method"), scope.get("path"))
            await problem(ErrorCode.INTERNAL, "")(scope, receive, send)


#: RFC 9457 problem document, as every error is answered (docs/protocol.md §8)
PROBLEM_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["type", "title", "status", "code"],
    "properties": {
        "type": {"type": "string"}, "title": {"type": "string"},
        "status": {"type": "integer"}, "detail": {"type": "string"},
        "code": {"type": "string", "enum": sorted(code.value for code in STATUS)},
        "operationId": {"type": "string"},
        "invalidParams": {"type": "array", "items": {
            "type": "object", "properties": {"name": {"type": "string"},
                                             "reason": {"type": "string"}}}},
    },
}


def _document_problems(app: FastAPI) -> None:
    """The OpenAPI document says what the server does: errors are problem+json with a 4xx
    status (never FastAPI's default 422 validation body)."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = generate()
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        components.pop("HTTPValidationError", None)
        components.pop("ValidationError", None)
        components["Problem"] = PROBLEM_SCHEMA
        problem_ref = {"description": "RFC 9457 problem (stable `code`, docs/protocol.md §8)",
                       "content": {PROBLEM_JSON: {"schema": {
                           "$ref": "#/components/schemas/Problem"}}}}
        for operations in schema.get("paths", {}).values():
            for operation in operations.values():
                responses = operation.setdefault("responses", {})
                responses.pop("422", None)
                responses["4XX"] = problem_ref
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def _run_blocking(kb: Keybound) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """A route whose handler is blocking service code, run where _blocking says (instead of
    FastAPI's own thread-pool hand-off for every ``def`` route)."""

    def decorate(handler: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(handler)  # FastAPI reads the signature through __wrapped__
        async def route(*args: Any, **kwargs: Any) -> Any:
            return await _blocking(kb, functools.partial(handler, *args, **kwargs))

        return route

    return decorate


def _device_routes(app: FastAPI, kb: Keybound) -> None:
    blocking = _run_blocking(kb)
    for path, route in DEVICE_ROUTES.items():
        app.add_api_route(path, blocking(_device_endpoint(kb, route)), methods=["POST"],
                          response_model=route.response, response_model_exclude_none=True,
                          tags=["device"],
                          name=path.removeprefix("/device/v1/").replace("/", "_"))


def _device_endpoint(kb: Keybound, route: DeviceRoute) -> Callable[..., Message]:
    def endpoint(body: Any) -> Message:
        return route.call(kb, body)

    endpoint.__annotations__ = {"body": route.request, "return": route.response}
    return endpoint


_bearer = HTTPBearer(auto_error=False)


async def _application(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> str:
    """The application id the bearer API key belongs to."""
    if credentials is None:
        raise Unauthorized("an API key is required (Authorization: Bearer kb_...)")
    kb: Keybound = request.app.state.kb
    return await _blocking(kb, functools.partial(kb.applications.authenticate,
                                                 credentials.credentials))


App = Annotated[str, Depends(_application)]


def _rp_routes(app: FastAPI, kb: Keybound) -> None:
    tags: list[str | Any] = ["relying party"]
    ok: dict[str, Any] = {"response_model_exclude_none": True, "tags": tags}
    blocking = _run_blocking(kb)

    @app.post("/rp/v1/users", status_code=201, **ok)
    @blocking
    def create_user(app_id: App, body: CreateUserRequest) -> User:
        return kb.operations.create_user(app_id, body)

    @app.get("/rp/v1/users/{user_id}", **ok)
    @blocking
    def get_user(app_id: App, user_id: str) -> User:
        return kb.operations.get_user(app_id, user_id)

    @app.post("/rp/v1/users/{user_id}/activation-codes", status_code=201, **ok)
    @blocking
    def create_activation_code(app_id: App, user_id: str) -> ActivationCodeResponse:
        return kb.operations.create_activation(app_id, user_id)

    @app.get("/rp/v1/users/{user_id}/devices", **ok)
    @blocking
    def list_devices(app_id: App, user_id: str) -> DeviceList:
        return kb.registrations.list_for_user(app_id, user_id)

    @app.get("/rp/v1/devices/{device_id}", **ok)
    @blocking
    def get_device(app_id: App, device_id: str) -> Device:
        return kb.registrations.get(app_id, device_id)

    @app.post("/rp/v1/devices/{device_id}/reactivation", status_code=201, **ok)
    @blocking
    def create_reactivation(app_id: App, device_id: str) -> ActivationCodeResponse:
        return kb.operations.create_reactivation(app_id, device_id)

    @app.post("/rp/v1/devices/{device_id}/operations", status_code=201, **ok)
    @blocking
    def create_operation(app_id: App, device_id: str, body: CreateOperationRequest) -> Operation:
        return kb.operations.create_authentication(app_id, device_id, body)

    @app.post("/rp/v1/devices/{device_id}/lock", **ok)
    @blocking
    def lock(app_id: App, device_id: str) -> Device:
        return kb.registrations.lock(app_id, device_id)

    @app.post("/rp/v1/devices/{device_id}/unlock", **ok)
    @blocking
    def unlock(app_id: App, device_id: str) -> Device:
        return kb.registrations.unlock(app_id, device_id)

    @app.post("/rp/v1/devices/{device_id}/deactivate", **ok)
    @blocking
    def deactivate_device(app_id: App, device_id: str) -> Device:
        return kb.registrations.deactivate(app_id, device_id)

    @app.get("/rp/v1/operations/{operation_id}", **ok)
    @blocking
    def get_operation(app_id: App, operation_id: str) -> Operation:
        return kb.operations.get(app_id, operation_id)
