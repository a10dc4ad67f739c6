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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from keybound.client.keystores.base import REGISTRY, KeyHandle, KeyStore, register
from keybound.errors import ClientError, ErrorCode, KeyboundError

log = logging.getLogger(__name__)

__all__ = [
    "KINDS",
    "REGISTRY",
    "TPM_TCTI_ENV",
    "DetectedKeystore",
    "KeyHandle",
    "KeyStore",
    "detect_keystore",
    "open_keystore",
    "register",
]

#: Detection also looks at the TPM this TCTI names (e.g. ``swtpm:host=127.0.0.1,port=2321``).
TPM_TCTI_ENV = "KEYBOUND_TPM_TCTI"

#: The back ends that ship with keybound (others may register themselves).
KINDS = ("software", "emulated", "tpm", "pkcs11")

_KIND = re.compile(r"^[a-z][a-z0-9_]{0,31}$")


def open_keystore(
    kind: str,
    state_dir: Path | str,
    options: Mapping[str, Any] | None = None,
    *,
    require_usable: bool = True,
) -> KeyStore:
    """Open the key store of ``kind`` for a device whose state lives in ``state_dir``.

    A store asked for by name must be usable now (:meth:`KeyStore.check_usable`): a ``tpm``
    store on a machine without a working TPM is an error (KEYSTORE_UNAVAILABLE, saying what
    was tried), never a device that quietly activates with software keys. Only detection
    (:func:`detect_keystore`) falls back. ``require_usable=False`` reopens a store for keys
    that exist already, whose faults the device reports as ``hwKeyClientStatus``.

    Raises ClientError(CLIENT_CONFIGURATION) for an unknown kind or bad options (every
    back end checks its options with :func:`~keybound.client.keystores.base.check_options`),
    and an error with code KEYSTORE_UNAVAILABLE when the back end's own dependency is missing
    (ClientError if its module cannot be imported, KeyStoreError from ``tpm`` and ``pkcs11``,
    which import without their optional package and refuse to construct) or the store
    cannot be used.
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
    store = factory(Path(state_dir).expanduser(), dict(options or {}))
    if require_usable:
        store.check_usable()
    return store


@dataclass(frozen=True, kw_only=True)
class DetectedKeystore:
    """Secure hardware :func:`detect_keystore` found: its ``kind`` and the ``options`` that
    open it with :func:`open_keystore` (what a configuration stores)."""

    kind: str
    options: Mapping[str, Any]


def detect_keystore(
    state_dir: Path | str, environ: Mapping[str, str] | None = None
) -> DetectedKeystore | None:
    """The secure hardware this machine has, or None (the device then uses software keys
    only and reports ``NOT_SUPPORTED``).

    Looks for a usable TPM 2.0: the one ``$KEYBOUND_TPM_TCTI`` names, else the kernel's
    resource manager ``/dev/tpmrm0``. A PKCS#11 token cannot be found without being told its
    module and token, so it is never detected: configure it explicitly.

    Finding nothing is quiet (no TPM, or the ``tpm`` extra not installed); only a TPM that
    ``$KEYBOUND_TPM_TCTI`` names but that cannot be used is logged as a warning.
    """
    env = os.environ if environ is None else environ
    named = env.get(TPM_TCTI_ENV) or None
    options: dict[str, Any] = {"tcti": named} if named else {}
    try:
        store = open_keystore("tpm", state_dir, options, require_usable=False)
    except KeyboundError as exc:
        if named is not None:
            log.warning("ignoring %s=%r: %s", TPM_TCTI_ENV, named, exc.detail)
        return None
    if store.configured() and store.available():
        return DetectedKeystore(kind=store.kind, options=options)
    if named is not None:
        log.warning("ignoring %s=%r: no usable TPM there", TPM_TCTI_ENV, named)
    return None


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
