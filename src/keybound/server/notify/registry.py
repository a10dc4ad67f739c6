"""The configured providers by kind: where a device's push target meets its provider."""

from __future__ import annotations

from collections.abc import Iterable

from keybound.errors import ConfigurationInvalid
from keybound.server.notify.base import (
    NotificationProvider,
    Outcome,
    ProviderKind,
    PushHint,
    PushTarget,
)


class Notifier:
    """At most one provider per kind (e.g. one application's push service, FCM project and
    APNs app). A target whose kind has no provider configured fails without a request."""

    def __init__(self, providers: Iterable[NotificationProvider]) -> None:
        self._providers: dict[ProviderKind, NotificationProvider] = {}
        for provider in providers:
            if provider.kind in self._providers:
                raise ConfigurationInvalid(f"two {provider.kind.value} providers")
            self._providers[provider.kind] = provider

    @property
    def kinds(self) -> frozenset[ProviderKind]:
        return frozenset(self._providers)

    def send(self, target: PushTarget, hint: PushHint) -> Outcome:
        provider = self._providers.get(target.provider)
        if provider is None:
            return Outcome.failed(f"no {target.provider.value} provider configured")
        return provider.send(target.token, hint)

    def close(self) -> None:
        for provider in self._providers.values():
            provider.close()
