#!/usr/bin/env bash
# The test command (README): install what the lab needs, then ruff, mypy and the whole pytest suite.
# Every test runs against real parts; in CI a skipped test fails the run.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
echo "==> ruff"
.venv/bin/ruff check remediate tests bench ansible_collections
echo "==> mypy"
.venv/bin/mypy
echo "==> import layers (lint-imports: the layers in order, no circle)"
.venv/bin/lint-imports --no-cache
echo "==> pytest"
.venv/bin/pytest "$@"
