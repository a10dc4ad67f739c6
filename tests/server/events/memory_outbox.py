"""An in-memory stand-in for the outbox table, to drive the dispatcher the way the real outbox
will: select what is due, submit it, store every outcome, move the (injected) clock on."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from keybound.server.events.delivery import Dispatcher, Outcome, OutcomeKind
from keybound.server.events.schedule import PendingDelivery, select_due
from tests.conftest import FakeClock

_FINAL = {
    OutcomeKind.DELIVERED: "delivered",
    OutcomeKind.GAVE_UP: "gave_up",
    OutcomeKind.ENDPOINT_GONE: "gone",
}


@dataclass
class Row:
    delivery: PendingDelivery
    state: str = "pending"
    outcomes: list[Outcome] = field(default_factory=list)


class MemoryOutbox:
    def __init__(self, deliveries: Iterable[PendingDelivery]) -> None:
        self.rows = {d.delivery_id: Row(d) for d in deliveries}

    def pending(self) -> list[PendingDelivery]:
        return [row.delivery for row in self.rows.values() if row.state == "pending"]

    def states(self) -> dict[str, str]:
        return {key: row.state for key, row in self.rows.items()}

    async def store(self, outcome: Outcome) -> None:
        row = self.rows[outcome.delivery_id]
        row.outcomes.append(outcome)
        if outcome.kind in _FINAL:
            row.state = _FINAL[outcome.kind]
            return
        assert outcome.next_attempt_at is not None
        row.delivery = dataclasses.replace(
            row.delivery,
            attempts=outcome.attempts,
            first_attempt_at=outcome.first_attempt_at,
            next_attempt_at=outcome.next_attempt_at,
        )

    async def run(
        self,
        dispatcher: Dispatcher,
        clock: FakeClock,
        *,
        rounds: int = 50,
        before_round: Callable[[int], None] | None = None,
    ) -> int:
        """Rounds until nothing is pending; returns how many it took."""
        for number in range(rounds):
            if before_round is not None:
                before_round(number)
            for delivery in select_due(self.pending(), now=clock()):
                dispatcher.submit(delivery)
            await dispatcher.join()
            pending = self.pending()
            if not pending:
                return number + 1
            clock.now = max(clock.now, min(d.next_attempt_at for d in pending))
        raise AssertionError(f"still pending after {rounds} rounds: {self.states()}")
