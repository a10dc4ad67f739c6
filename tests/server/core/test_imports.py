"""The domain core is pure: importing it loads no web framework, no SQL toolkit and no HTTP
client (docs/architecture.md). Checked in a fresh interpreter, where nothing else has loaded
them."""

from __future__ import annotations

import pkgutil
import subprocess
import sys

import keybound.server.core as core

FORBIDDEN = ("fastapi", "starlette", "sqlalchemy", "httpx", "uvicorn", "alembic")


def test_the_domain_core_imports_no_framework_sql_or_http() -> None:
    modules = [f"keybound.server.core.{m.name}" for m in pkgutil.iter_modules(core.__path__)]
    assert {
        "keybound.server.core.activation",
        "keybound.server.core.authentication",
        "keybound.server.core.strategy",
    } <= set(modules)
    probe = (
        f"import sys; import {', '.join(modules)}; "
        f"print(sorted(m for m in sys.modules if m.split('.')[0] in {FORBIDDEN!r}))"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert loaded == "[]", f"the core pulled in {loaded}"
