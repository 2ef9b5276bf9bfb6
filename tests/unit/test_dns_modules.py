"""The dns fix's modules on text: a block's lines set in place, the variable form with a rewrite."""

from __future__ import annotations

from pathlib import Path

import pytest
from support.lab import text_context

from remediate.engine.nginx_modules import nginx_block_set, nginx_dns_variable
from remediate.evidence.framework import Context
from remediate.nginx import MARKER, NginxConfig, parse

SITE = b"""server {\r
\tlisten 80;\r
\tlocation /api/ {\r
\t\tproxy_pass http://api.internal:8080/v2/;\r
\t}\r
}\r
"""


@pytest.fixture
def ctx(tmp_path: Path) -> Context:
    return text_context(tmp_path, SITE)


def test_variable_form_keeps_a_uri_part_with_a_rewrite(ctx: Context) -> None:
    """proxy_pass with a URI part: a rewrite ... break keeps the path the backend sees; tabs and CRLF kept."""
    plan = nginx_dns_variable(ctx, {"location_where": "/n.conf:3"})
    assert plan.changes[0].after == SITE.replace(
        b"\t\tproxy_pass http://api.internal:8080/v2/;\r\n",
        (
            f'\t\tset $remediate_api_internal "api.internal";  {MARKER}: re-resolve api.internal per request\r\n'
            f"\t\trewrite ^/api/(.*)$ /v2/$1 break;  {MARKER}: "
            f"the path proxy_pass http://api.internal:8080/v2/ sent\r\n"
            f"\t\tproxy_pass http://$remediate_api_internal:8080;\r\n"
        ).encode(),
    )


def test_block_set_updates_in_place_and_adds_the_rest(ctx: Context) -> None:
    """A directive already set changes in place; a missing one is added from the template, marked."""
    first = nginx_block_set(
        ctx,
        {
            "block": "/n.conf:1",
            "at": "start",
            "template": "resolver.conf.j2",
            "vars": {"resolvers": ["10.0.0.1"], "valid": "30s", "timeout": "5s"},
        },
    )
    after = first.changes[0].after
    assert after.startswith(
        f"server {{\r\n\tresolver 10.0.0.1 valid=30s;  {MARKER}\r\n\tresolver_timeout 5s;  {MARKER}\r\n".encode()
    )
    ctx.config = NginxConfig({"/n.conf": parse(after, "/n.conf")}, "/n.conf")
    second = nginx_block_set(
        ctx,
        {
            "block": "/n.conf:1",
            "template": "resolver.conf.j2",
            "vars": {"resolvers": ["10.0.0.2"], "valid": "30s", "timeout": "5s"},
        },
    )
    assert second.changes[0].after == after.replace(b"resolver 10.0.0.1 valid", b"resolver 10.0.0.2 valid")
    same = nginx_block_set(
        ctx,
        {
            "block": "/n.conf:1",
            "template": "resolver.conf.j2",
            "vars": {"resolvers": ["10.0.0.1"], "valid": "30s", "timeout": "5s"},
        },
    )
    assert same.empty
