"""A real PostgreSQL for the queue tests: Debian's server binaries, a cluster in a temporary directory,
listening on one loopback address only, run as the postgres user (the server refuses root)."""

from __future__ import annotations

import contextlib
import glob
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import psycopg

ADDR = "127.0.22.1"
PORT = 5432


def server_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    return Path(found[-1]).parent if found else None


class Postgres:
    def __init__(self, addr: str = ADDR) -> None:
        self.addr = addr
        bindir = server_bin()
        if bindir is None:
            raise RuntimeError("PostgreSQL's server is missing; run: apt-get install postgresql")
        self.bin = bindir
        self.root = Path(tempfile.mkdtemp(prefix="remediate-pg-", dir="/tmp"))
        self.data = self.root / "data"
        shutil.chown(self.root, "postgres", "postgres")
        self.url = f"postgresql://postgres@{addr}:{PORT}/remediate"
        self.admin = f"postgresql://postgres@{addr}:{PORT}/postgres"

    def _as_postgres(self, *argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["runuser", "-u", "postgres", "--", *argv], capture_output=True, text=True, check=True, cwd="/tmp"
        )

    def start(self) -> None:
        if not self.data.exists():
            self._as_postgres(
                str(self.bin / "initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync"
            )
        options = f"-c listen_addresses={self.addr} -c port={PORT} -c unix_socket_directories={self.root} -c fsync=off"
        self._as_postgres(
            str(self.bin / "pg_ctl"), "-D", str(self.data), "-l", str(self.root / "log"), "-o", options, "-w", "start"
        )
        self._wait()
        with psycopg.connect(self.admin, autocommit=True) as conn:
            if not conn.execute("SELECT 1 FROM pg_database WHERE datname = 'remediate'").fetchone():
                conn.execute("CREATE DATABASE remediate")

    def _wait(self) -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                psycopg.connect(self.admin, connect_timeout=2).close()
                return
            except psycopg.OperationalError:
                time.sleep(0.1)
        raise RuntimeError(f"PostgreSQL did not start; see {self.root}/log")

    def stop(self, mode: str = "fast") -> None:
        self._as_postgres(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop")

    def restart(self) -> None:
        self.stop()
        self.start()

    def reset(self) -> None:
        """An empty database: drop and create it again."""
        with psycopg.connect(self.admin, autocommit=True) as conn:
            conn.execute("DROP DATABASE IF EXISTS remediate WITH (FORCE)")
            conn.execute("CREATE DATABASE remediate")

    def stores(self, name: str = "stores") -> str:
        """The URL of database ``name`` with no `remediate` schema: empty stores (remediate.stores.db)."""
        with psycopg.connect(self.admin, autocommit=True) as conn:
            if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone():
                conn.execute(f"CREATE DATABASE {name}")
        url = f"postgresql://postgres@{self.addr}:{PORT}/{name}"
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("DROP SCHEMA IF EXISTS remediate CASCADE")
        return url

    def destroy(self) -> None:
        with contextlib.suppress(subprocess.CalledProcessError):
            self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)
