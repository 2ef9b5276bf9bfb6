"""A command over a fleet (--limit): every host the pattern selects, here or through the queue, shown live."""

from __future__ import annotations

import argparse
import os
from typing import Any

from remediate.errors import UsageError


def need_limit(args: argparse.Namespace) -> None:
    options = ("serial", "max_fail_percentage", "wait", "queue")
    given = [f"--{n.replace('_', '-')}" for n in options if getattr(args, n) is not None]
    if args.forks != 5:
        given.append("--forks")
    if given and not args.limit:
        raise UsageError(f"{', '.join(given)} need --limit PATTERN (they control a fleet rollout)")


def over_fleet(args: argparse.Namespace, inventory: Any, verb: str, since: float) -> int:
    """``run`` or ``diagnose`` on every host ``--limit`` selects, with Ansible's rollout controls."""
    from remediate import api
    from remediate.cli.fleetview import FleetView
    from remediate.engine import fleet
    from remediate.hosts.patterns import select

    hosts = select(inventory, args.limit)
    if not hosts:
        raise UsageError(f"--limit {args.limit!r} selects no host of {args.inventory}")
    serial = fleet.parse_serial(args.serial)
    args.queue = args.queue or os.environ.get("REMEDIATE_QUEUE")
    if args.queue:
        return _queued(args, hosts, verb, since, serial)
    if args.wait is not None:
        raise UsageError("--wait needs --queue URL")
    with api.open(
        inventory,
        trigger="cli",
        accept_new_host_key=args.accept_new_host_key,
        playbooks=getattr(args, "playbooks", None),
    ) as rem:
        with FleetView(hosts, verb="diagnosing" if verb == "diagnose" else "running", as_json=args.json) as view:
            done = rem.fleet(
                args.limit,
                None if verb == "diagnose" else args.cause,
                yes=getattr(args, "yes", False),
                check=getattr(args, "check", False),
                since=since,
                insecure_tls=getattr(args, "insecure_tls", False),
                forks=args.forks,
                serial=args.serial,
                max_fail_percentage=args.max_fail_percentage,
                started=view.started,
                finished=view.finished,
            )
        view.summary(done)
    return done.exit_code


def _queued(args: argparse.Namespace, hosts: list[Any], verb: str, since: float, serial: list[Any]) -> int:
    """The fleet rollout with each host's work done by a `remediate worker`: enqueue, then wait for it."""
    from remediate.cli.fleetview import FleetView
    from remediate.engine import fleet
    from remediate.engine.report import local_user
    from remediate.queue import producer

    jobs = producer.Queue(args.queue)
    try:
        job: dict[str, Any] = {"since": since, "requested_by": local_user(), "trigger": "cli"}
        if verb == "run":
            job.update(cause=args.cause, check=args.check, yes=args.yes, insecure_tls=args.insecure_tls)
        work = producer.enqueuing(jobs, verb, timeout=args.wait, **job)
        with FleetView(hosts, verb="queued", as_json=args.json) as view:
            done = fleet.rollout(
                hosts,
                work,
                forks=args.forks,
                serial=serial,
                max_fail_percentage=args.max_fail_percentage,
                started=view.started,
                finished=view.finished,
            )
        view.summary(done)
    finally:
        jobs.close()
    return done.exit_code
