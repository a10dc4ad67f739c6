"""The OpenAPI 3.1 document: FastAPI's for the relying-party API, the device API's from its
route table (web.device), and every error as the problem+json it is on the wire.

``python -m keybound.server.web.openapi > docs/openapi.json`` prints it; the same document is
served at ``/openapi.json``, and a test keeps the checked-in copy current.
"""

from __future__ import annotations

import json
import tempfile
from typing import Any, Final

from fastapi import FastAPI
from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode, models_json_schema

from keybound.channel import SEALED_MEDIA_TYPE
from keybound.server.web.problems import PROBLEM_JSON, PROBLEM_SCHEMA

_PROBLEM_REF: Final = {"$ref": "#/components/schemas/Problem"}
_SEALED_BODY: Final = {
    "type": "string", "format": "binary",
    "description": "The JSON message of the matching application/json schema, sealed "
    "(docs/channel.md §3 request, §4 response)."}


def _problem(description: str) -> dict[str, Any]:
    return {"description": description, "content": {PROBLEM_JSON: {"schema": _PROBLEM_REF}}}


def _operation_id(path: str) -> str:
    parts = path.removeprefix("/device/v1/").replace("-", "/").split("/")
    return parts[0] + "".join(p.capitalize() for p in parts[1:])


def _device_paths(components: dict[str, Any]) -> dict[str, Any]:
    from keybound.server.web.device import DEVICE_ROUTES  # the route table, once

    models: list[tuple[type[BaseModel], JsonSchemaMode]] = [
        (route.request, "validation") for route in DEVICE_ROUTES.values()]
    models += [(route.response, "serialization") for route in DEVICE_ROUTES.values()]
    refs, schema = models_json_schema(models, ref_template="#/components/schemas/{model}")
    components.update(schema.get("$defs", {}))
    paths: dict[str, Any] = {}
    for path, route in DEVICE_ROUTES.items():
        request_ref = refs[(route.request, "validation")]
        response_ref = refs[(route.response, "serialization")]
        paths[path] = {"post": {
            "tags": ["device"],
            "operationId": _operation_id(path),
            "summary": route.action.value,
            "description": (
                f"Sealed (`{SEALED_MEDIA_TYPE}`): the request body is the JSON message below, "
                "HPKE-sealed to the application's E2E key; the answer is an outer 200 "
                f"`{SEALED_MEDIA_TYPE}` holding the inner status and JSON body, which are the "
                "200 and problem answers listed here (docs/channel.md §4.4). A request that "
                "cannot be opened, or a replay, gets an unsealed 400 `decryption_failed` "
                "problem; plaintext `application/json` gets 415 `secure_channel_required` "
                "unless the server runs with the development switch --allow-plaintext."),
            "requestBody": {"required": True, "content": {
                SEALED_MEDIA_TYPE: {"schema": _SEALED_BODY},
                "application/json": {"schema": request_ref}}},
            "responses": {
                "200": {"description": "Success (inner status when sealed)", "content": {
                    SEALED_MEDIA_TYPE: {"schema": _SEALED_BODY},
                    "application/json": {"schema": response_ref}}},
                "4XX": _problem("RFC 9457 problem (stable `code`, docs/protocol.md §8); "
                                "sealed like a success, except `decryption_failed` and the "
                                "edge's 413/415"),
                "500": _problem("`internal_error`: nothing of the inside is said"),
            },
        }}
    return paths


def document(app: FastAPI) -> None:
    """Make ``app.openapi()`` describe the whole server as it answers."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = generate()
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        components.pop("HTTPValidationError", None)
        components.pop("ValidationError", None)
        components["Problem"] = PROBLEM_SCHEMA
        for operations in schema.get("paths", {}).values():
            for operation in operations.values():
                responses = operation.setdefault("responses", {})
                responses.pop("422", None)
                responses["4XX"] = _problem("RFC 9457 problem (stable `code`, "
                                            "docs/protocol.md §8)")
                responses["500"] = _problem("`internal_error`: nothing of the inside is said")
        schema["paths"] = {**_device_paths(components), **schema.get("paths", {})}
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
