"""The worker process of `remediate serve`: runs the ledger's jobs, away from the process that answers.

Jobs are SSH sessions, nginx config parsing and crypto: CPU in Python. In the process that
answers Slack and Alertmanager they would hold the GIL while 50 requests wait for their ack, so
``remediate serve`` starts this process beside it (``python -m remediate.serve.dispatcher --config
FILE``). The two share nothing but the state directory's SQLite files: the HTTP process records
jobs, this one claims and runs them (remediate.serve.jobs.Runner). A line on its stdin means "a
job was recorded, look now" (otherwise it looks every half second); end of stdin or SIGTERM
means stop: running jobs finish (up to 30 s) and anything left resumes on the next start. If
this process dies, the HTTP process starts another one, and jobs it left running go back to
pending (the host's journal finishes or undoes what a killed run left).
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import subprocess
import sys
import threading
from typing import IO, Any

import structlog

__all__ = ["WorkerProcess", "main"]

log = structlog.get_logger("remediate.serve")


class WorkerProcess:
    """The worker process as the HTTP process sees it (the embedded dispatcher): start, wake, watch, stop."""

    def __init__(self, config_path: str, workers: int = 4) -> None:
        self.config_path = config_path
        self.workers = workers
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> None:
        self.proc = subprocess.Popen(  # noqa: S603 - this interpreter, this module, the config path we were given
            [sys.executable, "-m", "remediate.serve.dispatcher", "--config", self.config_path],
            stdin=subprocess.PIPE,
        )
        self.starts += 1

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def health(self) -> dict[str, Any]:
        ok = self.alive()
        return {"ok": ok, "workers": self.workers if ok else 0}

    def submitted(self, job_id: str, host: str, dedupe: str | None = None) -> None:
        self.wake()

    def states(self, job_ids: list[str]) -> dict[str, dict[str, Any]]:
        return {}

    def wake(self) -> None:
        if self.proc is None or self.proc.stdin is None:
            return
        try:
            self.proc.stdin.write(b"\n")
            self.proc.stdin.flush()
        except (BrokenPipeError, ValueError, OSError):
            pass  # it died; watch() starts another

    def watch(self) -> None:
        """Start a new worker if this one died."""
        if self.proc is not None and self.proc.poll() is not None:
            log.error("worker-died", exit=self.proc.returncode, restarting=True)
            self.start()

    def stop(self, wait: float = 40.0) -> None:
        if self.proc is None:
            return
        if self.proc.stdin is not None:
            with contextlib.suppress(OSError):
                self.proc.stdin.close()
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(wait)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc = None


def main(argv: list[str] | None = None) -> int:
    from remediate.api import Remediate
    from remediate.hosts.inventory import load_inventory
    from remediate.serve.config import load_config
    from remediate.serve.eventlog import configure
    from remediate.serve.jobs import Runner, Stores
    from remediate.serve.notify import Notifier

    parser = argparse.ArgumentParser(prog="remediate-serve-worker")
    parser.add_argument("--config", required=True)
    args = parser.parse_args(argv)
    configure()
    config = load_config(args.config)
    rem = Remediate(load_inventory(config.inventory), accept_new_host_key=config.accept_new_host_key, trigger="api")
    runner = Runner(config, rem, Stores(config.stores), Notifier(config.slack))
    done = threading.Event()

    def stop(*_: Any) -> None:
        done.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the HTTP process, which stops us in order
    resumed = runner.start()
    log.info("worker-started", workers=config.workers, resumed=len(resumed))
    threading.Thread(target=_read_wakes, args=(sys.stdin.buffer, runner.wake, done), daemon=True).start()
    done.wait()
    log.info("worker-stopping", running=runner.busy)
    runner.stop(wait=30)
    return 0


def _read_wakes(stdin: IO[bytes], wake: threading.Event, done: threading.Event) -> None:
    while stdin.readline():
        wake.set()
    done.set()  # the HTTP process is gone


if __name__ == "__main__":
    sys.exit(main())
