"""A real webhook receiver on 127.0.0.1 for the delivery tests.

It verifies every request with the reference ``standardwebhooks`` package (v1) and with an
Ed25519 check written here against ``cryptography`` (v1a), records what arrived, and answers as
the test scripts it: any status and headers, a hang (the request is recorded first, so a
time-out on the sender's side is a lost answer, not a lost event), a trickle of bytes that keeps
a read time-out happy, or nothing at all while stopped (its port then refuses connections).
"""

from __future__ import annotations

import base64
import datetime
import socket
import ssl
import threading
import time
from collections import deque
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.x509.oid import NameOID
from standardwebhooks.webhooks import Webhook, WebhookVerificationError


def v1a_signatures_valid(public_key: str, headers: dict[str, str], body: bytes) -> int:
    """Count the v1a entries of ``webhook-signature`` that verify under ``public_key``
    (``whpk_``): written from the spec text, sharing no code with keybound."""
    key = Ed25519PublicKey.from_public_bytes(base64.b64decode(public_key.removeprefix("whpk_")))
    signed = f"{headers['webhook-id']}.{headers['webhook-timestamp']}.".encode() + body
    good = 0
    for entry in headers["webhook-signature"].split(" "):
        version, _, value = entry.partition(",")
        if version != "v1a":
            continue
        try:
            key.verify(base64.b64decode(value), signed)
        except (InvalidSignature, ValueError):
            continue
        good += 1
    return good


@dataclass(frozen=True)
class Reply:
    status: int = 200
    headers: tuple[tuple[str, str], ...] = ()
    hang: float = 0.0  # wait this long (or until the receiver stops) before answering
    trickle: float = 0.0  # > 0: send a header byte every `trickle` s for `hang` s instead
    body: bytes = b"ok"


@dataclass(frozen=True)
class Received:
    webhook_id: str
    timestamp: str
    body: bytes
    host: str
    path: str
    verified: bool  # a v1 signature by a known secret (reference package) or a v1a one
    replied: int


class Receiver:
    def __init__(
        self,
        *,
        secrets: tuple[str, ...] = (),
        public_keys: tuple[str, ...] = (),
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.secrets = secrets
        self.public_keys = public_keys
        self.tls = tls
        self.default = Reply()
        self.received: list[Received] = []
        self.sni: list[str | None] = []
        self._script: deque[Reply] = deque()
        self._lock = threading.Lock()
        self._release = threading.Event()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.port = 0
        if tls is not None:
            tls.sni_callback = self._on_sni

    def _on_sni(self, _sock: Any, name: str | None, _context: ssl.SSLContext) -> None:
        self.sni.append(name)

    # --- control ---------------------------------------------------------------------------

    def start(self) -> Receiver:
        """Listen (again) on the same port as before, or a free one the first time."""
        self._release = threading.Event()
        self._server = _Server(("127.0.0.1", self.port), _Handler, self)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.02,), daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Close the port (connections are refused) and release hanging answers."""
        self._release.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None

    def script(self, *replies: Reply) -> None:
        """The next answers, in order; after them ``default``."""
        with self._lock:
            self._script.extend(replies)

    def url(self, path: str = "/hook", host: str = "127.0.0.1") -> str:
        scheme = "https" if self.tls else "http"
        return f"{scheme}://{host}:{self.port}{path}"

    def ids(self) -> list[str]:
        with self._lock:
            return [r.webhook_id for r in self.received]

    def wait_for(self, count: int, timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        while len(self.received) < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"{len(self.received)} of {count} requests arrived")
            time.sleep(0.01)

    # --- request handling (server threads) -------------------------------------------------

    def _verify(self, headers: dict[str, str], body: bytes) -> bool:
        if not {"webhook-id", "webhook-timestamp", "webhook-signature"} <= headers.keys():
            return False
        for secret in self.secrets:
            try:
                Webhook(secret).verify(body, headers, json_parse=False)
            except WebhookVerificationError:
                continue
            return True
        return any(v1a_signatures_valid(key, headers, body) for key in self.public_keys)

    def _next_reply(self, verified: bool) -> Reply:
        with self._lock:
            reply = self._script.popleft() if self._script else self.default
        return reply if verified else Reply(status=401)

    def handle(self, handler: _Handler) -> None:
        length = int(handler.headers.get("content-length", "0"))
        body = handler.rfile.read(length)
        headers = {name.lower(): value for name, value in handler.headers.items()}
        verified = self._verify(headers, body)
        reply = self._next_reply(verified)
        with self._lock:
            self.received.append(
                Received(
                    webhook_id=headers.get("webhook-id", ""),
                    timestamp=headers.get("webhook-timestamp", ""),
                    body=body,
                    host=headers.get("host", ""),
                    path=handler.path,
                    verified=verified,
                    replied=reply.status,
                )
            )
        if reply.trickle:
            handler.wfile.write(b"HTTP/1.1 200 OK\r\nX-Trickle: ")
            deadline = time.monotonic() + reply.hang
            while time.monotonic() < deadline and not self._release.wait(reply.trickle):
                handler.wfile.write(b"a")
                handler.wfile.flush()
            return
        if reply.hang:
            self._release.wait(reply.hang)
        handler.send_response(reply.status)
        for name, value in reply.headers:
            handler.send_header(name, value)
        handler.send_header("Content-Length", str(len(reply.body)))
        handler.end_headers()
        handler.wfile.write(reply.body)


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(
        self, address: tuple[str, int], handler: type[_Handler], receiver: Receiver
    ) -> None:
        self.receiver = receiver
        super().__init__(address, handler)

    def get_request(self) -> tuple[socket.socket, Any]:
        sock, address = super().get_request()
        if self.receiver.tls is None:
            return sock, address
        # the handshake runs in the handler's thread, not in the accept loop
        return self.receiver.tls.wrap_socket(
            sock, server_side=True, do_handshake_on_connect=False
        ), address

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that hung up mid-answer is what several tests do on purpose


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_POST(self) -> None:
        try:
            self.server.receiver.handle(self)
        except (BrokenPipeError, ConnectionResetError, ssl.SSLError, TimeoutError):
            self.close_connection = True

    def log_message(self, format: str, *args: Any) -> None:
        pass


@dataclass(frozen=True)
class TlsPair:
    server: ssl.SSLContext
    client: ssl.SSLContext


def make_tls(directory: Path, name: str) -> TlsPair:
    """A throw-away CA and a certificate for ``name``; the client trusts only that CA."""
    now = datetime.datetime.now(datetime.UTC)

    def cert(
        subject: str,
        key: ec.EllipticCurvePrivateKey,
        issuer: str,
        signer: ec.EllipticCurvePrivateKey,
        ca: bool,
    ) -> x509.Certificate:
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
            .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(hours=1))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        )
        if ca:
            builder = builder.add_extension(
                x509.KeyUsage(
                    digital_signature=True,
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
        else:
            builder = builder.add_extension(
                x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False
            )
            ski = x509.SubjectKeyIdentifier.from_public_key(signer.public_key())
            builder = builder.add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False
            )
        if ca:
            builder = builder.add_extension(
                x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
            )
        return builder.sign(signer, hashes.SHA256())

    ca_key, leaf_key = (
        ec.generate_private_key(ec.SECP256R1()),
        ec.generate_private_key(ec.SECP256R1()),
    )
    ca = cert("keybound test CA", ca_key, "keybound test CA", ca_key, True)
    leaf = cert(name, leaf_key, "keybound test CA", ca_key, False)
    pem = serialization.Encoding.PEM
    (directory / "leaf.pem").write_bytes(leaf.public_bytes(pem))
    (directory / "leaf.key").write_bytes(
        leaf_key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(directory / "leaf.pem", directory / "leaf.key")
    client = ssl.create_default_context(cadata=ca.public_bytes(pem).decode())
    return TlsPair(server=server, client=client)
