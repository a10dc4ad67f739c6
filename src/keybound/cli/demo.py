"""``keybound demo``: a real server on a temporary SQLite database, real HTTP on 127.0.0.1,
SDK devices with an emulated secure element (and a TPM 2.0 one when swtpm and tpm2-pytss are
installed), authenticating under each hardware-key validation strategy, with the outcome of
their key attestation (the demo trusts the emulated element's TEST root, and swtpm's local CA
when swtpm_setup can manufacture the TPM, as an operator adds anchors)."""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from keybound.client import Device, SealedTransport, preset
from keybound.client.keystores import KeyStore
from keybound.client.keystores.emulated import (
    ATTESTATION_ROOT,
    DEMO_PACKAGE_NAME,
    DEMO_SIGNING_DIGEST,
    EmulatedSecureElement,
)
from keybound.errors import ClientError, KeyboundError
from keybound.protocol import (
    AttestationMode,
    HwKeyValidationStrategy,
    OperationContext,
    RiskAttribute,
    b64u_encode,
    context_hash,
)
from keybound.server.attestation_trust import AttestationTrust
from keybound.server.core.appconfig import AppConfig
from keybound.server.events.results import VerifiedResult, verify_result
from keybound.server.services import Keybound
from keybound.server.services.resultkeys import DEFAULT_ISSUER
from keybound.server.web.runner import BackgroundServer

#: the column of the last scenario: every strategy's table, with attestation REQUIRED
ATTESTATION_REQUIRED = "attestation REQUIRED"


@dataclass(frozen=True, kw_only=True)
class Row:
    strategy: str
    device: str
    step: str
    client_status: str
    server_result: str
    attestation: str
    decision: str


class _RelyingParty:
    def __init__(self, base_url: str, token: str, closing: contextlib.ExitStack) -> None:
        self.http = closing.enter_context(
            httpx.Client(
                base_url=base_url, timeout=10, headers={"Authorization": f"Bearer {token}"}
            )
        )

    def activation(self) -> dict[str, Any]:
        """A new user's activation: its link (what a phone scans) and its typed fallback."""
        user = self.http.post("/rp/v1/users", json={}).json()["userId"]
        issued: dict[str, Any] = self.http.post(f"/rp/v1/users/{user}/activation-codes").json()
        return issued

    def activation_link(self) -> str:
        return str(self.activation()["activationLink"])

    def risk(self, operation_id: str | None) -> dict[str, Any]:
        if operation_id is None:
            return {}
        data: dict[str, Any] = (
            self.http.get(f"/rp/v1/operations/{operation_id}").json().get("riskData", {})
        )
        return data

    def start_operation(self, device_id: str, **body: Any) -> dict[str, Any]:
        result: dict[str, Any] = self.http.post(
            f"/rp/v1/devices/{device_id}/operations", json=body
        ).json()
        return result

    def operation(self, operation_id: str) -> dict[str, Any]:
        result: dict[str, Any] = self.http.get(f"/rp/v1/operations/{operation_id}").json()
        return result

    def start_signature(self, device_id: str, data: OperationContext) -> dict[str, Any]:
        result: dict[str, Any] = self.http.post(
            f"/rp/v1/devices/{device_id}/signatures", json={"dataToSign": data.to_wire()}
        ).json()
        return result

    def verified_result(self, operation_id: str) -> VerifiedResult:
        """What a relying party keeps as evidence: the result's JWS, verified offline against
        the server's published keys (fetched here from the JWKS URL, unauthenticated)."""
        token = self.operation(operation_id)["resultJws"]
        jwks = self.http.get("/.well-known/jwks.json").json()
        return verify_result(
            token, jwks, expected_issuer=DEFAULT_ISSUER, expected_operation_id=operation_id
        )


@dataclass(frozen=True, kw_only=True)
class _Tpm:
    store: KeyStore | None
    note: str  # what the demo says about the TPM device
    ek_ca: Path | None = None  # the CA of its EK certificates, when it has them


@contextlib.contextmanager
def _tpm_store(work: Path) -> Iterator[_Tpm]:
    """A TPM-backed key store on a private swtpm, when swtpm and tpm2-pytss exist; with EK
    certificates from swtpm's local CA when swtpm_setup can manufacture it."""
    if shutil.which("swtpm") is None:
        yield _Tpm(store=None, note="swtpm not installed: TPM device skipped")
        return
    if importlib.util.find_spec("tpm2_pytss") is None:
        yield _Tpm(
            store=None,
            note="tpm2-pytss not installed (pip install -e '.[tpm]'): TPM device skipped",
        )
        return
    from keybound.client.keystores._testbeds import TestbedError, manufacture_swtpm, start_swtpm

    ek_ca: Path | None = None
    # EK certificates are what lets a TPM attest (docs/attestation.md §8); without swtpm-tools
    # or certtool the TPM has none, and does not attest
    with contextlib.suppress(TestbedError, OSError):
        ek_ca = manufacture_swtpm(work / "swtpm", ca_dir=work / "swtpm-ca").issuer_certificate
    try:
        tpm = start_swtpm(work / "swtpm")
    except (TestbedError, OSError) as exc:  # a missing or broken swtpm is no demo failure
        yield _Tpm(store=None, note=f"{exc}: TPM device skipped")
        return
    try:
        yield _open_tpm(work / "tpm-device", tpm.tcti, ek_ca)
    finally:
        tpm.stop()


def _open_tpm(state_dir: Path, tcti: str, ek_ca: Path | None) -> _Tpm:
    from keybound.client.keystores import open_keystore

    try:  # opened by name, so it must work now (else KEYSTORE_UNAVAILABLE)
        store = open_keystore("tpm", state_dir, {"tcti": tcti})
    except KeyboundError as exc:
        return _Tpm(store=None, note=f"TPM key store unusable ({exc.detail}): TPM device skipped")
    note = (
        "TPM 2.0 (a private swtpm, EK certificates from swtpm's local CA)"
        if ek_ca
        else "TPM 2.0 (a private swtpm, no EK certificate: it cannot attest)"
    )
    return _Tpm(store=store, note=note, ek_ca=ek_ca)


def _trust(work: Path, ek_ca: Path | None) -> AttestationTrust:
    """What an operator would configure: the shipped anchors, plus the emulated element's
    TEST root and swtpm's local CA (test material, trusted here only)."""
    (work / "trust" / "android").mkdir(parents=True)
    (work / "trust" / "android" / "emulated-test-root.pem").write_bytes(
        ATTESTATION_ROOT.read_bytes()
    )
    if ek_ca is not None:
        (work / "trust" / "tpm").mkdir()
        (work / "trust" / "tpm" / "swtpm-localca.pem").write_bytes(ek_ca.read_bytes())
    return AttestationTrust.configured(trust_dir=work / "trust")


def _sealed_transport(
    kb: Keybound, app_id: str, base_url: str, closing: contextlib.ExitStack
) -> SealedTransport:
    """Devices talk through the secure channel, pinned to the application's E2E key (one per
    application, created on first use, as an operator would with `keybound e2e-key create`)."""
    keys = [k for k in kb.admin.e2e_keys(app_id) if k.state.value == "ACTIVE"]
    key_id = keys[0].key_id if keys else kb.admin.create_e2e_key(app_id).key_id
    pin = kb.admin.e2e_pin(key_id, server_url=base_url)
    return SealedTransport(pin, closing.enter_context(httpx.Client(base_url=base_url, timeout=10)))


class _Scenario:
    def __init__(self, rp: _RelyingParty, strategy: str, rows: list[Row]) -> None:
        self.rp = rp
        self.strategy = strategy
        self.rows = rows

    def record(self, device: str, step: str, action: Callable[[], str | None]) -> None:
        try:
            op_id = action()
            decision = "PASS"
        except ClientError as exc:
            op_id = exc.fields.get("operation_id")
            decision = f"FAIL ({exc.code.value})"
        risk = self.rp.risk(op_id)
        self.rows.append(
            Row(
                strategy=self.strategy,
                device=device,
                step=step,
                client_status=risk.get("hwKeyClientStatus", "-"),
                server_result=risk.get("hwKeyServerResult", "-"),
                attestation=risk.get("hwKeyAttestation", "-"),
                decision=decision,
            )
        )


def _config(strategy: HwKeyValidationStrategy, mode: AttestationMode) -> AppConfig:
    """The strategy, and key attestation for Android (the demo app's identity) and TPMs."""
    return AppConfig(
        hw_key_validation_strategy=strategy,
        enabled_risk_data=(
            RiskAttribute.HW_KEY_CLIENT_STATUS,
            RiskAttribute.HW_KEY_SERVER_RESULT,
            RiskAttribute.HW_KEY_ATTESTATION,
        ),
        attestation_android_mode=mode,
        attestation_tpm_mode=mode,
        attestation_android_package_names=(DEMO_PACKAGE_NAME,),
        attestation_android_signing_digests=(DEMO_SIGNING_DIGEST.hex(),),
    )


def _run_strategy(
    kb: Keybound,
    base_url: str,
    strategy: HwKeyValidationStrategy,
    work: Path,
    tpm: KeyStore | None,
    rows: list[Row],
    closing: contextlib.ExitStack,
) -> None:
    app_id = f"demo-{strategy.value.lower().replace('_', '-')}"
    kb.admin.create_application(app_id, _config(strategy, AttestationMode.OPTIONAL))
    rp = _RelyingParty(base_url, kb.admin.create_api_key(app_id, "demo").token, closing)
    transport = _sealed_transport(kb, app_id, base_url, closing)
    scenario = _Scenario(rp, strategy.value, rows)

    def activate(device: Device) -> Callable[[], str | None]:
        return lambda: device.activate(rp.activation_link()).operation_id

    def authenticate(device: Device) -> Callable[[], str | None]:
        return lambda: device.authenticate().operation_id

    element = EmulatedSecureElement(work / app_id / "phone" / "emulated-se")
    phone = Device.create(
        work / app_id / "phone",
        application_id=app_id,
        transport=transport,
        profile=preset("android-14"),
        hardware=element,
    )
    name = "Android 14, secure element"
    scenario.record(name, "activate", activate(phone))
    if phone.activated:
        scenario.record(name, "authenticate", authenticate(phone))
        element.corrupt_signatures = True
        scenario.record(name, "authenticate, corrupted hw signature", authenticate(phone))
        element.corrupt_signatures = False
        element.lose_keys()
        scenario.record(name, "authenticate, hw key lost", authenticate(phone))

    old = Device.create(
        work / app_id / "old-phone",
        application_id=app_id,
        transport=transport,
        profile=preset("android-5"),
        hardware=None,
    )
    name = "Android 5, software keys only"
    scenario.record(name, "activate", activate(old))
    if old.activated:
        scenario.record(name, "authenticate", authenticate(old))

    if tpm is not None:
        kiosk = Device.create(
            work / app_id / "kiosk",
            application_id=app_id,
            transport=transport,
            profile=preset("linux"),
            hardware=tpm,
        )
        name = "Linux, TPM 2.0 (swtpm)"
        scenario.record(name, "activate", activate(kiosk))
        if kiosk.activated:
            scenario.record(name, "authenticate", authenticate(kiosk))


def _run_attestation_required(
    kb: Keybound,
    base_url: str,
    work: Path,
    tpm: KeyStore | None,
    rows: list[Row],
    closing: contextlib.ExitStack,
) -> None:
    """Android and TPM attestation REQUIRED (strategy SUPPORTED): only attested hardware
    keys activate (docs/protocol.md §6.1, last column)."""
    app_id = "demo-attestation-required"
    kb.admin.create_application(
        app_id, _config(HwKeyValidationStrategy.SUPPORTED, AttestationMode.REQUIRED)
    )
    rp = _RelyingParty(base_url, kb.admin.create_api_key(app_id, "demo").token, closing)
    transport = _sealed_transport(kb, app_id, base_url, closing)
    scenario = _Scenario(rp, ATTESTATION_REQUIRED, rows)
    devices: list[tuple[str, str, KeyStore | None]] = [
        (
            "Android 14, secure element",
            "android-14",
            EmulatedSecureElement(work / app_id / "phone" / "emulated-se"),
        ),
        (
            "Android 14, bootloader unlocked",
            "android-14",
            EmulatedSecureElement(work / app_id / "rooted" / "emulated-se", device_locked=False),
        ),
        ("Android 5, software keys only", "android-5", None),
    ]
    if tpm is not None:
        devices.append(("Linux, TPM 2.0 (swtpm)", "linux", tpm))
    for number, (name, profile, store) in enumerate(devices):
        device = Device.create(
            work / app_id / f"device-{number}",
            application_id=app_id,
            transport=transport,
            profile=preset(profile),
            hardware=store,
        )
        scenario.record(name, "activate", _activation(device, rp))
        if device.activated:
            scenario.record(name, "authenticate", _authentication(device))


def _activation(device: Device, rp: _RelyingParty) -> Callable[[], str | None]:
    return lambda: device.activate(rp.activation_link()).operation_id


def _authentication(device: Device) -> Callable[[], str | None]:
    return lambda: device.authenticate().operation_id


def _backend_flow(
    kb: Keybound, base_url: str, work: Path, closing: contextlib.ExitStack
) -> list[str]:
    """A relying party asks the user's phone to approve a payment, with a PIN, then to sign
    a contract; it verifies each signed result against the published keys."""
    app_id = "demo-supported"
    rp = _RelyingParty(base_url, kb.admin.create_api_key(app_id, "demo-rp").token, closing)
    transport = _sealed_transport(kb, app_id, base_url, closing)
    phone = Device.create(
        work / "pin-phone",
        application_id=app_id,
        transport=transport,
        profile=preset("ios-17"),
        hardware=EmulatedSecureElement(work / "pin-phone" / "emulated-se"),
    )
    # this user types the fallback instead of scanning: the hint and the code, as shown
    issued = rp.activation()
    typed = f"{issued['activationHint']}-{issued['activationCode']}"
    phone.activate(typed, pin="2468")
    op = rp.start_operation(
        phone.device_id or "",
        preOperationContext={"content": "Pay 120.00 EUR to ACME Corp", "mimeType": "text/plain"},
        postOperationContext={"content": "receipt #4711", "mimeType": "text/plain"},
        requiredAuthMethod="DEVICE:PIN",
    )
    lines = [
        f"device activated by typing the fallback {typed} (hint-code), PIN set",
        f"relying party started operation {op['operationId']} ({op['state']})",
    ]
    pending = phone.pending()
    shown = pending[0].pre_operation_context
    lines.append(f"device polled: {len(pending)} pending, shows {shown.content if shown else ''!r}")
    result = phone.authenticate(operation_id=pending[0].operation_id, pin="2468")
    released = result.post_operation_context
    lines.append(
        f"device approved with PIN: {result.auth_method} / {result.auth_level}; "
        f"released {released.content if released else ''!r}"
    )
    final = rp.operation(op["operationId"])
    lines.append(f"relying party reads: {final['state']}, {final['result']}, {final['riskData']}")
    payment = OperationContext(content="Pay 120.00 EUR to ACME Corp", mime_type="text/plain")
    lines.extend(
        _evidence(rp.verified_result(op["operationId"]), "preOperationContextHash", payment)
    )
    contract = OperationContext(
        content="I agree to loan contract #4711: 10 000 EUR, 5 years", mime_type="text/plain"
    )
    signature = rp.start_signature(phone.device_id or "", contract)
    signed = phone.sign(
        signature["operationId"], pin="2468", approve=lambda shown: True, expected_data=contract
    )
    lines.append(
        f"relying party asked for a signature; device showed and signed "
        f"{signed.signed_data.content if signed.signed_data else ''!r}"
    )
    lines.extend(_evidence(rp.verified_result(signature["operationId"]), "dataHash", contract))
    return lines


def _evidence(result: VerifiedResult, hash_claim: str, copy: OperationContext) -> list[str]:
    """The verified claims, and the hash claim checked against the relying party's copy."""
    claims = result.claims
    matches = claims[hash_claim] == b64u_encode(context_hash(copy))
    return [
        f"  signed result verified ({result.algorithm.value}, kid {result.kid[:12]}...): "
        f"{claims['operationType']} {claims['state']}, {claims.get('authMethod')} / "
        f"{claims.get('authLevel')}, riskData {claims['riskData']}",
        f"  {hash_claim} {'matches' if matches else 'DOES NOT MATCH'} the relying party's "
        f"copy of {copy.content!r}",
    ]


def _table(rows: list[Row]) -> str:
    headers = (
        "strategy",
        "device",
        "step",
        "hwKeyClientStatus",
        "hwKeyServerResult",
        "hwKeyAttestation",
        "decision",
    )
    cells = [headers] + [
        (r.strategy, r.device, r.step, r.client_status, r.server_result, r.attestation, r.decision)
        for r in rows
    ]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    line = "+".join("-" * (w + 2) for w in widths)
    out = [" | ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip(), line]
    previous = None
    for row in cells[1:]:
        if previous is not None and row[0] != previous:
            out.append(line)
        previous = row[0]
        out.append(" | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
    return "\n".join(out)


def run_demo() -> int:
    """Run the demo. It always uses its own temporary SQLite database (never
    ``--database-url`` or $KEYBOUND_DATABASE_URL), so demo data never lands in a real one."""
    # the SDK warns about lost or failing hardware keys; here the table reports them
    logging.getLogger("keybound.client").setLevel(logging.ERROR)
    with tempfile.TemporaryDirectory(prefix="keybound-demo-") as tmp:
        work = Path(tmp)
        rows: list[Row] = []
        with _tpm_store(work) as tpm_bed:
            kb = Keybound.open(
                f"sqlite:///{work / 'keybound.db'}", attestation=_trust(work, tpm_bed.ek_ca)
            )
            with BackgroundServer(kb) as server, contextlib.ExitStack() as closing:
                # (HTTP clients close before the server)
                _run(kb, server.url, work, tpm_bed, rows, closing)
            kb.close()
    return 0


def _run(
    kb: Keybound,
    url: str,
    work: Path,
    tpm_bed: _Tpm,
    rows: list[Row],
    closing: contextlib.ExitStack,
) -> None:
    print(f"keybound demo: server {url}, database {kb.db.url}")
    print(
        "secure channel: every device request is HPKE-sealed to its application's "
        "pinned E2E key (X25519_SHA256_AES128GCM); the server refuses plaintext"
    )
    print(f"secure hardware: emulated secure element; {tpm_bed.note}")
    print(
        "key attestation: OPTIONAL for Android and TPMs under each strategy, REQUIRED in the "
        "last block; trusted: the shipped roots, the emulated element's TEST root"
        + (" and swtpm's local CA" if tpm_bed.ek_ca else "")
    )
    tpm = tpm_bed.store
    print()
    for strategy in HwKeyValidationStrategy:
        _run_strategy(kb, url, strategy, work, tpm, rows, closing)
    _run_attestation_required(kb, url, work, tpm, rows, closing)
    print(_table(rows))
    print()
    print(
        "Backend-initiated authentication with pre/post-operation context, and a "
        "signature, each with its signed result:"
    )
    for line in _backend_flow(kb, url, work, closing):
        print(f"  {line}")
