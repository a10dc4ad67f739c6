"""The server's domain services wired together: what the HTTP layer and the CLI call."""

from __future__ import annotations

from keybound.server.activation import Activation
from keybound.server.applications import Applications
from keybound.server.authentication import Authentication
from keybound.server.operations import Operations
from keybound.server.registrations import Registrations
from keybound.storage.db import Clock, Database, wall_clock


class Keybound:
    def __init__(self, db: Database, clock: Clock = wall_clock) -> None:
        self.db = db
        self.clock = clock
        self.applications = Applications(db, clock)
        self.operations = Operations(db, clock)
        self.registrations = Registrations(db, clock)
        self.activation = Activation(db, clock)
        self.authentication = Authentication(db, clock)

    @classmethod
    def open(cls, url: str | None = None, clock: Clock = wall_clock) -> Keybound:
        """Open (and migrate) the database at ``url`` — the embedded SQLite file if None."""
        db = Database(url)
        db.migrate()
        return cls(db, clock)
