"""Runbook, FAQ: "How do I suppress the default Nginx 502 error page and show my own?"."""

from __future__ import annotations

from collections.abc import Iterator

from remediate.harden.model import Finding, Subject, rule
from remediate.nginx.config import PASS_DIRECTIVES
from remediate.nginx.parser import Directive

RULE = "no-custom-502-page"


@rule(
    RULE,
    "info",
    "FAQ: suppress the default 502 page",
    "a proxying server with nginx's bare 502 page",
    fix="error_page 502 to an internal location",
)
def custom_502(subject: Subject) -> Iterator[Finding]:
    """Use the error_page directive in your server block: error_page 502 /errors/502.html; location =
    /errors/502.html { root /var/www/solvethenetwork.com; internal; } The internal flag prevents external
    direct access to the error page URL."""
    config = subject.config
    covered_http = _covers(config.find("error_page", config.http())) if config.http() is not None else False
    for server in config.servers():
        proxies = covered = False
        stack = [server]
        while stack:
            block = stack.pop()
            for d in config.children(block):
                proxies = proxies or d.name in PASS_DIRECTIVES
                covered = covered or (d.name == "error_page" and "502" in d.args[:-1])
                if d.block is not None:
                    stack.append(d)
        if proxies and not covered and not covered_http:
            names = config.directive_value("server_name", server) or ["_"]
            yield Finding(RULE, "info", server.file, server.line,
                          f"server {names[0]} proxies but has no error_page for 502: clients get nginx's bare "
                          "error page",
                          "error_page 502 /errors/502.html; location = /errors/502.html { internal; ... }",
                          {"server": server.where})  # fmt: skip


def _covers(pages: list[Directive]) -> bool:
    return any("502" in d.args[:-1] for d in pages)
