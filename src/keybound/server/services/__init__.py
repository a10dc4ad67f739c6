"""The services: orchestration of one request's work in its unit of work (server.unit),
reading and writing through the repositories and deciding by the core's rules.

:class:`Keybound` wires them together: what the web layer, the CLI and the tests call.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from pathlib import Path

from sqlalchemy import inspect
from sqlalchemy.engine import make_url

from keybound.errors import ConfigurationInvalid
from keybound.server.attestation_trust import AttestationTrust
from keybound.server.clock import Clock, wall_clock
from keybound.server.events.noise import NoiseCounter
from keybound.server.events.ssrf import EndpointPolicy, Resolver, system_resolver
from keybound.server.repositories import settings
from keybound.server.secrets import MasterKey, SecretBox, master_key_path
from keybound.server.services.activation import Activation
from keybound.server.services.admin import Admin
from keybound.server.services.applications import Applications
from keybound.server.services.audit import AuditTrail
from keybound.server.services.authentication import Authentication
from keybound.server.services.e2ekeys import E2EKeys
from keybound.server.services.maintenance import Maintenance
from keybound.server.services.notifications import Notifications
from keybound.server.services.operations import Operations
from keybound.server.services.outbox import Wakeup
from keybound.server.services.registrations import Registrations
from keybound.server.services.resultkeys import ResultKeys
from keybound.server.services.webhooks import Webhooks
from keybound.storage.db import DEFAULT_DATA_DIR, Database


def default_master_key_path(database_url: str, environ: Mapping[str, str] = os.environ) -> Path:
    """``$KEYBOUND_MASTER_KEY_FILE``; else ``master.key`` beside a SQLite database file; else
    ``~/.keybound/master.key``."""
    url = make_url(database_url)
    directory = DEFAULT_DATA_DIR
    if url.get_backend_name() == "sqlite" and url.database and url.database != ":memory:":
        directory = Path(url.database).expanduser().resolve().parent
    return master_key_path(directory, environ)


class Keybound:
    def __init__(
        self,
        db: Database,
        clock: Clock = wall_clock,
        *,
        master_key: MasterKey,
        attestation: AttestationTrust | None = None,
        endpoint_policy: EndpointPolicy | None = None,
        resolver: Resolver = system_resolver,
    ) -> None:
        self.db = db
        self.clock = clock
        self.master_key = master_key
        #: what key attestation is verified against (docs/protocol.md §6.5.4)
        self.attestation = attestation or AttestationTrust.builtin()
        self.box = SecretBox(master_key)
        self.noise = NoiseCounter(db)
        self.results = ResultKeys(db, self.box, clock)
        self.audit = AuditTrail(db, clock, self.results)
        self.maintenance = Maintenance(
            db, clock, self.noise, self.results, checkpoint=self.audit.checkpoint
        )
        #: nudges this process's sender (services.outbox) when a commit gave it work
        self.wakeup = Wakeup()
        #: which URLs webhooks and the push service may be sent to (docs/webhooks.md §4)
        policy = endpoint_policy or EndpointPolicy()
        self.webhooks = Webhooks(self.box, policy=policy, resolver=resolver, wake=self.wakeup)
        self.notifications = Notifications(db, self.box, clock, policy=policy, resolver=resolver)
        self.applications = Applications()
        self.operations = Operations(self.box, self.results, wake=self.wakeup)
        self.registrations = Registrations(self.results)
        self.activation = Activation(self.box, self.results, self.attestation)
        self.authentication = Authentication(self.box, self.results)
        self.e2e_keys = E2EKeys(db, self.box)
        self.admin = Admin(self)

    def close(self) -> None:
        """Finish what runs in the background, store the last counts, close the database."""
        self.maintenance.join()
        self.audit.stop_sealer()
        self.noise.flush()
        self.notifications.close()
        self.db.dispose()

    @classmethod
    def open(
        cls,
        url: str | None = None,
        clock: Clock = wall_clock,
        *,
        master_key_file: Path | None = None,
        attestation: AttestationTrust | None = None,
        endpoint_policy: EndpointPolicy | None = None,
        resolver: Resolver = system_resolver,
    ) -> Keybound:
        """Open (and migrate) the database at ``url`` -- the embedded SQLite file if None --
        with the master key that wraps its secrets (``master_key_file``, else
        ``$KEYBOUND_MASTER_KEY_FILE``, else beside the database; created on first run), the
        attestation trust (``attestation``, else as the environment configures it), and the
        endpoint policy for webhooks (``endpoint_policy``, else from the environment:
        :func:`endpoint_policy_from_env`)."""
        attestation = attestation or AttestationTrust.from_environment()  # before any change
        db = Database(url)
        master_key = MasterKey(master_key_file or default_master_key_path(db.url))
        check_master_key(db, master_key)
        db.migrate(master_key=master_key.get())
        with db.write() as conn:
            if settings.get(conn, settings.MASTER_KEY_FINGERPRINT) is None:
                settings.put_new(conn, settings.MASTER_KEY_FINGERPRINT, master_key.fingerprint)
        kb = cls(
            db,
            clock,
            master_key=master_key,
            attestation=attestation,
            endpoint_policy=endpoint_policy or endpoint_policy_from_env(),
            resolver=resolver,
        )
        kb.results.ensure(kb.noise)  # the first result-signing key, before any request
        kb.audit.seal()  # entries older than the chain, or left unsealed by a stopped server
        return kb


ENV_WEBHOOK_ALLOW_HTTP = "KEYBOUND_WEBHOOK_ALLOW_HTTP"
ENV_WEBHOOK_ALLOWED_NETWORKS = "KEYBOUND_WEBHOOK_ALLOWED_NETWORKS"


def endpoint_policy_from_env(environ: Mapping[str, str] = os.environ) -> EndpointPolicy:
    """The operator's endpoint policy (docs/webhooks.md §4): ``KEYBOUND_WEBHOOK_ALLOW_HTTP=1``
    allows ``http`` URLs, ``KEYBOUND_WEBHOOK_ALLOWED_NETWORKS`` (comma-separated CIDR, e.g.
    ``127.0.0.0/8,::1/128``) allows networks the policy refuses by default. Neither set:
    public ``https`` only."""
    allow_http = environ.get(ENV_WEBHOOK_ALLOW_HTTP, "").strip().lower() in {
        "1",
        "true",
        "yes",
        "on",
    }
    networks = []
    for text in environ.get(ENV_WEBHOOK_ALLOWED_NETWORKS, "").split(","):
        if text.strip():
            try:
                networks.append(ipaddress.ip_network(text.strip()))
            except ValueError:
                raise ConfigurationInvalid(
                    f"{ENV_WEBHOOK_ALLOWED_NETWORKS}: {text.strip()!r} is not a network "
                    "(CIDR, e.g. 127.0.0.0/8)"
                ) from None
    return EndpointPolicy(allow_http=allow_http, allowed_networks=tuple(networks))


def check_master_key(db: Database, master_key: MasterKey) -> None:
    """Refuse to run with a master key other than the one the database's secrets are wrapped
    under (a wrong KEYBOUND_MASTER_KEY_FILE would otherwise create a new key and fail every
    device later, far from the cause). Creates nothing before the check passes."""
    if not inspect(db.engine).has_table("settings"):
        return  # a new database, or one from before revision 0005 (which checks the key)
    with db.read() as conn:
        expected = settings.get(conn, settings.MASTER_KEY_FINGERPRINT)
    if expected is None:
        return
    if not master_key.exists():
        raise ConfigurationInvalid(
            f"the master key file {master_key.path} does not exist, but this database's "
            f"secrets are wrapped under the master key with fingerprint {expected}: set "
            "KEYBOUND_MASTER_KEY_FILE to that key's file (restore it from its backup)"
        )
    if master_key.fingerprint != expected:
        raise ConfigurationInvalid(
            f"the master key file {master_key.path} has fingerprint {master_key.fingerprint},"
            f" but this database's secrets are wrapped under the master key with fingerprint "
            f"{expected}: set KEYBOUND_MASTER_KEY_FILE to that key's file"
        )


__all__ = ["Keybound", "check_master_key", "default_master_key_path", "endpoint_policy_from_env"]
