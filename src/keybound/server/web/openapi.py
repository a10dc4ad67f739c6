"""The OpenAPI 3.1 document: FastAPI's for the relying-party API, the device API's from its
route table (web.device), and every answer as it is on the wire: each status an operation can
get, from its handler or from a layer in front of it (web.edge, web.middleware, the device
codec), with the error codes that status carries there.

``python -m keybound.server.web.openapi > docs/openapi.json`` prints it; the same document is
served at ``/openapi.json``, and a test keeps the checked-in copy current.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterator
from typing import Any, Final

from fastapi import FastAPI
from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode, models_json_schema

from keybound.channel import SEALED_MEDIA_TYPE
from keybound.errors import ErrorCode
from keybound.server.web.problems import MEANING, PROBLEM_JSON, PROBLEM_SCHEMA, STATUS

C = ErrorCode

#: What a request can meet before any handler, on every route (docs/protocol.md §8,
#: docs/deployment.md): the HTTP edge's refusals (malformed framing, a declared body over the
#: limit, slow heads and bodies, oversized heads, no connection slot) and the last resort.
EDGE: Final = (
    C.MALFORMED_REQUEST,
    C.PAYLOAD_TOO_LARGE,
    C.REQUEST_TIMEOUT,
    C.REQUEST_HEADER_FIELDS_TOO_LARGE,
    C.SERVICE_UNAVAILABLE,
    C.INTERNAL,
)
#: The body limit in front of every POST (web.middleware.BodyLimit)
POST: Final = (C.PAYLOAD_TOO_LARGE, C.UNSUPPORTED_MEDIA_TYPE)
#: The relying-party app: the API key, and bodies that do not match (or that a call does not
#: take)
RP: Final = (C.UNAUTHORIZED, C.MALFORMED_REQUEST)
#: The device app's codec and dispatcher (web.device): unopenable or replayed sealed requests,
#: plaintext without the development switch, an inner body over the limit or off the schema
DEVICE: Final = (
    C.DECRYPTION_FAILED,
    C.SECURE_CHANNEL_REQUIRED,
    C.UNSUPPORTED_MEDIA_TYPE,
    C.PAYLOAD_TOO_LARGE,
    C.MALFORMED_REQUEST,
)

#: What each operation's own handler and service can answer, beyond its door's (above).
#: Every route has an entry (a test checks it); keep it in step with the services.
REFUSALS: Final[dict[str, tuple[ErrorCode, ...]]] = {
    # device API (docs/protocol.md §3.1)
    "activationStart": (C.ACTIVATION_CODE_INVALID,),
    "activationFinish": (
        C.AUTHENTICATION_FAILED,
        C.UNSUPPORTED_ALGORITHM,
        C.CHALLENGE_USED,
        C.CHALLENGE_EXPIRED,
        C.PIN_REQUIRED,
        C.HARDWARE_KEY_INVALID,
        C.HARDWARE_KEY_REQUIRED,
        C.ATTESTATION_INVALID,
        C.ATTESTATION_REQUIRED,
        C.DEVICE_INACTIVE,
    ),
    "authenticationStart": (),  # decoys, never a refusal (§3.1.3)
    "authenticationFinish": (
        C.AUTHENTICATION_FAILED,
        C.CHALLENGE_USED,
        C.SOFTWARE_KEY_CLONED,
        C.CHALLENGE_EXPIRED,
        C.DEVICE_LOCKED,
        C.DEVICE_INACTIVE,
        C.UNSUPPORTED_ALGORITHM,
        C.AUTH_METHOD_NOT_ALLOWED,
        C.PIN_REQUIRED,
        C.PIN_INVALID,
        C.HARDWARE_KEY_INVALID,
        C.HARDWARE_KEY_REQUIRED,
        C.ATTESTATION_INVALID,
        C.SOFTWARE_KEY_SUPERSEDED,
    ),
    "authenticationDecline": (C.AUTHENTICATION_FAILED, C.CHALLENGE_USED, C.CHALLENGE_EXPIRED),
    "operationsPending": (),  # an unknown device gets an empty list (§3.1.5)
    "deactivate": (C.AUTHENTICATION_FAILED,),
    "pushToken": (C.AUTHENTICATION_FAILED, C.DEVICE_INACTIVE),
    # relying-party API (docs/protocol.md §3.2)
    "createUser": (C.CONFLICT,),
    "getUser": (C.NOT_FOUND,),
    "createActivationCode": (C.NOT_FOUND, C.INVALID_STATE),
    "listUserDevices": (C.NOT_FOUND,),
    "getDevice": (C.NOT_FOUND,),
    "createReactivationCode": (C.NOT_FOUND, C.INVALID_STATE),
    "createOperation": (C.NOT_FOUND, C.INVALID_STATE),
    "createSignature": (C.NOT_FOUND, C.INVALID_STATE),
    "lockDevice": (C.NOT_FOUND, C.INVALID_STATE),
    "unlockDevice": (C.NOT_FOUND, C.INVALID_STATE),
    "deactivateDevice": (C.NOT_FOUND,),
    "getOperation": (C.NOT_FOUND,),
    # events and webhooks (docs/events.md)
    "listEvents": (),
    "createWebhookEndpoint": (C.ENDPOINT_URL_INVALID, C.ENDPOINT_ADDRESS_REFUSED),
    "listWebhookEndpoints": (),
    "getWebhookEndpoint": (C.NOT_FOUND,),
    "updateWebhookEndpoint": (C.NOT_FOUND, C.ENDPOINT_URL_INVALID, C.ENDPOINT_ADDRESS_REFUSED),
    "deleteWebhookEndpoint": (C.NOT_FOUND,),
    "createWebhookSecret": (C.NOT_FOUND, C.INVALID_STATE),
    "revokeWebhookSecret": (C.NOT_FOUND, C.INVALID_STATE),
    "listWebhookDeliveries": (C.NOT_FOUND,),
    "listWebhookAttempts": (C.NOT_FOUND,),
    "redeliverWebhookEvents": (C.NOT_FOUND,),
    "health": (),
    "resultSigningKeys": (),
}

_PROBLEM_REF: Final = {"$ref": "#/components/schemas/Problem"}
_SEALED_BODY: Final = {
    "type": "string",
    "format": "binary",
    "description": "The request's JSON message, HPKE-sealed to the application's E2E key "
    "(docs/channel.md §3); the answer: the inner status and body, sealed to the request "
    "(§4). Opening either needs the channel, not this document.",
}
#: The answers that are the same on every route, as shared response objects
_SHARED: Final = {
    C.REQUEST_TIMEOUT: "RequestTimeout",
    C.REQUEST_HEADER_FIELDS_TOO_LARGE: "RequestHeaderFieldsTooLarge",
    C.SERVICE_UNAVAILABLE: "ServiceUnavailable",
    C.INTERNAL: "InternalError",
}
_DEVICE_NOTE: Final = {
    400: "Unsealed: `decryption_failed` (every request that cannot be opened, or a replay) "
    "and the edge's `malformed_request` (framing). A sealed request's own refusals "
    "travel inside the sealed 200; they are answered directly only with the "
    "development switch (plaintext).",
    413: "Unsealed when the (sealed) body is refused before it is opened; a sealed request "
    "whose inner body is over the limit gets it inside the sealed 200.",
    415: "Unsealed: plaintext without the development switch, or another media type.",
}


def _status(code: ErrorCode) -> int:
    return STATUS.get(code, 500)


def _problem_response(status: int, codes: list[ErrorCode], note: str = "") -> dict[str, Any]:
    lines = [f"`{code.value}`: {MEANING.get(code, '')}" for code in codes]
    schema = {
        "allOf": [_PROBLEM_REF],
        "properties": {
            "status": {"const": status},
            "code": {"enum": [code.value for code in codes]},
        },
    }
    listed = "\n".join(f"- {line}" for line in lines)
    return {
        "description": f"{note}\n\n{listed}" if note else listed,
        "content": {PROBLEM_JSON: {"schema": schema}},
    }


def _error_responses(codes: tuple[ErrorCode, ...], *, device: bool) -> dict[str, Any]:
    """Every error status of an operation, each with the codes it carries there."""
    by_status: dict[int, list[ErrorCode]] = {}
    for code in dict.fromkeys(codes):  # first occurrence wins: a stable order
        if code not in _SHARED:
            by_status.setdefault(_status(code), []).append(code)
    responses: dict[str, Any] = {}
    for status in sorted(by_status):
        note = (
            _DEVICE_NOTE.get(
                status,
                "Answered directly only with the development switch "
                "(plaintext); a sealed request gets it inside the sealed "
                "200.",
            )
            if device
            else ""
        )
        responses[str(status)] = _problem_response(status, by_status[status], note)
    for code, name in _SHARED.items():
        if code in codes:
            responses[str(_status(code))] = {"$ref": f"#/components/responses/{name}"}
    return responses


def model_example(model: type[BaseModel]) -> dict[str, Any]:
    """A message assembled from its fields' first examples (every field has one; an optional
    field whose first example is None is left out, as the wire leaves it out)."""
    example: dict[str, Any] = {}
    for name, field in model.model_fields.items():
        if field.examples and field.examples[0] is not None:
            example[field.alias or name] = field.examples[0]
    return example


def _operation_id(path: str) -> str:
    parts = path.removeprefix("/device/v1/").replace("-", "/").split("/")
    return parts[0] + "".join(p.capitalize() for p in parts[1:])


def _device_paths(components: dict[str, Any]) -> dict[str, Any]:
    from keybound.server.web.device import DEVICE_ROUTES  # the route table, once

    models: list[tuple[type[BaseModel], JsonSchemaMode]] = [
        (route.request, "validation") for route in DEVICE_ROUTES.values()
    ]
    models += [(route.response, "serialization") for route in DEVICE_ROUTES.values()]
    refs, schema = models_json_schema(models, ref_template="#/components/schemas/{model}")
    components.update(schema.get("$defs", {}))
    paths: dict[str, Any] = {}
    for path, route in DEVICE_ROUTES.items():
        operation_id = _operation_id(path)
        paths[path] = {
            "post": {
                "tags": ["device"],
                "operationId": operation_id,
                "summary": route.action.value,
                "description": (
                    f"Sealed (`{SEALED_MEDIA_TYPE}`, docs/channel.md): the request body is the "
                    "JSON message below, HPKE-sealed to the application's E2E key; every answer "
                    "the request gets once opened, success or refusal, is an outer 200 "
                    f"`{SEALED_MEDIA_TYPE}` holding the inner status and JSON body, which are the "
                    "200 and problem answers listed here (docs/channel.md §4.4). Only the refusals "
                    "before the request is opened are unsealed: `decryption_failed` (400), the "
                    "edge's and the body limit's (400, 408, 413, 431, 503), "
                    "`secure_channel_required` and `unsupported_media_type` (415), and "
                    "`internal_error` (500). With the development switch (--allow-plaintext) the "
                    "inner answer goes out directly as `application/json` or "
                    "`application/problem+json`."
                ),
                "requestBody": {
                    "required": True,
                    "content": {
                        SEALED_MEDIA_TYPE: {"schema": _SEALED_BODY},
                        "application/json": {
                            "schema": refs[(route.request, "validation")],
                            "example": model_example(route.request),
                        },
                    },
                },
                "responses": {
                    "200": {
                        "description": "Success: sealed, the outer 200 of every answer to an "
                        "opened request (its inner status and body are the ones listed "
                        "here); plaintext (development switch): the message itself.",
                        "content": {
                            SEALED_MEDIA_TYPE: {"schema": _SEALED_BODY},
                            "application/json": {
                                "schema": refs[(route.response, "serialization")],
                                "example": model_example(route.response),
                            },
                        },
                    },
                    **_error_responses(EDGE + DEVICE + REFUSALS[operation_id], device=True),
                },
            }
        }
    return paths


def _rp_responses(operation: dict[str, Any], method: str) -> dict[str, Any]:
    """The relying-party operation's answers: FastAPI's success, then every refusal."""
    operation_id = operation["operationId"]
    door = EDGE + (POST if method == "post" else ())
    if operation.get("security"):
        door += RP
    else:  # the health check: no key, no body
        door += (C.MALFORMED_REQUEST,)
    success = {
        status: answer
        for status, answer in operation["responses"].items()
        if status.startswith("2")
    }
    responses = {**success, **_error_responses(door + REFUSALS[operation_id], device=False)}
    if "401" in responses:
        responses["401"]["headers"] = {
            "WWW-Authenticate": {
                "description": "The scheme the API key goes in.",
                "required": True,
                "schema": {"type": "string", "const": "Bearer"},
            }
        }
    return responses


def _walk(node: Any) -> Iterator[dict[str, Any]]:
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from _walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from _walk(value)


def _refs(node: Any, components: dict[str, Any]) -> set[str]:
    """The component schemas ``node`` uses, transitively."""
    found: set[str] = set()
    todo = [node]
    while todo:
        for item in _walk(todo.pop()):
            ref = item.get("$ref", "")
            if ref.startswith("#/components/schemas/"):
                name = ref.rsplit("/", 1)[1]
                if name not in found:
                    found.add(name)
                    todo.append(components.get(name, {}))
    return found


def _tidy(schema: dict[str, Any]) -> None:
    """Say what the server sends: a response omits an absent optional field, it never sends
    ``null`` (docs/protocol.md §1.1); and drop pydantic's titles made from field names."""
    components = schema["components"]["schemas"]
    requests: set[str] = set()
    responses: set[str] = set()
    for operations in schema["paths"].values():
        for operation in operations.values():
            requests |= _refs(operation.get("requestBody", {}), components)
            responses |= _refs(operation.get("responses", {}), components)
    for name in responses - requests:
        for prop in components[name].get("properties", {}).values():
            options = prop.get("anyOf", [])
            if len(options) == 2 and {"type": "null"} in options:
                prop.pop("anyOf")
                prop.update(next(o for o in options if o != {"type": "null"}))
                if prop.get("default", 0) is None:
                    prop.pop("default")
    for component in components.values():
        for prop in component.get("properties", {}).values():
            prop.pop("title", None)


def document(app: FastAPI) -> None:
    """Make ``app.openapi()`` describe the whole server as it answers."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = generate()
        components = schema.setdefault("components", {})
        schemas = components.setdefault("schemas", {})
        schemas.pop("HTTPValidationError", None)
        schemas.pop("ValidationError", None)
        schemas["Problem"] = PROBLEM_SCHEMA
        components["responses"] = {
            name: _problem_response(_status(code), [code]) for code, name in _SHARED.items()
        }
        for scheme in components.get("securitySchemes", {}).values():
            scheme["description"] = (
                "An API key of the application (`keybound api-key "
                "create APP`): `Authorization: Bearer kb_<id>_<secret>`."
            )
        for operations in schema.get("paths", {}).values():
            for method, operation in operations.items():
                operation["responses"] = _rp_responses(operation, method)
        schema["paths"] = {**_device_paths(schemas), **schema.get("paths", {})}
        schema["info"]["description"] += (
            " Any other path is 404 `not_found`; another method than an operation's is 405 "
            "`method_not_allowed` with `Allow`."
        )
        schema["tags"] = [
            {
                "name": "device",
                "description": "The device API (docs/protocol.md §3.1), sealed (docs/channel.md).",
            },
            {
                "name": "relying party",
                "description": "The relying-party API "
                "(docs/protocol.md §3.2), with a bearer API key.",
            },
            {
                "name": "events and webhooks",
                "description": "Events by polling, webhook "
                "endpoints, their secrets and delivery log (docs/events.md), with a bearer API "
                "key.",
            },
            {"name": "meta", "description": "Liveness, and the keys that verify signed results."},
        ]
        _tidy(schema)
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def render() -> str:
    from keybound.server.services import Keybound
    from keybound.server.web.app import create_app

    with tempfile.TemporaryDirectory() as tmp:
        kb = Keybound.open(f"sqlite:///{tmp}/openapi.db")
        try:
            return json.dumps(create_app(kb).openapi(), indent=2, sort_keys=True) + "\n"
        finally:
            kb.close()


if __name__ == "__main__":
    print(render(), end="")
