#!/usr/bin/env bash
# The demo (README): build the lab, show what remediate reads over SSH, then break every
# runbook cause for real and show nginx's answer and its error-log line. Ends with `lab down`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh >/dev/null
LAB=${REMEDIATE_LAB:-/tmp/remediate-lab}
R=.venv/bin/remediate
step() { printf '\n\033[1m$ %s\033[0m\n' "$*"; "$@"; }

$R lab down --dir "$LAB" >/dev/null 2>&1 || true
step $R lab up --dir "$LAB"
step $R config -i "$LAB/inventory.yml" --host web01 --route http://web01.lab:8080/index.php
for cv in down:crash proxy-pass:port proxy-pass:slash dns:no-resolver dns:stale timeout:read \
          invalid-response:empty invalid-response:tls socket:missing socket:permission workers:load; do
  before=$(stat -c %s "$LAB/web01/nginx/logs/error.log")
  step $R lab break --dir "$LAB" --cause "${cv%%:*}" --variant "${cv##*:}"
  line=$(tail -c +"$((before + 1))" "$LAB/web01/nginx/logs/error.log" | grep -E "\[(error|crit|alert)\]" | tail -n 1 || true)
  echo "  new error-log line: ${line:-(none: this cause shows in the access log and the backend's log)}" | cut -c1-240
done
step $R lab reset --dir "$LAB"
step $R lab status --dir "$LAB"
step $R lab down --dir "$LAB"
