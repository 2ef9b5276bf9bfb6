"""How the config model does on configs nobody here wrote: nginx's own test suite (nginx/nginx-tests).

    .venv/bin/python bench/measure_models.py /path/to/nginx-tests

For every nginx.conf the suite writes (its *.t files), it checks that the lexer and parser read
it, that the round trip is byte-identical, and that every regex of ``location ~``/``~*`` and
``server_name ~`` is either translated for Python's re or refused as untranslatable (never a
crash). It prints the counts and the reasons for refusals.
"""

from __future__ import annotations

import collections
import re
import sys
from pathlib import Path

from remediate.nginx import parse
from remediate.nginx.match import parse_location
from remediate.nginx.parser import Directive, dump
from remediate.nginx.pcre import Untranslatable, compile_pcre


def configs(suite: Path) -> list[tuple[str, bytes]]:
    found = []
    for test in sorted(suite.glob("*.t")):
        text = test.read_text(encoding="latin-1")
        for n, m in enumerate(re.finditer(r"nginx\.conf', <<'EOF'\);?\n(.*?)\nEOF", text, re.S)):
            conf = re.sub(r"%%[A-Z_0-9]+%%", "", m.group(1))
            found.append((f"{test.name}#{n}", conf.encode("latin-1")))
    return found


def walk(nodes: list[Directive]) -> list[Directive]:
    out, stack = [], list(nodes)
    while stack:
        d = stack.pop()
        out.append(d)
        stack.extend(d.children)
    return out


def main() -> None:
    suite = Path(sys.argv[1] if len(sys.argv) > 1 else "nginx-tests")
    counts: collections.Counter[str] = collections.Counter()
    reasons: collections.Counter[str] = collections.Counter()
    for name, data in configs(suite):
        try:
            tree = parse(data, name)
        except Exception as exc:  # a parse failure is a finding, not a stop
            counts["parse errors"] += 1
            print(f"{name}: {exc}", file=sys.stderr)
            continue
        counts["configs"] += 1
        counts["round trip exact" if dump(tree.nodes) == data else "round trip differs"] += 1
        for d in walk(tree.directives):
            patterns = []
            if d.name == "location":
                loc = parse_location(d)
                if loc.modifier in ("~", "~*"):
                    patterns.append((loc.pattern, loc.modifier == "~*"))
            elif d.name == "server_name":
                patterns += [(a[1:], True) for a in d.args if a.startswith("~")]
            for pattern, caseless in patterns:
                try:
                    compile_pcre(pattern, caseless=caseless)
                    counts["regexes translated"] += 1
                except Untranslatable as exc:
                    counts["regexes refused"] += 1
                    reasons[exc.reason.split(" (")[0]] += 1
    for key, value in sorted(counts.items()):
        print(f"{key:>22}: {value}")
    for reason, n in reasons.most_common():
        print(f"  refused, {reason}: {n}")


if __name__ == "__main__":
    main()
