"""Evidence for the socket cause: the PHP-FPM pools and every unix socket nginx passes to."""

from __future__ import annotations

import base64
import re
from typing import Any

from remediate.evidence.framework import Collector, Context, Request, log_hits
from remediate.evidence.routing import ask_nginx, probes_for
from remediate.hosts.inventory import Host
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
    # For a saturated pool: its children's memory, what the host has left, and php-fpm's own warnings.
    req["commands"]["fpm_ps"] = ["ps", "-eo", "rss=,args="]
    req["files"].append("/proc/meminfo")
    req["logs"].append(host["php_fpm_log"])
    req["fpm_master"] = True  # when the running masters started: older EAGAIN lines are about a past pool


_EAGAIN = re.compile(r"connect\(\) to unix:(?P<path>[^\s]+) failed \((?:11|35): Resource temporarily unavailable\)")
#: Memory a php-fpm child is assumed to take when none is running to measure (ondemand, idle).
CHILD_KB_UNKNOWN = 64 * 1024


def size_children(current: int, child_kb: int, available_kb: int) -> int | None:
    """A bounded new ``pm.max_children``: twice the current value at most, and no more children than half
    the memory the host has available can hold at the size a child has now. None when there is no room."""
    room = (available_kb // 2) // max(child_kb, 1)
    new = min(2 * current, current + room)
    return new if new > current else None


def _saturation(ctx: Context, pool: dict[str, Any], resp: dict[str, Any]) -> dict[str, Any]:
    """What says pool ``pool`` is saturated, and how far pm.max_children may go."""
    name = pool["name"]
    current = int(pool["settings"].get("pm.max_children", "5") or 5)
    log = (resp.get("logs") or {}).get(ctx.host["php_fpm_log"]) or {}
    reached = [ln for ln in log.get("text", "").splitlines() if f"[pool {name}] server reached pm.max_children" in ln]
    sizes = []
    for line in ((resp.get("commands") or {}).get("fpm_ps") or {}).get("stdout", "").splitlines():
        rss, _, command = line.strip().partition(" ")
        if command.strip() == f"php-fpm: pool {name}" and rss.isdigit():
            sizes.append(int(rss))
    meminfo = (resp.get("files") or {}).get("/proc/meminfo") or {}
    text = base64.b64decode(meminfo["b64"]).decode() if "b64" in meminfo else ""
    available = re.search(r"^MemAvailable:\s+(\d+) kB", text, re.M)
    child_kb = sum(sizes) // len(sizes) if sizes else CHILD_KB_UNKNOWN
    available_kb = int(available.group(1)) if available else 0
    return {
        "max_children": current,
        "reached": len(reached),
        "reached_example": reached[-1].strip() if reached else "",
        "child_mb": round(child_kb / 1024),
        "child_measured": bool(sizes),
        "available_mb": available_kb // 1024,
        "raise_to": size_children(current, child_kb, available_kb),
    }


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
    eagain: dict[str, int] = {}
    # Only lines after the newest master started (1 s resolution; a line in that second counts as the old
    # pool's): once a fix restarted the pool, the window's old lines do not make it "busy" again.
    started = max((resp.get("fpm_master") or {}).values(), default="")
    for hit in log_hits(ctx, _EAGAIN, ("socket",)):
        if hit.time > started:
            eagain[hit.match.group("path")] = eagain.get(hit.match.group("path"), 0) + 1
    busy = []
    for sock in sockets:
        full = sock.get("accepting", True) or sock.get("connect_error", "").startswith(("11:", "35:"))  # EAGAIN
        if sock["path"] in eagain and sock["exists"] and full and sock["nginx_may_connect"]:
            saturation = _saturation(ctx, sock["pool"], resp) if sock["pool"] else None
            busy.append({**sock, "eagain": eagain[sock["path"]], "saturation": saturation})
    return {
        # Its listen queue was full (EAGAIN): the pool behind it is not accepting fast enough.
        "busy": busy,
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
