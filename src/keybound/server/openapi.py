"""Print the OpenAPI 3.1 document (``python -m keybound.server.openapi > docs/openapi.json``).

The same document is served at ``/openapi.json``; a test keeps the checked-in copy current."""

from __future__ import annotations

import json
import tempfile

from keybound.server.http import create_app
from keybound.server.service import Keybound


def document() -> str:
    with tempfile.TemporaryDirectory() as tmp:
        kb = Keybound.open(f"sqlite:///{tmp}/openapi.db")
        try:
            return json.dumps(create_app(kb).openapi(), indent=2, sort_keys=True) + "\n"
        finally:
            kb.db.dispose()


if __name__ == "__main__":
    print(document(), end="")
