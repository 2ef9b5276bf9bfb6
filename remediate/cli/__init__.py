"""The ``remediate`` command: a thin layer over the library.

Imports are lazy so that ``remediate --help`` does not pay for paramiko.
Every RemediateError becomes one line on stderr and its documented exit code.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

from remediate import __version__
from remediate.errors import EXIT_FAILED, EXIT_OK, EXIT_REFUSED, InputError, RemediateError, UsageError

__all__ = ["main"]

EXIT_CODES = """\
exit codes:
  0  success (fixed, nothing to do, or the command did what it said)
  1  failed: something went wrong; the message says what and where
  2  usage: the command line is wrong
  3  refused: remediate would not go on (host key, lock held, ambiguous) and changed nothing
  4  rolled back: a change failed its checks and was undone
  5  bad input: inventory or config file is wrong (the message gives file:line)
  6  unreachable: SSH connect, authentication or a command timed out
"""

DEFAULT_LAB = "/tmp/remediate-lab"
DEFAULT_DEBIAN_LAB = "/tmp/remediate-debian"


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:  # one line, exit 2, like every other refusal
        self.exit(2, f"remediate: error: {message} (see `{self.prog} --help`)\n")


def _parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    fmt = argparse.RawDescriptionHelpFormatter
    parser = _Parser(
        prog="remediate",
        description="Find why nginx answers 502 Bad Gateway, and fix it safely over SSH.",
        epilog=EXIT_CODES,
        formatter_class=fmt,
    )
    parser.add_argument("--version", action="version", version=f"remediate {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    def inventory_arg(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "-i",
            "--inventory",
            default=os.environ.get("REMEDIATE_INVENTORY", "inventory.yml"),
            help="Ansible YAML inventory (default: $REMEDIATE_INVENTORY or ./inventory.yml)",
        )

    def queue_arg(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--queue",
            metavar="URL",
            default=os.environ.get("REMEDIATE_QUEUE"),
            help="postgresql://... (default $REMEDIATE_QUEUE); the password belongs in ~/.pgpass, not the URL",
        )

    def host_args(p: argparse.ArgumentParser, need_host: bool = True) -> None:
        inventory_arg(p)
        if need_host:
            p.add_argument("--host", required=True, help="inventory name of the nginx host")
        p.add_argument("--json", action="store_true", help="print one JSON object instead of text")

    def fleet_args(p: argparse.ArgumentParser) -> None:
        fleet = p.add_argument_group(
            "fleet (with --limit, as ansible-playbook)",
            "Exit code: the worst host's (failed > unreachable > rolled back > refused > ok).",
        )
        fleet.add_argument(
            "--limit",
            metavar="PATTERN",
            help="every host an Ansible host pattern selects: web, 'web:!web03', 'web:&dc1', web0*, ~web0[1-4]",
        )
        fleet.add_argument("--forks", type=int, default=5, metavar="N", help="hosts at once (default 5)")
        fleet.add_argument(
            "--serial",
            metavar="N|N%|LIST",
            help="batches: a count, a percentage of the hosts, or a list like 1,5,20%% (the last repeats)",
        )
        fleet.add_argument(
            "--queue",
            metavar="URL",
            help="postgresql://... (or $REMEDIATE_QUEUE): enqueue a job per host for `remediate worker`s and "
            "wait for them, instead of running here; put the password in ~/.pgpass, not in the URL",
        )
        fleet.add_argument(
            "--wait",
            type=float,
            metavar="SECONDS",
            help="with --queue: report a host whose job is still queued after SECONDS as `queued` (default: wait)",
        )
        fleet.add_argument(
            "--max-fail-percentage",
            type=float,
            metavar="P",
            help="stop before the next batch when more than P%% of a batch failed (0: at the first failure); "
            "a batch that failed entirely always stops the rollout",
        )

    inv = sub.add_parser(
        "inventory",
        help="show the hosts of an inventory and the vars remediate will use",
        description="Load an inventory the way remediate reads it: Ansible's merge order, typed vars, defaults.",
        formatter_class=fmt,
        epilog="example:\n  remediate inventory -i lab/inventory.yml --host web01",
    )
    host_args(inv, need_host=False)
    inv.add_argument("--host", help="show one host's vars in full")

    conf = sub.add_parser(
        "config",
        help="fetch a host's nginx config (nginx -T over SSH) and show what it proxies where",
        description=(
            "Connect to the host, read the effective config in one round trip (nginx -T), parse every\n"
            "file, and list each *_pass with its server and location and file:line. With --route,\n"
            "show which server and location handle a URL, by nginx's own matching rules."
        ),
        formatter_class=fmt,
        epilog="example:\n  remediate config -i lab/inventory.yml --host web01 --route http://web01.lab:8080/api/users",
    )
    host_args(conf)
    conf.add_argument("--route", metavar="URL", help="which server/location handles this URL")
    conf.add_argument(
        "--accept-new-host-key",
        action="store_true",
        help="trust a host key seen for the first time and add it to known_hosts (a changed key is still refused)",
    )

    run = sub.add_parser(
        "run",
        help="diagnose one cause on a host and fix it, guarded (validate, reload, probe, roll back on failure)",
        description=(
            "Collect the evidence in one round trip, decide from it (with the reason), plan the fix as a\n"
            "diff, then apply it on the host as one transaction: back up, compare-and-swap, atomic write,\n"
            "nginx -t / php-fpm -t, reload or restart, confirm, probe. Any failure restores every file\n"
            "byte for byte and reloads. A fix already in place is not made again."
        ),
        formatter_class=fmt,
        epilog=(
            "examples:\n"
            "  remediate run -i lab/inventory.yml --host web01 --cause socket --check   # show the diff only\n"
            "  remediate run -i lab/inventory.yml --host web01 --cause socket --yes\n"
            "  remediate run -i lab/inventory.yml --host web01 --cause auto --check   # diagnose, then plan\n"
            "  remediate run -i lab/inventory.yml --limit web --cause socket --yes --forks 10\n"
            "  remediate run -i lab/inventory.yml --limit web --cause auto --yes --serial 1,30% "
            "--max-fail-percentage 0\n\n" + EXIT_CODES
        ),
    )
    host_args(run, need_host=False)
    run.add_argument("--host", help="inventory name of the nginx host (or --limit for several)")
    fleet_args(run)
    run.add_argument(
        "--cause",
        required=True,
        help="the runbook cause to fix (see `remediate playbooks`), or `auto`: diagnose first and fix only a "
        "confident verdict",
    )
    run.add_argument("--check", action="store_true", help="show what would change, write nothing")
    run.add_argument(
        "--since",
        default="15m",
        help="the error-log window the evidence reads (and auto diagnoses): 90s, 15m, 2h, 1d (default 15m)",
    )
    run.add_argument("--yes", "-y", action="store_true", help="apply without asking (required when not on a terminal)")
    run.add_argument(
        "--playbooks", action="append", metavar="DIR", help="extra playbook directory (overrides by cause)"
    )
    run.add_argument(
        "--accept-new-host-key", action="store_true", help="trust a first-seen host key (never a changed one)"
    )
    run.add_argument(
        "--insecure-tls",
        action="store_true",
        help="invalid-response only: when no tls_ca_bundle can be trusted, allow turning proxy_ssl_verify off "
        "(a TEMPORARY workaround, reported loudly)",
    )

    dg = sub.add_parser(
        "diagnose",
        help="name the cause of the 502s from the evidence, and explain why",
        description=(
            "Read the error log's last --since (from the end, on the host; rotated files too), label every\n"
            "line with the runbook cause it shows, then confirm or contradict each cause with its playbook's\n"
            "own evidence (run as --check: nothing is written). The verdict is one cause, `ambiguous`, or\n"
            "`unknown`. With --log, classify a local file (or - for stdin) with no host at all; the window\n"
            "then ends at the file's newest line."
        ),
        formatter_class=fmt,
        epilog=(
            "examples:\n"
            "  remediate diagnose -i lab/inventory.yml --host web01\n"
            "  remediate diagnose -i lab/inventory.yml --limit web --forks 10 --json\n"
            "  remediate diagnose --log /var/log/nginx/error.log --since 2h\n"
            "  journalctl -u nginx -o cat | remediate diagnose --log - --json --per-line\n\n" + EXIT_CODES
        ),
    )
    inventory_arg(dg)
    dg.add_argument("--host", help="inventory name of the nginx host (not with --log)")
    dg.add_argument("--log", metavar="FILE", help="classify a local error log (- for stdin) instead of a host's")
    dg.add_argument("--since", default="15m", help="the window to read: 90s, 15m, 2h, 1d (default 15m)")
    dg.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    dg.add_argument("--per-line", action="store_true", help="with --json and --log: one JSON object per input line")
    dg.add_argument("--accept-new-host-key", action="store_true", help="trust a first-seen host key")
    fleet_args(dg)

    rb = sub.add_parser(
        "rollback",
        help="undo a run from the host's journal",
        description="Restore every file RUN_ID changed (bytes, owner, mode), validate, and reload.\n"
        "Refuses when a file was edited since that run, unless --force.",
        formatter_class=fmt,
    )
    host_args(rb)
    rb.add_argument("run_id", metavar="RUN_ID")
    rb.add_argument("--force", action="store_true", help="restore even files edited since the run")
    rb.add_argument("--accept-new-host-key", action="store_true", help="trust a first-seen host key")

    ul = sub.add_parser(
        "unlock",
        help="clear a host's lock by hand (asks the run holding it to let go)",
        description="Show who holds HOST's lock and ask that run's helper to let go of it.\n"
        "A run's lock lives in its helper on the host, which lets go by itself when the run ends,\n"
        "when its controller dies (at once) or is cut off (within 10 s). Use this for a run that\n"
        "is alive but stuck. A helper inside its transaction finishes (or rolls back) first.",
        formatter_class=fmt,
        epilog="examples:\n"
        "  remediate unlock -i inventory.yml --host web01              # who holds it; ask it to let go\n"
        "  remediate unlock -i inventory.yml --host web01 RUN_ID       # only if RUN_ID holds it",
    )
    host_args(ul)
    ul.add_argument("run_id", metavar="RUN_ID", nargs="?", help="let go only if this run holds the lock")
    ul.add_argument("--accept-new-host-key", action="store_true", help="trust a first-seen host key")

    qu = sub.add_parser(
        "queue",
        help="the job queue on PostgreSQL (Procrastinate) that fleet runs and workers share",
        description=(
            "`init` creates Procrastinate's schema and remediate's results table in the database, or\n"
            "brings them up to this version; run it again any time (it does nothing when all is there).\n"
            "Needs the `queue` extra: pip install 'remediate[queue]'."
        ),
        formatter_class=fmt,
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
        formatter_class=fmt,
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
        formatter_class=fmt,
        epilog="examples:\n"
        "  remediate serve --config /etc/remediate/serve.yml\n"
        "  remediate serve --config serve.yml --check     # read and check the config, then exit\n\n"
        "also: GET /healthz, GET /metrics (Prometheus), GET /api/jobs and /api/jobs/ID (bearer token)\n\n" + EXIT_CODES,
    )
    sv.add_argument("--config", required=True, metavar="FILE", help="the service's YAML config (serve.yml)")
    sv.add_argument("--check", action="store_true", help="check the config, inventory and secrets, then exit")

    hd = sub.add_parser(
        "harden",
        help="audit nginx against the runbook's prevention section (file:line, why, the fix), and fix it",
        description=(
            "Report each weakness of an nginx configuration that leads to 502s: upstreams without passive\n"
            "health checks, host names frozen at start, variables with no resolver, no upstream timing in the\n"
            "access log, timeouts raised for everything, too few open files, retries that repeat a POST, no 502\n"
            "page, backends not restarted on failure, no stub_status. Each finding names file:line, why it\n"
            "matters (the runbook paragraph: --list-rules) and the fix.\n\n"
            "--host reads a live host in one round trip (plus one per host asked: nginx's master's open-files\n"
            "limit, the backends' restart settings), as diagnose does; --limit does a fleet. --file reads a config\n"
            "offline: one file (its includes from the same disk) or an `nginx -T` dump, for CI pipelines.\n\n"
            "--fix RULE applies a rule's fix through the same guarded transaction as `remediate run` (nginx -t,\n"
            "reload, probe, roll back): --check shows the diff, --yes applies. Fixes are idempotent: a second run\n"
            "finds nothing to do. A host's inventory var harden_skip switches rules off for it."
        ),
        formatter_class=fmt,
        epilog=(
            "examples:\n"
            "  remediate harden -i inventory.yml --host web01\n"
            "  remediate harden -i inventory.yml --limit web --json\n"
            "  remediate harden -i inventory.yml --host web01 --fix upstream-no-passive-health --check\n"
            "  remediate harden -i inventory.yml --host web01 --fix no-custom-502-page worker-sizing --yes\n"
            "  remediate harden --file /etc/nginx/nginx.conf\n"
            "  nginx -T > dump.txt && remediate harden --file dump.txt --sarif > harden.sarif\n"
            "  remediate harden --list-rules\n\n"
            "exit codes: 0 no finding at or above --fail-on (or every fix in place), 3 findings at or above it\n"
            "(or a fix refused), 4 a fix rolled back, 1 failed, 2 usage, 5 bad input, 6 unreachable"
        ),
    )
    inventory_arg(hd)
    hd_where = hd.add_mutually_exclusive_group()
    hd_where.add_argument("--host", help="inventory name of the nginx host to audit (or fix)")
    hd_where.add_argument("--limit", metavar="PATTERN", help="an Ansible host pattern: a fleet (see run --limit)")
    hd_where.add_argument("--file", metavar="FILE", help="an nginx config file, or `nginx -T` output, read offline")
    hd_out = hd.add_mutually_exclusive_group()
    hd_out.add_argument("--json", action="store_true", help="one JSON object (a fleet: one per host, then a summary)")
    hd_out.add_argument("--sarif", action="store_true", help="SARIF 2.1.0 (GitHub code scanning and the like)")
    hd.add_argument(
        "--fail-on",
        choices=["info", "warning", "error"],
        default="warning",
        help="exit 3 when a finding is at or above this severity (default: warning)",
    )
    hd.add_argument("--skip", action="extend", nargs="+", default=[], metavar="RULE", help="switch rules off")
    hd.add_argument("--fix", action="extend", nargs="+", default=[], metavar="RULE", help="fix these rules' findings")
    hd_mode = hd.add_mutually_exclusive_group()
    hd_mode.add_argument("--check", action="store_true", help="with --fix: show the diff, write nothing")
    hd_mode.add_argument("--yes", action="store_true", help="with --fix: apply without asking")
    hd.add_argument("--forks", type=int, default=5, metavar="N", help="with --limit: hosts at once (default 5)")
    hd.add_argument("--accept-new-host-key", action="store_true", help="trust a first-seen host key")
    hd.add_argument("--list-rules", action="store_true", help="list the rules: id, severity, runbook section, fix")

    au = sub.add_parser(
        "audit",
        help="the audit chain of the service: verify it, or show its records",
        description="Every trigger, decision, approval, denial, run and outcome of `remediate serve` is one\n"
        "append-only record in STATE/audit.db (or, for a service with `queue:`, in that PostgreSQL database),\n"
        "chained by sha256 (each record carries the previous one's\n"
        "hash). `verify` walks the chain and names the first record that was changed or removed (exit 1);\n"
        "`show` lists the records and the head hash (keep it elsewhere: a shortened chain still verifies).",
        formatter_class=fmt,
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

    pbs = sub.add_parser("playbooks", help="list the playbooks (one per cause)")
    pbs.add_argument("--playbooks", action="append", metavar="DIR", help="extra playbook directory")
    pbs.add_argument("--json", action="store_true")
    shw = sub.add_parser("show", help="print a playbook's evidence, decisions, fixes and verify steps")
    shw.add_argument("cause")
    shw.add_argument("--playbooks", action="append", metavar="DIR", help="extra playbook directory")

    lab = sub.add_parser(
        "lab",
        help="a real nginx/sshd/php-fpm lab on loopback that reproduces every 502 cause",
        description=(
            "Build and drive the lab: hosts on loopback (web01, or web01..webNN with --web-hosts N: nginx,\n"
            "php-fpm, sshd under each host's supervisord; app01: backends and sshd), dnsmasq for *.lab,\n"
            "a private CA. Needs root and:\n"
            "  apt-get install nginx openssh-server php-fpm supervisor dnsmasq-base dnsutils sudo\n"
            "Nothing of the machine's own is touched: not ~/.ssh, /etc/nginx, the system sshd or /etc/hosts."
        ),
        formatter_class=fmt,
        epilog=(
            "examples:\n"
            f"  remediate lab up                       # writes {DEFAULT_LAB}/inventory.yml\n"
            "  remediate lab break --cause socket --variant permission\n"
            "  remediate lab status\n"
            "  remediate lab down\n"
            "  remediate lab up --web-hosts 10          # a fleet: web01..web10, inventory group `web`\n"
            "  remediate lab break --limit web --cause socket --variant missing\n"
            "  remediate lab status --limit 'web:!web01'\n"
            f"  remediate lab up --os debian             # a stock Debian host under systemd: {DEFAULT_DEBIAN_LAB}\n"
            "  remediate lab break --os debian --cause socket --variant killed"
        ),
    )
    lab_sub = lab.add_subparsers(dest="lab_command", metavar="ACTION", required=True, parser_class=_Parser)

    def lab_dir(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--os",
            choices=("loopback", "debian"),
            default="loopback",
            help="loopback: the hosts on 127.0.x (default); debian: a stock Debian bookworm host booted with "
            "systemd (systemd-nspawn), Debian's nginx and php8.2-fpm, journald: the reference",
        )
        p.add_argument(
            "--dir",
            default=None,
            help=f"the lab's directory (default: $REMEDIATE_LAB or {DEFAULT_LAB}; with --os debian "
            f"{DEFAULT_DEBIAN_LAB})",
        )
        p.add_argument("--json", action="store_true", help="print one JSON object instead of text")

    def lab_limit(p: argparse.ArgumentParser, default: str = "web01") -> None:
        p.add_argument(
            "--limit",
            metavar="PATTERN",
            help=f"the web hosts, as an Ansible host pattern (web, web0*, web:!web02); default: {default}",
        )

    up = lab_sub.add_parser("up", help="create and start the lab")
    lab_dir(up)
    up.add_argument("--net", default="127.0.10", help="first three octets of the lab's loopback addresses")
    up.add_argument("--ssh-port", type=int, default=2222)
    up.add_argument("--http-port", type=int, default=8080)
    up.add_argument(
        "--web-hosts",
        type=int,
        default=1,
        metavar="N",
        help="how many web hosts (web01..webNN, inventory group `web`; default 1)",
    )
    brk = lab_sub.add_parser(
        "break",
        help="put the lab into one runbook cause",
        description="Reset the lab to healthy, then break it the way the runbook describes.",
        formatter_class=fmt,
        # Built only when `lab` is on the command line: it imports the lab, which a run does not need.
        epilog=_break_table() if "lab" in (sys.argv[1:] if argv is None else argv) else None,
    )
    lab_dir(brk)
    lab_limit(brk)
    brk.add_argument("--cause", required=True, help="one of the causes below")
    brk.add_argument("--variant", help="the variant, for causes that have several")
    brk.add_argument("--keep", action="store_true", help="do not reset first: stack this break on the current ones")
    for name, text in (
        ("status", "show each probe's status code"),
        ("reset", "put app01, the DNS and the web hosts back to healthy"),
        ("down", "stop every process the lab started"),
    ):
        p = lab_sub.add_parser(name, help=text)
        lab_dir(p)
        if name != "down":
            lab_limit(p, "every web host" if name == "reset" else "web01")
    return parser


def _break_table() -> str:
    from remediate.lab.core import BREAKS

    lines = ["causes and variants (probe that fails, status nginx answers):"]
    for b in BREAKS:
        lines.append(f"  --cause {b.cause:<17} --variant {b.variant:<12} {b.probe:<8} {b.status}  {b.summary}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser(argv)
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return EXIT_OK
    handlers: dict[str, Callable[[argparse.Namespace], int]] = {
        "inventory": _cmd_inventory,
        "config": _cmd_config,
        "run": _cmd_run,
        "rollback": _cmd_rollback,
        "unlock": _cmd_unlock,
        "audit": _cmd_audit,
        "harden": _cmd_harden,
        "serve": _cmd_serve,
        "diagnose": _cmd_diagnose,
        "playbooks": _cmd_playbooks,
        "show": _cmd_show,
        "lab": _cmd_lab,
        "queue": _cmd_queue,
        "worker": _cmd_worker,
    }
    try:
        return handlers[args.command](args)
    except RemediateError as exc:
        _err(str(exc))
        return exc.exit_code
    except KeyboardInterrupt:
        _err("interrupted")
        return 130
    except BrokenPipeError:  # `remediate ... | head`: the reader left; that is not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
    except Exception as exc:  # a bug: still one line unless asked for the traceback
        if os.environ.get("REMEDIATE_DEBUG"):
            raise
        _err(f"internal error: {type(exc).__name__}: {exc} (set REMEDIATE_DEBUG=1 for the traceback)")
        return EXIT_FAILED


def _err(message: str) -> None:
    print(f"remediate: error: {message}", file=sys.stderr)


def _print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, sort_keys=False, default=str))


# -- inventory -----------------------------------------------------------------------


def _cmd_inventory(args: argparse.Namespace) -> int:
    from remediate.hosts.inventory import load_inventory

    inv = load_inventory(args.inventory)
    hosts = [inv.host(args.host)] if args.host else list(inv)
    if args.json:
        _print_json({h.name: {"groups": list(h.groups), "vars": h.vars} for h in hosts})
        return EXIT_OK
    for h in hosts:
        via = "local" if h.is_local else f"ssh {h['ansible_user'] or ''}@{h.address}:{h['ansible_port']}"
        print(f"{h.name}  ({via}; groups: {', '.join(h.groups)})")
        if args.host:
            for key, value in sorted(h.vars.items()):
                print(f"  {key:<30} {value}")
    return EXIT_OK


# -- config --------------------------------------------------------------------------


def _cmd_config(args: argparse.Namespace) -> int:
    from urllib.parse import urlsplit

    from remediate.hosts.connect import open_transport
    from remediate.hosts.inventory import load_inventory
    from remediate.nginx import NginxConfig, route

    host = load_inventory(args.inventory).host(args.host)
    with open_transport(host, accept_new_host_key=args.accept_new_host_key) as transport:
        dump = transport.run([*host.nginx_base_argv, "-T"], warn=True)
    if not dump.ok:
        raise RemediateError(f"{host.name}: `nginx -T` failed ({dump.exited}): {dump.stderr_tail()}")
    config = NginxConfig.from_dump(dump.stdout)
    passes = [
        {
            "directive": p.kind,
            "target": p.target,
            "location": " ".join(p.location.args) if p.location else None,
            "where": p.directive.where,
        }
        for p in config.passes()
    ]
    user = config.user()
    result: dict[str, Any] = {
        "host": host.name,
        "files": list(config.files),
        "user": list(user) if user else None,
        "upstreams": {name: d.where for name, d in config.upstreams().items()},
        "passes": passes,
    }
    if args.route:
        url = urlsplit(args.route if "://" in args.route else "http://" + args.route)
        hostname = url.hostname or ""
        addr = hostname if hostname.replace(".", "").isdigit() or ":" in hostname else None
        match = route(config, hostname, url.path or "/", url.port or 80, addr)
        result["route"] = (
            None
            if match is None
            else {
                "server": match.server.where,
                "location": " ".join(match.location.args) if match.location else None,
                "location_where": match.location.where if match.location else None,
            }
        )
    if args.json:
        _print_json(result)
        return EXIT_OK
    print(f"{host.name}: {len(config.files)} files, worker user {user[0] if user else '(nginx default)'}")
    for p in passes:
        print(f"  {p['directive']:<13} {p['target']:<45} location {p['location'] or '-':<16} {p['where']}")
    if args.route:
        r = result["route"]
        print(f"route {args.route}: " + (f"location {r['location']} at {r['location_where']}" if r else "no server"))
    return EXIT_OK


# -- run, rollback, playbooks ------------------------------------------------------------


def _cmd_run(args: argparse.Namespace) -> int:
    from remediate.engine.diagnose import parse_since
    from remediate.errors import Refused
    from remediate.hosts.inventory import load_inventory

    try:
        since = parse_since(args.since)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    _fleet_options_need_limit(args)
    if bool(args.host) == bool(args.limit):
        raise UsageError("give --host NAME (one host) or --limit PATTERN (a fleet)")
    inventory = load_inventory(args.inventory)
    if args.limit:
        if not (args.check or args.yes):
            raise Refused("a fleet run asks nothing host by host: give --yes to apply, or --check to look")
        return _fleet(args, inventory, "run", since)
    host = inventory.host(args.host)
    show, confirm = _prompting(args)

    def show_diagnosis(diagnosis: Any) -> None:
        if not args.json:
            names = "names" if diagnosis.verdict in diagnosis.causes else "is"
            print(f"auto: the diagnosis {names} {diagnosis.verdict}: {diagnosis.reason}")

    from remediate import api

    with api.open(
        inventory, trigger="cli", accept_new_host_key=args.accept_new_host_key, playbooks=args.playbooks
    ) as rem:
        report = rem.run(
            host,
            args.cause,
            check=args.check,
            yes=args.yes,
            confirm=confirm,
            show=show,
            insecure_tls=args.insecure_tls,
            show_diagnosis=show_diagnosis,
            since=since,
        )
    if args.json:
        _print_json(report.to_json())
        return report.exit_code
    if report.cause == "auto":  # the diagnosis named no cause it may fix (refused), or none at all (healthy)
        print(f"{report.outcome}: {report.message}", file=sys.stderr if report.exit_code else sys.stdout)
        return report.exit_code
    if report.plan.empty:
        _print_head(report)
    for s in report.steps:
        mark = "ok " if s["ok"] else "FAIL"
        print(f"  [{mark}] {s['step']:<16} {s['seconds']:>6.2f}s  {s['detail']}")
    for r in report.recovered:
        did = f"restored {', '.join(r['restored']) or 'nothing'}" + (f" ({r['note']})" if r.get("note") else "")
        problems = "; ".join(r.get("problems") or [])
        print(f"  journal: run {r['run_id']} ({r.get('state', '?')}): {did}" + (f"; {problems}" if problems else ""))
    line = f"{report.outcome}: {report.message}" if report.message else report.outcome
    print(line, file=sys.stderr if report.exit_code else sys.stdout)
    if report.decision.get("name") == "tls-insecure-workaround" and report.outcome == "fixed":
        print(
            "WARNING: TLS verification of the backend is OFF (--insecure-tls). This is a temporary workaround: "
            "set tls_ca_bundle in the inventory and run again to turn it back on.",
            file=sys.stderr,
        )
    print(f"run {report.run_id} on {report.host}; journal {report.journal}")
    return report.exit_code


def _fleet_options_need_limit(args: argparse.Namespace) -> None:
    options = ("serial", "max_fail_percentage", "wait", "queue")
    given = [f"--{n.replace('_', '-')}" for n in options if getattr(args, n) is not None]
    if args.forks != 5:
        given.append("--forks")
    if given and not args.limit:
        raise UsageError(f"{', '.join(given)} need --limit PATTERN (they control a fleet rollout)")


def _fleet(args: argparse.Namespace, inventory: Any, verb: str, since: float) -> int:
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
        return _fleet_queued(args, hosts, verb, since, serial)
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


def _fleet_queued(args: argparse.Namespace, hosts: list[Any], verb: str, since: float, serial: list[Any]) -> int:
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

    # One line per event on stderr: each job's start and end (Procrastinate's), reconnects (ours).
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    import structlog

    structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr))  # the service's jobs log here too
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


def _prompting(args: argparse.Namespace) -> tuple[Callable[[Any], None], Callable[[Any], bool]]:
    """A single-host fix at a terminal: refused with neither a terminal nor --yes/--check; then how to show
    the plan (head, diff, service actions) and ask before it is applied."""
    from remediate.errors import Refused

    interactive = sys.stdin.isatty() and not args.json
    if not (args.check or args.yes or interactive):
        raise Refused("not on a terminal and --yes not given: refusing to change anything (use --check to look)")

    def show(report: Any) -> None:
        if not args.json:
            _print_head(report)
            print(report.plan.diff() or "(no file changes)\n", end="")
            for action in report.plan.actions:
                print(f"  then: {action.describe()}")

    def confirm(report: Any) -> bool:
        return input(f"apply this to {report.host}? [y/N] ").strip().lower() in ("y", "yes")

    return show, confirm


def _print_head(report: Any) -> None:
    if getattr(report, "_head_printed", False):
        return
    report._head_printed = True
    print(f"cause {report.cause} on {report.host} (run {report.run_id})")
    if report.decision:
        print(f"decision {report.decision['name']}: {report.decision['reason']}")


def _cmd_diagnose(args: argparse.Namespace) -> int:
    from remediate.engine.diagnose import offline, parse_since

    try:
        since = parse_since(args.since)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    _fleet_options_need_limit(args)
    if sum(map(bool, (args.log, args.host, args.limit))) > 1:
        raise UsageError("give one of --host NAME, --limit PATTERN (the hosts' logs) or --log FILE (a local file)")
    if args.limit:
        from remediate.hosts.inventory import load_inventory

        return _fleet(args, load_inventory(args.inventory), "diagnose", since)
    if args.per_line and not (args.json and args.log):
        raise UsageError("--per-line needs --json and --log")
    if args.log:
        if args.per_line:
            from remediate.evidence.classify import classify

            text = sys.stdin.buffer.read() if args.log == "-" else _read_local(args.log)
            out = sys.stdout
            for number, label in enumerate(classify(text.decode("utf-8", "surrogateescape")), 1):
                out.write(json.dumps({"line": number, "label": label}) + "\n")
            return EXIT_OK
        result = offline(sys.stdin.buffer.read() if args.log == "-" else args.log, since)
    else:
        if not args.host:
            raise UsageError("diagnose needs --host NAME or --limit PATTERN (with -i), or --log FILE")
        from remediate import api
        from remediate.hosts.inventory import load_inventory

        with api.open(
            load_inventory(args.inventory), trigger="cli", accept_new_host_key=args.accept_new_host_key
        ) as rem:
            result = rem.diagnose(args.host, since=since)
    if args.json:
        _print_json(result.to_json())
        return EXIT_OK
    print(f"diagnosis of {result.host}: {result.verdict}  ({result.reason})")
    w = result.window
    files = ", ".join(f["path"] for f in w.get("files", []))
    journal = " and journald" if "journald" in str(w.get("path")) else ""
    print(f"window: since {w.get('cutoff')} in {files + journal or w.get('path')}")
    for note in w.get("notes") or []:
        print(f"note: {note}")
    if result.round_trips:
        print(f"evidence: {result.round_trips} round trip(s) to the hosts")
    if result.findings:
        print(f"\n  {'cause':<18} {'lines':>6}  {'first seen':<19}  {'last seen':<19}  confidence")
        for f in result.findings:
            print(f"  {f.cause or f.label:<18} {f.count:>6}  {f.first:<19}  {f.last:<19}  {f.confidence}")
        for f in result.findings:
            print(f"\n{f.cause or f.label} ({f.label} lines):\n  e.g. {f.example}")
            if len(f.peers) > 0:
                print(
                    "  peers: "
                    + ", ".join(f"{peer}: {n}" for peer, n in sorted(f.peers.items(), key=lambda kv: -kv[1]))
                )
            for fact in f.facts:
                print(f"  {fact['playbook']} playbook: {fact['outcome']} ({fact['decision']}): {fact['reason']}")
    if result.access_peers:
        shown = ", ".join(f"{peer}: {v['failed']}/{v['attempts']} failed" for peer, v in result.access_peers.items())
        print(f"\naccess log, per upstream peer: {shown}")
    print(f"\n{result.other} other line(s) in the window")
    if result.verdict not in ("ambiguous", "unknown") and args.host and any(f.fixable for f in result.findings):
        print(f"to fix: remediate run -i {args.inventory} --host {args.host} --cause {result.verdict}")
    return EXIT_OK


def _read_local(path: str) -> bytes:
    try:
        with open(path, "rb") as fh:
            return fh.read()
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror}") from None


def _cmd_rollback(args: argparse.Namespace) -> int:
    from remediate import api

    with api.open(args.inventory, trigger="cli", accept_new_host_key=args.accept_new_host_key) as rem:
        report = rem.rollback(args.host, args.run_id, force=args.force)
    if args.json:
        _print_json(report.to_json())
    else:
        print(f"{report.outcome}: {report.message}", file=sys.stderr if report.exit_code else sys.stdout)
    return report.exit_code


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


def _cmd_harden(args: argparse.Namespace) -> int:
    from remediate import harden

    if args.list_rules:
        for r in harden.RULES.values():
            print(f"{r.id:<32} {r.severity:<8} {r.section}")
            print(f"{'':<32} {r.title}; fix: {r.fix + ' (--fix)' if r.id in harden.FIXABLE else 'by hand'}")
        return EXIT_OK
    for option, rules in (("--skip", args.skip), ("--fix", args.fix)):
        unknown = [r for r in rules if r not in harden.RULES]
        if unknown:
            raise UsageError(f"{option} {unknown[0]}: no such rule (see remediate harden --list-rules)")
    if not (args.file or args.host or args.limit):
        raise UsageError("give --host NAME, --limit PATTERN or --file FILE (or --list-rules)")
    if args.fix:
        if args.file:
            raise UsageError("--fix changes a live host: give --host NAME or --limit PATTERN, not --file")
        if args.sarif:
            raise UsageError("--sarif shows findings; with --fix use --json")
        not_fixable = [r for r in args.fix if r not in harden.FIXABLE]
        if not_fixable:
            raise UsageError(f"--fix {not_fixable[0]}: no automatic fix; fixable: {', '.join(harden.FIXABLE)}")
    elif args.check or args.yes:
        raise UsageError("--check and --yes go with --fix RULE")
    if args.file:
        return _harden_file(args)
    from remediate import api
    from remediate.hosts.inventory import load_inventory

    inventory = load_inventory(args.inventory)
    with api.open(inventory, trigger="cli", accept_new_host_key=args.accept_new_host_key) as rem:
        if args.limit:
            return _harden_fleet(args, rem)
        if args.fix:
            return _harden_fix(args, rem, inventory.host(args.host))
        audit = rem.harden(args.host)
    return _harden_show(args, audit.findings, args.host, [f"{audit.host}: harden_skip {' '.join(audit.skipped)}"]
                        if audit.skipped else [], audit.to_json())  # fmt: skip


def _harden_file(args: argparse.Namespace) -> int:
    from remediate import harden
    from remediate.harden.source import read_config

    config, notes = read_config(args.file)
    findings = harden.audit(harden.Subject(config), skip=tuple(args.skip))
    return _harden_show(args, findings, args.file, notes, None)


def _harden_show(
    args: argparse.Namespace, findings: list[Any], subject: str, notes: list[str], data: dict[str, Any] | None
) -> int:
    from remediate import harden
    from remediate.harden import report

    findings = [f for f in findings if f.rule not in args.skip]
    if args.sarif:
        _print_json(report.sarif(findings, __version__))
    elif args.json:
        _print_json({**(data or {}), **report.to_json(findings, subject, notes)})
    else:
        print(report.table(findings, subject, notes))
    return EXIT_REFUSED if harden.at_least(findings, args.fail_on) else EXIT_OK


def _harden_fix(args: argparse.Namespace, rem: Any, host: Any) -> int:
    """Each --fix RULE in the rules' order, one guarded run each; then what harden finds now."""
    from remediate import harden
    from remediate.engine.fleet import worst_exit

    show, confirm = _prompting(args)

    reports = []
    for rule in [r for r in harden.FIXABLE if r in args.fix]:
        report = rem.harden_fix(host, rule, check=args.check, yes=args.yes, confirm=confirm, show=show)
        reports.append(report)
        if not args.json:
            line = f"{rule}: {report.outcome}" + (f": {report.message}" if report.message else "")
            print(line, file=sys.stderr if report.exit_code else sys.stdout)
        if report.outcome in ("failed", "rolled-back"):
            break  # the host is as its journal says; the next fix waits for a human
    after = None if args.check else rem.harden(host)
    if args.json:
        _print_json({"runs": [r.to_json() for r in reports], "after": after.to_json() if after else None})
    elif after is not None:
        left = [f for f in after.findings if f.rule not in args.skip]
        print(f"{host.name}: harden now finds {len(left)} finding(s)" + (
            f" ({', '.join(sorted({f.rule for f in left}))})" if left else ""))  # fmt: skip
    return worst_exit(r.exit_code for r in reports)


def _harden_fleet(args: argparse.Namespace, rem: Any) -> int:
    """harden (or harden --fix) on every host --limit selects, --forks at once."""
    from remediate import api, harden
    from remediate.cli.fleetview import FleetView
    from remediate.engine import fleet
    from remediate.errors import Refused
    from remediate.harden import report
    from remediate.hosts.patterns import select

    hosts = select(rem.inventory, args.limit)
    if not hosts:
        raise UsageError(f"--limit {args.limit!r} selects no host of {args.inventory}")
    if args.fix:
        if not (args.check or args.yes):
            raise Refused("a fleet run asks nothing host by host: give --yes to apply, or --check to look")
        work = api.hardening_fixes(rem, [r for r in harden.FIXABLE if r in args.fix], check=args.check, yes=args.yes)
    else:
        work = api.hardening(rem, args.fail_on)
    as_json = args.json and not args.sarif
    # SARIF is the one document on stdout: the progress lines go to stderr.
    with FleetView(hosts, verb="hardening", as_json=as_json, out=sys.stderr if args.sarif else None) as view:
        done = fleet.rollout(hosts, work, forks=args.forks, serial=fleet.parse_serial(None), max_fail_percentage=None,
                             started=view.started, finished=view.finished)  # fmt: skip
    if not args.sarif:
        view.summary(done)
    audits = [(r.host, r.report) for r in done.results if r.report and "findings" in r.report]
    if args.sarif:
        found = [harden.Finding(**f) for _, data in audits for f in data["findings"] if f["rule"] not in args.skip]
        _print_json(report.sarif(found, __version__))
    elif not args.json and not args.fix:
        for name, data in audits:
            found = [harden.Finding(**f) for f in data["findings"] if f["rule"] not in args.skip]
            print(f"\n== {name}\n{report.table(found, name)}")
    return done.exit_code


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
                _print_json({"records": [r.to_json() for r in records], "head": verdict.head, "ok": verdict.ok})
            else:
                for r in records:
                    print(f"{r.seq:>6}  {r.at}  {r.kind:<10} {r.actor:<24} {json.dumps(r.data, sort_keys=True)}")
                print(f"head {verdict.head} ({verdict.records} record(s) verified)")
            return EXIT_OK if verdict.ok else EXIT_FAILED
        if args.json:
            _print_json({"ok": verdict.ok, "records": verdict.records, "head": verdict.head,
                         "bad_record": verdict.bad_seq, "problem": verdict.problem})  # fmt: skip
        elif verdict.ok:
            print(f"the audit chain holds: {verdict.records} record(s), head {verdict.head}")
        else:
            print(f"the audit chain is BROKEN at record {verdict.bad_seq}: {verdict.problem}", file=sys.stderr)
        return EXIT_OK if verdict.ok else EXIT_FAILED
    finally:
        audit.close()


def _cmd_unlock(args: argparse.Namespace) -> int:
    from remediate.engine.hoststate import unlock
    from remediate.hosts.inventory import load_inventory

    host = load_inventory(args.inventory).host(args.host)
    answer = unlock(host, args.run_id, accept_new_host_key=args.accept_new_host_key)
    code = {"free": EXIT_OK, "released": EXIT_OK, "waiting": EXIT_REFUSED}.get(answer.get("outcome", ""), EXIT_REFUSED)
    if args.json:
        _print_json(answer)
    else:
        print(f"{host.name}: {answer.get('outcome')}: {answer.get('reason')}", file=sys.stderr if code else sys.stdout)
    return code


def _cmd_playbooks(args: argparse.Namespace) -> int:
    from remediate.engine.playbook import load_playbooks

    books = load_playbooks(args.playbooks)
    if args.json:
        _print_json({c: {"summary": b.summary, "path": b.path} for c, b in sorted(books.items())})
        return EXIT_OK
    for cause, book in sorted(books.items()):
        print(f"{cause:<18} {book.summary}  ({book.path})")
    return EXIT_OK


def _cmd_show(args: argparse.Namespace) -> int:
    from remediate.engine.playbook import find_playbook

    book = find_playbook(args.cause, args.playbooks)
    print(f"{book.cause}: {book.summary}\n  {book.runbook}\n  {book.path}\n\nevidence (one round trip):")
    for name, collect, step_args in book.evidence:
        print(f"  {name:<10} {collect}{' ' + json.dumps(step_args) if step_args else ''}")
    print("\ndecisions (first that holds wins):")
    for d in book.decisions:
        then = f"fix {d.fix}" if d.fix else d.outcome
        print(f"  {d.name}: when {d.when}\n      -> {then}")
    print("\nfixes:")
    for fix, steps in book.fixes.items():
        print(f"  {fix}:")
        for step in steps:
            extra = (f"  when: {step.when}" if step.when else "") + (f"  loop: {step.loop}" if step.loop else "")
            print(f"    {step.module} {json.dumps(step.args)}{extra}")
    print("\nverify:")
    for item in book.verify:
        print(f"  {json.dumps(item)}")
    return EXIT_OK


# -- lab -----------------------------------------------------------------------------


def _cmd_lab(args: argparse.Namespace) -> int:
    if args.os == "debian":
        return _cmd_lab_debian(args)
    args.dir = args.dir or os.environ.get("REMEDIATE_LAB", DEFAULT_LAB)
    from remediate.lab.core import PROBES, Lab, LabConfig

    lab = Lab(args.dir)
    started = time.monotonic()

    def progress(step: str) -> None:
        if not args.json:
            print(f"  [{time.monotonic() - started:5.1f}s] {step}", file=sys.stderr, flush=True)

    if args.lab_command == "up":
        cfg = lab.up(
            LabConfig(
                dir=str(lab.dir),
                net=args.net,
                ssh_port=args.ssh_port,
                http_port=args.http_port,
                web_hosts=args.web_hosts,
            ),
            progress=progress,
        )
        webs = cfg.webs()
        if args.json:
            _print_json(
                {"dir": str(lab.dir), "inventory": str(lab.inventory), "net": cfg.net, "web": [w.name for w in webs]}
            )
            return EXIT_OK
        print(f"lab up in {time.monotonic() - started:.1f}s: {lab.dir}")
        for web in webs:
            base = f"http://{web.addr}:{cfg.http_port}"
            print(f"  {web.name}  {web.addr:<12} ssh :{cfg.ssh_port}, nginx {base}, php-fpm (unix socket), supervisord")
        print(
            f"  app01  {cfg.addr(2):<12} ssh :{cfg.ssh_port}, app :{cfg.app_port}, tls :{cfg.tls_port}, "
            f"flaky :{cfg.flaky_port}, svc.lab at {cfg.addr(5)}"
        )
        print(f"  dns    {cfg.addr(3) + ':53':<12} dnsmasq, *.lab")
        print(f"  inventory: {lab.inventory}" + (f" (group `web`: {len(webs)} hosts)" if len(webs) > 1 else ""))
        limit = " --limit web" if len(webs) > 1 else ""
        print(f"next: remediate lab break --dir {lab.dir}{limit} --cause socket --variant missing")
        return EXIT_OK
    if args.lab_command == "break":
        spec = lab.break_(args.cause, args.variant, keep=args.keep, limit=args.limit)
        webs = lab.webs(args.limit)
        statuses = {w.name: w.probe(PROBES[spec.probe]) for w in webs}
        if args.json:
            _print_json({"cause": spec.cause, "variant": spec.variant, "probe": PROBES[spec.probe], "status": statuses})
            return EXIT_OK
        where = "app01, shared by every web host" if spec.where != "web" else ", ".join(statuses)
        print(f"broke {spec.cause}/{spec.variant} on {where}: {spec.summary}")
        for name, status in statuses.items():
            print(f"  GET {PROBES[spec.probe]} through {name}'s nginx now answers {status}")
        print(f"  error log: {webs[0].log_path('error')}")
        return EXIT_OK
    if args.lab_command == "reset":
        webs = lab.reset(args.limit)
        if not args.json:
            print(f"lab reset: every probe answers 200 on {', '.join(w.name for w in webs)}")
        return EXIT_OK
    if args.lab_command == "down":
        killed = lab.down()
        if args.json:
            _print_json({"dir": str(lab.dir), "stopped": True, "killed": killed})
        else:
            print(f"lab down: no process left{f' ({len(killed)} needed SIGKILL)' if killed else ''}")
        return EXIT_OK
    report = lab.status(args.limit)
    if args.json:
        _print_json(report)
        return EXIT_OK
    print(f"lab {report['dir']}: " + ", ".join(f"{k} {'up' if v else 'DOWN'}" for k, v in report["running"].items()))
    if report["broken"]:
        print("broken: " + ", ".join(report["broken"]))
    for host, probes in report["probes"].items():
        print(f"{host}:")
        for name, path in PROBES.items():
            print(f"  {probes.get(name, '-')!s:>7}  {path:<16} ({name})")
    return EXIT_OK


def _cmd_lab_debian(args: argparse.Namespace) -> int:
    """``lab … --os debian``: the stock Debian host under systemd (remediate.lab.realhost)."""
    from remediate.lab.realhost import PROBES, REAL_BREAKS, RealHost

    host = RealHost(args.dir or DEFAULT_DEBIAN_LAB)
    started = time.monotonic()
    if args.lab_command == "up":
        cfg = host.up(say=lambda text: None if args.json else print(text, file=sys.stderr, flush=True))
        if args.json:
            _print_json({"dir": str(host.dir), "inventory": str(host.inventory), "address": cfg.guest_address})
            return EXIT_OK
        print(f"Debian host up in {time.monotonic() - started:.1f}s: {host.dir}")
        print(
            f"  {RealHost.hostname}  {cfg.guest_address}  systemd as PID 1, sshd :22, nginx :80, php8.2-fpm,"
            " backend.service :8001"
        )
        print(f"  inventory: {host.inventory}")
        print("next: remediate lab break --os debian --cause socket --variant killed")
        return EXIT_OK
    if args.lab_command == "break":
        if args.limit or args.keep:
            raise UsageError("--limit and --keep are for the loopback lab; the Debian host is one host")
        brk = host.break_(args.cause, args.variant)
        status = host.probe(host.load(), PROBES[brk.probe])
        if args.json:
            _print_json({"cause": brk.cause, "variant": brk.variant, "probe": PROBES[brk.probe], "status": status})
            return EXIT_OK
        print(f"broke {brk.cause}/{brk.variant}: {brk.summary}")
        print(f"  GET {PROBES[brk.probe]} through nginx now answers {status}")
        return EXIT_OK
    if args.lab_command == "reset":
        raise UsageError("the Debian host resets by booting again: remediate lab down --os debian; lab up --os debian")
    if args.lab_command == "down":
        host.down()
        if args.json:
            _print_json({"dir": str(host.dir), "stopped": True})
        else:
            print("Debian host down (its overlay is gone with it; the cached root file system stays)")
        return EXIT_OK
    cfg = host.load()
    statuses = host.status(cfg)
    if args.json:
        _print_json({"dir": str(host.dir), "address": cfg.guest_address, "broken": cfg.broken, "probes": statuses})
        return EXIT_OK
    print(
        f"Debian host {host.dir} at {cfg.guest_address}" + (f"; broken: {', '.join(cfg.broken)}" if cfg.broken else "")
    )
    for name, path in PROBES.items():
        print(f"  {statuses[name]!s:>7}  {path:<16} ({name})")
    known = ", ".join(f"{b.cause}/{b.variant}" for b in REAL_BREAKS)
    print(f"breaks: {known}")
    return EXIT_OK
