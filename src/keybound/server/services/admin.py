"""The operator's door: every command of the ``keybound`` CLI (and of an admin API next) as
one unit of work, audited as the operator's."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import asdict
from typing import IO, TYPE_CHECKING, Any, TypeVar

from keybound.channel import DEFAULT_SUITE, ChannelPin, ChannelSuite
from keybound.rpapi import (
    CreatedWebhookEndpoint,
    CreateWebhookEndpointRequest,
    DeliveryState,
    Device,
    NewWebhookSecret,
    RedeliverRequest,
    RedeliverResponse,
    SecretScheme,
    UpdateWebhookEndpointRequest,
    WebhookAttemptList,
    WebhookDeliveryList,
    WebhookEndpoint,
    WebhookEndpointList,
)
from keybound.server.core.appconfig import AppConfig
from keybound.server.events.chain import CheckpointKind, Entry, VerifiedChain
from keybound.server.events.model import Actor, EventType
from keybound.server.events.results import ResultAlgorithm
from keybound.server.notify.base import ProviderKind
from keybound.server.records import CheckpointRecord, EventRecord, NoiseRecord
from keybound.server.repositories import events, noise
from keybound.server.services.applications import ApiKeyInfo, NewApiKey
from keybound.server.services.audit import Exported
from keybound.server.services.e2ekeys import E2EKeyInfo
from keybound.server.services.notifications import ProviderInfo
from keybound.server.services.resultkeys import ResultKeyInfo
from keybound.server.services.retention import Pruned, Retention, prune
from keybound.server.unit import Unit, perform
from keybound.storage.batches import DELETE_BATCH

if TYPE_CHECKING:
    from keybound.server.services import Keybound

T = TypeVar("T")


class Admin:
    def __init__(self, kb: Keybound) -> None:
        self._kb = kb

    def _run(self, action: EventType, call: Callable[[Unit], T]) -> T:
        unit = Unit(
            self._kb.db, self._kb.clock, actor=Actor.OPERATOR, action=action, identified=True
        )
        return perform(unit, call, noise=self._kb.noise, cause=f"admin {action.value}")

    # -- applications ---------------------------------------------------------------------

    def create_application(self, application_id: str, config: AppConfig | None = None) -> AppConfig:
        return self._run(
            EventType.APPLICATION_CREATE,
            lambda u: self._kb.applications.create(u, application_id, config),
        )

    def update_application(self, application_id: str, changes: dict[str, Any]) -> AppConfig:
        return self._run(
            EventType.APPLICATION_UPDATE,
            lambda u: self._kb.applications.update(u, application_id, changes),
        )

    def application_config(self, application_id: str) -> AppConfig:
        return self._run(
            EventType.ADMIN_READ, lambda u: self._kb.applications.config(u, application_id)
        )

    def application_ids(self) -> list[str]:
        return self._run(EventType.ADMIN_READ, self._kb.applications.ids)

    def create_api_key(self, application_id: str, label: str = "") -> NewApiKey:
        return self._run(
            EventType.API_KEY_CREATE,
            lambda u: self._kb.applications.create_api_key(u, application_id, label),
        )

    def revoke_api_key(self, key_id: str) -> None:
        self._run(
            EventType.API_KEY_REVOKE, lambda u: self._kb.applications.revoke_api_key(u, key_id)
        )

    def api_keys(self, application_id: str) -> list[ApiKeyInfo]:
        return self._run(
            EventType.ADMIN_READ, lambda u: self._kb.applications.list_api_keys(u, application_id)
        )

    # -- E2E keys -------------------------------------------------------------------------

    def create_e2e_key(
        self, application_id: str, *, suite: ChannelSuite = DEFAULT_SUITE, active: bool = True
    ) -> E2EKeyInfo:
        return self._run(
            EventType.E2E_KEY_CREATE,
            lambda u: self._kb.e2e_keys.create(u, application_id, suite=suite, active=active),
        )

    def activate_e2e_key(self, key_id: str) -> E2EKeyInfo:
        return self._run(
            EventType.E2E_KEY_ACTIVATE, lambda u: self._kb.e2e_keys.activate(u, key_id)
        )

    def retire_e2e_key(self, key_id: str) -> E2EKeyInfo:
        return self._run(EventType.E2E_KEY_RETIRE, lambda u: self._kb.e2e_keys.retire(u, key_id))

    def e2e_key(self, key_id: str) -> E2EKeyInfo:
        return self._run(EventType.ADMIN_READ, lambda u: self._kb.e2e_keys.get(u, key_id))

    def e2e_keys(self, application_id: str) -> list[E2EKeyInfo]:
        return self._run(EventType.ADMIN_READ, lambda u: self._kb.e2e_keys.list(u, application_id))

    def e2e_pin(self, key_id: str, *, server_url: str) -> ChannelPin:
        return self._run(
            EventType.E2E_KEY_EXPORT_PIN,
            lambda u: self._kb.e2e_keys.pin(u, key_id, server_url=server_url),
        )

    # -- result-signing keys (docs/signed-results.md) --------------------------------------

    def create_signing_key(
        self, algorithm: ResultAlgorithm = ResultAlgorithm.ES256
    ) -> ResultKeyInfo:
        return self._run(
            EventType.SIGNING_KEY_CREATE, lambda u: self._kb.results.create(u, algorithm=algorithm)
        )

    def signing_keys(self) -> list[ResultKeyInfo]:
        return self._run(EventType.ADMIN_READ, self._kb.results.list)

    def retire_signing_key(self, kid: str, *, publish_days: int | None = None) -> ResultKeyInfo:
        return self._run(
            EventType.SIGNING_KEY_RETIRE,
            lambda u: self._kb.results.retire(u, kid, publish_days=publish_days),
        )

    def set_issuer(self, issuer: str) -> str:
        return self._run(
            EventType.SIGNING_KEY_ISSUER, lambda u: self._kb.results.set_issuer(u, issuer)
        )

    # -- the audit trail (docs/audit.md) --------------------------------------------------

    def audit_checkpoint(self) -> CheckpointRecord | None:
        """Sign the chain's head now (housekeeping: no event, which would move the head)."""
        return self._kb.audit.checkpoint(CheckpointKind.PERIODIC)

    def audit_verify(self, *, kept: Iterable[Entry] = ()) -> VerifiedChain:
        return self._kb.audit.verify(kept=kept)

    def audit_export(self, out: IO[str]) -> Exported:
        exported = self._kb.audit.export(out)

        def record(unit: Unit) -> None:
            unit.emit(EventType.AUDIT_EXPORT, payload=asdict(exported))

        self._run(EventType.AUDIT_EXPORT, record)
        return exported

    # -- devices --------------------------------------------------------------------------

    def lock_device(self, application_id: str, device_id: str) -> Device:
        return self._run(
            EventType.DEVICE_LOCK,
            lambda u: self._kb.registrations.lock(u, application_id, device_id),
        )

    def unlock_device(self, application_id: str, device_id: str) -> Device:
        return self._run(
            EventType.DEVICE_UNLOCK,
            lambda u: self._kb.registrations.unlock(u, application_id, device_id),
        )

    def deactivate_device(self, application_id: str, device_id: str) -> Device:
        return self._run(
            EventType.DEVICE_DEACTIVATE,
            lambda u: self._kb.registrations.deactivate(u, application_id, device_id),
        )

    # -- webhooks and device notifications (docs/events.md, docs/notifications.md) -------

    def create_webhook_endpoint(
        self, application_id: str, request: CreateWebhookEndpointRequest
    ) -> CreatedWebhookEndpoint:
        return self._run(
            EventType.WEBHOOK_ENDPOINT_CREATE,
            lambda u: self._kb.webhooks.create_endpoint(u, application_id, request),
        )

    def webhook_endpoints(self, application_id: str) -> WebhookEndpointList:
        return self._run(
            EventType.ADMIN_READ, lambda u: self._kb.webhooks.list_endpoints(u, application_id)
        )

    def webhook_endpoint(self, application_id: str, endpoint_id: str) -> WebhookEndpoint:
        return self._run(
            EventType.ADMIN_READ,
            lambda u: self._kb.webhooks.get_endpoint(u, application_id, endpoint_id),
        )

    def update_webhook_endpoint(
        self, application_id: str, endpoint_id: str, request: UpdateWebhookEndpointRequest
    ) -> WebhookEndpoint:
        return self._run(
            EventType.WEBHOOK_ENDPOINT_UPDATE,
            lambda u: self._kb.webhooks.update_endpoint(u, application_id, endpoint_id, request),
        )

    def delete_webhook_endpoint(self, application_id: str, endpoint_id: str) -> None:
        self._run(
            EventType.WEBHOOK_ENDPOINT_DELETE,
            lambda u: self._kb.webhooks.delete_endpoint(u, application_id, endpoint_id),
        )

    def add_webhook_secret(
        self, application_id: str, endpoint_id: str, scheme: SecretScheme
    ) -> NewWebhookSecret:
        return self._run(
            EventType.WEBHOOK_SECRET_CREATE,
            lambda u: self._kb.webhooks.add_secret(u, application_id, endpoint_id, scheme),
        )

    def revoke_webhook_secret(
        self, application_id: str, endpoint_id: str, secret_id: str
    ) -> WebhookEndpoint:
        return self._run(
            EventType.WEBHOOK_SECRET_REVOKE,
            lambda u: self._kb.webhooks.revoke_secret(u, application_id, endpoint_id, secret_id),
        )

    def webhook_deliveries(
        self,
        application_id: str,
        endpoint_id: str,
        *,
        state: DeliveryState | None = None,
        after: int = 0,
        limit: int = 100,
    ) -> WebhookDeliveryList:
        return self._run(
            EventType.ADMIN_READ,
            lambda u: self._kb.webhooks.deliveries(
                u, application_id, endpoint_id, state=state, after=after, limit=limit
            ),
        )

    def webhook_attempts(
        self, application_id: str, endpoint_id: str, *, after: int = 0, limit: int = 100
    ) -> WebhookAttemptList:
        return self._run(
            EventType.ADMIN_READ,
            lambda u: self._kb.webhooks.attempts(
                u, application_id, endpoint_id, after=after, limit=limit
            ),
        )

    def redeliver(
        self, application_id: str, endpoint_id: str, request: RedeliverRequest
    ) -> RedeliverResponse:
        return self._run(
            EventType.WEBHOOK_REDELIVER,
            lambda u: self._kb.webhooks.redeliver(u, application_id, endpoint_id, request),
        )

    def set_push_provider(
        self,
        application_id: str,
        kind: ProviderKind,
        settings: dict[str, Any],
        credentials: bytes | None = None,
    ) -> ProviderInfo:
        return self._run(
            EventType.PUSH_PROVIDER_SET,
            lambda u: self._kb.notifications.set_provider(
                u, application_id, kind, settings, credentials
            ),
        )

    def remove_push_provider(self, application_id: str, kind: ProviderKind) -> None:
        self._run(
            EventType.PUSH_PROVIDER_REMOVE,
            lambda u: self._kb.notifications.remove_provider(u, application_id, kind),
        )

    def push_providers(self, application_id: str) -> list[ProviderInfo]:
        return self._run(
            EventType.ADMIN_READ, lambda u: self._kb.notifications.providers(u, application_id)
        )

    # -- the database ---------------------------------------------------------------------

    def prune(self, retention: Retention | None = None, *, batch: int = DELETE_BATCH) -> Pruned:
        retention = retention or Retention()
        pruned = prune(self._kb.db, self._kb.clock, self._kb.audit, retention, batch=batch)

        def record(unit: Unit) -> None:
            unit.emit(EventType.DB_PRUNE, payload={**asdict(retention), **asdict(pruned)})

        self._run(EventType.DB_PRUNE, record)
        return pruned

    def events(self, *, application_id: str | None = None, limit: int = 100) -> list[EventRecord]:
        with self._kb.db.read() as conn:
            return events.latest(conn, application_id=application_id, limit=limit)

    def noise(self, *, since_ms: int) -> list[NoiseRecord]:
        self._kb.noise.flush()
        with self._kb.db.read() as conn:
            return noise.since(conn, since_ms)
