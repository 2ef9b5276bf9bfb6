"""remediate audit on a chain in a directory: verify and show, and a missing chain in one line."""

from __future__ import annotations

import json
from pathlib import Path

from support.audit import chain
from support.lab import remediate_cli

from remediate.errors import EXIT_OK, EXIT_USAGE


def test_verify_and_show_on_a_sound_chain(tmp_path: Path) -> None:
    chain(tmp_path, 3).close()
    done = remediate_cli("audit", "verify", "--state", str(tmp_path))
    assert done.returncode == EXIT_OK and "the audit chain holds: 3 record(s)" in done.stdout
    shown = json.loads(remediate_cli("audit", "show", "--state", str(tmp_path), "--last", "2", "--json").stdout)
    assert (
        [r["seq"] for r in shown["records"]] == [2, 3] and shown["ok"] and shown["head"] == shown["records"][-1]["hash"]
    )


def test_no_chain_is_a_one_line_usage_error(tmp_path: Path) -> None:
    done = remediate_cli("audit", "verify", "--state", str(tmp_path / "none"))
    assert done.returncode == EXIT_USAGE and "no audit chain in" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
