"""Webhook endpoints as the relying party (API) and the operator (CLI) manage them, the
delivery log, redelivery on request, and events read by polling (docs/events.md).

An endpoint belongs to one application. Its URL is checked against the operator's endpoint
policy when it is registered or changed (docs/webhooks.md §4; the sender checks it again at
every connection). Its signing secrets are generated here, stored wrapped under the master
key, and a ``whsec_`` secret is shown once, in the answer that creates it; a ``v1a`` key's
public half (``whpk_``) is listed with the endpoint, since the receiver verifies with it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Final

from keybound.channel.framing import lp
from keybound.errors import InvalidState, MalformedRequest, NotFound
from keybound.rpapi import (
    CreatedWebhookEndpoint,
    CreateWebhookEndpointRequest,
    DeliveryState,
    EventEnvelope,
    EventList,
    EventName,
    NewWebhookSecret,
    RedeliverRequest,
    RedeliverResponse,
    SecretScheme,
    UpdateWebhookEndpointRequest,
    WebhookAttempt,
    WebhookAttemptList,
    WebhookDelivery,
    WebhookDeliveryList,
    WebhookEndpoint,
    WebhookEndpointList,
    WebhookSecret,
)
from keybound.server.clock import ms_to_dt
from keybound.server.core.ceremony import new_id
from keybound.server.events.model import Actor, EventType
from keybound.server.events.public import OPERATION_EVENTS, envelope
from keybound.server.events.signing import (
    AsymmetricSecret,
    SigningSecret,
    generate_ed25519_secret,
    generate_symmetric_secret,
    parse_signing_secret,
)
from keybound.server.events.ssrf import EndpointPolicy, Resolver, check_endpoint_url
from keybound.server.records import EventRecord, WebhookEndpointRecord, WebhookSecretRecord
from keybound.server.repositories import applications as apps
from keybound.server.repositories import events as event_rows
from keybound.server.repositories import operations as ops
from keybound.server.repositories import webhooks as hooks
from keybound.server.secrets import Purpose, SecretBox
from keybound.server.services.operations import operation_view
from keybound.server.unit import Unit

if TYPE_CHECKING:
    from sqlalchemy import Connection

#: active secrets per endpoint: rotation needs two, a receiver checks at most 16 signatures
MAX_ACTIVE_SECRETS: Final = 8
#: events one redelivery request may queue; narrow the time range for more
MAX_REDELIVER: Final = 10_000
#: rows of the events table one poll looks at (its answer's next cursor moves past them)
POLL_SCAN: Final = 10_000
MAX_PAGE: Final = 500


def _nothing() -> None:
    pass


def secret_binding(endpoint_id: str, secret_id: str) -> bytes:
    return lp(endpoint_id.encode(), secret_id.encode())


def _new_secret(scheme: SecretScheme) -> SigningSecret:
    if scheme is SecretScheme.V1A:
        return generate_ed25519_secret()
    return generate_symmetric_secret()


def _secret_view(record: WebhookSecretRecord) -> WebhookSecret:
    return WebhookSecret(
        secret_id=record.id,
        scheme=SecretScheme(record.scheme),
        created_at=ms_to_dt(record.created_at),
        public_key=record.public_key,
    )


def _endpoint_view(
    record: WebhookEndpointRecord, types: Sequence[str], secrets: Sequence[WebhookSecretRecord]
) -> WebhookEndpoint:
    return WebhookEndpoint(
        endpoint_id=record.id,
        url=record.url,
        description=record.description,
        event_types=[EventName(kind) for kind in types],
        enabled=record.disabled_at is None,
        disabled_reason=record.disabled_reason,
        disabled_at=ms_to_dt(record.disabled_at) if record.disabled_at else None,
        created_at=ms_to_dt(record.created_at),
        updated_at=ms_to_dt(record.updated_at),
        secrets=[_secret_view(s) for s in secrets],
    )


def envelopes(conn: Connection, records: Sequence[EventRecord], now: int) -> list[EventEnvelope]:
    """The relying party's view of event rows: an operation event carries the operation as
    ``GET /rp/v1/operations/{id}`` shows it (events.public)."""
    wanted = sorted(
        {r.operation_id for r in records if r.type in OPERATION_EVENTS and r.operation_id}
    )
    found = ops.by_ids(conn, wanted)
    views = {
        op_id: operation_view(row, now).model_dump(mode="json", by_alias=True, exclude_none=True)
        for op_id, row in found.items()
    }
    return [envelope(r, views.get(r.operation_id or "")) for r in records]


class Webhooks:
    def __init__(
        self,
        box: SecretBox,
        *,
        policy: EndpointPolicy,
        resolver: Resolver,
        wake: Callable[[], None] = _nothing,
    ) -> None:
        self.box = box
        self.policy = policy
        self.resolver = resolver
        self.wake = wake  # tells this process's sender there is work

    # -- secrets ---------------------------------------------------------------------------

    def _store_secret(self, unit: Unit, endpoint_id: str, scheme: SecretScheme) -> NewWebhookSecret:
        secret = _new_secret(scheme)
        secret_id = new_id()
        public = secret.public_key().serialize() if isinstance(secret, AsymmetricSecret) else None
        record = WebhookSecretRecord(
            id=secret_id,
            endpoint_id=endpoint_id,
            scheme=secret.scheme.value,
            wrapped_secret=self.box.wrap(
                Purpose.WEBHOOK_SECRET,
                secret.serialize().encode(),
                binding=secret_binding(endpoint_id, secret_id),
            ),
            public_key=public,
            created_at=unit.now,
            revoked_at=None,
        )
        hooks.insert_secret(unit.write(), record)
        return NewWebhookSecret(
            secret_id=secret_id,
            scheme=scheme,
            created_at=ms_to_dt(unit.now),
            public_key=public,
            secret=None if public else secret.serialize(),
        )

    def signing_secrets(self, records: Sequence[WebhookSecretRecord]) -> tuple[SigningSecret, ...]:
        """The endpoint's active secrets, unwrapped (the sender signs with every one)."""
        return tuple(
            parse_signing_secret(
                self.box.unwrap(
                    Purpose.WEBHOOK_SECRET,
                    r.wrapped_secret,
                    binding=secret_binding(r.endpoint_id, r.id),
                ).decode()
            )
            for r in records
        )

    # -- endpoints -------------------------------------------------------------------------

    def _endpoint(
        self, conn: Connection, application_id: str, endpoint_id: str
    ) -> WebhookEndpointRecord:
        record = hooks.endpoint_of(conn, application_id, endpoint_id)
        if record is None:
            raise NotFound("no such webhook endpoint")
        return record

    def _view(self, conn: Connection, record: WebhookEndpointRecord) -> WebhookEndpoint:
        types = hooks.subscriptions(conn, [record.id])[record.id]
        return _endpoint_view(record, types, hooks.secrets_of(conn, [record.id]))

    def _check_url(self, url: str) -> str:
        # docs/webhooks.md §4, at registration: outside the write transaction (it resolves)
        return check_endpoint_url(url, policy=self.policy, resolver=self.resolver).url

    def create_endpoint(
        self, unit: Unit, application_id: str, request: CreateWebhookEndpointRequest
    ) -> CreatedWebhookEndpoint:
        unit.about(application_id=application_id)
        url = self._check_url(request.url)
        conn = unit.write()
        if apps.config_text(conn, application_id) is None:
            raise NotFound(f"no application {application_id!r}")
        endpoint_id = new_id()
        record = WebhookEndpointRecord(
            id=endpoint_id,
            application_id=application_id,
            url=url,
            description=request.description,
            created_at=unit.now,
            updated_at=unit.now,
            disabled_at=None,
            disabled_reason=None,
            breaker_failures=0,
            breaker_open_until=None,
        )
        hooks.insert_endpoint(conn, record)
        types = [kind.value for kind in request.event_types]
        hooks.set_subscriptions(
            conn, endpoint_id=endpoint_id, application_id=application_id, types=types
        )
        secret = self._store_secret(unit, endpoint_id, request.secret_scheme)
        unit.emit(
            EventType.WEBHOOK_ENDPOINT_CREATE,
            subject=endpoint_id,
            payload={
                "endpointId": endpoint_id,
                "url": url,
                "eventTypes": sorted(set(types)),
                "secretScheme": request.secret_scheme.value,
            },
        )
        return CreatedWebhookEndpoint(endpoint=self._view(conn, record), secret=secret)

    def list_endpoints(self, unit: Unit, application_id: str) -> WebhookEndpointList:
        with unit.read() as conn:
            records = hooks.endpoints_of(conn, application_id)
            ids = [r.id for r in records]
            types = hooks.subscriptions(conn, ids)
            secrets = hooks.secrets_of(conn, ids)
        return WebhookEndpointList(
            endpoints=[
                _endpoint_view(r, types[r.id], [s for s in secrets if s.endpoint_id == r.id])
                for r in records
            ]
        )

    def get_endpoint(self, unit: Unit, application_id: str, endpoint_id: str) -> WebhookEndpoint:
        with unit.read() as conn:
            return self._view(conn, self._endpoint(conn, application_id, endpoint_id))

    def update_endpoint(
        self,
        unit: Unit,
        application_id: str,
        endpoint_id: str,
        request: UpdateWebhookEndpointRequest,
    ) -> WebhookEndpoint:
        unit.about(application_id=application_id)
        url = self._check_url(request.url) if request.url is not None else None
        conn = unit.write()
        record = self._endpoint(conn, application_id, endpoint_id)
        changes: dict[str, object] = {"updated_at": unit.now}
        if url is not None:
            changes["url"] = url
        if request.description is not None:
            changes["description"] = request.description
        if request.enabled is True and record.disabled_at is not None:
            # re-enabled: a new start, with a closed breaker (docs/webhooks.md §3.3)
            changes.update(
                disabled_at=None, disabled_reason=None, breaker_failures=0, breaker_open_until=None
            )
        elif request.enabled is False and record.disabled_at is None:
            by = "OPERATOR" if unit.actor is Actor.OPERATOR else "RELYING_PARTY"
            changes.update(disabled_at=unit.now, disabled_reason=by)
        hooks.update_endpoint(conn, endpoint_id, **changes)
        if request.event_types is not None:
            hooks.set_subscriptions(
                conn,
                endpoint_id=endpoint_id,
                application_id=application_id,
                types=[kind.value for kind in request.event_types],
            )
        unit.emit(
            EventType.WEBHOOK_ENDPOINT_UPDATE,
            subject=endpoint_id,
            payload=request.model_dump(mode="json", by_alias=True, exclude_none=True),
        )
        unit.after_commit(self.wake)
        updated = hooks.endpoint(conn, endpoint_id)
        assert updated is not None
        return self._view(conn, updated)

    def delete_endpoint(self, unit: Unit, application_id: str, endpoint_id: str) -> None:
        unit.about(application_id=application_id)
        conn = unit.write()
        self._endpoint(conn, application_id, endpoint_id)
        hooks.delete_endpoint(conn, endpoint_id)
        unit.emit(
            EventType.WEBHOOK_ENDPOINT_DELETE,
            subject=endpoint_id,
            payload={"endpointId": endpoint_id},
        )

    # -- secrets: rotation -----------------------------------------------------------------

    def add_secret(
        self, unit: Unit, application_id: str, endpoint_id: str, scheme: SecretScheme
    ) -> NewWebhookSecret:
        unit.about(application_id=application_id)
        conn = unit.write()
        self._endpoint(conn, application_id, endpoint_id)
        if len(hooks.secrets_of(conn, [endpoint_id])) >= MAX_ACTIVE_SECRETS:
            raise InvalidState(
                f"an endpoint has at most {MAX_ACTIVE_SECRETS} active secrets: revoke one first"
            )
        secret = self._store_secret(unit, endpoint_id, scheme)
        unit.emit(
            EventType.WEBHOOK_SECRET_CREATE,
            subject=endpoint_id,
            payload={
                "endpointId": endpoint_id,
                "secretId": secret.secret_id,
                "scheme": scheme.value,
            },
        )
        return secret

    def revoke_secret(
        self, unit: Unit, application_id: str, endpoint_id: str, secret_id: str
    ) -> WebhookEndpoint:
        unit.about(application_id=application_id)
        conn = unit.write()
        record = self._endpoint(conn, application_id, endpoint_id)
        active = hooks.secrets_of(conn, [endpoint_id])
        if secret_id not in {s.id for s in active}:
            raise NotFound("no such active secret")
        # docs/webhooks.md §2.2: every attempt is signed, so one secret always remains
        if len(active) == 1:
            raise InvalidState("the last active secret cannot be revoked: add another first")
        hooks.revoke_secret(conn, endpoint_id, secret_id, unit.now)
        unit.emit(
            EventType.WEBHOOK_SECRET_REVOKE,
            subject=endpoint_id,
            payload={"endpointId": endpoint_id, "secretId": secret_id},
        )
        return self._view(conn, record)

    # -- the delivery log ------------------------------------------------------------------

    def deliveries(
        self,
        unit: Unit,
        application_id: str,
        endpoint_id: str,
        *,
        state: DeliveryState | None,
        after: int,
        limit: int,
    ) -> WebhookDeliveryList:
        limit = max(1, min(limit, MAX_PAGE))
        with unit.read() as conn:
            self._endpoint(conn, application_id, endpoint_id)
            rows = hooks.deliveries_of(
                conn, endpoint_id, after=after, limit=limit, state=state.value if state else None
            )
        return WebhookDeliveryList(
            deliveries=[
                WebhookDelivery(
                    delivery_id=d.id,
                    event_id=d.event_id,
                    event_seq=d.event_seq,
                    event_type=kind,
                    state=DeliveryState(d.state),
                    attempts=d.attempts,
                    first_attempt_at=ms_to_dt(d.first_attempt_at) if d.first_attempt_at else None,
                    next_attempt_at=ms_to_dt(d.next_attempt_at)
                    if d.state == hooks.PENDING
                    else None,
                    last_attempt_at=ms_to_dt(d.last_attempt_at) if d.last_attempt_at else None,
                    last_status=d.last_status,
                    last_error=d.last_error,
                    last_detail=d.last_detail,
                )
                for d, kind in rows
            ],
            next_cursor=rows[-1][0].id if rows else after,
        )

    def attempts(
        self, unit: Unit, application_id: str, endpoint_id: str, *, after: int, limit: int
    ) -> WebhookAttemptList:
        limit = max(1, min(limit, MAX_PAGE))
        with unit.read() as conn:
            self._endpoint(conn, application_id, endpoint_id)
            rows = hooks.attempts_of(conn, endpoint_id, after=after, limit=limit)
        return WebhookAttemptList(
            attempts=[
                WebhookAttempt(
                    attempt_id=a.id,
                    delivery_id=a.delivery_id,
                    event_id=a.event_id,
                    attempted_at=ms_to_dt(a.attempted_at),
                    status=a.status,
                    error=a.error,
                    detail=a.detail,
                    duration_ms=a.duration_ms,
                )
                for a in rows
            ],
            next_cursor=rows[-1].id if rows else after,
        )

    # -- redelivery on request -------------------------------------------------------------

    def redeliver(
        self, unit: Unit, application_id: str, endpoint_id: str, request: RedeliverRequest
    ) -> RedeliverResponse:
        """Queue one event, or every subscribed event of a time range, to the endpoint again
        as fresh deliveries (docs/events.md, Redelivery)."""
        unit.about(application_id=application_id)
        by_id = request.event_id is not None
        by_range = request.since is not None and request.until is not None
        if by_id == by_range or (not by_range and (request.since or request.until)):
            raise MalformedRequest("give either eventId, or both since and until")
        conn = unit.write()
        self._endpoint(conn, application_id, endpoint_id)
        types = hooks.subscriptions(conn, [endpoint_id])[endpoint_id]
        if request.event_id is not None:
            event = event_rows.by_id(conn, application_id, request.event_id)
            if event is None or event.type not in types:
                raise NotFound("no event of a type this endpoint subscribes to has this id")
            events = [event]
        else:
            assert request.since is not None and request.until is not None
            since, until = _ms(request.since), _ms(request.until)
            if until <= since:
                raise MalformedRequest("until must be after since")
            events = event_rows.public_between(
                conn,
                application_id=application_id,
                since=since,
                until=until,
                types=types,
                limit=MAX_REDELIVER + 1,
            )
            if len(events) > MAX_REDELIVER:
                raise MalformedRequest(f"more than {MAX_REDELIVER} events in the range: narrow it")
        for event in events:
            hooks.requeue(conn, endpoint_id=endpoint_id, event=event, now=unit.now)
        unit.emit(
            EventType.WEBHOOK_REDELIVER,
            subject=endpoint_id,
            payload={"endpointId": endpoint_id, "queued": len(events)},
        )
        unit.after_commit(self.wake)
        return RedeliverResponse(queued=len(events))

    # -- polling ---------------------------------------------------------------------------

    def events(
        self,
        unit: Unit,
        application_id: str,
        *,
        after: int,
        limit: int,
        types: Sequence[EventName] = (),
    ) -> EventList:
        """The application's events after the cursor, oldest first (docs/events.md,
        Polling)."""
        limit = max(1, min(limit, MAX_PAGE))
        wanted = [kind.value for kind in (types or list(EventName))]
        with unit.read() as conn:
            event_rows.settle(conn)
            records, scanned_to = event_rows.public_after(
                conn, application_id=application_id, after=after, scan=POLL_SCAN, types=wanted
            )
            page = records[:limit]
            listed = envelopes(conn, page, unit.now)
        if len(records) > limit:
            cursor = page[-1].seq
        else:
            cursor = after if scanned_to is None else scanned_to
        return EventList(events=listed, next_cursor=cursor)


def _ms(moment: datetime) -> int:
    if moment.tzinfo is None:
        raise MalformedRequest("times need a time zone (say Z for UTC)")
    return int(moment.timestamp() * 1000)


__all__ = ["MAX_ACTIVE_SECRETS", "Webhooks", "envelopes", "secret_binding"]
