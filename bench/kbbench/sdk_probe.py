"""One device with the real SDK (``keybound.client``, emulated secure element, secure
channel) against a running server: activation, N device-initiated authentications, one
backend-initiated authentication. Prints JSON: RSS of this process (the SDK's footprint for
one device) and the SDK's own latencies.

Usage: python sdk_probe.py SERVER_URL RP_TOKEN PIN_STRING [N]
(run as its own process so that its RSS is the SDK's alone).
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path


def kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def main() -> int:
    url, token, pin = sys.argv[1], sys.argv[2], sys.argv[3]
    n = int(sys.argv[4]) if len(sys.argv) > 4 else 50
    base = kib("VmRSS")
    import httpx

    from keybound.client import open_device, open_keystore, preset

    imported = kib("VmRSS")
    rp = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=30)
    user = rp.post("/rp/v1/users", json={}).json()["userId"]
    code = rp.post(f"/rp/v1/users/{user}/activation-codes").json()["activationLink"]
    with tempfile.TemporaryDirectory(prefix="kb-sdk-probe-") as tmp:
        device = open_device(
            tmp, channel_pin=pin, profile=preset("linux"), hardware=open_keystore("emulated", tmp)
        )
        t = time.perf_counter()
        act = device.activate(code)
        t_act = time.perf_counter() - t
        lat = []
        for _ in range(n):
            t = time.perf_counter()
            res = device.authenticate()
            lat.append(time.perf_counter() - t)
        op = rp.post(
            f"/rp/v1/devices/{device.device_id}/operations",
            json={"preOperationContext": {"content": "ok?", "mimeType": "text/plain"}},
        )
        op_id = op.json()["operationId"]
        t = time.perf_counter()
        pending = [p.operation_id for p in device.pending()]
        back = device.authenticate(operation_id=op_id)
        t_back = time.perf_counter() - t
        state = rp.get(f"/rp/v1/operations/{op_id}").json()["state"]
        lat.sort()
        print(
            json.dumps(
                {
                    "ok": act.device_id == device.device_id
                    and op_id in pending
                    and state == "COMPLETED"
                    and res.hw_key_client_status.value == "OK"
                    and back.auth_level.value == "ONE_FACTOR",
                    "hardware_key_registered": act.hardware_key_registered,
                    "authentications": n,
                    "activation_ms": t_act * 1e3,
                    "auth_p50_ms": lat[len(lat) // 2] * 1e3,
                    "auth_max_ms": lat[-1] * 1e3,
                    "backend_auth_ms": t_back * 1e3,
                    "python_rss_kib": base,
                    "after_import_rss_kib": imported,
                    "rss_kib": kib("VmRSS"),
                    "peak_rss_kib": kib("VmHWM"),
                }
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
