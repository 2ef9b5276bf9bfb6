"""The nginx config model, on text alone: round trip, structure, nginx -T, includes, patches."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import crossplane
import pytest
from support import TESTS

from remediate.errors import ConfigParseError
from remediate.nginx import NginxConfig, apply_patches, dump, parse, split_dump
from remediate.nginx.edit import (
    MARKER,
    Patch,
    insert_in_block,
    quote,
    remove_directive,
    render_directive,
    replace_args,
)
from remediate.nginx.lexer import unescape

CORPUS = TESTS / "corpus"
CONFIGS = sorted(CORPUS.glob("*.conf*"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_parse_then_dump_returns_the_same_bytes(path: Path) -> None:
    """Every byte of every corpus file survives parse → tree → dump, comments, CRLF and tabs included."""
    data = path.read_bytes()
    assert dump(parse(data, str(path)).nodes) == data


def _ours(directives: list[Any]) -> list[dict[str, Any]]:
    return [
        {
            "directive": d.name,
            "line": d.line,
            "args": d.args,
            **({"block": _ours(d.children)} if d.block is not None else {}),
        }
        for d in directives
    ]


def _theirs(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for item in items:
        if item["directive"] == "#":
            continue  # crossplane leaks comments found inside a directive's head even with comments=False
        args = [a.replace("\\n", "\n").replace("\\t", "\t").replace("\\r", "\r") for a in item["args"]]
        entry = {"directive": item["directive"], "line": item["line"], "args": args}
        if "block" in item:
            entry["block"] = _theirs(item["block"])
        out.append(entry)
    return out


def _normalize_if(tree: list[dict[str, Any]]) -> list[dict[str, Any]]:
    # nginx hands `if` its parentheses as part of the first and last arguments; crossplane strips them.
    for item in tree:
        if item["directive"] == "if" and item["args"]:
            args = list(item["args"])
            args[0] = args[0].removeprefix("(")
            args[-1] = args[-1].removesuffix(")")
            item["args"] = [a for a in args if a]
        if "block" in item:
            _normalize_if(item["block"])
    return tree


ORACLE = [p for p in CONFIGS if p.suffix == ".conf" and p.name != "openresty-lua.conf"]


@pytest.mark.parametrize("path", ORACLE, ids=lambda p: p.name)
def test_structure_agrees_with_crossplane(path: Path) -> None:
    """Names, arguments, lines and nesting match crossplane's parse of the same file."""
    theirs = crossplane.parse(str(path), single=True, comments=False, check_ctx=False, check_args=False)
    assert theirs["errors"] == []
    expected = _normalize_if(_theirs(theirs["config"][0]["parsed"]))
    assert _normalize_if(_ours(parse(path.read_bytes(), str(path)).directives)) == expected


def test_lua_blocks_are_one_raw_argument() -> None:
    """A *_by_lua_block body is Lua: braces inside its strings and comments do not close it."""
    conf = parse((CORPUS / "openresty-lua.conf").read_bytes())
    http = conf.directives[0]
    init = next(d for d in http.children if d.name == "init_by_lua_block")
    assert "local eq = [==[ ]] still inside ]==]" in init.args[0]
    server = next(d for d in http.children if d.name == "server")
    names = [d.name for d in conf.walk()]
    assert names.count("location") == 2 and "proxy_pass" in names
    assert [d.name for d in server.children] == ["listen", "location", "location"]


def test_escapes_follow_nginx() -> None:
    """Inside and outside quotes, nginx turns \\" \\' \\\\ \\n \\t \\r into their bytes and keeps others."""
    assert unescape(rb"a\"b\'c\\d\ne\tf\x") == "a\"b'c\\d\ne\tf\\x"


def test_every_directive_knows_file_line_and_span() -> None:
    """A directive's span covers exactly its own bytes, and its line is where its name starts."""
    data = (CORPUS / "crlf.conf").read_bytes()
    conf = parse(data, "/etc/nginx/crlf.conf")
    proxy = next(d for d in conf.walk() if d.name == "proxy_pass")
    assert data[proxy.start : proxy.end] == b"proxy_pass http://10.0.0.1:8080;"
    assert proxy.where == "/etc/nginx/crlf.conf:6"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (b"http {\n  server {\n", 'unexpected end of file, expecting "}"'),
        (b"events {}\n}\n", 'unexpected "}"'),
        (b"listen 80", 'unexpected end of file, expecting ";" or "}"'),
        (b'set $a "x"y;', 'unexpected "y"'),
        (b'set $a "open', "expecting closing quote"),
    ],
)
def test_invalid_text_fails_with_nginx_wording_and_line(text: bytes, message: str) -> None:
    """Text nginx would reject raises ConfigParseError with nginx's wording and file:line."""
    with pytest.raises(ConfigParseError, match=message) as info:
        parse(text, "/etc/nginx/bad.conf")
    assert str(info.value).startswith("/etc/nginx/bad.conf:")


# -- nginx -T ------------------------------------------------------------------------

MAIN = b"events {}\nhttp {\n    include conf.d/*.conf;\n    include /etc/nginx/sites-enabled/*;\n}\n"
SITE_B = b"server {\n    listen 80;\n    location / { proxy_pass http://b; }\n}\n"
SITE_A = b"server { listen 81; location /a/ { fastcgi_pass unix:/run/php.sock; } }"  # no final newline
UPSTREAMS = b"upstream b {\r\n    server 127.0.0.1:9000;\r\n}\r\n"


def _dump_text(files: list[tuple[str, bytes]]) -> bytes:
    # Exactly what src/core/nginx.c writes for -T: header, the file's bytes, one more newline.
    return b"".join(b"# configuration file " + n.encode() + b":\n" + d + b"\n" for n, d in files)


def test_nginx_T_output_splits_into_exact_files() -> None:
    """Each section of nginx -T output is the file's exact bytes, without the newline nginx adds."""
    files = [
        ("/etc/nginx/nginx.conf", MAIN),
        ("/etc/nginx/conf.d/upstreams.conf", UPSTREAMS),
        ("/etc/nginx/sites-enabled/b.conf", SITE_B),
        ("/etc/nginx/sites-enabled/a.conf", SITE_A),
    ]
    assert split_dump(_dump_text(files)) == files


def test_includes_resolve_globs_in_glob_order() -> None:
    """include globs pick the dumped files they match, sorted, relative to the main file's directory."""
    config = NginxConfig.from_dump(
        _dump_text(
            [
                ("/etc/nginx/nginx.conf", MAIN),
                ("/etc/nginx/conf.d/upstreams.conf", UPSTREAMS),
                ("/etc/nginx/sites-enabled/b.conf", SITE_B),
                ("/etc/nginx/sites-enabled/a.conf", SITE_A),
            ]
        )
    )
    http = config.http()
    assert http is not None
    assert [d.name for d in config.children(http)] == ["upstream", "server", "server"]
    assert [d.file for d in config.servers()] == [
        "/etc/nginx/sites-enabled/a.conf",
        "/etc/nginx/sites-enabled/b.conf",
    ]
    passes = config.passes()
    assert [(p.kind, p.target, p.location.args if p.location else None) for p in passes] == [
        ("fastcgi_pass", "unix:/run/php.sock", ["/a/"]),
        ("proxy_pass", "http://b", ["/"]),
    ]
    assert list(config.upstreams()) == ["b"]
    assert config.upstreams()["b"].where == "/etc/nginx/conf.d/upstreams.conf:1"
    assert config.user() is None


def test_glob_does_not_match_hidden_files_or_cross_directories() -> None:
    """Like glob(3): * stops at / and never matches a leading dot."""
    config = NginxConfig.from_files(
        {
            "/etc/nginx/nginx.conf": b"http { include sites/*; }",
            "/etc/nginx/sites/a": b"",
            "/etc/nginx/sites/.hidden": b"",
            "/etc/nginx/sites/sub/b": b"",
        },
        "/etc/nginx/nginx.conf",
    )
    assert config.resolve_include("sites/*") == ["/etc/nginx/sites/a"]


def test_user_directive_with_and_without_group() -> None:
    """user gives (user, group); a lone user means the group of the same name."""
    one = NginxConfig.from_files({"/n.conf": b"user nginx;\nevents {}\n"}, "/n.conf")
    two = NginxConfig.from_files({"/n.conf": b"user www-data adm;\n"}, "/n.conf")
    assert one.user() == ("nginx", "nginx")
    assert two.user() == ("www-data", "adm")


# -- patches -------------------------------------------------------------------------


def test_patch_changes_only_its_span() -> None:
    """Replacing a proxy_pass argument leaves every other byte of a CRLF file identical."""
    data = (CORPUS / "crlf.conf").read_bytes()
    conf = parse(data, "crlf.conf")
    proxy = next(d for d in conf.walk() if d.name == "proxy_pass")
    patch = replace_args(proxy, ["http://10.0.0.1:8081"])
    after = apply_patches(data, [patch])
    assert after == data.replace(b"10.0.0.1:8080", b"10.0.0.1:8081")
    assert after[: patch.start] == data[: patch.start]
    assert after[patch.start + len(patch.text) :] == data[patch.end :]


def test_insert_in_block_matches_indentation_and_line_endings() -> None:
    """Added lines take the block's child indentation and the file's CRLF, and carry the marker."""
    data = (CORPUS / "crlf.conf").read_bytes()
    conf = parse(data, "crlf.conf")
    location = next(d for d in conf.walk() if d.name == "location")
    line = render_directive("proxy_read_timeout", ["120s"])
    after = apply_patches(data, [insert_in_block(conf, location, [line], at_end=True)])
    assert f"            proxy_read_timeout 120s;  {MARKER}\r\n        }}".encode() in after
    assert dump(parse(after).nodes) == after
    reparsed = parse(after)
    assert [d.name for d in reparsed.walk() if d.name.startswith("proxy_")] == [
        "proxy_pass",
        "proxy_read_timeout",
    ]


def test_insert_in_block_with_tabs_after_open_brace() -> None:
    """At the top of a tab-indented block, the new line is tab-indented and everything else is untouched."""
    data = (CORPUS / "debian-nginx.conf").read_bytes()
    conf = parse(data)
    events = next(d for d in conf.directives if d.name == "events")
    after = apply_patches(data, [insert_in_block(conf, events, ["multi_accept on;"])])
    assert b"events {\n\tmulti_accept on;\n\tworker_connections 768;\n" in after
    assert after.replace(b"\tmulti_accept on;\n", b"", 1) == data


def test_remove_directive_takes_its_whole_line() -> None:
    """Removing a directive alone on its line removes the line, and nothing else."""
    data = b"server {\n    listen 80;\n    resolver 10.0.0.1;\n    location / {}\n}\n"
    conf = parse(data)
    resolver = next(d for d in conf.walk() if d.name == "resolver")
    assert apply_patches(data, [remove_directive(conf, resolver)]) == data.replace(b"    resolver 10.0.0.1;\n", b"")


def test_overlapping_patches_are_rejected() -> None:
    """Two patches over the same bytes are a bug, and refused."""
    with pytest.raises(ValueError, match="overlapping"):
        apply_patches(b"0123456789", [Patch("f", 2, 5, b"x"), Patch("f", 4, 6, b"y")])


@pytest.mark.parametrize(
    ("arg", "rendered"),
    [("http://a:80/", "http://a:80/"), ("a b", '"a b"'), ('x"y', '"x\\"y"'), ("a;b", '"a;b"'), ("", '""')],
)
def test_quote_renders_what_nginx_reads_back(arg: str, rendered: str) -> None:
    """quote() renders an argument that the lexer reads back as the same value."""
    assert quote(arg) == rendered
    assert parse(f"d {rendered};".encode()).directives[0].args == [arg]
