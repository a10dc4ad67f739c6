#!/usr/bin/env bash
# Installs the system packages the full test suite needs (real TPM 2.0 simulator, SoftHSM2,
# the TSS2 headers tpm2-pytss builds against). Skips apt when everything is already present.
set -euo pipefail

packages=(swtpm swtpm-tools softhsm2 libtss2-dev pkg-config postgresql)
missing=()
for pkg in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
echo "installing system packages: ${missing[*]}"
if [ "$(id -u)" -eq 0 ]; then
  SUDO=""
elif command -v sudo >/dev/null; then
  SUDO="sudo"
else
  echo "error: need root (or sudo) to apt-get install ${missing[*]}" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
