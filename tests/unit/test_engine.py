"""The engine's pure logic on text: playbook loading, decisions, rendering, ini edits, the helper protocol."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from remediate.engine.host_modules import INI_MARKER, ini_set, service_restart
from remediate.engine.playbook import evaluate, find_playbook, load_playbook, load_playbooks, render
from remediate.engine.session import call_helper
from remediate.errors import InputError, Refused, RemediateError
from remediate.evidence.framework import Context, Log
from remediate.evidence.socket import parse_ini_sections
from remediate.hosts.inventory import load_inventory
from remediate.testing import FakeTransport, UnexpectedCommand


@pytest.fixture
def ctx(tmp_path: Path) -> Context:
    inv = tmp_path / "i.yml"
    inv.write_text("all:\n  hosts:\n    web01:\n      restartable_services: [php8.2-fpm]\n")
    return Context(load_inventory(inv).host("web01"))


def test_shipped_playbooks_load() -> None:
    """Every shipped playbook loads, and socket has its decisions in order."""
    books = load_playbooks()
    assert "socket" in books
    assert books["socket"].decisions[0].name == "socket-missing"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("cause: x\nsummary: y\nevidence: []\n", r"p\.yml:1: missing `decisions:`"),
        (
            "cause: x\nsummary: y\nevidence:\n  - name: a\n    collect: nope\ndecisions: []\n",
            r"p\.yml:5: unknown collector 'nope'",
        ),
        (
            "cause: x\nsummary: y\nevidence: []\ndecisions:\n  - when: true\n    reason: r\n    fix: missing\n",
            r"p\.yml:7: decision names fix 'missing'",
        ),
        (
            "cause: x\nsummary: y\nevidence: []\ndecisions:\n  - when: true\n    reason: r\n",
            r"p\.yml:5: each decision has exactly one of",
        ),
        (
            "cause: x\nsummary: y\nevidence: []\ndecisions: []\nfixes:\n  f:\n    - module: rm_rf\n",
            r"p\.yml:7: unknown module 'rm_rf'",
        ),
        ("cause: [x\n", r"p\.yml:\d+: malformed YAML"),
        ("cause: x\nsummary: y\nevidence: []\ndecisions: []\nextra: 1\n", r"p\.yml:5: unexpected key 'extra'"),
        (
            "cause: x\nsummary: y\nevidence: []\ndecisions: []\n"
            "fixes:\n  f:\n    - module: ini_set\n      with_items: []\n",
            r"p\.yml:7: unexpected key 'with_items' in a fix step",
        ),
    ],
)
def test_bad_playbook_names_file_and_line(tmp_path: Path, text: str, message: str) -> None:
    """Each playbook mistake is an InputError whose message starts with file:line."""
    path = tmp_path / "p.yml"
    path.write_text(text)
    with pytest.raises(InputError, match=message):
        load_playbook(path)


def test_user_playbooks_override_by_cause(tmp_path: Path) -> None:
    """A playbook in --playbooks DIR replaces the shipped one for its cause."""
    (tmp_path / "mine.yml").write_text(
        "cause: socket\nsummary: mine\nevidence: []\ndecisions:\n  - when: true\n    reason: r\n"
        "    outcome: nothing-to-do\n"
    )
    assert load_playbooks([str(tmp_path)])["socket"].summary == "mine"
    assert find_playbook("socket", [str(tmp_path)]).summary == "mine"
    assert find_playbook("socket").summary != "mine"


def test_render_keeps_types_and_evaluate_uses_evidence(ctx: Context) -> None:
    """A lone {{ expr }} keeps its type; mixed text renders to a string; a missing name is an error."""
    ctx.values["sockets"] = {"missing": [{"path": "/run/php.sock", "probes": ["http://a/", "http://b/"]}]}
    assert render("{{ sockets.missing[0].probes }}", ctx) == ["http://a/", "http://b/"]
    assert render("socket {{ sockets.missing[0].path }}!", ctx) == "socket /run/php.sock!"
    assert render({"mode": "0660"}, ctx) == {"mode": "0660"}
    assert evaluate("sockets.missing and not sockets.get('denied')", ctx)
    with pytest.raises(RemediateError, match="undefined"):
        evaluate("nothing.here", ctx)


def test_log_grep() -> None:
    """The log evidence counts the lines that match a pattern."""
    log = Log("/e.log", "a (13: Permission denied) b\nother\nx (13: Permission denied)\n")
    assert len(log.grep(r"Permission denied")) == 2


POOL = b"""; the www pool\r
[www]\r
user = www-data\r
listen = /run/php/php8.2-fpm.sock\r
listen.owner = nobody   ; who owns the socket\r
;listen.group = www-data\r
\r
[other]\r
listen = /run/php/other.sock\r
"""


def test_ini_set_edits_only_values_and_adds_marked_lines(ctx: Context) -> None:
    """Existing keys change only their value; a key only there commented is set on that line (Debian's
    ``;listen.mode = 0660`` beside listen.owner); other missing keys are added, marked, in the file's CRLF;
    nothing else moves."""
    ctx.files["/etc/php/www.conf"] = POOL
    plan = ini_set(
        ctx,
        {
            "path": "/etc/php/www.conf",
            "section": "www",
            "values": {"listen.owner": "www-data", "listen.group": "www-data", "listen.mode": "0660"},
        },
    )
    after = plan.changes[0].after
    assert after == POOL.replace(
        b"listen.owner = nobody   ; who owns", b"listen.owner = www-data   ; who owns"
    ).replace(
        b";listen.group = www-data\r\n",
        f"listen.group = www-data {INI_MARKER}\r\nlisten.mode = 0660 {INI_MARKER}\r\n".encode(),
    )
    assert parse_ini_sections(after.decode())["www"]["listen.owner"] == "www-data"
    assert parse_ini_sections(after.decode())["other"] == {"listen": "/run/php/other.sock"}


def test_ini_set_already_in_place_plans_nothing(ctx: Context) -> None:
    """When every value is already set, the plan is empty: nothing to do."""
    ctx.files["/p.conf"] = b"[www]\nlisten.owner = www-data\n"
    assert ini_set(ctx, {"path": "/p.conf", "section": "www", "values": {"listen.owner": "www-data"}}).empty


def test_restart_only_what_the_inventory_allows(ctx: Context) -> None:
    """A service outside restartable_services is refused; an allowed one becomes a restart action."""
    with pytest.raises(Refused, match="not in restartable_services"):
        service_restart(ctx, {"service": "mysql"})
    plan = service_restart(ctx, {"service": "php8.2-fpm"})
    assert plan.actions[0].argv == ("systemctl", "restart", "php8.2-fpm")


def test_helper_protocol_errors_are_one_clear_line(ctx: Context) -> None:
    """No python3 on the host, or a helper that crashed, gives one line naming the host."""
    missing = FakeTransport("web01", {("/usr/bin/python3",): (b"", b"sh: /usr/bin/python3: not found\n", 127)})
    with pytest.raises(RemediateError, match=r"^web01: remediate's helper gave no answer \(exit 127\)"):
        call_helper(missing, ctx.host, {"op": "collect"})
    crashed = FakeTransport("web01", {("/usr/bin/python3",): (json.dumps({"error": "OSError: boom"}).encode(), b"", 0)})
    with pytest.raises(RemediateError, match="helper failed: OSError: boom"):
        call_helper(crashed, ctx.host, {"op": "collect"})


def test_fake_transport_refuses_unknown_commands() -> None:
    """The fake raises on a command missing from its table instead of passing silently."""
    with pytest.raises(UnexpectedCommand):
        FakeTransport("h", {}).run(["rm", "-rf", "/"])


def test_fix_steps_when_loop_and_building_on_each_other(ctx: Context, tmp_path: Path) -> None:
    """`when` skips a step, `loop` repeats one with `item`, and each step edits what the one before left."""
    from remediate.engine.fixes import plan_fix

    (tmp_path / "p.yml").write_text(
        "cause: x\nsummary: y\nevidence: []\ndecisions:\n  - when: true\n    reason: r\n    fix: f\n"
        "fixes:\n  f:\n"
        "    - module: ini_set\n      loop: '{{ keys }}'\n"
        "      args: {path: /p.conf, section: www, values: \"{{ {item: '1'} }}\"}\n"
        "    - module: ini_set\n      when: skip_me\n"
        "      args: {path: /p.conf, section: www, values: {skipped: '1'}}\n"
        "    - module: ini_set\n      args: {path: /p.conf, section: www, values: {a: '2'}}\n"
    )
    book = load_playbook(tmp_path / "p.yml")
    ctx.files["/p.conf"] = b"[www]\nuser = www-data\n"
    ctx.values.update(keys=["a", "b"], skip_me=False)
    plan = plan_fix(book, "f", ctx)
    assert [c.path for c in plan.changes] == ["/p.conf"]
    assert plan.changes[0].before == b"[www]\nuser = www-data\n"
    assert plan.changes[0].after == f"[www]\nuser = www-data\na = 2 {INI_MARKER}\nb = 1 {INI_MARKER}\n".encode()
