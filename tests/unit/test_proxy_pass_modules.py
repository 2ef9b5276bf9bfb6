"""The proxy-pass fix's module on text: a retarget changes only that address."""

from __future__ import annotations

from pathlib import Path

from remediate.engine.nginx_modules import nginx_retarget
from remediate.evidence.framework import Context
from remediate.hosts.inventory import load_inventory
from remediate.nginx import NginxConfig, dump, parse

UPSTREAMS = b"""upstream pool {\r
\tserver 10.0.0.5:8081 max_fails=3 fail_timeout=30s;  # primary\r
\tserver 10.0.0.6:8081 backup;\r
}\r
server {\r
\tlocation /a/ { proxy_pass http://10.0.0.5:8081/a/; }\r
\tlocation /b/ { proxy_pass http://10.0.0.5:80811; }\r
}\r
"""


def test_retarget_changes_only_that_address(tmp_path: Path) -> None:
    """Upstream servers and proxy_pass on the address change; params, URIs, CRLF and look-alike ports do not."""
    inv = tmp_path / "i.yml"
    inv.write_text("all:\n  hosts:\n    w:\n")
    ctx = Context(load_inventory(inv).host("w"))
    ctx.config = NginxConfig(
        {"/etc/nginx/nginx.conf": parse(UPSTREAMS, "/etc/nginx/nginx.conf")}, "/etc/nginx/nginx.conf"
    )
    plan = nginx_retarget(ctx, {"from": "10.0.0.5:8081", "to": "10.0.0.5:8080"})
    (change,) = plan.changes
    assert change.after == UPSTREAMS.replace(b"server 10.0.0.5:8081 max", b"server 10.0.0.5:8080 max").replace(
        b"http://10.0.0.5:8081/a/", b"http://10.0.0.5:8080/a/"
    )
    assert dump(parse(change.after).nodes) == change.after
