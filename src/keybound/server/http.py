"""The ASGI application: routes, thin handlers, and the one table mapping error codes to HTTP
status (RFC 9457 problem+json). Handlers parse, call a domain service, serialise."""

from __future__ import annotations

import logging
from collections.abc import MutableMapping
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.exceptions import HTTPException as StarletteHTTPException

from keybound import __version__
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
    DevicePaths,
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
from keybound.server.service import Keybound

log = logging.getLogger("keybound.server")

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
    ErrorCode.CHALLENGE_USED: 409,
    ErrorCode.CHALLENGE_EXPIRED: 409,
    ErrorCode.INVALID_STATE: 409,
    ErrorCode.CONFLICT: 409,
    ErrorCode.PAYLOAD_TOO_LARGE: 413,
    ErrorCode.UNSUPPORTED_MEDIA_TYPE: 415,
    ErrorCode.DECRYPTION_FAILED: 400,
}

PROBLEM_JSON = "application/problem+json"


def problem(code: ErrorCode, detail: str, **extra: Any) -> JSONResponse:
    status = STATUS.get(code, 500)
    body = {"type": f"urn:keybound:problem:{code.value}", "title": code.value.replace("_", " "),
            "status": status, "detail": detail, "code": code.value, **extra}
    headers = {"WWW-Authenticate": "Bearer"} if code is ErrorCode.UNAUTHORIZED else None
    return JSONResponse(body, status_code=status, media_type=PROBLEM_JSON, headers=headers)


class BodyLimit:
    """Pure ASGI middleware: refuse bodies over ``limit`` bytes (413) and non-JSON POSTs
    (415) before any handler runs."""

    def __init__(self, app: Any, limit: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] not in ("POST", "PUT", "PATCH"):
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        ctype = headers.get(b"content-type", b"").split(b";")[0].strip().lower()
        length = headers.get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.limit):
            await problem(ErrorCode.PAYLOAD_TOO_LARGE, f"body exceeds {self.limit} bytes")(
                scope, receive, send)
            return
        if ctype != b"application/json" and (length is None or int(length) > 0):
            await problem(ErrorCode.UNSUPPORTED_MEDIA_TYPE,
                          "request bodies must be application/json")(scope, receive, send)
            return
        received = 0

        async def limited_receive() -> Any:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.limit:
                raise _TooLarge
            return message

        try:
            await self.app(scope, limited_receive, send)
        except _TooLarge:
            await problem(ErrorCode.PAYLOAD_TOO_LARGE, f"body exceeds {self.limit} bytes")(
                scope, receive, send)


class _TooLarge(Exception):
    pass


def _actor_for(path: str) -> audit.Actor:
    return audit.Actor.DEVICE if path.startswith("/device/") else audit.Actor.RELYING_PARTY


def create_app(kb: Keybound) -> FastAPI:
    app = FastAPI(
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

    def audit_rejection(request: Request, code: ErrorCode) -> None:
        audit.record_alone(kb.db, at=int(kb.clock() * 1000), actor=_actor_for(request.url.path),
                           event=f"http.{request.method.lower()} {request.url.path}"[:48],
                           outcome=audit.Outcome.REJECTED, code=code.value)

    @app.exception_handler(KeyboundError)
    async def _keybound_error(request: Request, exc: KeyboundError) -> JSONResponse:
        if not exc.fields.get("audited"):
            audit_rejection(request, exc.code)
        extra = {"operationId": exc.fields["operation_id"]} if "operation_id" in exc.fields else {}
        if exc.code not in STATUS:
            log.error("unmapped error code %s", exc.code)
        return problem(exc.code, exc.detail, **extra)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        audit_rejection(request, ErrorCode.MALFORMED_REQUEST)
        invalid = [{"name": ".".join(str(p) for p in err.get("loc", ())[1:]),
                    "reason": str(err.get("msg", ""))} for err in exc.errors()[:20]]
        return problem(ErrorCode.MALFORMED_REQUEST, "request does not match the schema",
                       invalidParams=invalid)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: ErrorCode.NOT_FOUND, 405: ErrorCode.METHOD_NOT_ALLOWED}.get(
            exc.status_code, ErrorCode.MALFORMED_REQUEST)
        audit_rejection(request, code)
        return problem(code, str(exc.detail))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:  # pragma: no cover
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return JSONResponse({"type": "about:blank", "title": "internal error", "status": 500,
                             "code": ErrorCode.INTERNAL.value}, status_code=500,
                            media_type=PROBLEM_JSON)

    _device_routes(app, kb)
    _rp_routes(app, kb)

    @app.get("/healthz", tags=["meta"])
    def healthz() -> dict[str, str]:
        return {"status": "ok", "version": __version__}

    app.add_middleware(BodyLimit)
    return app


def _device_routes(app: FastAPI, kb: Keybound) -> None:
    tags: list[str | Any] = ["device"]
    ok: dict[str, Any] = {"response_model_exclude_none": True, "tags": tags}

    @app.post(DevicePaths.ACTIVATION_START, **ok)
    def activation_start(body: ActivationStartRequest) -> ActivationStartResponse:
        return kb.activation.start(body)

    @app.post(DevicePaths.ACTIVATION_FINISH, **ok)
    def activation_finish(body: ActivationFinishRequest) -> ActivationFinishResponse:
        return kb.activation.finish(body)

    @app.post(DevicePaths.AUTHENTICATION_START, **ok)
    def authentication_start(body: AuthenticationStartRequest) -> AuthenticationStartResponse:
        return kb.authentication.start(body)

    @app.post(DevicePaths.AUTHENTICATION_FINISH, **ok)
    def authentication_finish(
        body: AuthenticationFinishRequest,
    ) -> AuthenticationFinishResponse:
        return kb.authentication.finish(body)

    @app.post(DevicePaths.PENDING_OPERATIONS, **ok)
    def pending_operations(body: PendingOperationsRequest) -> PendingOperationsResponse:
        return kb.authentication.pending(body)

    @app.post(DevicePaths.DEACTIVATE, **ok)
    def deactivate(body: DeactivateRequest) -> DeactivateResponse:
        return kb.registrations.device_deactivate(body)


_bearer = HTTPBearer(auto_error=False)


def _application(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> str:
    """The application id the bearer API key belongs to."""
    if credentials is None:
        raise Unauthorized("an API key is required (Authorization: Bearer kb_...)")
    kb: Keybound = request.app.state.kb
    return kb.applications.authenticate(credentials.credentials)


App = Annotated[str, Depends(_application)]


def _rp_routes(app: FastAPI, kb: Keybound) -> None:
    tags: list[str | Any] = ["relying party"]
    ok: dict[str, Any] = {"response_model_exclude_none": True, "tags": tags}

    @app.post("/rp/v1/users", status_code=201, **ok)
    def create_user(app_id: App, body: CreateUserRequest) -> User:
        return kb.operations.create_user(app_id, body)

    @app.get("/rp/v1/users/{user_id}", **ok)
    def get_user(app_id: App, user_id: str) -> User:
        return kb.operations.get_user(app_id, user_id)

    @app.post("/rp/v1/users/{user_id}/activation-codes", status_code=201, **ok)
    def create_activation_code(app_id: App, user_id: str) -> ActivationCodeResponse:
        return kb.operations.create_activation(app_id, user_id)

    @app.get("/rp/v1/users/{user_id}/devices", **ok)
    def list_devices(app_id: App, user_id: str) -> DeviceList:
        return kb.registrations.list_for_user(app_id, user_id)

    @app.get("/rp/v1/devices/{device_id}", **ok)
    def get_device(app_id: App, device_id: str) -> Device:
        return kb.registrations.get(app_id, device_id)

    @app.post("/rp/v1/devices/{device_id}/reactivation", status_code=201, **ok)
    def create_reactivation(app_id: App, device_id: str) -> ActivationCodeResponse:
        return kb.operations.create_reactivation(app_id, device_id)

    @app.post("/rp/v1/devices/{device_id}/operations", status_code=201, **ok)
    def create_operation(app_id: App, device_id: str, body: CreateOperationRequest) -> Operation:
        return kb.operations.create_authentication(app_id, device_id, body)

    @app.post("/rp/v1/devices/{device_id}/lock", **ok)
    def lock(app_id: App, device_id: str) -> Device:
        return kb.registrations.lock(app_id, device_id)

    @app.post("/rp/v1/devices/{device_id}/unlock", **ok)
    def unlock(app_id: App, device_id: str) -> Device:
        return kb.registrations.unlock(app_id, device_id)

    @app.post("/rp/v1/devices/{device_id}/deactivate", **ok)
    def deactivate_device(app_id: App, device_id: str) -> Device:
        return kb.registrations.deactivate(app_id, device_id)

    @app.get("/rp/v1/operations/{operation_id}", **ok)
    def get_operation(app_id: App, operation_id: str) -> Operation:
        return kb.operations.get(app_id, operation_id)
