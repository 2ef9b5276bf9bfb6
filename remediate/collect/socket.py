"""Evidence for the socket cause: the PHP-FPM pools and every unix socket nginx passes to."""

from __future__ import annotations

import base64
import re
from typing import Any

from remediate.collect.nginx import ask_nginx, probes_for
from remediate.evidence import Collector, Context, Request
from remediate.inventory import Host
from remediate.nginx import NginxConfig

# -- php_fpm_pools ---------------------------------------------------------------------

_SECTION = re.compile(r"^\s*\[([^\]]+)\]\s*$")
_KEY = re.compile(r"^\s*([A-Za-z0-9_.\[\]]+)\s*=\s*(.*?)\s*(;.*)?$")


def parse_ini_sections(text: str) -> dict[str, dict[str, str]]:
    """Flat ``key = value`` per ``[section]`` (php-fpm pool files): the last value of a key wins."""
    sections: dict[str, dict[str, str]] = {}
    current = ""
    for line in text.splitlines():
        if line.lstrip().startswith((";", "#")):
            continue
        if m := _SECTION.match(line):
            current = m.group(1)
            sections.setdefault(current, {})
        elif (m := _KEY.match(line)) and current:
            sections[current][m.group(1)] = m.group(2).strip("\"'")
    return sections


def _ask_pools(host: Host, args: dict[str, Any], req: Request) -> None:
    # The inventory's pool files (globs allowed), or else the ones php-fpm.conf's include= names.
    req["php_fpm"] = {"conf": host["php_fpm_conf"], "pools": list(host["php_fpm_pools"])}


def pool_files(ctx: Context) -> list[str]:
    """The pool files read on the host (for messages: where remediate looked)."""
    return list((ctx.by_collector.get("_php_fpm") or {}).get("pools", []))


def _read_pools(ctx: Context, args: dict[str, Any], resp: dict[str, Any]) -> Any:
    found = resp.get("php_fpm") or {"pools": []}
    ctx.by_collector["_php_fpm"] = found
    pools = []
    for path in found["pools"]:
        entry = resp["files"].get(path)
        if not entry or "b64" not in entry:
            continue
        data = base64.b64decode(entry["b64"])
        ctx.files[path] = data
        ctx.stats[path] = entry["stat"]
        for name, values in parse_ini_sections(data.decode("utf-8", "replace")).items():
            if name == "global":
                continue
            pools.append({"path": path, "name": name, "listen": values.get("listen", ""), "settings": values})
    return pools


# -- unix_sockets ----------------------------------------------------------------------


def _ask_sockets(host: Host, args: dict[str, Any], req: Request) -> None:
    ask_nginx(host, args, req)  # the helper stats (and connects to) every unix: path in nginx -T


def _unix_path(target: str) -> str | None:
    """``unix:/run/x.sock`` (``http://unix:/run/x.sock:/uri`` in proxy_pass) → ``/run/x.sock``."""
    bare = re.sub(r"^[a-z]+://", "", target)
    if not bare.startswith("unix:"):
        return None
    return bare[len("unix:") :].split(":", 1)[0] or None


def passed_sockets(config: NginxConfig) -> dict[str, str]:
    """Every unix socket nginx passes to, from the parsed config: path → the directive that names it.

    A *_pass naming the socket itself, or an upstream block whose servers are sockets; however the
    files are laid out (one line or several, an include, a snippet)."""
    upstreams = config.upstreams()
    found: dict[str, str] = {}
    for p in config.passes():
        path = _unix_path(p.target)
        if path:
            found.setdefault(path, p.kind)
            continue
        block = upstreams.get(re.sub(r"^[a-z]+://", "", p.target).split("/")[0])
        for server in config.find("server", block) if block is not None else []:
            path = _unix_path(server.args[0]) if server.args else None
            if path:
                found.setdefault(path, p.kind)
    return found


def _read_sockets(ctx: Context, args: dict[str, Any], resp: dict[str, Any]) -> Any:
    pools = ctx.by_collector.get("php_fpm_pools") or []
    used = passed_sockets(ctx.config) if ctx.config is not None else {}
    sockets = []
    for raw in resp.get("nginx", {}).get("unix_sockets", []):
        if raw["path"] not in used:
            continue
        names = (raw["path"], raw.get("realpath") or raw["path"])
        pool = next((p for p in pools if p["listen"] in names), None)
        sockets.append(
            {**raw, "pass": used[raw["path"]], "pool": pool, "probes": probes_for(ctx, "unix:" + raw["path"])}
        )
    files = (ctx.by_collector.get("_php_fpm") or {}).get("pools", [])
    return {
        "pool_files": ", ".join(files) or "none found",
        "all": sockets,
        "missing": [s for s in sockets if not s["exists"]],
        # The file is there but nothing listens: its master died (SIGKILL, the OOM killer) without removing it.
        "dead": [
            s for s in sockets if s["exists"] and not s.get("accepting", True) and "111:" in s.get("connect_error", "")
        ],
        "denied": [s for s in sockets if s["exists"] and not s["nginx_may_connect"]],
    }


COLLECTORS = (
    Collector("php_fpm_pools", "the inventory's pool files: each pool's listen and settings", _ask_pools, _read_pools),
    Collector(
        "unix_sockets",
        "every unix socket nginx passes to: exists, owner, mode, may nginx connect",
        _ask_sockets,
        _read_sockets,
    ),
)
