"""The OpenAPI document tells the truth (docs/openapi.json, keybound.server.web.openapi): every
wire field is described with an example that is a valid value, base64url fields have exactly
the codec's shape, every route lists what it can answer -- and schemathesis, run over the
relying-party API (with an API key) and the device API (the development switch's plaintext
codec, and random sealed bodies), finds no 5xx, no undocumented status or content type and no
answer off its schema."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel
from schemathesis import checks
from schemathesis.config import SchemathesisConfig
from schemathesis.generation import GenerationMode
from schemathesis.transport import SerializationContext

from keybound import protocol, rpapi
from keybound.channel import SEALED_MEDIA_TYPE
from keybound.errors import ErrorCode
from keybound.protocol import b64_json_schema, b64u_decode, b64u_encode
from keybound.server.services import Keybound
from keybound.server.web.app import create_app
from keybound.server.web.openapi import REFUSALS, model_example
from keybound.server.web.problems import MEANING, STATUS
from tests.helpers import RelyingParty, problem_code
from tests.server.services.test_authentication import activated

VECTORS = Path(__file__).resolve().parents[2] / "vectors" / "protocol" / "transcripts.json"


def _messages(module: Any) -> Iterator[type[BaseModel]]:
    for value in vars(module).values():
        if (
            isinstance(value, type)
            and issubclass(value, protocol.Message)
            and value.__module__ == module.__name__
            and value.model_fields
        ):
            yield value


MESSAGES = [*_messages(protocol), *_messages(rpapi)]


# -- every field documented, every example valid -----------------------------------------


@pytest.mark.parametrize("model", MESSAGES, ids=lambda m: m.__name__)
def test_every_wire_field_has_a_description_and_a_valid_example(model: type[BaseModel]) -> None:
    undocumented = [
        name
        for name, field in model.model_fields.items()
        if not (field.description and field.examples)
    ]
    assert undocumented == [], f"{model.__name__}: add description= and examples= to its fields"
    # the example message validates, so every example is a value the server accepts (or, for
    # a reply, one the SDK accepts)
    example = model.model_validate(model_example(model))
    assert example.to_wire() == model_example(model)  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("model", "vector"),
    [
        (protocol.ActivationFinishRequest, "activation-with-hardware-key"),
        (protocol.AuthenticationFinishRequest, "authentication-pin-with-context"),
        (protocol.DeactivateRequest, "deactivation"),
        (protocol.DeclineRequest, "decline"),
        (protocol.PushTokenRequest, "push-token"),
    ],
)
def test_signed_request_examples_are_the_test_vectors(model: type[BaseModel], vector: str) -> None:
    """The document's example of a signed request is a vector whose signatures verify
    (tests/vectors/protocol, Appendix A), not a made-up one."""
    vectors = {t["name"]: t for t in json.loads(VECTORS.read_text())["transcripts"]}
    assert model_example(model) == vectors[vector]["request"]


@pytest.mark.parametrize(("low", "high"), [(32, 32), (16, 512), (8, 160), (1, 1), (2, 2)])
@settings(max_examples=60, deadline=None, derandomize=True)
@given(data=st.data())
def test_base64url_schema_is_exactly_what_the_codec_accepts(
    low: int, high: int, data: st.DataObject
) -> None:
    """§1.2: the pattern and lengths describe the canonical encodings of low..high bytes and
    nothing else, so a client that follows the document is never refused for its encoding."""
    schema = b64_json_schema(low, high)
    pattern = re.compile(schema["pattern"])
    encoded = b64u_encode(data.draw(st.binary(min_size=max(0, low - 3), max_size=high + 3)))
    in_range = low <= len(b64u_decode(encoded)) <= high
    fits = schema["minLength"] <= len(encoded) <= schema["maxLength"]
    assert (bool(pattern.fullmatch(encoded)) and fits) == in_range
    # whatever the pattern admits decodes, to a length in range
    text = data.draw(
        st.from_regex(pattern, fullmatch=True).filter(
            lambda t: schema["minLength"] <= len(t) <= schema["maxLength"]
        )
    )
    assert low <= len(b64u_decode(text)) <= high
    # a non-canonical last character (low bits set) is outside the pattern
    if len(text) % 4 in (2, 3):
        assert not pattern.fullmatch(text[:-1] + ("B" if len(text) % 4 == 2 else "D"))


def test_problem_schema_documents_every_code(http: Any) -> None:
    document = http.get("/openapi.json").json()
    codes = document["components"]["schemas"]["Problem"]["properties"]["code"]["oneOf"]
    documented = {entry["const"]: entry["description"] for entry in codes}
    assert set(documented) == {c.value for c in STATUS} | {ErrorCode.INTERNAL.value}
    assert set(MEANING) >= set(STATUS), "describe the new code in problems.MEANING"
    assert all(description.split(":", 1)[1].strip() for description in documented.values())


def test_every_route_lists_its_refusals(http: Any) -> None:
    """Each operation names the statuses its door and its service can answer, each with the
    codes it carries there (REFUSALS must know every route)."""
    document = http.get("/openapi.json").json()
    operations = {
        op["operationId"]: (path, method, op)
        for path, methods in document["paths"].items()
        for method, op in methods.items()
    }
    assert set(operations) == set(REFUSALS)
    for operation_id, (path, method, op) in operations.items():
        statuses = set(op["responses"])
        # the edge's and the last resort's, everywhere
        assert {"400", "408", "413", "431", "500", "503"} <= statuses, operation_id
        assert not any(s.endswith("XX") for s in statuses)  # no catch-all ranges
        if method == "post":
            assert "415" in statuses, operation_id
        if path.startswith("/rp/"):
            assert "401" in statuses, operation_id
        for code in REFUSALS[operation_id]:
            assert str(STATUS[code]) in statuses, (operation_id, code)


# -- what the server does that the document says ------------------------------------------


def test_docs_page_is_gone(http: Any) -> None:
    """The Swagger UI loaded its assets from a CDN (blank offline): there is none; the
    document itself is served."""
    for path in ("/docs", "/redoc", "/docs/oauth2-redirect"):
        response = http.get(path)
        assert response.status_code == 404
        assert problem_code(response) == "not_found"
    assert http.get("/openapi.json").status_code == 200


def test_create_user_and_operation_take_a_missing_body_as_empty(rp: RelyingParty) -> None:
    """Their documented body fields are all optional: no body at all is ``{}``."""
    created = rp.http.post("/rp/v1/users", headers=rp.headers)
    assert created.status_code == 201, created.text
    assert set(created.json()) == {"userId", "createdAt"}
    device = activated(rp)
    started = rp.http.post(f"/rp/v1/devices/{device.device_id}/operations", headers=rp.headers)
    assert started.status_code == 201, started.text
    assert started.json()["state"] == "PENDING"
    assert "preOperationContext" not in started.json()


# -- schemathesis ---------------------------------------------------------------------------

#: what every answer must satisfy: no server error, a documented status, content type and
#: headers, a body that matches the documented schema
CHECKS = [
    checks.not_a_server_error,
    checks.status_code_conformance,
    checks.content_type_conformance,
    checks.response_headers_conformance,
    checks.response_schema_conformance,
]
#: bounded: a fixed number of examples per operation and mode, derandomized (deterministic)
EXAMPLES = 6
BOUNDED = settings(
    max_examples=EXAMPLES,
    derandomize=True,
    database=None,
    deadline=None,
    phases=[Phase.generate],
    suppress_health_check=list(HealthCheck),
)


@schemathesis.serializer(SEALED_MEDIA_TYPE)
def _sealed_bytes(ctx: SerializationContext, value: Any) -> dict[str, Any]:
    """The document's sealed body is opaque bytes: send what schemathesis generates (bytes, or
    the JSON spelling of anything else)."""
    data = getattr(value, "data", value)
    return {"data": data if isinstance(data, bytes) else json.dumps(data).encode()}


class _Fuzzer:
    """Runs schemathesis' cases for each operation through a client of the app (in process)
    and checks every answer against the document."""

    def __init__(self, client: TestClient, headers: dict[str, str]) -> None:
        self.client = client
        self.headers = headers
        self.schema = schemathesis.openapi.from_dict(
            client.get("/openapi.json").json(), config=SchemathesisConfig()
        )
        self.statuses: dict[str, set[int]] = {}

    def run(
        self,
        prefix: str,
        *,
        modes: tuple[GenerationMode, ...] = tuple(GenerationMode),
        media_type: str | None = None,
        path_parameters: dict[str, str] | None = None,
        patch: Callable[[Any], None] = lambda body: None,
    ) -> None:
        for result in self.schema.get_all_operations():
            operation = result.ok()
            if not operation.path.startswith(prefix):
                continue
            negatable = bool(
                operation.body
                or operation.path_parameters
                or operation.definition.raw.get("security")
            )
            for mode in modes:
                if mode is GenerationMode.NEGATIVE and not negatable:
                    continue
                params = {
                    k: v for k, v in (path_parameters or {}).items() if f"{{{k}}}" in operation.path
                }
                strategy = operation.as_strategy(
                    generation_mode=mode, media_type=media_type, path_parameters=params or None
                )
                self._check(operation.label, strategy, mode, patch)

    def _check(
        self, label: str, strategy: Any, mode: GenerationMode, patch: Callable[[Any], None]
    ) -> None:
        @BOUNDED
        @given(case=strategy)
        def one(case: Any) -> None:
            if mode is GenerationMode.POSITIVE:
                patch(case.body)
            sent = case.as_transport_kwargs(base_url="http://testserver", headers=self.headers)
            body = {k: sent[k] for k in ("json", "data") if k in sent}
            if isinstance(body.get("data"), bytes | str):  # raw bytes; else form fields
                body["content"] = body.pop("data")
            response = self.client.request(
                sent["method"], sent["url"], headers=sent["headers"], params=sent["params"], **body
            )
            self.statuses.setdefault(label, set()).add(response.status_code)
            case.validate_response(response, checks=CHECKS, headers=sent["headers"])
            if mode is GenerationMode.POSITIVE and response.status_code == 400:
                # a value the document allows is never refused as off the schema
                invalid = response.json().get("invalidParams")
                assert not invalid, (
                    f"{label}: the document allows what the server refuses: "
                    f"{invalid} in {case.body!r}"
                )

        one()


def test_schemathesis_relying_party_api(kb: Keybound, make_rp: Any) -> None:
    """With a valid API key: random ids (404s), then the ids of a real user, device and
    operation, so the success answers are checked against their schemas too."""
    rp = make_rp()
    device = activated(rp)
    user_id = rp.device(device.device_id)["userId"]
    operation_id = rp.start_operation(device.device_id)["operationId"]
    with TestClient(create_app(kb)) as client:
        fuzzer = _Fuzzer(client, rp.headers)
        fuzzer.run("/rp/")
        fuzzer.run(
            "/rp/",
            modes=(GenerationMode.POSITIVE,),
            path_parameters={
                "user_id": user_id,
                "device_id": device.device_id,
                "operation_id": operation_id,
            },
        )
        fuzzer.run("/healthz")
    seen = fuzzer.statuses
    assert 201 in seen["POST /rp/v1/users"] and 404 in seen["GET /rp/v1/users/{user_id}"]
    assert {200, 404} <= seen["POST /rp/v1/devices/{device_id}/lock"]
    assert 200 in seen["GET /rp/v1/operations/{operation_id}"]
    assert 401 in seen["GET /rp/v1/devices/{device_id}"]  # negative mode drops the key


def test_schemathesis_device_api(kb: Keybound, make_rp: Any) -> None:
    """Through the same dispatcher with the development switch's plaintext codec: random
    messages, and messages naming a real application and device; then random sealed bodies
    (every one the unsealed decryption_failed)."""
    rp = make_rp()
    device = activated(rp)

    def real(body: Any) -> None:
        if isinstance(body, dict) and "applicationId" in body:
            body["applicationId"] = rp.app_id
            if "deviceId" in body:
                body["deviceId"] = device.device_id

    with TestClient(create_app(kb, allow_plaintext=True)) as client:
        fuzzer = _Fuzzer(client, {})
        fuzzer.run("/device/", media_type="application/json")
        fuzzer.run(
            "/device/", media_type="application/json", modes=(GenerationMode.POSITIVE,), patch=real
        )
        fuzzer.run("/device/", media_type=SEALED_MEDIA_TYPE, modes=(GenerationMode.POSITIVE,))
    seen = fuzzer.statuses
    assert {200, 400} <= seen["POST /device/v1/authentication/start"]
    assert {400, 401} <= seen["POST /device/v1/authentication/finish"]
    assert {200, 400} <= seen["POST /device/v1/operations/pending"]
