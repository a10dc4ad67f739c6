"""The relying party's events API: webhook endpoints, secrets, the delivery log, redelivery
and polling, through the production app (docs/events.md). The endpoint policy here is the
production default (public https only); a fake resolver gives test names public addresses."""

from __future__ import annotations

import ipaddress
from typing import Any

import pytest
from sqlalchemy import select

from keybound.rpapi import EventName
from keybound.server.events.ssrf import system_resolver
from keybound.server.secrets import Purpose
from keybound.server.services import Keybound
from keybound.server.services.outbox import Outbox
from keybound.server.services.webhooks import MAX_ACTIVE_SECRETS, secret_binding
from keybound.storage import tables as t
from tests.helpers import RawDevice, RelyingParty, problem_code

PUBLIC = ipaddress.ip_address("93.184.215.14")
NAMES: dict[str, list[Any]] = {}


def resolver(host: str, port: int) -> list[Any]:
    """Test names resolve as NAMES says, anything else as the system says (localhost: to
    loopback; .invalid: not at all)."""
    if host in NAMES:
        return NAMES[host]
    return system_resolver(host, port)


@pytest.fixture(autouse=True)
def names(kb: Keybound) -> None:
    NAMES.clear()
    NAMES.update(
        {
            "hooks.example.com": [PUBLIC],
            "push.example.com": [PUBLIC],
            "rebind.example.com": [ipaddress.ip_address("127.0.0.1")],
            "mixed.example.com": [PUBLIC, ipaddress.ip_address("10.1.2.3")],
        }
    )
    kb.webhooks.resolver = resolver


def create(rp: RelyingParty, **body: Any) -> Any:
    return rp.http.post(
        "/rp/v1/webhooks/endpoints",
        headers=rp.headers,
        json={"url": "https://hooks.example.com/keybound", "eventTypes": ["device.locked"], **body},
    )


def activated(rp: RelyingParty) -> RawDevice:
    device = RawDevice(rp.http, rp.app_id)
    assert device.activate(rp.activation_code()).status_code == 200
    return device


def test_a_secret_is_shown_once_and_kept_wrapped(rp: RelyingParty, kb: Keybound) -> None:
    response = create(rp)
    assert response.status_code == 201, response.text
    assert response.headers["cache-control"] == "no-store"
    created = response.json()
    secret = created["secret"]["secret"]
    assert secret.startswith("whsec_") and "publicKey" not in created["secret"]
    endpoint_id = created["endpoint"]["endpointId"]
    # never again: not in the endpoint, the list, or the audit trail
    for path in (f"/rp/v1/webhooks/endpoints/{endpoint_id}", "/rp/v1/webhooks/endpoints"):
        shown = rp.call("GET", path, expect=200)
        assert secret not in str(shown) and 'secret"' not in str(shown)
    with kb.db.read() as conn:
        (row,) = conn.execute(select(t.webhook_secrets)).all()
        audit = conn.execute(select(t.events.c.payload)).scalars().all()
    assert secret not in str(audit)
    raw = secret.removeprefix("whsec_").encode()
    assert raw not in row.wrapped_secret and secret.encode() not in row.wrapped_secret
    opened = kb.box.unwrap(
        Purpose.WEBHOOK_SECRET, row.wrapped_secret, binding=secret_binding(endpoint_id, row.id)
    )
    assert opened.decode() == secret  # wrapped under the master key, bound to its row


def test_v1a_publishes_the_public_key_and_never_the_private_one(
    rp: RelyingParty, kb: Keybound
) -> None:
    created = create(rp, secretScheme="v1a").json()
    public = created["secret"]["publicKey"]
    assert public.startswith("whpk_") and "secret" not in created["secret"]
    listed = rp.call(
        "GET", f"/rp/v1/webhooks/endpoints/{created['endpoint']['endpointId']}", expect=200
    )
    assert listed["secrets"][0]["publicKey"] == public
    with kb.db.read() as conn:
        (row,) = conn.execute(select(t.webhook_secrets)).all()
    assert b"whsk_" not in row.wrapped_secret


@pytest.mark.parametrize(
    ("url", "code"),
    [
        ("https://127.0.0.1/hook", "endpoint_address_refused"),
        ("https://localhost/hook", "endpoint_address_refused"),
        ("https://rebind.example.com/hook", "endpoint_address_refused"),  # a name -> loopback
        ("https://mixed.example.com/hook", "endpoint_address_refused"),  # one private answer
        ("https://10.0.0.7/hook", "endpoint_address_refused"),
        ("https://169.254.169.254/latest/meta-data", "endpoint_address_refused"),
        ("https://[::ffff:127.0.0.1]/hook", "endpoint_address_refused"),
        ("https://unknown.invalid/hook", "endpoint_address_refused"),
        ("http://hooks.example.com/hook", "endpoint_url_invalid"),  # http is the operator's call
        ("ftp://hooks.example.com/hook", "endpoint_url_invalid"),
        ("https:///nohost", "endpoint_url_invalid"),
    ],
)
def test_ssrf_targets_are_refused_at_registration(rp: RelyingParty, url: str, code: str) -> None:
    response = create(rp, url=url)
    assert response.status_code == 400 and problem_code(response) == code
    assert rp.call("GET", "/rp/v1/webhooks/endpoints", expect=200) == {"endpoints": []}


def test_a_changed_url_is_checked_too(rp: RelyingParty) -> None:
    endpoint_id = create(rp).json()["endpoint"]["endpointId"]
    response = rp.http.patch(
        f"/rp/v1/webhooks/endpoints/{endpoint_id}",
        headers=rp.headers,
        json={"url": "https://rebind.example.com/x"},
    )
    assert problem_code(response) == "endpoint_address_refused"


def test_another_applications_endpoint_is_not_found(rp: RelyingParty, make_rp: Any) -> None:
    endpoint_id = create(rp).json()["endpoint"]["endpointId"]
    other = make_rp()
    for method in ("GET", "DELETE"):
        response = other.http.request(
            method, f"/rp/v1/webhooks/endpoints/{endpoint_id}", headers=other.headers
        )
        assert response.status_code == 404
    assert other.call("GET", "/rp/v1/webhooks/endpoints", expect=200) == {"endpoints": []}
    anonymous = rp.http.get("/rp/v1/webhooks/endpoints")
    assert anonymous.status_code == 401


def test_secrets_rotate_with_several_active_and_never_none(rp: RelyingParty) -> None:
    created = create(rp).json()
    base = f"/rp/v1/webhooks/endpoints/{created['endpoint']['endpointId']}"
    first = created["secret"]["secretId"]
    added = rp.call("POST", f"{base}/secrets", {"scheme": "v1a"}, expect=201)
    assert added["publicKey"].startswith("whpk_")
    listed = rp.call("GET", base, expect=200)["secrets"]
    assert {s["secretId"] for s in listed} == {first, added["secretId"]}
    after = rp.call("DELETE", f"{base}/secrets/{first}", expect=200)["secrets"]
    assert [s["secretId"] for s in after] == [added["secretId"]]
    last = rp.http.delete(f"{base}/secrets/{added['secretId']}", headers=rp.headers)
    assert problem_code(last) == "invalid_state"  # every attempt needs a signature
    for _ in range(MAX_ACTIVE_SECRETS - 1):
        rp.call("POST", f"{base}/secrets", expect=201)
    assert problem_code(rp.http.post(f"{base}/secrets", headers=rp.headers)) == "invalid_state"


def test_update_delete_and_the_event_type_allow_list(rp: RelyingParty) -> None:
    endpoint_id = create(rp).json()["endpoint"]["endpointId"]
    path = f"/rp/v1/webhooks/endpoints/{endpoint_id}"
    changed = rp.call(
        "PATCH",
        path,
        {"eventTypes": ["operation.completed", "device.locked"], "enabled": False},
        expect=200,
    )
    assert changed["eventTypes"] == ["device.locked", "operation.completed"]
    assert changed["enabled"] is False and changed["disabledReason"] == "RELYING_PARTY"
    assert rp.call("PATCH", path, {"enabled": True}, expect=200)["enabled"] is True
    bad = rp.http.patch(path, headers=rp.headers, json={"eventTypes": ["user.create"]})
    assert problem_code(bad) == "malformed_request"  # audit-only types are not offered
    assert rp.http.delete(path, headers=rp.headers).status_code == 204
    assert rp.http.get(path, headers=rp.headers).status_code == 404


def test_polling_pages_through_events_with_the_seq_cursor(rp: RelyingParty, make_rp: Any) -> None:
    other = make_rp()
    activated(other)  # another application's events are never listed here
    devices = [activated(rp) for _ in range(3)]
    for device in devices:
        rp.call("POST", f"/rp/v1/devices/{device.device_id}/lock", expect=200)
    seen: list[dict[str, Any]] = []
    cursor = 0
    while True:
        page = rp.call("GET", f"/rp/v1/events?after={cursor}&limit=2", expect=200)
        seen.extend(page["events"])
        if page["nextCursor"] == cursor:
            break
        cursor = page["nextCursor"]
    assert [e["type"] for e in seen] == ["operation.completed", "device.activated"] * 3 + [
        "device.locked"
    ] * 3
    assert [e["seq"] for e in seen] == sorted(e["seq"] for e in seen)
    assert {e["data"]["applicationId"] for e in seen} == {rp.app_id}
    locked = rp.call("GET", "/rp/v1/events?type=device.locked", expect=200)["events"]
    assert [e["data"]["deviceId"] for e in locked] == [d.device_id for d in devices]
    assert {e["data"]["lockReason"] for e in locked} == {"RELYING_PARTY"}
    tail = rp.call("GET", f"/rp/v1/events?after={seen[-1]['seq']}", expect=200)
    assert tail["events"] == [] and tail["nextCursor"] >= seen[-1]["seq"]


def test_redelivery_asks_for_one_event_or_a_range(rp: RelyingParty, kb: Keybound) -> None:
    created = create(rp, eventTypes=["device.activated"]).json()
    path = f"/rp/v1/webhooks/endpoints/{created['endpoint']['endpointId']}/redeliver"
    for body in (
        {},
        {"eventId": "x", "since": "2026-01-01T00:00:00Z", "until": "2026-01-02T00:00:00Z"},
        {"since": "2026-01-01T00:00:00Z"},
    ):
        assert (
            problem_code(rp.http.post(path, headers=rp.headers, json=body)) == "malformed_request"
        )
    assert (
        rp.http.post(path, headers=rp.headers, json={"eventId": "no-such-event"}).status_code == 404
    )
    device = activated(rp)
    rp.call("POST", f"/rp/v1/devices/{device.device_id}/lock", expect=200)
    locked = rp.call("GET", "/rp/v1/events?type=device.locked", expect=200)["events"][0]
    # not a type this endpoint subscribes to
    assert rp.http.post(path, headers=rp.headers, json={"eventId": locked["id"]}).status_code == 404
    activated_event = rp.call("GET", "/rp/v1/events?type=device.activated", expect=200)["events"][0]
    assert rp.call("POST", path, {"eventId": activated_event["id"]}, expect=202) == {"queued": 1}


def test_the_delivery_log_lists_deliveries(rp: RelyingParty, kb: Keybound) -> None:
    created = create(rp, eventTypes=["device.activated"]).json()
    base = f"/rp/v1/webhooks/endpoints/{created['endpoint']['endpointId']}"
    activated(rp)
    activated(rp)
    assert Outbox(kb).fan_out() == 2
    listed = rp.call("GET", f"{base}/deliveries?state=pending", expect=200)
    assert [d["eventType"] for d in listed["deliveries"]] == ["device.activated"] * 2
    assert all(d["attempts"] == 0 and d["nextAttemptAt"] for d in listed["deliveries"])
    page = rp.call("GET", f"{base}/deliveries?limit=1", expect=200)
    rest = rp.call("GET", f"{base}/deliveries?after={page['nextCursor']}", expect=200)
    assert len(page["deliveries"]) == len(rest["deliveries"]) == 1
    assert rp.call("GET", f"{base}/attempts", expect=200) == {"attempts": [], "nextCursor": 0}
    assert rp.call("GET", f"{base}/deliveries?state=delivered", expect=200)["deliveries"] == []


def test_event_types_on_the_wire_match_the_server_allow_list() -> None:
    from keybound.server.events.model import PUBLIC_TYPES

    assert {kind.value for kind in PUBLIC_TYPES} == {name.value for name in EventName}


def test_the_cli_choices_match_the_wire_enums() -> None:
    from keybound.cli import webhook as cli
    from keybound.rpapi import DeliveryState, SecretScheme

    # the CLI names them itself to keep its parser lean: a new member must reach it too
    assert tuple(name.value for name in EventName) == cli.EVENT_TYPES
    assert tuple(scheme.value for scheme in SecretScheme) == cli.SCHEMES
    assert tuple(state.value for state in DeliveryState) == cli.DELIVERY_STATES
