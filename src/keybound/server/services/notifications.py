"""Device notifications: each application's providers as the operator configures them, and
the wake-ups the sender delivers through them (docs/notifications.md).

When a backend-initiated operation is created for a device with a push token, the unit of
work queues a wake-up (services.operations); the sender (services.outbox) claims it after
commit and calls :meth:`Notifications.send`. A wake-up's fate never touches its operation:
the device finds the operation by polling all the same.

Provider credentials (a service-account key, an APNs ``.p8`` key, the push service's signing
secret) are stored wrapped under the master key, bound to the application and provider kind.
"""

from __future__ import annotations

import hashlib
import json
import ssl
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

import httpx

from keybound.channel.framing import lp
from keybound.errors import ConfigurationInvalid, NotFound
from keybound.server.clock import Clock, now_ms
from keybound.server.events.model import EventType
from keybound.server.events.signing import (
    generate_symmetric_secret,
    parse_signing_secret,
    webhook_headers,
)
from keybound.server.events.ssrf import (
    EndpointPolicy,
    GuardedSyncTransport,
    Resolver,
    check_endpoint_url,
)
from keybound.server.notify.apns import (
    ApnsConfig,
    ApnsEnvironment,
    ApnsProvider,
    ApnsPushType,
    load_p8,
)
from keybound.server.notify.base import (
    NotificationProvider,
    OutcomeKind,
    ProviderKind,
    PushHint,
    PushTarget,
)
from keybound.server.notify.fcm import AndroidPriority, FcmConfig, FcmProvider, ServiceAccount
from keybound.server.notify.registry import Notifier
from keybound.server.notify.webhook import WebhookConfig, WebhookProvider
from keybound.server.records import NotificationRecord, PushProviderRecord
from keybound.server.repositories import applications as apps
from keybound.server.repositories import push
from keybound.server.secrets import Purpose, SecretBox
from keybound.server.unit import Unit
from keybound.storage.db import Database

#: a retried wake-up waits at least this long, doubling per attempt up to MAX_BACKOFF
FIRST_BACKOFF_SECONDS: Final = 5.0
MAX_BACKOFF_SECONDS: Final = 300.0
#: a sender holds a claimed wake-up this long (a provider answers within its time-out)
LEASE_SECONDS: Final = 60.0

#: what the operator may set per provider kind (camelCase, as in the CLI and docs)
SETTINGS: Final[dict[ProviderKind, frozenset[str]]] = {
    ProviderKind.WEBHOOK: frozenset({"url", "caFile"}),
    ProviderKind.FCM: frozenset({"apiBaseUrl", "androidPriority", "timeToLiveSeconds", "caFile"}),
    ProviderKind.APNS: frozenset(
        {
            "teamId",
            "keyId",
            "topic",
            "environment",
            "baseUrl",
            "pushType",
            "alertTitle",
            "alertBody",
            "timeToLiveSeconds",
            "caFile",
        }
    ),
}


@dataclass(frozen=True, kw_only=True)
class ProviderInfo:
    application_id: str
    kind: ProviderKind
    settings: dict[str, Any]  # never a credential
    created_at: int
    updated_at: int
    secret: str | None = None  # webhook: the push service's whsec_ secret, shown once


def _binding(application_id: str, kind: str) -> bytes:
    return lp(application_id.encode(), kind.encode())


def _info(record: PushProviderRecord, secret: str | None = None) -> ProviderInfo:
    return ProviderInfo(
        application_id=record.application_id,
        kind=ProviderKind(record.kind),
        settings=json.loads(record.settings),
        created_at=record.created_at,
        updated_at=record.updated_at,
        secret=secret,
    )


class Notifications:
    def __init__(
        self,
        db: Database,
        box: SecretBox,
        clock: Clock,
        *,
        policy: EndpointPolicy,
        resolver: Resolver,
    ) -> None:
        self.db = db
        self.box = box
        self.clock = clock
        self.policy = policy
        self.resolver = resolver
        self._lock = threading.Lock()
        self._notifiers: dict[str, tuple[tuple[int, ...], Notifier]] = {}

    # -- the operator's configuration ------------------------------------------------------

    def set_provider(
        self,
        unit: Unit,
        application_id: str,
        kind: ProviderKind,
        settings: Mapping[str, Any],
        credentials: bytes | None = None,
    ) -> ProviderInfo:
        """Configure (or replace) the application's provider of ``kind``. ``credentials``:
        FCM's service-account key file, APNs' ``.p8`` key; the webhook provider's signing
        secret is generated here and returned once."""
        unit.about(application_id=application_id)
        unknown = set(settings) - SETTINGS[kind]
        if unknown:
            raise ConfigurationInvalid(f"unknown {kind.value} settings: {sorted(unknown)}")
        secret: str | None = None
        if kind is ProviderKind.WEBHOOK:
            url = settings.get("url")
            if not isinstance(url, str):
                raise ConfigurationInvalid("the webhook provider needs url=...")
            # docs/webhooks.md §4 applies to the push service as to any endpoint
            check_endpoint_url(url, policy=self.policy, resolver=self.resolver)
            secret = generate_symmetric_secret().serialize()
            credentials = json.dumps({"secret": secret}).encode()
        elif credentials is None:
            raise ConfigurationInvalid(f"the {kind.value} provider needs its key file")
        record = PushProviderRecord(
            application_id=application_id,
            kind=kind.value,
            settings=json.dumps(dict(settings), sort_keys=True),
            wrapped_credentials=self.box.wrap(
                Purpose.PUSH_CREDENTIALS, credentials, binding=_binding(application_id, kind.value)
            ),
            created_at=unit.now,
            updated_at=unit.now,
        )
        self._build(record).close()  # refuse what would not work, before storing it
        conn = unit.write()
        if apps.config_text(conn, application_id) is None:
            raise NotFound(f"no application {application_id!r}")
        push.put_provider(conn, record)
        unit.emit(
            EventType.PUSH_PROVIDER_SET, payload={"kind": kind.value, "settings": dict(settings)}
        )
        return _info(record, secret)

    def remove_provider(self, unit: Unit, application_id: str, kind: ProviderKind) -> None:
        unit.about(application_id=application_id)
        if not push.remove_provider(unit.write(), application_id, kind.value):
            raise NotFound(f"no {kind.value} provider for {application_id!r}")
        unit.emit(EventType.PUSH_PROVIDER_REMOVE, payload={"kind": kind.value})

    def providers(self, unit: Unit, application_id: str) -> list[ProviderInfo]:
        with unit.read() as conn:
            return [_info(r) for r in push.providers_of(conn, application_id)]

    # -- providers from their stored configuration -----------------------------------------

    def _build(self, record: PushProviderRecord) -> NotificationProvider:
        kind = ProviderKind(record.kind)
        settings: dict[str, Any] = json.loads(record.settings)
        credentials = self.box.unwrap(
            Purpose.PUSH_CREDENTIALS,
            record.wrapped_credentials,
            binding=_binding(record.application_id, record.kind),
        )
        verify: ssl.SSLContext | bool = True
        if settings.get("caFile"):
            verify = ssl.create_default_context(cafile=str(settings["caFile"]))
        try:
            if kind is ProviderKind.WEBHOOK:  # an endpoint like any other (docs/webhooks.md §4)
                transport = GuardedSyncTransport(
                    policy=self.policy,
                    resolver=self.resolver,
                    ssl_context=verify if isinstance(verify, ssl.SSLContext) else None,
                )
                return _webhook(settings, credentials, transport, self.clock)
            return _PROVIDERS[kind](settings, credentials, verify, self.clock)
        except (KeyError, ValueError, TypeError) as exc:
            raise ConfigurationInvalid(f"{kind.value} provider: {exc}") from None

    def notifier(self, application_id: str) -> Notifier:
        """The application's providers, built once and rebuilt when the operator changes
        them."""
        with self.db.read() as conn:
            records = push.providers_of(conn, application_id)
        version = tuple(r.updated_at for r in records)
        with self._lock:
            cached = self._notifiers.get(application_id)
            if cached is not None and cached[0] == version:
                return cached[1]
            notifier = Notifier(self._build(r) for r in records)
            self._notifiers[application_id] = (version, notifier)
        if cached is not None:
            cached[1].close()
        return notifier

    def close(self) -> None:
        with self._lock:
            notifiers, self._notifiers = self._notifiers, {}
        for _version, notifier in notifiers.values():
            notifier.close()

    # -- the sender's side -----------------------------------------------------------------

    def claim(self, limit: int) -> list[NotificationRecord]:
        now = now_ms(self.clock)
        with self.db.read() as conn:
            due = push.due(conn, now, limit)
        if not due:
            return []
        with self.db.write() as conn:
            got = push.claim(
                conn, [n.id for n in due], now=now, lease_until=now + int(LEASE_SECONDS * 1000)
            )
        return [n for n in due if n.id in got]

    def send(self, notification: NotificationRecord) -> None:
        """One wake-up through the application's provider; its outcome is stored on it (and
        a dead push token dropped), never on the operation."""
        now = now_ms(self.clock)
        if now >= notification.expires_at:
            self._store(notification, state="expired", detail="operation expired")
            return
        with self.db.read() as conn:
            token = push.token_of(conn, notification.device_id)
        if token is None:
            self._store(notification, state="dropped", detail="no push token")
            return
        target = PushTarget(provider=ProviderKind(token.provider), token=token.token)
        outcome = self.notifier(notification.application_id).send(
            target,
            PushHint(application_id=notification.application_id, device_id=notification.device_id),
        )
        attempts = notification.attempts + 1
        if outcome.kind is OutcomeKind.DELIVERED:
            self._store(
                notification, state="delivered", attempts=attempts, detail=outcome.message_id or ""
            )
        elif outcome.kind is OutcomeKind.TOKEN_INVALID:
            since = None if outcome.invalid_since is None else int(outcome.invalid_since * 1000)
            with self.db.write() as conn:
                push.drop_token(conn, notification.device_id, token.token, registered_before=since)
            self._store(notification, state="dropped", attempts=attempts, detail=outcome.reason)
        elif outcome.kind is OutcomeKind.RETRY:
            backoff = min(FIRST_BACKOFF_SECONDS * 2 ** (attempts - 1), MAX_BACKOFF_SECONDS)
            later = now + int(max(outcome.retry_after, backoff) * 1000)
            if later >= notification.expires_at:
                self._store(
                    notification,
                    state="expired",
                    attempts=attempts,
                    detail=f"{outcome.reason}; operation expires first",
                )
            else:
                self._store(
                    notification,
                    state="pending",
                    attempts=attempts,
                    next_attempt_at=later,
                    detail=outcome.reason,
                )
        else:
            self._store(notification, state="failed", attempts=attempts, detail=outcome.reason)

    def _store(
        self, notification: NotificationRecord, *, state: str, detail: str, **values: Any
    ) -> None:
        with self.db.write() as conn:
            push.store(conn, notification.id, state=state, last_detail=detail[:200], **values)


# -- building each kind of provider --------------------------------------------------------


def _webhook(
    settings: dict[str, Any], credentials: bytes, transport: httpx.BaseTransport, clock: Clock
) -> NotificationProvider:
    secret = parse_signing_secret(json.loads(credentials)["secret"])
    config = WebhookConfig(url=settings["url"])

    def headers_for(body: bytes) -> dict[str, str]:
        # one id per request: a wake-up is idempotent ("poll now"), nothing to deduplicate
        digest = hashlib.sha256(body).hexdigest()[:32]
        return webhook_headers(
            msg_id=f"ntf_{digest}", timestamp=int(time.time()), body=body, secrets=(secret,)
        )

    client = httpx.Client(
        timeout=config.timeout_seconds, follow_redirects=False, transport=transport, trust_env=False
    )
    return WebhookProvider(config, headers_for=headers_for, client=client, clock=clock)


def _fcm(
    settings: dict[str, Any], credentials: bytes, verify: ssl.SSLContext | bool, clock: Clock
) -> NotificationProvider:
    options: dict[str, Any] = {}
    if "apiBaseUrl" in settings:
        options["api_base_url"] = str(settings["apiBaseUrl"])
    if "androidPriority" in settings:
        options["android_priority"] = AndroidPriority(settings["androidPriority"])
    if "timeToLiveSeconds" in settings:
        options["time_to_live_seconds"] = int(settings["timeToLiveSeconds"])
    config = FcmConfig(service_account=ServiceAccount.from_json(credentials), **options)
    return FcmProvider(config, clock=clock, verify=verify)


def _apns(
    settings: dict[str, Any], credentials: bytes, verify: ssl.SSLContext | bool, clock: Clock
) -> NotificationProvider:
    options: dict[str, Any] = {}
    if "environment" in settings:
        options["environment"] = ApnsEnvironment[str(settings["environment"]).upper()]
    if "baseUrl" in settings:
        options["base_url"] = str(settings["baseUrl"])
    if "pushType" in settings:
        options["push_type"] = ApnsPushType[str(settings["pushType"]).upper()]
    for name, option in (("alertTitle", "alert_title"), ("alertBody", "alert_body")):
        if name in settings:
            options[option] = str(settings[name])
    if "timeToLiveSeconds" in settings:
        options["time_to_live_seconds"] = int(settings["timeToLiveSeconds"])
    config = ApnsConfig(
        team_id=str(settings["teamId"]),
        key_id=str(settings["keyId"]),
        signing_key=load_p8(credentials),
        topic=str(settings["topic"]),
        **options,
    )
    return ApnsProvider(config, clock=clock, verify=verify)


_PROVIDERS: Final = {  # the webhook's is built with the endpoint policy (Notifications.notifier)
    ProviderKind.FCM: _fcm,
    ProviderKind.APNS: _apns,
}


__all__ = ["SETTINGS", "Notifications", "ProviderInfo"]
