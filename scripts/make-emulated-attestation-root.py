#!/usr/bin/env python3
"""Make the emulated secure element's TEST attestation root (certificate and private key).

    .venv/bin/python scripts/make-emulated-attestation-root.py [DIRECTORY]

writes ``emulated_attestation_root.pem`` and ``emulated_attestation_root.key.pem`` into
DIRECTORY (default: src/keybound/client/keystores/, where they ship). The key is published
with the package on purpose, so the demo can attest: it is test and demo material, and a
server trusts it only when its operator adds it as an Android anchor.
"""

from __future__ import annotations

import datetime as dt
import sys
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

WARNING = (
    "keybound emulated secure element: TEST AND DEMO attestation root.\n"
    "Its private key ships with keybound and is public. Never trust this root in\n"
    "production; add it as an Android anchor only to test or to demonstrate.\n"
)


def main(argv: list[str]) -> int:
    default = Path(__file__).resolve().parent.parent / "src/keybound/client/keystores"
    directory = Path(argv[1]) if len(argv) > 1 else default
    key = ec.generate_private_key(ec.SECP384R1())
    name = x509.Name([
        x509.NameAttribute(NameOID.COMMON_NAME,
                           "keybound emulated secure element TEST ROOT (not secure hardware)"),
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "keybound TEST"),
    ])  # fmt: skip
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(dt.datetime(2024, 1, 1, tzinfo=dt.UTC))
        .not_valid_after(dt.datetime(2054, 1, 1, tzinfo=dt.UTC))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA384())
    )
    header = WARNING.encode()
    (directory / "emulated_attestation_root.pem").write_bytes(
        header + certificate.public_bytes(serialization.Encoding.PEM)
    )
    (directory / "emulated_attestation_root.key.pem").write_bytes(
        header
        + key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
