"""The relying-party API (FastAPI): thin handlers -- parse, call one service in a unit of work,
serialise -- behind a bearer API key (docs/protocol.md §3.2)."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
from collections.abc import AsyncIterator, Callable
from typing import Annotated, Any, Literal, TypeVar

from fastapi import Depends, FastAPI, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from keybound import __version__
from keybound.errors import ErrorCode, KeyboundError, Unauthorized
from keybound.rpapi import (
    ActivationCodeResponse,
    CreatedWebhookEndpoint,
    CreateOperationRequest,
    CreateSignatureRequest,
    CreateUserRequest,
    CreateWebhookEndpointRequest,
    CreateWebhookSecretRequest,
    DeliveryState,
    Device,
    DeviceList,
    EventList,
    EventName,
    NewWebhookSecret,
    Operation,
    RedeliverRequest,
    RedeliverResponse,
    UpdateWebhookEndpointRequest,
    User,
    WebhookAttemptList,
    WebhookDeliveryList,
    WebhookEndpoint,
    WebhookEndpointList,
)
from keybound.server.events.model import Actor, EventType, Outcome
from keybound.server.services import Keybound
from keybound.server.services.applications import authenticate_api_key
from keybound.server.services.outbox import Outbox, OutboxSettings
from keybound.server.unit import Unit, perform
from keybound.server.web.asgi import blocking
from keybound.server.web.problems import invalid_params, problem, problem_response, refusal

T = TypeVar("T")


class Health(BaseModel):
    """The answer of the liveness check."""

    status: Annotated[Literal["ok"], Field(description="Always `ok`.", examples=["ok"])]
    version: Annotated[
        str, Field(description="The keybound version serving.", examples=[__version__])
    ]


_bearer = HTTPBearer(auto_error=False)
#: seconds a relying party may cache the JWKS; on an unknown kid it fetches it anew
JWKS_MAX_AGE = 300


class Utf8Json(Request):
    """A request whose JSON body is UTF-8 or refused (docs/protocol.md §1.1): the standard
    decoder would take UTF-16 and UTF-32 too, guessing from the bytes."""

    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            body = await self.body()
            try:
                text = body.decode("utf-8")
            except UnicodeDecodeError:
                raise json.JSONDecodeError("the body is not UTF-8", "", 0) from None
            self._json = json.loads(text)
        return self._json


class KeyboundRoute(APIRoute):
    """Every relying-party route: JSON bodies strictly UTF-8, and a body on a call that takes
    none refused (malformed_request) rather than ignored."""

    def get_route_handler(self) -> Callable[[Request], Any]:
        handler = super().get_route_handler()
        takes_body = self.body_field is not None

        async def route(request: Request) -> Response:
            request = Utf8Json(request.scope, request.receive)
            if not takes_body and await request.body():
                raise RequestValidationError(
                    [{"type": "no_body", "loc": ("body",), "msg": "this call takes no body"}]
                )
            response: Response = await handler(request)
            return response

        return route


def create_rp_app(kb: Keybound, *, deliver: OutboxSettings | None = None) -> FastAPI:
    """``deliver``: run the sender (services.outbox) in this process, with these settings."""

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        stop = asyncio.Event()
        sender = None
        if deliver is not None:
            sender = asyncio.create_task(
                Outbox(kb, settings=deliver).run(stop), name="keybound-outbox"
            )
        try:
            yield
        finally:
            stop.set()
            if sender is not None:
                await sender
        # a worker shutting down keeps its last counts and lets its housekeeping finish
        await blocking(kb.db, kb.maintenance.join)
        await blocking(kb.db, kb.noise.flush)

    app = FastAPI(
        lifespan=lifespan,
        title="keybound",
        version=__version__,
        summary="Device authentication with hardware-protected keys",
        description="Device API (`/device/v1`, sealed: docs/channel.md), relying-party API "
        "(`/rp/v1`, bearer API key). Errors are RFC 9457 problem+json with a stable `code`; "
        "see docs/protocol.md.",
        openapi_url="/openapi.json",
        docs_url=None,  # its page loads assets from a CDN: blank offline
        redoc_url=None,
        redirect_slashes=False,  # no redirect built from the Host header
    )
    app.router.route_class = KeyboundRoute
    app.state.kb = kb
    _error_handlers(app, kb)
    _routes(app, kb)
    _event_routes(app, kb)

    @app.get("/healthz", tags=["meta"], operation_id="health")
    async def healthz() -> Health:
        return Health(status="ok", version=__version__)

    @app.get(
        "/.well-known/jwks.json",
        tags=["meta"],
        operation_id="resultSigningKeys",
        response_class=JSONResponse,
    )
    async def jwks() -> JSONResponse:
        """The public keys that sign operation results and audit checkpoints
        (docs/signed-results.md): every key whose publication has not ended, newest first.
        Unauthenticated: a relying party verifies results offline against it."""
        published = await blocking(kb.db, kb.results.jwks)
        return JSONResponse(
            published,
            media_type="application/jwk-set+json",
            headers={"cache-control": f"public, max-age={JWKS_MAX_AGE}"},
        )

    return app


def _cause(request: Request) -> str:
    route = request.scope.get("route")
    return f"rp {getattr(route, 'name', None) or 'unrouted'}"


def _error_handlers(app: FastAPI, kb: Keybound) -> None:
    def refused(request: Request, code: ErrorCode) -> None:
        """Refusals outside a unit of work (no valid API key, no route): anonymous noise;
        with a valid key, the relying party's refused request is an event."""
        application_id = getattr(request.state, "application_id", None)
        if application_id is None:
            kb.noise.count(f"{_cause(request)}:{code.value}", int(kb.clock() * 1000))
            return
        unit = Unit(
            kb.db,
            kb.clock,
            actor=Actor.RELYING_PARTY,
            action=_action(request),
            application_id=application_id,
            identified=True,
        )
        unit.emit(unit.action, outcome=Outcome.REJECTED, code=code.value)
        perform(unit, lambda u: None, noise=kb.noise, cause=_cause(request))

    @app.exception_handler(KeyboundError)
    async def _keybound_error(request: Request, exc: KeyboundError) -> Response:
        if isinstance(exc, Unauthorized):  # the one refusal raised before any unit
            await blocking(kb.db, functools.partial(refused, request, exc.code))
        status, body = refusal(exc)
        return problem_response(status, body, exc.code)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> Response:
        await blocking(kb.db, functools.partial(refused, request, ErrorCode.MALFORMED_REQUEST))
        return problem(
            ErrorCode.MALFORMED_REQUEST,
            "request does not match the schema",
            invalidParams=invalid_params(exc.errors(), skip=1),
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
        code = {404: ErrorCode.NOT_FOUND, 405: ErrorCode.METHOD_NOT_ALLOWED}.get(
            exc.status_code, ErrorCode.MALFORMED_REQUEST
        )
        await blocking(kb.db, functools.partial(refused, request, code))
        return problem(code, str(exc.detail), headers=dict(exc.headers or {}))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> Response:  # pragma: no cover
        return problem(ErrorCode.INTERNAL, "")


def _action(request: Request) -> EventType:
    route = request.scope.get("route")
    action = getattr(getattr(route, "endpoint", None), "action", None)
    return action if isinstance(action, EventType) else EventType.OPERATION_READ


async def _application(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> str:
    """The application id the bearer API key belongs to."""
    if credentials is None:
        raise Unauthorized("an API key is required (Authorization: Bearer kb_...)")
    kb: Keybound = request.app.state.kb
    application_id = await blocking(
        kb.db, functools.partial(authenticate_api_key, kb.db, credentials.credentials)
    )
    request.state.application_id = application_id
    return application_id


App = Annotated[str, Depends(_application)]
# Path ids are not format-checked: an id of another shape is simply not found (§3.2)
UserId = Annotated[
    str,
    Path(
        description="A user of the API key's application.",
        examples=["1e2ca41a-793f-4479-9856-6623db5768a0"],
    ),
]
DeviceId = Annotated[
    str,
    Path(
        description="A device of the API key's application.",
        examples=["3f2c6f1e-8a4b-4c2d-9e1f-0a1b2c3d4e5f"],
    ),
]
OperationId = Annotated[
    str,
    Path(
        description="An operation of the API key's application.",
        examples=["c0ffee00-0000-4000-8000-0000000000a1"],
    ),
]


class _Performer:
    """Runs a handler's one service call in a unit of work, as the relying party."""

    def __init__(self, kb: Keybound) -> None:
        self.kb = kb

    async def __call__(
        self, action: EventType, application_id: str, call: Callable[[Unit], T]
    ) -> T:
        unit = Unit(
            self.kb.db,
            self.kb.clock,
            actor=Actor.RELYING_PARTY,
            action=action,
            application_id=application_id,
            identified=True,
        )
        return await blocking(
            self.kb.db,
            functools.partial(perform, unit, call, noise=self.kb.noise, cause=f"rp {action.value}"),
        )


def _action_of(action: EventType) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    def mark(handler: Callable[..., Any]) -> Callable[..., Any]:
        handler.action = action  # type: ignore[attr-defined]  # read by _action
        return handler

    return mark


def _routes(app: FastAPI, kb: Keybound) -> None:
    tags: list[str | Any] = ["relying party"]
    ok: dict[str, Any] = {"response_model_exclude_none": True, "tags": tags}
    run = _Performer(kb)

    @app.post("/rp/v1/users", status_code=201, operation_id="createUser", **ok)
    @_action_of(EventType.USER_CREATE)
    async def create_user(app_id: App, body: CreateUserRequest | None = None) -> User:
        request = body or CreateUserRequest()
        return await run(
            EventType.USER_CREATE, app_id, lambda u: kb.operations.create_user(u, app_id, request)
        )

    @app.get("/rp/v1/users/{user_id}", operation_id="getUser", **ok)
    @_action_of(EventType.USER_READ)
    async def get_user(app_id: App, user_id: UserId) -> User:
        return await run(
            EventType.USER_READ, app_id, lambda u: kb.operations.get_user(u, app_id, user_id)
        )

    @app.post(
        "/rp/v1/users/{user_id}/activation-codes",
        status_code=201,
        operation_id="createActivationCode",
        **ok,
    )
    @_action_of(EventType.ACTIVATION_CODE_ISSUED)
    async def create_activation_code(app_id: App, user_id: UserId) -> ActivationCodeResponse:
        return await run(
            EventType.ACTIVATION_CODE_ISSUED,
            app_id,
            lambda u: kb.operations.create_activation(u, app_id, user_id),
        )

    @app.get("/rp/v1/users/{user_id}/devices", operation_id="listUserDevices", **ok)
    @_action_of(EventType.DEVICE_READ)
    async def list_devices(app_id: App, user_id: UserId) -> DeviceList:
        return await run(
            EventType.DEVICE_READ,
            app_id,
            lambda u: kb.registrations.list_for_user(u, app_id, user_id),
        )

    @app.get("/rp/v1/devices/{device_id}", operation_id="getDevice", **ok)
    @_action_of(EventType.DEVICE_READ)
    async def get_device(app_id: App, device_id: DeviceId) -> Device:
        return await run(
            EventType.DEVICE_READ, app_id, lambda u: kb.registrations.get(u, app_id, device_id)
        )

    @app.post(
        "/rp/v1/devices/{device_id}/reactivation",
        status_code=201,
        operation_id="createReactivationCode",
        **ok,
    )
    @_action_of(EventType.REACTIVATION_CODE_ISSUED)
    async def create_reactivation(app_id: App, device_id: DeviceId) -> ActivationCodeResponse:
        return await run(
            EventType.REACTIVATION_CODE_ISSUED,
            app_id,
            lambda u: kb.operations.create_reactivation(u, app_id, device_id),
        )

    @app.post(
        "/rp/v1/devices/{device_id}/operations",
        status_code=201,
        operation_id="createOperation",
        **ok,
    )
    @_action_of(EventType.AUTHENTICATION_CREATE)
    async def create_operation(
        app_id: App, device_id: DeviceId, body: CreateOperationRequest | None = None
    ) -> Operation:
        request = body or CreateOperationRequest()
        return await run(
            EventType.AUTHENTICATION_CREATE,
            app_id,
            lambda u: kb.operations.create_authentication(u, app_id, device_id, request),
        )

    @app.post(
        "/rp/v1/devices/{device_id}/signatures",
        status_code=201,
        operation_id="createSignature",
        **ok,
    )
    @_action_of(EventType.SIGNATURE_CREATE)
    async def create_signature(
        app_id: App, device_id: DeviceId, body: CreateSignatureRequest
    ) -> Operation:
        """A signature operation (docs/protocol.md §3.2.6): the device shows dataToSign and
        signs its hash; the result's JWS carries that hash (dataHash)."""
        return await run(
            EventType.SIGNATURE_CREATE,
            app_id,
            lambda u: kb.operations.create_signature(u, app_id, device_id, body),
        )

    @app.post("/rp/v1/devices/{device_id}/lock", operation_id="lockDevice", **ok)
    @_action_of(EventType.DEVICE_LOCK)
    async def lock(app_id: App, device_id: DeviceId) -> Device:
        return await run(
            EventType.DEVICE_LOCK, app_id, lambda u: kb.registrations.lock(u, app_id, device_id)
        )

    @app.post("/rp/v1/devices/{device_id}/unlock", operation_id="unlockDevice", **ok)
    @_action_of(EventType.DEVICE_UNLOCK)
    async def unlock(app_id: App, device_id: DeviceId) -> Device:
        return await run(
            EventType.DEVICE_UNLOCK, app_id, lambda u: kb.registrations.unlock(u, app_id, device_id)
        )

    @app.post("/rp/v1/devices/{device_id}/deactivate", operation_id="deactivateDevice", **ok)
    @_action_of(EventType.DEVICE_DEACTIVATE)
    async def deactivate_device(app_id: App, device_id: DeviceId) -> Device:
        return await run(
            EventType.DEVICE_DEACTIVATE,
            app_id,
            lambda u: kb.registrations.deactivate(u, app_id, device_id),
        )

    @app.get("/rp/v1/operations/{operation_id}", operation_id="getOperation", **ok)
    @_action_of(EventType.OPERATION_READ)
    async def get_operation(app_id: App, operation_id: OperationId) -> Operation:
        return await run(
            EventType.OPERATION_READ, app_id, lambda u: kb.operations.get(u, app_id, operation_id)
        )


#: answers that carry a secret are never stored by a cache on the way
_NO_STORE = {"cache-control": "no-store"}
EndpointId = Annotated[
    str,
    Path(
        description="A webhook endpoint of the API key's application.",
        examples=["0b7d3c52-9a1e-4f6b-8c2d-3e4f5a6b7c8d"],
    ),
]
SecretId = Annotated[
    str,
    Path(
        description="An active secret of the endpoint.",
        examples=["6a1f2e3d-4c5b-4a69-8788-99aabbccddee"],
    ),
]
After = Annotated[
    int,
    Query(
        ge=0,
        le=2**63 - 1,
        description="The cursor: what the last answer's ``nextCursor`` said (0: from the start).",
        examples=[0],
    ),
]
Limit = Annotated[
    int, Query(ge=1, le=500, description="At most this many in the answer.", examples=[100])
]


def _event_routes(app: FastAPI, kb: Keybound) -> None:
    """Events by polling, webhook endpoints, their secrets and delivery log (docs/events.md)."""
    tags: list[str | Any] = ["events and webhooks"]
    ok: dict[str, Any] = {"response_model_exclude_none": True, "tags": tags}
    run = _Performer(kb)
    hooks = kb.webhooks
    endpoint_path = "/rp/v1/webhooks/endpoints/{endpoint_id}"

    @app.get("/rp/v1/events", operation_id="listEvents", **ok)
    @_action_of(EventType.EVENTS_READ)
    async def list_events(
        app_id: App,
        after: After = 0,
        limit: Limit = 100,
        type: Annotated[
            list[EventName] | None,
            Query(
                description="Only these types (repeat the parameter).",
                examples=[["operation.completed"]],
            ),
        ] = None,
    ) -> EventList:
        return await run(
            EventType.EVENTS_READ,
            app_id,
            lambda u: hooks.events(u, app_id, after=after, limit=limit, types=type or ()),
        )

    @app.post(
        "/rp/v1/webhooks/endpoints", status_code=201, operation_id="createWebhookEndpoint", **ok
    )
    @_action_of(EventType.WEBHOOK_ENDPOINT_CREATE)
    async def create_endpoint(
        app_id: App, body: CreateWebhookEndpointRequest, response: Response
    ) -> CreatedWebhookEndpoint:
        response.headers.update(_NO_STORE)
        return await run(
            EventType.WEBHOOK_ENDPOINT_CREATE,
            app_id,
            lambda u: hooks.create_endpoint(u, app_id, body),
        )

    @app.get("/rp/v1/webhooks/endpoints", operation_id="listWebhookEndpoints", **ok)
    @_action_of(EventType.ADMIN_READ)
    async def list_endpoints(app_id: App) -> WebhookEndpointList:
        return await run(EventType.ADMIN_READ, app_id, lambda u: hooks.list_endpoints(u, app_id))

    @app.get(endpoint_path, operation_id="getWebhookEndpoint", **ok)
    @_action_of(EventType.ADMIN_READ)
    async def get_endpoint(app_id: App, endpoint_id: EndpointId) -> WebhookEndpoint:
        return await run(
            EventType.ADMIN_READ, app_id, lambda u: hooks.get_endpoint(u, app_id, endpoint_id)
        )

    @app.patch(endpoint_path, operation_id="updateWebhookEndpoint", **ok)
    @_action_of(EventType.WEBHOOK_ENDPOINT_UPDATE)
    async def update_endpoint(
        app_id: App, endpoint_id: EndpointId, body: UpdateWebhookEndpointRequest
    ) -> WebhookEndpoint:
        return await run(
            EventType.WEBHOOK_ENDPOINT_UPDATE,
            app_id,
            lambda u: hooks.update_endpoint(u, app_id, endpoint_id, body),
        )

    @app.delete(
        endpoint_path,
        status_code=204,
        operation_id="deleteWebhookEndpoint",
        tags=tags,
        response_class=Response,
    )
    @_action_of(EventType.WEBHOOK_ENDPOINT_DELETE)
    async def delete_endpoint(app_id: App, endpoint_id: EndpointId) -> Response:
        await run(
            EventType.WEBHOOK_ENDPOINT_DELETE,
            app_id,
            lambda u: hooks.delete_endpoint(u, app_id, endpoint_id),
        )
        return Response(status_code=204)

    @app.post(endpoint_path + "/secrets", status_code=201, operation_id="createWebhookSecret", **ok)
    @_action_of(EventType.WEBHOOK_SECRET_CREATE)
    async def create_secret(
        app_id: App,
        endpoint_id: EndpointId,
        response: Response,
        body: CreateWebhookSecretRequest | None = None,
    ) -> NewWebhookSecret:
        response.headers.update(_NO_STORE)
        scheme = (body or CreateWebhookSecretRequest()).scheme
        return await run(
            EventType.WEBHOOK_SECRET_CREATE,
            app_id,
            lambda u: hooks.add_secret(u, app_id, endpoint_id, scheme),
        )

    @app.delete(endpoint_path + "/secrets/{secret_id}", operation_id="revokeWebhookSecret", **ok)
    @_action_of(EventType.WEBHOOK_SECRET_REVOKE)
    async def revoke_secret(
        app_id: App, endpoint_id: EndpointId, secret_id: SecretId
    ) -> WebhookEndpoint:
        return await run(
            EventType.WEBHOOK_SECRET_REVOKE,
            app_id,
            lambda u: hooks.revoke_secret(u, app_id, endpoint_id, secret_id),
        )

    @app.get(endpoint_path + "/deliveries", operation_id="listWebhookDeliveries", **ok)
    @_action_of(EventType.ADMIN_READ)
    async def list_deliveries(
        app_id: App,
        endpoint_id: EndpointId,
        state: Annotated[
            DeliveryState | None,
            Query(description="Only deliveries in this state.", examples=["pending"]),
        ] = None,
        after: After = 0,
        limit: Limit = 100,
    ) -> WebhookDeliveryList:
        return await run(
            EventType.ADMIN_READ,
            app_id,
            lambda u: hooks.deliveries(
                u, app_id, endpoint_id, state=state, after=after, limit=limit
            ),
        )

    @app.get(endpoint_path + "/attempts", operation_id="listWebhookAttempts", **ok)
    @_action_of(EventType.ADMIN_READ)
    async def list_attempts(
        app_id: App, endpoint_id: EndpointId, after: After = 0, limit: Limit = 100
    ) -> WebhookAttemptList:
        return await run(
            EventType.ADMIN_READ,
            app_id,
            lambda u: hooks.attempts(u, app_id, endpoint_id, after=after, limit=limit),
        )

    @app.post(
        endpoint_path + "/redeliver", status_code=202, operation_id="redeliverWebhookEvents", **ok
    )
    @_action_of(EventType.WEBHOOK_REDELIVER)
    async def redeliver(
        app_id: App, endpoint_id: EndpointId, body: RedeliverRequest
    ) -> RedeliverResponse:
        return await run(
            EventType.WEBHOOK_REDELIVER,
            app_id,
            lambda u: hooks.redeliver(u, app_id, endpoint_id, body),
        )
