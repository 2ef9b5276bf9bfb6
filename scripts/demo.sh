#!/usr/bin/env bash
# The demo (README): build the lab, break `socket` both ways and fix each with `remediate run`
# (502 before, 200 after, nothing to do the second time), then break every other runbook cause
# for real, diagnose it, and fix it with `run --cause auto` (status before and after). Ends with `lab down`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh >/dev/null
LAB=${REMEDIATE_LAB:-/tmp/remediate-lab}
INV="$LAB/inventory.yml"
R=.venv/bin/remediate
export REMEDIATE_STATE_DIR=${REMEDIATE_STATE_DIR:-$LAB/controller-state}
show() { printf '\n\033[1m$ %s\033[0m\n' "$*"; }
step() { show "$@"; "$@"; }
status() { printf '  GET %s -> %s\n' "$1" "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.10.1:8080$1")"; }

$R lab down --dir "$LAB" >/dev/null 2>&1 || true
step $R lab up --dir "$LAB"
step $R config -i "$INV" --host web01 --route http://web01.lab:8080/index.php

for variant in missing permission; do
  step $R lab break --dir "$LAB" --cause socket --variant "$variant"
  status /index.php
  step $R run -i "$INV" --host web01 --cause socket --check
  step $R run -i "$INV" --host web01 --cause socket --yes
  status /index.php
  step $R run -i "$INV" --host web01 --cause socket --yes
done

printf '\n\033[1mEvery other cause, broken for real, diagnosed and fixed with --cause auto:\033[0m\n'
for cvp in down:crash:/ proxy-pass:port:/api/users proxy-pass:slash:/api/users dns:no-resolver:/dyn/ \
           dns:stale:/svc/ timeout:read:/reports/daily invalid-response:empty:/healthz \
           invalid-response:tls:/secure/ workers:load:/ dns:nxdomain:/dyn/; do
  IFS=: read -r cause variant path <<<"$cvp"
  $R lab reset --dir "$LAB" >/dev/null
  : > "$LAB/web01/nginx/logs/error.log"; : > "$LAB/web01/nginx/logs/access.log"  # a new incident's logs
  step $R lab break --dir "$LAB" --cause "$cause" --variant "$variant"
  status "$path"
  show $R diagnose -i "$INV" --host web01
  { $R diagnose -i "$INV" --host web01 || true; } | head -n 1
  # nxdomain is refused (exit 3): no nginx change can make an unknown name resolve
  show $R run -i "$INV" --host web01 --cause auto --yes
  { $R run -i "$INV" --host web01 --cause auto --yes 2>&1 || true; } | grep -E "^(auto|fixed|nothing|refused)" | cut -c1-300 || true
  status "$path"
done
step $R lab reset --dir "$LAB"
step $R lab down --dir "$LAB"
