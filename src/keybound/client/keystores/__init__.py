"""Hardware key stores for the SDK, behind one interface (:class:`KeyStore`).

Back ends live in ``keybound.client.keystores.<kind>`` and add themselves to
:data:`REGISTRY` when imported; :func:`open_keystore` imports them lazily, so an optional
dependency (``tpm2-pytss``, ``python-pkcs11``) is only needed for the back end in use.

Kinds: ``software`` (no secure hardware: the device uses its software key only),
``emulated`` (an emulated secure element for tests and the demo), ``tpm`` (TPM 2.0),
``pkcs11`` (a PKCS#11 token).
"""

from __future__ import annotations

import importlib
import logging
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from keybound.client.keystores.base import REGISTRY, KeyHandle, KeyStore, register
from keybound.errors import ClientError, ErrorCode, KeyboundError

log = logging.getLogger(__name__)

__all__ = ["KINDS", "REGISTRY", "KeyHandle", "KeyStore", "detect_keystore", "open_keystore",
           "register"]

#: Detection also looks at the TPM this TCTI names (e.g. ``swtpm:host=127.0.0.1,port=2321``).
TPM_TCTI_ENV = "KEYBOUND_TPM_TCTI"

#: The back ends that ship with keybound (others may register themselves).
KINDS = ("software", "emulated", "tpm", "pkcs11")

_KIND = re.compile(r"^[a-z][a-z0-9_]{0,31}$")


def open_keystore(
    kind: str, state_dir: Path | str, options: Mapping[str, Any] | None = None
) -> KeyStore:
    """Open the key store of ``kind`` for a device whose state lives in ``state_dir``.

    Raises ClientError(CLIENT_CONFIGURATION) for an unknown kind or bad options, and
    ClientError(KEYSTORE_UNAVAILABLE) when the back end's own dependency is missing.
    """
    if not _KIND.match(kind):
        raise ClientError(f"invalid key store kind {kind!r}", code=ErrorCode.CLIENT_CONFIGURATION)
    if kind not in REGISTRY:
        _import_backend(kind)
    factory = REGISTRY.get(kind)
    if factory is None:
        raise ClientError(
            f"module for key store {kind!r} did not register it",
            code=ErrorCode.CLIENT_CONFIGURATION,
        )
    return factory(Path(state_dir), dict(options or {}))


def detect_keystore(state_dir: Path | str,
                    environ: Mapping[str, str] | None = None) -> KeyStore | None:
    """The secure hardware this machine has, or None (the device then uses software keys
    only and reports ``NOT_SUPPORTED``).

    Looks for a usable TPM 2.0: the one ``$KEYBOUND_TPM_TCTI`` names, else the kernel's
    resource manager ``/dev/tpmrm0``. A PKCS#11 token cannot be found without being told its
    module and token, so it is never detected: configure it explicitly.
    """
    env = os.environ if environ is None else environ
    options = {"tcti": env[TPM_TCTI_ENV]} if env.get(TPM_TCTI_ENV) else {}
    try:
        store = open_keystore("tpm", state_dir, options)
    except ClientError:  # tpm2-pytss is not installed
        return None
    except KeyboundError as exc:
        log.warning("ignoring %s=%r: %s", TPM_TCTI_ENV, options.get("tcti"), exc.detail)
        return None
    return store if store.configured() and store.available() else None


def _import_backend(kind: str) -> None:
    module = f"{__name__}.{kind}"
    try:
        importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name == module:
            raise ClientError(
                f"unknown key store kind {kind!r} (shipped: {', '.join(KINDS)})",
                code=ErrorCode.CLIENT_CONFIGURATION,
            ) from None
        raise ClientError(
            f"key store {kind!r} needs the missing package {exc.name!r}",
            code=ErrorCode.KEYSTORE_UNAVAILABLE,
        ) from exc
