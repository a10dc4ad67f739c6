"""What the HTTP edge enforces on every connection (``keybound serve`` options; what a reverse
proxy in front should add: docs/deployment.md)."""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

from keybound.errors import ConfigurationInvalid
from keybound.protocol import MAX_BODY_BYTES

#: Room for the secure channel's framing around a sealed body (docs/channel.md §3.1: 132
#: bytes for the X25519 suites, 1220 for the hybrid suite, plus a long key id).
SEALED_OVERHEAD_BYTES = 4096


@dataclass(frozen=True, kw_only=True)
class EdgeLimits:
    """Limits per server process (each ``--workers`` process applies them on its own).

    ``max_header_bytes`` counts the request line and the header fields, as they arrive;
    ``header_timeout`` runs from a connection's opening (its first request) or from the first
    byte of a later request until the end of that request's head; ``body_timeout`` from the
    end of the head until the end of the body, whatever the pace (a byte every few seconds
    gains nothing); ``keep_alive_timeout`` is how long a connection may idle between
    requests; ``send_timeout`` how long answers may stay unread or unacknowledged by the
    client before the connection is dropped. ``max_body_bytes`` is the protocol's body limit
    (docs/protocol.md §1.1), with ``sealed_overhead_bytes`` more for a sealed body; it is
    enforced here for bodies of any framing, chunked included, before the application reads
    them.
    """

    max_header_bytes: int = 16 * 1024
    max_header_fields: int = 100
    header_timeout: float = 10.0
    body_timeout: float = 10.0
    keep_alive_timeout: float = 5.0
    send_timeout: float = 30.0
    max_connections: int = 1000
    max_body_bytes: int = MAX_BODY_BYTES
    sealed_overhead_bytes: int = SEALED_OVERHEAD_BYTES

    def __post_init__(self) -> None:
        for field in fields(self):
            value = getattr(self, field.name)
            # a zero or negative limit would refuse everything; NaN or infinity, nothing
            if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
                raise ConfigurationInvalid(
                    f"{field.name} must be a finite number above 0, got {value!r}"
                )

    def body_limit(self, *, sealed: bool) -> int:
        return self.max_body_bytes + (self.sealed_overhead_bytes if sealed else 0)
