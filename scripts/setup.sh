#!/usr/bin/env bash
# Shared by test.sh and demo.sh: the lab's apt packages, a venv in .venv, and a regular
# (non-editable) install of remediate with its test extras. Needs root for apt and the lab.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -ne 0 ]; then
  echo "remediate: error: the lab needs root (apt-get, sshd, nginx, a mount namespace); run as root" >&2
  exit 2
fi

APT_PACKAGES=(nginx openssh-server php-fpm supervisor dnsmasq-base dnsutils iproute2 procps util-linux curl sudo
  prometheus-alertmanager postgresql)
missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "==> apt-get install ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

PYTHON=${PYTHON:-python3}
if ! "$PYTHON" -c 'import venv, ensurepip' 2>/dev/null; then
  echo "==> apt-get install python3-venv"
  apt-get install -y -qq python3-venv >/dev/null
fi
if [ ! -x .venv/bin/python ]; then
  echo "==> python3 -m venv .venv"
  "$PYTHON" -m venv .venv
fi
echo "==> pip install '.[test]'  (a regular install, as users get it)"
.venv/bin/python -m pip install -q --upgrade pip >/dev/null 2>&1 || true
.venv/bin/python -m pip install -q --force-reinstall --no-deps . 2>&1 | grep -v "^WARNING: Location" || true
.venv/bin/python -m pip install -q '.[test]' 2>&1 | grep -v "^WARNING: Location" || true
.venv/bin/remediate --version
