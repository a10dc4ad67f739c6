"""Sign latency of the hardware key stores: swtpm (TPM 2.0), SoftHSM2 (PKCS#11), software.

Every back end signs the same 64-byte message N times through the same call an SDK makes
(``KeyStore.sign``, i.e. including per-call connection/session set-up); the software row is a
bare ``cryptography`` P-256 key for reference. The script starts its own swtpm and SoftHSM2
token in a temporary directory (like ``tests/client/keystores``) and removes them afterwards.

    .venv/bin/python bench/keystore_sign.py            # N=200 for swtpm, 2000 otherwise
    .venv/bin/python bench/keystore_sign.py --n 500 --n-tpm 50 --only softhsm software
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from keybound import crypto
from keybound.client.keystores import KeyStore, open_keystore
from keybound.client.keystores._testbeds import init_softhsm_token, start_swtpm
from keybound.protocol import Algorithm

MESSAGE = bytes(range(64))
WARMUP = 10
BACKENDS = ("swtpm", "softhsm", "software")

Signer = Callable[[bytes], bytes]


@dataclass(frozen=True)
class Result:
    name: str
    n: int
    samples_ms: list[float]

    @property
    def p50(self) -> float:
        return statistics.median(self.samples_ms)

    @property
    def p99(self) -> float:
        return statistics.quantiles(self.samples_ms, n=100, method="inclusive")[98]

    @property
    def mean(self) -> float:
        return statistics.fmean(self.samples_ms)


def measure(name: str, sign: Signer, public_key: bytes, n: int) -> Result:
    """Check one signature, warm up, then time ``n`` signatures one by one."""
    crypto.verify_signature(
        public_key=public_key,
        algorithm=Algorithm.ES256,
        message=MESSAGE,
        signature=sign(MESSAGE),
    )
    for _ in range(WARMUP):
        sign(MESSAGE)
    samples = []
    for _ in range(n):
        start = time.perf_counter_ns()
        sign(MESSAGE)
        samples.append((time.perf_counter_ns() - start) / 1e6)
    return Result(name, n, samples)


def _store_signer(store: KeyStore) -> tuple[Signer, bytes]:
    handle = store.generate("bench")
    return (lambda message: store.sign(handle, message)), handle.public_key


@contextmanager
def swtpm_signer(workdir: Path) -> Iterator[tuple[Signer, bytes]]:
    tpm = start_swtpm(workdir / "swtpm")
    try:
        yield _store_signer(open_keystore("tpm", workdir, {"tcti": tpm.tcti}))
    finally:
        tpm.stop()


@contextmanager
def softhsm_signer(workdir: Path) -> Iterator[tuple[Signer, bytes]]:
    token = init_softhsm_token(workdir / "softhsm", label="keybound-bench")
    os.environ.update(token.env)  # before the PKCS#11 module is first initialised
    options = {"module": token.module, "token_label": token.label, "user_pin": token.user_pin}
    yield _store_signer(open_keystore("pkcs11", workdir, options))


@contextmanager
def software_signer(_workdir: Path) -> Iterator[tuple[Signer, bytes]]:
    key = crypto.generate_p256()
    yield (lambda message: crypto.sign_p256(key, message)), crypto.public_der(key)


SIGNERS = {"swtpm": swtpm_signer, "softhsm": softhsm_signer, "software": software_signer}


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def print_table(results: list[Result]) -> None:
    print(f"{'backend':<10} {'N':>6} {'p50 ms':>9} {'p99 ms':>9} {'mean ms':>9} {'sign/s':>9}")
    for r in results:
        rate = 1000 / r.mean
        print(f"{r.name:<10} {r.n:>6} {r.p50:>9.3f} {r.p99:>9.3f} {r.mean:>9.3f} {rate:>9.0f}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000, help="signatures for SoftHSM2/software")
    parser.add_argument("--n-tpm", type=int, default=200, help="signatures for swtpm")
    parser.add_argument("--only", nargs="+", choices=BACKENDS, default=list(BACKENDS))
    args = parser.parse_args(argv)

    print(
        f"# python {platform.python_version()} on {platform.machine()}, "
        f"tpm2-pytss {_version('tpm2-pytss')}, python-pkcs11 {_version('python-pkcs11')}, "
        f"cryptography {_version('cryptography')}; message {len(MESSAGE)} B, warm-up {WARMUP}"
    )
    results = []
    with tempfile.TemporaryDirectory(prefix="keybound-bench-") as tmp:
        for name in args.only:
            n = args.n_tpm if name == "swtpm" else args.n
            with SIGNERS[name](Path(tmp)) as (sign, public_key):
                results.append(measure(name, sign, public_key, n))
    print_table(results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
