"""The service's commands: `remediate serve`, `worker`, `queue init` and `audit verify|show`."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from typing import Any

from remediate.cli.common import EXIT_CODES, FMT, inventory_arg, print_json, queue_arg
from remediate.errors import EXIT_FAILED, EXIT_OK, UsageError


def add_parsers(sub: Any, argv: Sequence[str] | None = None) -> None:
    qu = sub.add_parser(
        "queue",
        help="the job queue on PostgreSQL (Procrastinate) that fleet runs and workers share",
        description=(
            "`init` creates Procrastinate's schema and remediate's results table in the database, or\n"
            "brings them up to this version; run it again any time (it does nothing when all is there).\n"
            "Needs the `queue` extra: pip install 'remediate[queue]'."
        ),
        formatter_class=FMT,
        epilog="example:\n  remediate queue init --queue postgresql://remediate@db.internal/remediate\n\n" + EXIT_CODES,
    )
    qu.add_argument("action", choices=["init"])
    queue_arg(qu)

    wk = sub.add_parser(
        "worker",
        help="run the queue's jobs (fleet runs, the service's jobs) on a machine that can reach the hosts",
        description=(
            "Take jobs from the queue and run each as `remediate run|diagnose --host` would, with this\n"
            "machine's inventory and SSH keys. A job's host must be in the inventory. With --zone, only the\n"
            "jobs of hosts whose inventory gives that `remediate_zone`; without it, hosts with no zone.\n"
            "Jobs for one host never run at once on any two workers. A worker that dies mid-job: another\n"
            "worker tries its job once more (the host's journal recovers a half-made change first), then\n"
            "marks it failed. SIGTERM or Ctrl-C: finish the jobs in hand, then stop.\n\n"
            "With --config serve.yml (a service whose config has `queue:`), the worker runs the service's\n"
            "jobs too (alerts, Slack commands and approved runs), with the config's inventory, policy, storm\n"
            "control and Slack; it reports to Slack and writes the ledger and audit chain in the database."
        ),
        formatter_class=FMT,
        epilog=(
            "examples:\n"
            "  remediate worker -i inventory.yml --queue postgresql://remediate@db/remediate\n"
            "  remediate worker -i inventory.yml --queue postgresql://remediate@db/remediate --zone dc2 "
            "--concurrency 8\n"
            "  remediate worker --config /etc/remediate/serve.yml --zone dc2     # the service's jobs too\n\n"
            + EXIT_CODES
        ),
    )
    inventory_arg(wk)
    queue_arg(wk)
    wk.add_argument(
        "--config", metavar="FILE", help="a service's serve.yml with `queue:`: run its jobs too (gives -i and --queue)"
    )
    wk.add_argument("--zone", help="take the jobs of hosts with this remediate_zone (default: hosts with none)")
    wk.add_argument("--concurrency", type=int, default=4, metavar="N", help="jobs at once (default 4)")
    wk.add_argument("--name", help="this worker's name in the queue (default: HOSTNAME-PID)")
    wk.add_argument("--accept-new-host-key", action="store_true", help="trust a first-seen host key")

    sv = sub.add_parser(
        "serve",
        help="the service: Alertmanager webhooks and Slack commands start remediate",
        description="One long-running process (aiohttp) that takes Alertmanager webhooks (POST /alertmanager)\n"
        "and Slack's /remediate command and Approve / Deny buttons (POST /slack/events), records each job\n"
        "durably (STATE/ledger.db), runs them one at a time per host, and reports back to Slack. Every\n"
        "trigger, decision, approval and outcome goes into the audit chain (remediate audit verify).\n"
        "Everything is configured in one YAML file; secrets are read from files it names. Every key is\n"
        "documented in examples/serve.yml. The service binds 127.0.0.1:8088 unless `listen` says otherwise;\n"
        "put a TLS proxy in front of it for Slack. Stop it with SIGTERM or Ctrl-C: recorded jobs resume on\n"
        "the next start.",
        formatter_class=FMT,
        epilog="examples:\n"
        "  remediate serve --config /etc/remediate/serve.yml\n"
        "  remediate serve --config serve.yml --check     # read and check the config, then exit\n\n"
        "also: GET /healthz, GET /metrics (Prometheus), GET /api/jobs and /api/jobs/ID (bearer token)\n\n" + EXIT_CODES,
    )
    sv.add_argument("--config", required=True, metavar="FILE", help="the service's YAML config (serve.yml)")
    sv.add_argument("--check", action="store_true", help="check the config, inventory and secrets, then exit")

    au = sub.add_parser(
        "audit",
        help="the audit chain of the service: verify it, or show its records",
        description="Every trigger, decision, approval, denial, run and outcome of `remediate serve` is one\n"
        "append-only record in STATE/audit.db (or, for a service with `queue:`, in that PostgreSQL database),\n"
        "chained by sha256 (each record carries the previous one's\n"
        "hash). `verify` walks the chain and names the first record that was changed or removed (exit 1);\n"
        "`show` lists the records and the head hash (keep it elsewhere: a shortened chain still verifies).",
        formatter_class=FMT,
        epilog="examples:\n"
        "  remediate audit verify --state /var/lib/remediate\n"
        "  remediate audit show --state /var/lib/remediate --last 20 --json\n"
        "  remediate audit verify --state postgresql://remediate@db.example/remediate",
    )
    au.add_argument("action", choices=["verify", "show"])
    au.add_argument(
        "--state",
        metavar="DIR|URL",
        help="the service's state_dir, or its queue's postgresql:// URL (default: remediate's state directory)",
    )
    au.add_argument("--last", type=int, metavar="N", help="show: only the newest N records")
    au.add_argument("--json", action="store_true")


def _cmd_queue(args: argparse.Namespace) -> int:
    from remediate.queue import schema

    if not args.queue:
        raise UsageError("give --queue postgresql://... (or set REMEDIATE_QUEUE)")
    print(schema.init(args.queue))
    return EXIT_OK


def _cmd_worker(args: argparse.Namespace) -> int:
    from remediate import api
    from remediate.queue import producer
    from remediate.queue.worker import run_worker
    from remediate.serve.queued import register

    serve = None
    if args.config:
        from remediate.serve.config import load_config

        serve = load_config(args.config)
        if not serve.queue:
            raise UsageError(f"{args.config} has no `queue:`; its service runs its own jobs (no worker needed)")
        args.queue, args.inventory = serve.queue, str(serve.inventory)
        args.accept_new_host_key = args.accept_new_host_key or serve.accept_new_host_key
    if not args.queue:
        raise UsageError("give --queue postgresql://... (or set REMEDIATE_QUEUE), or --config serve.yml")
    if args.concurrency < 1:
        raise UsageError(f"--concurrency must be at least 1 (got {args.concurrency})")
    import logging

    from remediate.serve.eventlog import configure

    # One line per event on stderr: each job's start and end (Procrastinate's), reconnects (ours); the
    # service's jobs as JSON lines, as `remediate serve` writes them.
    configure(logging.INFO, "%(asctime)s %(levelname)s %(name)s: %(message)s")
    with api.open(args.inventory, trigger="cli", accept_new_host_key=args.accept_new_host_key) as rem:
        producer.Queue(args.queue).close()  # the schema is there: a worker on an empty database says so at once
        print(
            f"worker {args.name or '(HOSTNAME-PID)'}: taking jobs of "
            f"{'zone ' + args.zone if args.zone else 'hosts with no zone'}, {args.concurrency} at once"
            + (f", with the service's jobs ({args.config})" if serve else ""),
            file=sys.stderr,
            flush=True,
        )
        extra = register(rem, serve, args.queue) if serve is not None else None
        run_worker(args.queue, rem, zone=args.zone, concurrency=args.concurrency, name=args.name, extra=extra)
    return EXIT_OK


def _cmd_serve(args: argparse.Namespace) -> int:
    from importlib.util import find_spec

    from remediate.serve.config import load_config

    missing = [m for m in ("aiohttp", "slack_bolt", "prometheus_client") if find_spec(m) is None]
    if missing:
        raise UsageError(f"remediate serve needs its extra: pip install 'remediate[serve]' ({', '.join(missing)})")
    config = load_config(args.config)
    from remediate.hosts.inventory import load_inventory

    inventory = load_inventory(config.inventory)
    if config.queue:  # the database answers and has the schema, or one line now (not at the first alert)
        from remediate.queue import producer

        producer.Queue(config.queue).close()
    if args.check:
        print(
            f"{args.config}: ok: listen {config.host}:{config.port}{' (https)' if config.tls else ''}, "
            f"{len(inventory.hosts)} host(s), "
            f"{len(config.routes)} alert route(s), slack {'on' if config.slack else 'off'}, "
            f"{len(config.policy.users)} user(s) and {len(config.policy.groups)} group(s) in the policy"
            + (", jobs on the queue (database reachable, schema present)" if config.queue else "")
        )
        return EXIT_OK
    from remediate.serve.eventlog import configure

    configure()
    from remediate.serve.app import serve

    serve(config)
    return EXIT_OK


def _cmd_audit(args: argparse.Namespace) -> int:
    from pathlib import Path

    from remediate.events import state_dir
    from remediate.stores.audit import Audit
    from remediate.stores.db import is_postgres

    where: str | Path
    if args.state and is_postgres(args.state):  # a service on the queue keeps its chain in PostgreSQL
        where = args.state
    else:
        where = Path(args.state) if args.state else state_dir()
        if not (where / "audit.db").is_file():
            raise UsageError(f"no audit chain in {where} (expected {where / 'audit.db'}; give --state DIR)")
    audit = Audit(where)
    try:
        verdict = audit.verify()
        if args.action == "show":
            records = list(audit.records())[-args.last :] if args.last else list(audit.records())
            if args.json:
                print_json({"records": [r.to_json() for r in records], "head": verdict.head, "ok": verdict.ok})
            else:
                for r in records:
                    print(f"{r.seq:>6}  {r.at}  {r.kind:<10} {r.actor:<24} {json.dumps(r.data, sort_keys=True)}")
                print(f"head {verdict.head} ({verdict.records} record(s) verified)")
            return EXIT_OK if verdict.ok else EXIT_FAILED
        if args.json:
            print_json({"ok": verdict.ok, "records": verdict.records, "head": verdict.head,
                         "bad_record": verdict.bad_seq, "problem": verdict.problem})  # fmt: skip
        elif verdict.ok:
            print(f"the audit chain holds: {verdict.records} record(s), head {verdict.head}")
        else:
            print(f"the audit chain is BROKEN at record {verdict.bad_seq}: {verdict.problem}", file=sys.stderr)
        return EXIT_OK if verdict.ok else EXIT_FAILED
    finally:
        audit.close()


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "queue": _cmd_queue,
    "worker": _cmd_worker,
    "serve": _cmd_serve,
    "audit": _cmd_audit,
}
