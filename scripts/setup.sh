#!/usr/bin/env bash
# Copyright: pft contributors
# SPDX-License-Identifier: GPL-3.0-or-later
# pft controller setup: pinned Debian packages, a virtualenv at .venv with
# pinned Python packages, and the collections of requirements.yml.
# Idempotent: a second run checks and does nothing. Run as root on Debian 12.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
venv="$repo/.venv"
python=${PFT_PYTHON:-python3}

step() { printf '\033[1m==> %s\033[0m\n' "$*"; }
info() { printf '    %s\n' "$*"; }
die() { printf 'setup: error: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" -eq 0 ] || die "must run as root (it installs Debian packages); try: sudo make setup"
command -v apt-get >/dev/null || die "apt-get not found: pft's setup supports Debian 12 (bookworm) only"

# --- Debian packages -------------------------------------------------------
step "Debian packages (requirements-apt.txt)"
missing=()
while read -r spec; do
    spec=${spec%%#*}
    spec=$(echo "$spec" | xargs)
    [ -n "$spec" ] || continue
    pkg=${spec%%=*}
    want=${spec#*=}
    have=$(dpkg-query -W -f='${Status} ${Version}' "$pkg" 2>/dev/null || true)
    if [ "$have" = "install ok installed $want" ]; then
        info "ok       $pkg $want"
    else
        info "missing  $pkg $want${have:+ (have: ${have##* })}"
        missing+=("$spec")
    fi
done < requirements-apt.txt

if [ "${#missing[@]}" -gt 0 ]; then
    step "apt-get install ${#missing[@]} package(s)"
    # Package scripts must not start daemons on the controller: a stock gmond
    # would multicast on the default interface. Use a policy-rc.d if none exists.
    created_policy=
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
        chmod 755 /usr/sbin/policy-rc.d
        created_policy=1
    fi
    trap '[ -n "$created_policy" ] && rm -f /usr/sbin/policy-rc.d' EXIT
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    apt-get install -y -q --no-install-recommends "${missing[@]}"
    # On a systemd host the packages enable their units; pft runs its own
    # gmond instances, so keep the stock ones off.
    if [ -d /run/systemd/system ]; then
        systemctl disable --now ganglia-monitor.service gmetad.service >/dev/null 2>&1 || true
    fi
fi

# --- virtualenv ------------------------------------------------------------
step "Python virtualenv (.venv)"
"$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
    || die "$python is $("$python" -V 2>&1); pft needs Python >= 3.11"
if [ ! -x "$venv/bin/python" ]; then
    info "creating $venv"
    "$python" -m venv "$venv"
fi
stamp="$venv/.pft-requirements.sha256"
want_hash=$(cat requirements.txt requirements-dev.txt constraints.txt | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" = "$want_hash" ]; then
    info "ok       requirements unchanged"
else
    info "installing requirements-dev.txt with constraints.txt"
    "$venv/bin/pip" install --disable-pip-version-check -q -r requirements-dev.txt -c constraints.txt
    echo "$want_hash" > "$stamp"
fi

# --- collections -------------------------------------------------------------
step "Ansible collections (requirements.yml)"
if grep -Eq '^\s*-\s' requirements.yml; then
    "$venv/bin/ansible-galaxy" collection install -r requirements.yml -p "$repo/collections"
else
    info "ok       none required"
fi

step "setup complete"
