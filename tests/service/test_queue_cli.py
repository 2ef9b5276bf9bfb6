"""remediate queue and worker say what is wrong in one line (PostgreSQL, no lab)."""

from __future__ import annotations

import os

from support.lab import remediate_cli
from support.pg import Postgres


def test_queue_commands_say_what_is_wrong_in_one_line(postgres: Postgres) -> None:
    """No URL, a URL that is not postgresql://, a database without the schema: one line each, no traceback."""
    env = {k: v for k, v in os.environ.items() if k != "REMEDIATE_QUEUE"}
    done = remediate_cli("queue", "init", env=env)
    assert done.returncode == 2 and "give --queue" in done.stderr
    done = remediate_cli("queue", "init", "--queue", "mysql://x")
    assert done.returncode == 2 and "postgresql:// URL" in done.stderr
    done = remediate_cli("queue", "init", "--queue", "postgresql://postgres@127.0.22.9:5432/none")
    assert done.returncode == 6 and len(done.stderr.strip().splitlines()) == 1, done.stderr
    postgres.reset()
    done = remediate_cli("worker", "-i", "/dev/null", "--queue", postgres.url)
    assert done.returncode in (5, 2) and "Traceback" not in done.stderr, done.stderr
