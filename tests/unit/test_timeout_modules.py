"""The timeout fix's module on text, and nginx's time syntax."""

from __future__ import annotations

from pathlib import Path

import pytest
from support.lab import text_context

from remediate.engine.nginx_modules import nginx_timeout
from remediate.evidence.framework import Context
from remediate.evidence.routing import nginx_seconds
from remediate.nginx import MARKER

SITE = b"""server {\r
\tlisten 80;\r
\tlocation /api/ {\r
\t\tproxy_pass http://api;\r
\t}\r
\tlocation /slow/ {\r
\t\tproxy_pass http://api;\r
\t\tproxy_read_timeout 5s;\r
\t}\r
}\r
"""


@pytest.fixture
def ctx(tmp_path: Path) -> Context:
    return text_context(tmp_path, SITE)


def test_timeout_in_a_specific_location_is_added_or_updated(ctx: Context) -> None:
    """In a specific location the timeout is added (marked, tab-indented, CRLF) or its value updated in place."""
    added = nginx_timeout(ctx, {"location_where": "/n.conf:3", "directive": "proxy_read_timeout", "seconds": 12})
    assert added.changes[0].after == SITE.replace(
        b"\t\tproxy_pass http://api;\r\n\t}\r\n\tlocation /slow/",
        f"\t\tproxy_pass http://api;\r\n\t\tproxy_read_timeout 12s;  {MARKER}\r\n\t}}\r\n\tlocation /slow/".encode(),
    )
    updated = nginx_timeout(ctx, {"location_where": "/n.conf:6", "directive": "proxy_read_timeout", "seconds": 12})
    assert updated.changes[0].after == SITE.replace(b"proxy_read_timeout 5s;", b"proxy_read_timeout 12s;")
    assert nginx_timeout(ctx, {"location_where": "/n.conf:6", "directive": "proxy_read_timeout", "seconds": 5}).empty


def test_nginx_time_syntax() -> None:
    """nginx times: bare seconds, ms, s, m, h."""
    assert [nginx_seconds(v) for v in ("60", "500ms", "2s", "15m", "1h")] == [60, 0.5, 2, 900, 3600]
