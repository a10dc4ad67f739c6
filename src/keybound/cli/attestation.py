"""``keybound attestation``: check a manifest of attestation samples, list the trust anchors.

The parser is built without importing the verifiers (they need the server extra's cbor2 and
pyasn1); a command imports them when it runs.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

#: the operator's trust directory, and where ``keybound serve`` reads it from
TRUST_DIR_HELP = (
    "directory of added anchors (android/, apple/, tpm/ with *.pem files) and "
    "removed ones (<format>/removed-keys.txt: key SHA-256 per line); default "
    "$KEYBOUND_ATTESTATION_TRUST_DIR, else the shipped anchors only"
)


def cmd_check(args: argparse.Namespace) -> int:
    from keybound.attestation.conformance import main

    return main([args.manifest])


def cmd_anchors(args: argparse.Namespace) -> int:
    import os

    from keybound.attestation import AttestationFormat, TrustStore
    from keybound.server.attestation_trust import ENV_TRUST_DIR, AttestationTrust

    trust_dir = args.trust_dir or os.environ.get(ENV_TRUST_DIR) or None
    trust = AttestationTrust.configured(trust_dir=trust_dir)
    for fmt, store in (
        (AttestationFormat.ANDROID_KEY, trust.android),
        (AttestationFormat.APPLE_APP_ATTEST, trust.apple),
        (AttestationFormat.TPM, trust.tpm),
    ):
        shipped = {a.key_sha256 for a in TrustStore.builtin(fmt).anchors}
        for anchor in store.anchors:
            print(
                json.dumps(
                    {
                        "format": fmt.value,
                        "keySha256": anchor.key_sha256,
                        "label": anchor.label,
                        "source": "shipped" if anchor.key_sha256 in shipped else "configured",
                    }
                )
            )
    return 0


def register(sub: Any) -> None:
    """Add ``attestation check|anchors`` to the top-level parser's subcommands."""
    attestation = sub.add_parser(
        "attestation", help="key attestation: check sample manifests, list trust anchors"
    )
    actions = attestation.add_subparsers(
        dest="attestation_command", required=True, metavar="ACTION"
    )
    check = actions.add_parser(
        "check",
        help="verify every entry of an attestation vector manifest at its pinned "
        "time with the roots it names; one JSON line per entry (id, expected, got, match, "
        "reason); exit 1 on any mismatch, 2 if the manifest is unusable",
    )
    check.add_argument("manifest", help="manifest.json (entries' files relative to it)")
    check.set_defaults(func=cmd_check)
    anchors = actions.add_parser(
        "anchors",
        help="the trust anchors per format as configured (JSON lines: format, "
        "keySha256, label, source): what keybound serve trusts",
    )
    anchors.add_argument("--trust-dir", help=TRUST_DIR_HELP)
    anchors.set_defaults(func=cmd_anchors)
