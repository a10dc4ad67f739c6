"""Running the server: ``keybound serve`` (uvicorn, one or more processes) and an in-process
background server for the demo and tests."""

from __future__ import annotations

import os
import resource
import socket
import sys
import threading
import time
from typing import Any

import uvicorn

from keybound.server.services import Keybound
from keybound.server.services.outbox import settings_from_env
from keybound.server.web.app import KeyboundApp, create_app
from keybound.server.web.edge import server_options
from keybound.server.web.limits import EdgeLimits
from keybound.storage.db import ENV_DATABASE_URL

ENV_ALLOW_PLAINTEXT = "KEYBOUND_ALLOW_PLAINTEXT"
ENV_DELIVER = "KEYBOUND_DELIVER"
PLAINTEXT_WARNING = (
    "WARNING: --allow-plaintext is ON: device requests are accepted WITHOUT the secure "
    "channel (no end-to-end encryption, no replay protection). Development only; never in "
    "production."
)


def allow_plaintext_from_env() -> bool:
    """``KEYBOUND_ALLOW_PLAINTEXT=1`` (or true/yes/on) turns the development switch on."""
    return os.environ.get(ENV_ALLOW_PLAINTEXT, "").strip().lower() in {"1", "true", "yes", "on"}


def deliver_from_env() -> bool:
    """``KEYBOUND_DELIVER=0`` keeps the sender out of the server's processes (a separate
    ``keybound webhook deliver`` sends instead); on by default."""
    return os.environ.get(ENV_DELIVER, "1").strip().lower() not in {"0", "false", "no", "off"}


def app_from_env() -> KeyboundApp:
    """uvicorn factory (``--factory``): database URL, plaintext switch, sender and endpoint
    policy from the environment (the master key file too: ``KEYBOUND_MASTER_KEY_FILE``)."""
    return create_app(
        Keybound.open(os.environ.get(ENV_DATABASE_URL) or None),
        allow_plaintext=allow_plaintext_from_env(),
        deliver=settings_from_env() if deliver_from_env() else None,
    )


def serve(
    *,
    database_url: str | None,
    host: str,
    port: int,
    workers: int = 1,
    log_level: str = "info",
    allow_plaintext: bool = False,
    limits: EdgeLimits | None = None,
    deliver: bool = True,
) -> None:
    """``deliver``: every server process also sends webhooks and device notifications."""
    limits = limits or EdgeLimits()
    settings = settings_from_env()  # refuse a bad setting before anything starts
    kb = Keybound.open(database_url)  # migrate once, before any worker starts
    _room_for_connections(limits)
    print(f"keybound: database {kb.db.display_url}")
    print(
        f"keybound: master key file {kb.master_key.path} (fingerprint {kb.master_key.fingerprint})"
    )
    for line in kb.attestation.summary():
        print(f"keybound: attestation trust {line}")
    if allow_plaintext:  # create_app logs it too, in every worker
        print(f"keybound: {PLAINTEXT_WARNING}", file=sys.stderr, flush=True)
    print(f"keybound: listening on http://{host}:{port}  (OpenAPI at /openapi.json)", flush=True)
    if workers == 1:
        try:
            uvicorn.run(
                create_app(
                    kb, allow_plaintext=allow_plaintext, deliver=settings if deliver else None
                ),
                host=host,
                port=port,
                log_level=log_level,
                access_log=False,
                **server_options(limits),
            )
        finally:
            kb.close()
        return
    kb.db.dispose()
    os.environ[ENV_DATABASE_URL] = kb.db.url
    os.environ[ENV_ALLOW_PLAINTEXT] = "1" if allow_plaintext else "0"
    os.environ[ENV_DELIVER] = "1" if deliver else "0"
    uvicorn.run(
        "keybound.server.web.runner:app_from_env",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_level=log_level,
        access_log=False,
        **server_options(limits),
    )


def _room_for_connections(limits: EdgeLimits) -> None:
    """Raise this process's open-file limit (the workers inherit it) to fit
    ``max_connections``: past the limit, accept() fails and new connections wait, which would
    let a flood of connections stall the server before the edge's cap refuses them."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    needed = limits.max_connections + 256  # the database, the listening socket, pipes, logs
    if soft == resource.RLIM_INFINITY or soft >= needed:
        return
    raised = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
    resource.setrlimit(resource.RLIMIT_NOFILE, (raised, hard))
    if raised < needed:
        print(
            f"keybound: WARNING: the open-file limit ({raised}) is below --max-connections "
            f"({limits.max_connections}) + 256; raise it (ulimit -n) or lower "
            "--max-connections",
            file=sys.stderr,
            flush=True,
        )


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


class BackgroundServer:
    """A real uvicorn server on 127.0.0.1 in a thread of this process, behind the same HTTP
    edge as ``keybound serve``; stops on exit."""

    def __init__(
        self,
        kb: Keybound,
        *,
        port: int | None = None,
        allow_plaintext: bool = False,
        limits: EdgeLimits | None = None,
        **uvicorn_options: Any,
    ) -> None:
        self.kb = kb
        self.port = port or free_port()
        options = {**server_options(limits or EdgeLimits()), **uvicorn_options}
        config = uvicorn.Config(
            create_app(kb, allow_plaintext=allow_plaintext),
            host="127.0.0.1",
            port=self.port,
            log_level="warning",
            access_log=False,
            lifespan="off",
            **options,
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name="keybound-server", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> BackgroundServer:
        self.thread.start()
        deadline = time.monotonic() + 15
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("keybound server did not start")
            time.sleep(0.01)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
