"""The whole effective configuration: every file ``nginx -T`` dumped, parsed and linked by include.

``nginx -T`` writes, for each file it read, ``# configuration file NAME:``,
a newline, the file's exact bytes and one more newline (src/core/nginx.c).
We split on those headers, parse each file, then resolve ``include`` against
the set of dumped names, globs included, in glob(3)'s sorted order, which is
the order nginx read them in.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Iterator
from dataclasses import dataclass

from remediate.errors import ConfigParseError
from remediate.nginx.parser import ConfigFile, Directive, parse

__all__ = ["NginxConfig", "Pass", "split_dump"]

_HEADER = re.compile(rb"^# configuration file (/[^\n]*):\n", re.MULTILINE)
_GLOB_CHARS = re.compile(r"[*?\[]")
#: Every directive that hands a request to an upstream (tunnel_pass: ngx_http_tunnel_module, nginx 1.29).
PASS_DIRECTIVES = (
    "proxy_pass",
    "fastcgi_pass",
    "uwsgi_pass",
    "scgi_pass",
    "grpc_pass",
    "memcached_pass",
    "tunnel_pass",
)


def split_dump(text: bytes) -> list[tuple[str, bytes]]:
    """``nginx -T`` stdout → [(path, exact file bytes)] in the order nginx read them."""
    headers = list(_HEADER.finditer(text))
    files: list[tuple[str, bytes]] = []
    seen: set[str] = set()
    # A header-shaped comment inside a file would look like a header; a real
    # header never repeats a name nginx already dumped, so keep the first only.
    real = []
    for match in headers:
        name = match.group(1).decode("utf-8", "surrogateescape")
        if name not in seen:
            seen.add(name)
            real.append((name, match))
    for index, (name, match) in enumerate(real):
        end = real[index + 1][1].start() if index + 1 < len(real) else len(text)
        body = text[match.end() : end]
        if body.endswith(b"\n"):
            body = body[:-1]  # the newline nginx adds after each file
        files.append((name, body))
    return files


@dataclass(frozen=True)
class Pass:
    """A ``*_pass`` directive and where it sits."""

    directive: Directive
    server: Directive | None
    location: Directive | None

    @property
    def kind(self) -> str:
        return self.directive.name

    @property
    def target(self) -> str:
        return self.directive.args[0] if self.directive.args else ""


class NginxConfig:
    """Parsed files plus the include graph, with queries over the effective tree."""

    def __init__(self, files: dict[str, ConfigFile], main: str) -> None:
        if main not in files:
            raise ConfigParseError("the main config file is not in the dump", file=main)
        self.files = files
        self.main = main
        self.conf_dir = posixpath.dirname(main)
        self.errors: list[ConfigParseError] = []
        self._link(files[main], depth=0)

    @classmethod
    def from_dump(cls, text: bytes) -> NginxConfig:
        parts = split_dump(text)
        if not parts:
            raise ConfigParseError("no `# configuration file` sections in nginx -T output", file="nginx -T")
        files = {path: parse(data, path) for path, data in parts}
        return cls(files, parts[0][0])

    @classmethod
    def from_files(cls, files: dict[str, bytes], main: str) -> NginxConfig:
        return cls({path: parse(data, path) for path, data in files.items()}, main)

    # -- include resolution ----------------------------------------------------

    def _link(self, file: ConfigFile, depth: int) -> None:
        if depth > 32:
            raise ConfigParseError("include nesting deeper than 32 (a loop?)", file=file.path)
        for directive in file.walk():
            if directive.name != "include" or not directive.args:
                continue
            directive.included = [self.files[p] for p in self.resolve_include(directive.args[0])]
            for child in directive.included:
                self._link(child, depth + 1)

    def resolve_include(self, pattern: str) -> list[str]:
        path = pattern if pattern.startswith("/") else posixpath.join(self.conf_dir, pattern)
        if not _GLOB_CHARS.search(path):
            return [path] if path in self.files else []
        regex = _glob_regex(path)
        return sorted(p for p in self.files if regex.fullmatch(p))

    # -- walking -----------------------------------------------------------------

    def walk(self) -> Iterator[tuple[Directive, tuple[Directive, ...]]]:
        """Every directive of the effective config with its enclosing blocks, includes followed."""

        def visit(
            directives: list[Directive], ctx: tuple[Directive, ...]
        ) -> Iterator[tuple[Directive, tuple[Directive, ...]]]:
            for d in directives:
                yield d, ctx
                if d.name == "include":
                    for included in d.included:
                        yield from visit(included.directives, ctx)
                elif d.block is not None:
                    yield from visit(d.children, (*ctx, d))

        yield from visit(self.files[self.main].directives, ())

    def children(self, block: Directive | None) -> list[Directive]:
        """The directives directly inside ``block`` (None: the main context), includes expanded."""
        items = self.files[self.main].directives if block is None else block.children
        return self._expand(items)

    def _expand(self, items: list[Directive]) -> list[Directive]:
        out: list[Directive] = []
        for d in items:
            if d.name == "include":
                for included in d.included:
                    out += self._expand(included.directives)
            else:
                out.append(d)
        return out

    def find(self, name: str, block: Directive | None = None) -> list[Directive]:
        return [d for d in self.children(block) if d.name == name]

    # -- queries -----------------------------------------------------------------

    def http(self) -> Directive | None:
        found = self.find("http")
        return found[0] if found else None

    def servers(self) -> list[Directive]:
        http = self.http()
        return self.find("server", http) if http is not None else []

    def upstreams(self) -> dict[str, Directive]:
        http = self.http()
        if http is None:
            return {}
        return {d.args[0]: d for d in self.find("upstream", http) if d.args}

    def passes(self) -> list[Pass]:
        """Every *_pass of PASS_DIRECTIVES with the server and location around it."""
        found = []
        for d, ctx in self.walk():
            if d.name in PASS_DIRECTIVES:
                server = next((c for c in ctx if c.name == "server"), None)
                location = next((c for c in reversed(ctx) if c.name == "location"), None)
                found.append(Pass(d, server, location))
        return found

    def user(self) -> tuple[str, str] | None:
        """The worker ``user`` and group, or None when nginx uses its built-in default."""
        found = self.find("user")
        if not found or not found[-1].args:
            return None
        args = found[-1].args
        return args[0], args[1] if len(args) > 1 else args[0]

    def directive_value(self, name: str, block: Directive | None = None) -> list[str] | None:
        found = self.find(name, block)
        return found[-1].args if found else None


def _glob_regex(pattern: str) -> re.Pattern[str]:
    """glob(3) semantics: ``*`` and ``?`` never cross ``/``; a leading dot is not matched by a wildcard."""
    out = []
    i = 0
    while i < len(pattern):
        ch = pattern[i]
        if ch == "*":
            out.append(r"[^/]*")
        elif ch == "?":
            out.append(r"[^/]")
        elif ch == "[":
            end = pattern.find("]", i + 2)
            if end == -1:
                out.append(re.escape(ch))
            else:
                body = pattern[i + 1 : end]
                if body.startswith("!"):
                    body = "^" + body[1:]
                out.append("[" + body.replace("\\", "\\\\") + "]")
                i = end
        else:
            out.append(re.escape(ch))
        i += 1
    # glob(3) never lets a wildcard match a hidden file's leading dot.
    regex = "".join(out).replace(r"/[^/]*", r"/(?!\.)[^/]*").replace(r"/[^/]", r"/(?!\.)[^/]")
    return re.compile(regex)
