#!/usr/bin/env bash
# `make fresh-check`: do the README's two commands work on a fresh machine? A manual check, not
# part of `make test` or CI. Needs root (it builds and enters a chroot) and Debian's mirror.
#
# Builds a minimal Debian bookworm root with mmdebstrap (variant minbase, plus python3 and make:
# the README's "a fresh Debian/Ubuntu machine with Python 3.11+ and make"), puts HEAD of this
# repository into it (git archive: committed files only), and runs inside it:
#   1. `make demo` as a user without root or sudo: must stop and say what to install
#   2. `make demo` as root: installs what is missing, runs the demo
#   3. `make test` as root, in the same checkout (what CI runs)
#   4. `make demo` as the user again: everything is there now, so it needs no root
# It prints what the install script added, how many packages that came to, and each step's
# time. Every mount is undone and every process left in the root is stopped, even on failure;
# the root is removed unless KEEP=1. Logs: $LOGS (default /var/tmp/keybound-fresh-<time>.log).
set -euo pipefail

SUITE=${SUITE:-bookworm}
MIRROR=${MIRROR:-http://deb.debian.org/debian}
SECURITY_MIRROR=${SECURITY_MIRROR:-http://deb.debian.org/debian-security}
stamp=$(date -u +%Y%m%d-%H%M%S)
LOGS=${LOGS:-/var/tmp/keybound-fresh-$stamp.log}
repo=$(cd "$(dirname "$0")/.." && pwd)

say() { echo "fresh-check: $*" | tee -a "$LOGS" >&2; }
die() { say "FAILED: $*"; exit 1; }

[ "$(id -u)" -eq 0 ] || { echo "fresh-check: needs root (sudo make fresh-check)" >&2; exit 1; }
: >"$LOGS"
if ! command -v mmdebstrap >/dev/null; then
  say "apt-get install mmdebstrap"
  DEBIAN_FRONTEND=noninteractive apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends mmdebstrap \
    >/dev/null
fi
if [ -n "$(git -C "$repo" status --porcelain --untracked-files=no)" ]; then
  say "note: uncommitted changes are not checked" \
      "(the root gets HEAD, $(git -C "$repo" rev-parse --short HEAD))"
fi

root=$(mktemp -d /var/tmp/keybound-fresh-root.XXXXXX)
mounts=()

mounted_under_root() { awk -v r="$root/" 'index($2, r) == 1 { print $2 }' /proc/mounts; }

cleanup() {
  local rc=$? pid link
  set +e  # every step below runs, whatever one of them returns: the mounts must go
  # Processes left inside the root (a server or database a failed test left running), by PID
  for link in /proc/[0-9]*/root; do
    pid=${link#/proc/}; pid=${pid%/root}
    if [ "$(readlink "$link" 2>/dev/null)" = "$root" ]; then
      kill -TERM "$pid" 2>/dev/null || true
    fi
  done
  sleep 1
  for link in /proc/[0-9]*/root; do
    pid=${link#/proc/}; pid=${pid%/root}
    if [ "$(readlink "$link" 2>/dev/null)" = "$root" ]; then
      kill -KILL "$pid" 2>/dev/null || true
    fi
  done
  local i
  rm -f "${before:-}" "${after:-}"
  for ((i = ${#mounts[@]} - 1; i >= 0; i--)); do
    umount -R "${mounts[$i]}" 2>/dev/null || umount -R -l "${mounts[$i]}" || true
  done
  if [ -n "$(mounted_under_root)" ]; then
    say "still mounted under $root, not removing it: $(mounted_under_root | tr '\n' ' ')"
  elif [ "${KEEP:-0}" = 1 ]; then
    say "root kept: $root"
  else
    rm -rf --one-file-system "$root"
  fi
  say "log: $LOGS"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

bind() {  # bind <what> <where inside the root>
  mkdir -p "$root$2"
  case $1 in
    proc) mount -t proc proc "$root$2" ;;
    *) mount --rbind "$1" "$root$2"; mount --make-rslave "$root$2" ;;
  esac
  mounts+=("$root$2")
}

# Runs a command in the root, as root or the user `dev`, with a clean environment: nothing
# of this host's pip or Python settings leaks in.
in_root() {
  local user=$1; shift
  local home=/root
  [ "$user" = root ] || home=/home/$user
  chroot --userspec="$user:$user" "$root" /usr/bin/env -i HOME="$home" USER="$user" \
    PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 \
    ${pip_cert:+PIP_CERT=$pip_cert} bash -c "$*"
}

timed() {  # timed <label> <expect: ok|fail> <user> <command>
  local label=$1 expect=$2 user=$3; shift 3
  local start end rc=0
  say "== $label ($user): $*"
  start=$(date +%s)
  in_root "$user" "$*" 2>&1 | tee -a "$LOGS" || rc=$?
  end=$(date +%s)
  times+=("$label: $((end - start)) s (exit $rc)")
  say "== $label: $((end - start)) s, exit $rc"
  if [ "$expect" = ok ] && [ "$rc" -ne 0 ]; then die "$label"; fi
  if [ "$expect" = fail ] && [ "$rc" -eq 0 ]; then die "$label should have failed"; fi
}
times=()
total_start=$(date +%s)

say "building a minimal Debian $SUITE root in $root"
start=$(date +%s)
mmdebstrap --variant=minbase --include=python3,make --quiet "$SUITE" "$root" \
  "deb $MIRROR $SUITE main" "deb $MIRROR $SUITE-updates main" \
  "deb $SECURITY_MIRROR $SUITE-security main" 2>&1 | tee -a "$LOGS"
times+=("mmdebstrap: $(($(date +%s) - start)) s")
# As in a container: no init, so package scripts must not start services (PostgreSQL's would
# keep running past the check); the tests start their own instances.
printf '#!/bin/sh\nexit 101\n' >"$root/usr/sbin/policy-rc.d"
chmod 755 "$root/usr/sbin/policy-rc.d"
cp -L /etc/resolv.conf "$root/etc/resolv.conf"
# A host whose network inspects TLS gives pip its own CA bundle ($PIP_CERT); the root's pip
# gets the same file, or it could reach no package index. Nothing else of the host's goes in.
pip_cert=
if [ -n "${PIP_CERT:-}" ] && [ -f "$PIP_CERT" ]; then
  pip_cert=/etc/keybound-fresh-check-ca.pem
  cp -L "$PIP_CERT" "$root$pip_cert"
  say "pip in the root uses this host's CA bundle ($PIP_CERT, from \$PIP_CERT)"
fi
chroot "$root" useradd --create-home --shell /bin/bash dev

bind proc /proc
bind /sys /sys
bind /dev /dev

# HEAD of this repository, once for root and once for the user
for dest in /root/keybound /home/dev/keybound; do
  mkdir -p "$root$dest"
  git -C "$repo" archive --format=tar HEAD | tar -x -C "$root$dest"
done
chroot "$root" chown -R dev:dev /home/dev/keybound
before=$(mktemp) after=$(mktemp)
in_root root "dpkg-query -W -f='\${Package}\n' | sort" >"$before"

timed "make demo, no root, nothing installed" fail dev "cd ~/keybound && make demo"
grep -q "apt-get install python3-venv" "$LOGS" ||
  die "make demo without root did not say to install python3-venv"
timed "make demo (root)" ok root "cd ~/keybound && make demo"
timed "make test (root)" ok root "cd ~/keybound && make test"
timed "make demo, no root, everything installed" ok dev "cd ~/keybound && make demo"

in_root root "dpkg-query -W -f='\${Package}\n' | sort" >"$after"
added=$(comm -13 "$before" "$after" | wc -l)

say "PASSED: both README commands on a fresh $SUITE root" \
    "(HEAD $(git -C "$repo" rev-parse --short HEAD))"
say "the install script asked for:"
grep "^install-system-deps: apt-get install" "$LOGS" | sed 's/^/  /' | tee -a "$LOGS" >&2
say "packages added to the base root, dependencies included: $added"
for t in "${times[@]}"; do say "  $t"; done
say "total: $(($(date +%s) - total_start)) s"
