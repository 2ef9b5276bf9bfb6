"""The pure logic behind the real-host fixes, on text: which requests are replayed after a fix, how ssh
options are read, how far a php-fpm pool may grow, and where nginx's errors are read from."""

from __future__ import annotations

import pytest

from remediate.engine.playbook import find_playbook
from remediate.engine.replay import MAX_REPLAYS, replay_uris, replays
from remediate.errors import InventoryError
from remediate.evidence.classify import classify_text
from remediate.evidence.socket import passed_sockets, size_children
from remediate.evidence.window import merge_window
from remediate.evidence.workers import size_workers
from remediate.hosts.connect import ssh_options
from remediate.hosts.inventory import load_inventory
from remediate.nginx import NginxConfig

pytestmark = pytest.mark.unit


def _dump(files: dict[str, str]) -> NginxConfig:
    text = "".join(f"# configuration file {path}:\n{body}\n" for path, body in files.items())
    return NginxConfig.from_dump(text.encode())


SITE = _dump(
    {
        "/etc/nginx/nginx.conf": "events {}\nhttp {\n    include /etc/nginx/sites-enabled/*;\n}\n",
        "/etc/nginx/sites-enabled/default": (
            "server {\n    listen 80 default_server;\n    listen [::]:80 default_server;\n    server_name _;\n"
            "    location ~ \\.php$ { fastcgi_pass unix:/run/php/php8.2-fpm.sock; }\n}\n"
            "server {\n    listen 127.0.0.1:8080;\n    listen 443 ssl;\n    server_name shop;\n"
            "    location / { fastcgi_pass shop_php; }\n}\n"
            "upstream shop_php {\n    server\n        unix:/run/php/shop.sock;\n}\n"
        ),
    }
)


def _line(method: str, uri: str, host: str, errno: str = "(111: Connection refused)") -> str:
    return (
        f"2026/12/07 22:05:59 [error] 43#43: *19 connect() to unix:/run/php/php8.2-fpm.sock failed {errno} while "
        f'connecting to upstream, client: 10.0.0.1, server: _, request: "{method} {uri} HTTP/1.1", '
        f'upstream: "fastcgi://unix:/run/php/php8.2-fpm.sock:", host: "{host}"'
    )


def test_replays_are_the_failing_get_requests_of_the_cause_newest_first() -> None:
    """GET/HEAD lines of the cause being fixed become probes on the server that serves their Host; a POST, another
    cause's line and a duplicate do not."""
    log = "\n".join(
        [
            _line("GET", "/a.php", "example.org"),
            _line("POST", "/checkout.php", "example.org"),
            _line("GET", "/b.php?x=1", "shop"),
            _line("GET", "/b.php?x=1", "shop"),
            "2026/12/07 22:06:00 [error] 43#43: *20 upstream timed out (110: Connection timed out) while reading "
            'response header from upstream, client: 1.2.3.4, server: _, request: "GET /slow HTTP/1.1", '
            'upstream: "http://127.0.0.1:8001/slow", host: "example.org"',
        ]
    )
    specs = replays(SITE, list(classify_text(log)), find_playbook("socket").replays)
    assert specs == [
        {"url": "http://127.0.0.1:8080/b.php?x=1", "host": "shop", "method": "GET"},
        {"url": "http://127.0.0.1:80/a.php", "host": "example.org", "method": "GET"},
    ]


def test_replays_are_bounded_and_follow_a_port_in_the_host_header() -> None:
    """At most MAX_REPLAYS distinct requests; a Host header with a port picks that listen."""
    lines = [_line("GET", f"/{n}.php", "shop:8080") for n in range(MAX_REPLAYS + 4)]
    specs = replays(SITE, list(classify_text("\n".join(lines))), find_playbook("socket").replays)
    assert len(specs) == MAX_REPLAYS
    assert all(s["url"].startswith("http://127.0.0.1:8080/") for s in specs)
    assert replay_uris(SITE, ["/api/users", "not-a-uri"]) == [
        {"url": "http://127.0.0.1:80/api/users", "host": None, "method": "GET"}
    ]


def test_sockets_come_from_the_config_model_however_laid_out() -> None:
    """A socket named by a *_pass and one named by an upstream block's server split over lines are both found."""
    assert passed_sockets(SITE) == {"/run/php/php8.2-fpm.sock": "fastcgi_pass", "/run/php/shop.sock": "fastcgi_pass"}


def _host(extra: str) -> object:
    inventory = load_inventory("inv.yml", f"all:\n  hosts:\n    web01:\n      ansible_host: 127.0.0.1\n{extra}")
    return inventory.host("web01")


@pytest.mark.parametrize(
    ("line", "jump", "command"),
    [
        ("ansible_ssh_common_args: '-o ProxyJump=deploy@bastion:2222'", ("deploy@bastion:2222",), None),
        ("ansible_ssh_common_args: '-J a@b,c@d'", ("a@b", "c@d"), None),
        ("ansible_ssh_extra_args: \"-o 'ProxyCommand=ssh -W %h:%p bastion'\"", (), "ssh -W %h:%p bastion"),
        ("ansible_ssh_common_args: '-o ControlMaster=auto -o ControlPersist=60s'", (), None),
    ],
)
def test_ssh_args_are_read_as_ansible_users_write_them(line: str, jump: tuple[str, ...], command: str | None) -> None:
    """ProxyJump, -J and ProxyCommand are honoured; connection-sharing options are accepted and not needed."""
    assert ssh_options(_host(f"      {line}\n")) == (jump, command)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("line", "words"),
    [
        ("ansible_ssh_common_args: '-o StrictHostKeyChecking=no'", "StrictHostKeyChecking is refused"),
        ("ansible_ssh_common_args: '-o UserKnownHostsFile=/dev/null'", "UserKnownHostsFile is refused"),
        ("ansible_ssh_common_args: '-o Ciphers=aes128-ctr'", "does not honour -o Ciphers"),
        ("ansible_ssh_common_args: '-v'", "does not use '-v'"),
    ],
)
def test_ssh_args_that_weaken_or_would_be_ignored_are_errors(line: str, words: str) -> None:
    """An option that weakens host key checking is refused; one remediate would silently ignore is named."""
    with pytest.raises(InventoryError, match=words):
        ssh_options(_host(f"      {line}\n"))  # type: ignore[arg-type]


def test_a_pool_grows_at_most_twofold_within_half_the_free_memory() -> None:
    """pm.max_children: twice at most; no more new children than half of MemAvailable holds; None without room."""
    assert size_children(5, 40_000, 10_000_000) == 10
    assert size_children(5, 40_000, 200_000) == 7  # 100 MB of room, 40 MB a child: 2 more
    assert size_children(5, 40_000, 50_000) is None


def test_workers_never_lower_the_limit_they_run_with() -> None:
    """worker_rlimit_nofile is never set below the workers' soft limit now (1024 on a stock Debian host)."""
    assert size_workers(32, 32, None, 1024) == (64, 1024)


def _answer(conf: str, file_text: str, journal_text: str) -> dict[str, object]:
    dump = "# configuration file /etc/nginx/nginx.conf:\n" + conf + "\n"
    return {
        "commands": {"nginx_T": {"exit": 0, "stdout": dump, "stderr": ""}},
        "window": {
            "path": "/var/log/nginx/error.log",
            "text": file_text,
            "journal": {"unit": "nginx.service", "text": journal_text},
        },
    }


def test_errors_sent_to_journald_are_read_from_there_in_time_order() -> None:
    """error_log syslog:server=unix:/dev/log: the journal's lines join the file's, in nginx's time order."""
    old = "2026/12/07 22:00:00 [error] 1#1: old line\n"
    new = "debian-web nginx: 2026/12/07 22:10:00 [error] 1#1: new line\n"
    window = merge_window(_answer("error_log syslog:server=unix:/dev/log;\nevents {}\n", old, new))
    assert window["text"] == old + new
    assert "journald" in str(window["path"])


def test_errors_in_a_file_ignore_the_journal_and_remote_syslog_is_named() -> None:
    """With error_log to a file the journal's lines are not mixed in; syslog to another machine is a note."""
    window = merge_window(_answer("error_log /var/log/nginx/error.log;\nevents {}\n", "a\n", "b\n"))
    assert window["text"] == "a\n"
    window = merge_window(_answer("error_log syslog:server=192.0.2.1:514;\nevents {}\n", "a\n", "b\n"))
    assert window["text"] == "a\n" and "cannot read" in window["notes"][0]


def test_dns_answers_take_aaaa_as_nginx_does() -> None:
    """nginx's resolver asks A and AAAA: an AAAA-only name resolves; both families' addresses count."""
    from remediate.evidence.dns import merge_answers, parse_dig

    none_a = parse_dig(";; ->>HEADER<<- opcode: QUERY, status: NOERROR, id: 1\n")
    six = parse_dig(";; ->>HEADER<<- opcode: QUERY, status: NOERROR, id: 2\nv6.internal. 0 IN AAAA ::1\n")
    four = parse_dig(";; ->>HEADER<<- opcode: QUERY, status: NOERROR, id: 3\nv6.internal. 0 IN A 127.0.0.1\n")
    assert merge_answers(none_a, six) == {"status": "NOERROR", "addresses": ["::1"]}
    assert merge_answers(four, six)["addresses"] == ["127.0.0.1", "::1"]
    assert merge_answers(four, None) == four


def test_a_unit_bound_to_another_address_does_not_own_the_port() -> None:
    """127.0.0.1:8001 refused: a stopped unit serving 127.0.0.5:8001 is not its owner; the one on 127.0.0.1 is."""
    from remediate.evidence.down import unit_on_port

    units = [
        {"Id": "backend.service", "ActiveState": "failed", "command": "python3 app.py --listen 127.0.0.1:8001"},
        {"Id": "backend-blue.service", "ActiveState": "inactive", "command": "python3 app.py --listen 127.0.0.5:8001"},
    ]
    resp = {"systemd_units": {"units": units}}
    assert unit_on_port(resp, 8001, ("failed", "inactive"))[0] is None  # by port alone: two, refused
    assert unit_on_port(resp, 8001, ("failed", "inactive"), "127.0.0.1")[0] == "backend"
    assert unit_on_port(resp, 8001, ("failed", "inactive"), "127.0.0.5")[0] == "backend-blue"
    api = {"Id": "api.service", "ActiveState": "failed", "command": "api -b 0.0.0.0:8001"}
    wild = {"systemd_units": {"units": [api]}}
    assert unit_on_port(wild, 8001, ("failed",), "127.0.0.1")[0] == "api"
