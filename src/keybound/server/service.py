"""The server's domain services wired together: what the HTTP layer and the CLI call."""

from __future__ import annotations

from pathlib import Path

from keybound.server.activation import Activation
from keybound.server.applications import Applications
from keybound.server.authentication import Authentication
from keybound.server.e2ekeys import E2EKeys, MasterKey, master_key_path
from keybound.server.operations import Operations
from keybound.server.pinkeys import PinKeys
from keybound.server.registrations import Registrations
from keybound.storage.db import Clock, Database, wall_clock


class Keybound:
    def __init__(self, db: Database, clock: Clock = wall_clock, *,
                 master_key_file: Path | None = None) -> None:
        """``master_key_file``: where the master key lives (it wraps E2E private keys and PIN
        keys at rest; read or created on first use); default from
        ``$KEYBOUND_MASTER_KEY_FILE`` or beside the database."""
        self.db = db
        self.clock = clock
        master_key = MasterKey(master_key_file or master_key_path(db.url))
        pin_keys = PinKeys(master_key)
        self.applications = Applications(db, clock)
        self.operations = Operations(db, clock)
        self.registrations = Registrations(db, clock)
        self.activation = Activation(db, clock, pin_keys)
        self.authentication = Authentication(db, clock, pin_keys)
        self.e2e_keys = E2EKeys(db, clock, master_key)

    @classmethod
    def open(cls, url: str | None = None, clock: Clock = wall_clock, *,
             master_key_file: Path | None = None) -> Keybound:
        """Open (and migrate) the database at ``url`` — the embedded SQLite file if None."""
        db = Database(url)
        db.migrate()
        return cls(db, clock, master_key_file=master_key_file)
