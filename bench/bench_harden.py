"""`remediate harden --file` over configs nobody here wrote: does it hold up, and how fast is it?

    git clone --depth 1 https://github.com/nginx/nginx-tests /tmp/nginx-tests
    git clone --depth 1 https://github.com/h5bp/server-configs-nginx /tmp/h5bp
    .venv/bin/python bench/bench_harden.py /tmp/nginx-tests /tmp/h5bp [--runs 3]

Every ``*.conf`` under each directory is a config; every nginx-tests ``*.t`` script gives the
``nginx.conf`` it writes (the heredoc after ``write_file_expand('nginx.conf', <<'EOF')``, with its
``%%TEST_GLOBALS%%`` and ``%%PORT_n%%`` placeholders filled in) when it hands requests to an upstream.
For each: read it (with its includes, from the same disk) and run every rule. It fails (exit 1) if
harden raises anything but its one-line input error, or a finding points at a commented-out line.
Prints how many configs, findings and parser refusals there were, and the median time per config.
The corpora are not in the repository (third-party files stay out of it; CI reaches only package
registries): the tests run the same checks on gixy-ng's configs from PyPI instead.
"""

from __future__ import annotations

import argparse
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

from remediate import harden
from remediate.errors import RemediateError
from remediate.harden.source import read_config

_HEREDOC = re.compile(r"write_file_expand\('nginx\.conf', <<'EOF'\);\n(.*?)\nEOF\n", re.S)
_PROXIES = re.compile(r"\b(proxy_pass|fastcgi_pass|uwsgi_pass|scgi_pass|grpc_pass|upstream|resolver|log_format)\b")


def configs(directory: Path, scratch: Path) -> list[Path]:
    found = sorted(p for p in directory.rglob("*.conf") if p.is_file())
    for script in sorted(directory.glob("*.t")):
        m = _HEREDOC.search(script.read_text(errors="replace"))
        if m is None or not _PROXIES.search(m.group(1)):
            continue
        text = re.sub(r"%%TEST_GLOBALS\w*%%", "", m.group(1))
        text = re.sub(r"%%PORT_(\d+)(?:_UDP)?%%", r"\1", text).replace("%%TESTDIR%%", "/tmp/nginx-test")
        out = scratch / f"{script.stem}.conf"
        out.write_text(text + "\n")
        found.append(out)
    return found


def check(path: Path) -> tuple[int, int]:
    """(findings, parser refusals) for one config; raises AssertionError on a finding on a comment."""
    try:
        config, _ = read_config(path)
    except RemediateError:
        return 0, 1
    findings = harden.audit(harden.Subject(config))
    for f in findings:
        line = Path(f.file).read_text(errors="replace").splitlines()[f.line - 1].strip()
        if line.startswith("#"):
            raise AssertionError(f"{f.where}: {f.rule} points at a comment: {line}")
    return len(findings), 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("directories", nargs="+", type=Path)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="remediate-harden-corpus-") as tmp:
        for directory in args.directories:
            if not directory.is_dir():
                parser.error(f"{directory}: no such directory")
            scratch = Path(tmp) / directory.name
            scratch.mkdir()
            paths = configs(directory, scratch)
            times, totals = [], (0, 0)
            for _ in range(args.runs):
                began = time.perf_counter()
                results = [check(p) for p in paths]
                times.append(time.perf_counter() - began)
                totals = (sum(r[0] for r in results), sum(r[1] for r in results))
            median = statistics.median(times)
            per = median / max(1, len(paths)) * 1000
            print(f"{directory}: {len(paths)} configs, {totals[0]} findings, {totals[1]} refused by the parser; "
                  f"median {median:.3f} s ({per:.2f} ms per config), no finding on a comment")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
