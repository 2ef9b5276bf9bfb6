#!/usr/bin/env bash
# The demo (README): build the lab, break `socket` both ways and fix each with `remediate run`
# (502 before, 200 after, nothing to do the second time), then break every other runbook cause
# for real and show nginx's answer and its error-log line. Ends with `lab down`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh >/dev/null
LAB=${REMEDIATE_LAB:-/tmp/remediate-lab}
INV="$LAB/inventory.yml"
R=.venv/bin/remediate
export REMEDIATE_STATE_DIR=${REMEDIATE_STATE_DIR:-$LAB/controller-state}
step() { printf '\n\033[1m$ %s\033[0m\n' "$*"; "$@"; }
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

printf '\n\033[1mThe other causes, broken for real (their playbooks come next):\033[0m\n'
for cv in down:crash proxy-pass:port proxy-pass:slash dns:no-resolver dns:stale timeout:read \
          invalid-response:empty invalid-response:tls workers:load; do
  before=$(stat -c %s "$LAB/web01/nginx/logs/error.log")
  step $R lab break --dir "$LAB" --cause "${cv%%:*}" --variant "${cv##*:}"
  line=$(tail -c +"$((before + 1))" "$LAB/web01/nginx/logs/error.log" | grep -E "\[(error|crit|alert)\]" | tail -n 1 || true)
  echo "  new error-log line: ${line:-(none: this cause shows in the access log and the backend log)}" | cut -c1-240
done
step $R lab reset --dir "$LAB"
step $R lab down --dir "$LAB"
