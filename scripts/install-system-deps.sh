#!/usr/bin/env bash
# The Debian/Ubuntu packages keybound's two commands need, installed only when missing:
#
#   install-system-deps.sh demo       `make demo`: what makes the venv (python3-venv); also,
#                                     as root or with password-less sudo, what the demo's TPM
#                                     device needs (swtpm, and tpm2-pytss's build: a C
#                                     compiler, Python headers, the TSS2 headers)
#   install-system-deps.sh test       `make test`: all of that, plus SoftHSM2 and PostgreSQL
#   install-system-deps.sh tpm-ready  exit 0 when tpm2-pytss can be built here (no wheel)
#
# $PYTHON names the interpreter the venv is made from (default python3). With everything
# present this needs no root; otherwise it runs apt-get as root or through sudo, or says what to
# install and fails.
set -euo pipefail

mode=${1:-test}
PYTHON=${PYTHON:-python3}

die() { echo "install-system-deps: $*" >&2; exit 1; }
installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }

py_path=$(command -v "$PYTHON") || die "no $PYTHON on PATH: keybound needs Python 3.11+"
py_version=$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
# A distribution's Python comes in parts (venv, headers), a pyenv or source build whole.
# python3-venv and python3-dev follow the default python3; another version has its own.
debian_python=false
case $(readlink -f "$py_path") in /usr/bin/*) debian_python=true ;; esac
if [ "$(readlink -f "$py_path")" = "$(readlink -f /usr/bin/python3 2>/dev/null)" ]; then
  py_pkg=python3
else
  py_pkg=python$py_version
fi

has_venv() { "$PYTHON" -c 'import ensurepip, venv' 2>/dev/null; }
has_headers() {
  "$PYTHON" -c 'import os, sys, sysconfig
sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")))'
}
has_cc() { command -v "${CC:-cc}" >/dev/null && [ -e /usr/include/stdio.h ]; }
has_tss2() { command -v pkg-config >/dev/null && pkg-config --exists tss2-esys; }

# Each add_* appends what it finds missing to $missing (called directly, not in a subshell,
# so that their die() stops the script).
missing=()

add_venv() {
  has_venv && return 0
  $debian_python || die "$py_path cannot make a venv with pip (no ensurepip): rebuild it"
  missing+=("$py_pkg-venv")
}

# What tpm2-pytss's source build needs (cffi compiles against the TSS2 headers)
add_tpm_build() {
  has_cc || missing+=(gcc libc6-dev)
  has_tss2 || missing+=(pkg-config libtss2-dev)
  if ! has_headers; then
    $debian_python || die "$py_path has no Python.h: rebuild it with its headers"
    missing+=("$py_pkg-dev")
  fi
}

add_packages() {
  local pkg
  for pkg in "$@"; do installed "$pkg" || missing+=("$pkg"); done
}

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

can_root() {  # without asking for a password
  [ "$(id -u)" -eq 0 ] || { command -v sudo >/dev/null && sudo -n true 2>/dev/null; }
}

apt_install() {
  echo "install-system-deps: apt-get install $*"
  export DEBIAN_FRONTEND=noninteractive
  as_root apt-get update -qq
  as_root apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

need() {  # install these or fail, saying what to install
  [ $# -gt 0 ] || return 0
  if [ "$(id -u)" -ne 0 ] && ! command -v sudo >/dev/null; then
    die "make $mode needs these packages; as root: apt-get install $*"
  fi
  apt_install "$@" || die "could not install them; as root: apt-get install $*"
}

case $mode in
  tpm-ready)
    add_tpm_build
    [ ${#missing[@]} -eq 0 ]
    ;;
  demo)
    add_venv
    need "${missing[@]}"
    missing=()
    add_tpm_build
    add_packages swtpm swtpm-tools
    if [ ${#missing[@]} -eq 0 ]; then
      :
    elif can_root; then
      apt_install "${missing[@]}"
    else
      echo "install-system-deps: the demo runs without its TPM 2.0 device; for it:" \
           "sudo apt-get install ${missing[*]}" >&2
    fi
    ;;
  test)
    add_venv
    add_tpm_build
    add_packages swtpm swtpm-tools softhsm2 postgresql
    need "${missing[@]}"
    ;;
  *)
    die "usage: install-system-deps.sh demo|test|tpm-ready"
    ;;
esac
