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
  prometheus-alertmanager postgresql openjdk-17-jre-headless systemd-container debootstrap)
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

# Test data nobody here wrote, from the package registries (pinned by sha256), into .cache/corpus:
# gixy-ng's nginx configs (PyPI sdist) for `harden --file`, and the SARIF 2.1.0 JSON schema (in the
# npm package @microsoft/jest-sarif) that `harden --sarif` must validate against.
CORPUS=.cache/corpus
fetch_corpus() {  # NAME SHA256 COMMAND...: run COMMAND in a temp dir, check NAME's digest, keep it
  local name=$1 sum=$2; shift 2
  [ -f "$CORPUS/$name" ] && echo "$sum  $CORPUS/$name" | sha256sum -c --quiet - 2>/dev/null && return 0
  local tmp; tmp=$(mktemp -d)
  (cd "$tmp" && "$@" >/dev/null 2>&1) || { echo "remediate: error: cannot fetch $name: $*" >&2; exit 1; }
  echo "$sum  $tmp/$name" | sha256sum -c --quiet - || { echo "remediate: error: $name: wrong sha256" >&2; exit 1; }
  mkdir -p "$CORPUS" && mv "$tmp/$name" "$CORPUS/$name" && rm -rf "$tmp"
}
echo "==> test corpora (gixy-ng's nginx configs, the SARIF 2.1.0 schema) in $CORPUS"
fetch_corpus gixy_ng-0.2.59.tar.gz 6f49c0507c04acc7ac50b1f2455cd625b29a039d9ddca49b7c9f20603a501bca \
  "$PWD/.venv/bin/python" -m pip download -q --no-deps --no-binary :all: gixy-ng==0.2.59 -d .
fetch_corpus microsoft-jest-sarif-1.0.0-beta.0.tgz 748e2c3d1a842e7bb258416685c7ea3a0da40005b72267b2052c2856d48ad102 \
  curl -fsSL -o microsoft-jest-sarif-1.0.0-beta.0.tgz \
  https://registry.npmjs.org/@microsoft/jest-sarif/-/jest-sarif-1.0.0-beta.0.tgz

# The real host's root file system (Debian bookworm from Debian's packages, for tests/realhost/test_realhost.py):
# built once into /var/cache/remediate/debian-bookworm (about 70 s), reused while its recipe holds.
echo "==> the Debian host's root file system (remediate.lab.rootfs)"
.venv/bin/python -c 'from remediate.lab.rootfs import build_rootfs; print(build_rootfs())'
