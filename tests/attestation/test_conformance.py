"""``keybound attestation check``: the copied shared manifest prints only matches, and the
command reports mismatches and unusable manifests with its exit status."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from keybound.attestation.conformance import main
from tests.attestation.vectors import MANIFEST, VECTORS


def _lines(capsys: pytest.CaptureFixture[str]) -> list[dict[str, object]]:
    return [json.loads(line) for line in capsys.readouterr().out.splitlines()]


def test_shared_manifest_prints_only_matches(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([str(MANIFEST)]) == 0
    lines = _lines(capsys)
    manifest = json.loads(MANIFEST.read_text(encoding="utf-8"))
    ids = {e["id"] for section in ("android", "apple", "tpm") for e in manifest[section]}
    assert ids <= {line["id"] for line in lines}  # every entry, plus the negative variant
    assert all(line["match"] is True for line in lines), [x for x in lines if not x["match"]]
    by_id = {line["id"]: line for line in lines}
    assert by_id["ka-caiman-tee-ec-rkp@2030-01-01T00:00:00Z"]["reason"] == "CHAIN_EXPIRED"
    assert by_id["ka-invalid-malformed-rot"]["reason"] == "MALFORMED"
    assert by_id["fnl-tpm-sha1"]["reason"] == "CHAIN_UNTRUSTED"
    assert by_id["fnl-tpm-sha1"]["structure"] == "valid"
    assert by_id["w3c-l3-16.13-tpm-es256"]["reason"] == "TPM_KEY_ATTRIBUTES"
    assert set(lines[0]) >= {"id", "expected", "got", "match", "reason"}


def test_a_wrong_expectation_is_a_mismatch(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    copy = tmp_path / "vectors"
    shutil.copytree(VECTORS, copy)
    manifest = json.loads((copy / "manifest.json").read_text(encoding="utf-8"))
    manifest["android"][0]["expected"]["result"] = "invalid"  # blueline is valid
    manifest["android"][1]["verify_at"] = "2031-01-01T00:00:00Z"  # factory: expiry ignored
    manifest["android"][3]["verify_at"] = "2031-01-01T00:00:00Z"  # RKP: expired
    manifest["tpm"][0]["trust_anchor"] = "NOT INCLUDED"  # section anchor: still Microsoft
    (copy / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    assert main([str(copy / "manifest.json")]) == 1
    by_id = {line["id"]: line for line in _lines(capsys)}
    assert by_id["ka-blueline-tee-ec"]["match"] is False
    assert by_id["ka-blueline-sb-rsa"]["match"] is True
    assert by_id["ka-akita-tee-rsa-rkp"]["reason"] == "CHAIN_EXPIRED"
    assert by_id["pyw-surface_pro_4_intel"]["match"] is True


def test_unusable_manifest(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([str(tmp_path / "missing.json")]) == 2
    broken = tmp_path / "broken.json"
    broken.write_text("{", encoding="utf-8")
    assert main([str(broken)]) == 2
    empty = tmp_path / "empty.json"
    empty.write_text("{}", encoding="utf-8")
    assert main([str(empty)]) == 1  # nothing checked is not a success
