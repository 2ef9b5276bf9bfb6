"""`remediate harden`: each rule on text (a config that has the weakness, and one that does not), the CLI's
outputs and exit codes, SARIF against the SARIF 2.1.0 schema, and configs nobody here wrote."""

from __future__ import annotations

import glob
import json
import tarfile
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from support import ROOT
from support.lab import remediate_cli

from remediate import harden
from remediate.errors import EXIT_INPUT, EXIT_OK, EXIT_REFUSED, EXIT_USAGE, RemediateError
from remediate.harden.source import read_config
from remediate.nginx.config import NginxConfig

CORPUS = ROOT / ".cache" / "corpus"
MAIN = "/etc/nginx/nginx.conf"


def _audit(http: str, *, top: str = "", events: str = "", **facts: Any) -> list[harden.Finding]:
    text = f"{top}\nevents {{ {events} }}\nhttp {{\n{http}\n}}\n"
    config = NginxConfig.from_files({MAIN: text.encode()}, MAIN)
    return harden.audit(harden.Subject(config, facts))


def _rules(findings: list[harden.Finding], rule: str) -> list[tuple[str, int]]:
    return [(f.severity, f.line) for f in findings if f.rule == rule]


GOOD_LOG = (
    "log_format upstream_timing '$remote_addr [$time_local] \"$request\" $status upstream=$upstream_addr '"
    " 'upstream_status=$upstream_status upstream_response_time=$upstream_response_time';\n"
    "access_log /var/log/nginx/access.log upstream_timing;"
)


# -- each rule: the weakness found (file:line), its absence not --------------------------------------------


def test_upstream_without_passive_health() -> None:
    """Unstated defaults and max_fails=1 with a long fail_timeout are warnings at the server's line; the
    runbook's values, or the defaults stated, are not; a lone server without backup is informational."""
    found = _audit(
        "upstream app {\n server 10.0.0.1:8080;\n server 10.0.0.2:8080 max_fails=1 fail_timeout=5m;\n"
        " server 10.0.0.3:8080 max_fails=3 fail_timeout=30s;\n server 10.0.0.4:8080 max_fails=1 fail_timeout=10s;\n"
        " server 10.0.0.9:8080 backup;\n}\n"
        "upstream solo {\n server 10.0.0.5:8080;\n}\n"
        "upstream pair {\n server 10.0.0.6:8080 max_fails=3 fail_timeout=30s;\n server 10.0.0.7:8080 backup;\n}"
    )
    assert _rules(found, "upstream-no-passive-health") == [("warning", 5), ("warning", 6), ("info", 11)]
    messages = [f.message for f in found if f.rule == "upstream-no-passive-health"]
    assert "10.0.0.1:8080" in messages[0] and "no live upstreams" in messages[1] and "solo" in messages[2]


def test_host_names_frozen_at_start() -> None:
    """proxy_pass and an upstream server to a name are flagged; IPs, sockets, upstream names, localhost, a
    name behind a variable with a resolver, and `resolve` servers are not."""
    found = _audit(
        "upstream app { server 10.0.0.1:8080; server app2.internal:8080; }\n"
        "upstream dyn { zone dyn 64k; server api.internal:8080 resolve; }\n"
        "server {\n listen 80;\n"
        " location /a { proxy_pass http://api.example.com:8080/; }\n"
        " location /b { proxy_pass http://app; }\n"
        " location /c { proxy_pass http://127.0.0.1:8080; }\n"
        " location /d { fastcgi_pass unix:/run/php/php-fpm.sock; }\n"
        " location /e { proxy_pass http://localhost:8080; }\n"
        " location /f { resolver 10.0.0.53; set $b api.example.com; proxy_pass http://$b; }\n"
        " location /g { grpc_pass grpc://grpc.example.com:50051; }\n"
        "}"
    )
    assert _rules(found, "hostname-without-resolver") == [("warning", 4), ("warning", 8), ("warning", 14)]


def test_variables_in_pass_need_a_resolver() -> None:
    """A variable host with no resolver in effect is a warning (it may hold an address); a literal name made
    per-request by a variable is an error; a resolver at server level covers its locations."""
    found = _audit(
        "server {\n listen 80;\n"
        " location /a { proxy_pass http://$arg_host; }\n"
        " location /b { proxy_pass http://api.example.com$request_uri; }\n"
        " location /c { proxy_pass http://127.0.0.1:8080$request_uri; }\n"
        "}\n"
        "server {\n listen 81;\n resolver 10.0.0.53 valid=30s;\n"
        " location / { proxy_pass http://$arg_host; }\n"
        "}"
    )
    assert _rules(found, "variable-pass-without-resolver") == [("error", 7), ("warning", 6)]


def test_upstream_timing_in_the_access_log() -> None:
    """Proxying with the combined format (stated or by default) is a warning; the runbook's format in use is
    not; a config that proxies nothing is not asked."""
    proxy = "server { listen 80; location / { proxy_pass http://127.0.0.1:8080; } }"
    assert _rules(_audit(proxy), "no-upstream-timing-log") == [("warning", 3)]
    assert _rules(_audit("access_log /var/log/a.log combined;\n" + proxy), "no-upstream-timing-log")
    defined_unused = GOOD_LOG.replace("access_log /var/log/nginx/access.log upstream_timing;", "")
    assert _rules(_audit(defined_unused + proxy), "no-upstream-timing-log")
    assert not _rules(_audit(GOOD_LOG + proxy), "no-upstream-timing-log")
    assert not _rules(_audit("server { listen 80; root /srv; }"), "no-upstream-timing-log")


def test_timeouts_raised_globally_or_connect_too_short() -> None:
    """proxy_read_timeout 300s at http or server level is flagged, in the slow location it is not; a
    proxy_connect_timeout of 1-2 s is flagged anywhere."""
    found = _audit(
        "proxy_read_timeout 300s;\n"
        "server {\n listen 80;\n fastcgi_read_timeout 10m;\n"
        " location /reports/ { proxy_read_timeout 300s; proxy_pass http://127.0.0.1:8080; }\n"
        " location /api/ { proxy_connect_timeout 2s; proxy_pass http://127.0.0.1:8080; }\n"
        " location /b/ { proxy_connect_timeout 5s; proxy_pass http://127.0.0.1:8080; }\n"
        "}"
    )
    assert _rules(found, "global-timeout-raised") == [("warning", 4), ("warning", 7), ("warning", 9)]


def test_worker_sizing_against_the_open_files_limit() -> None:
    """worker_rlimit_nofile below twice worker_connections (proxying) is flagged at its line; enough is not;
    without worker_rlimit_nofile the master's limit read on the host decides, and offline nothing is said."""
    proxy = "server { listen 80; location / { proxy_pass http://127.0.0.1:8080; } }"
    low = _audit(proxy, top="worker_rlimit_nofile 1024;", events="worker_connections 1024;")
    assert _rules(low, "worker-sizing") == [("warning", 1)]
    assert "needs 2048 open files" in next(f.message for f in low if f.rule == "worker-sizing")
    assert not _rules(
        _audit(proxy, top="worker_rlimit_nofile 4096;", events="worker_connections 1024;"), "worker-sizing"
    )
    assert not _rules(_audit(proxy, events="worker_connections 1024;"), "worker-sizing")
    on_host = _audit(proxy, events="worker_connections 1024;", nofile=1024, cpus=2)
    assert _rules(on_host, "worker-sizing") == [("warning", 2)]


def test_retries_that_repeat_a_post_or_have_no_cap() -> None:
    """non_idempotent is flagged; http_502 retries with no *_next_upstream_tries are flagged; with tries in
    effect, or under `limit_except GET`, they are not."""
    found = _audit(
        "server {\n listen 80;\n"
        " location /a { proxy_next_upstream error timeout non_idempotent; proxy_pass http://127.0.0.1:1; }\n"
        " location /b { proxy_next_upstream error timeout http_502; proxy_pass http://127.0.0.1:1; }\n"
        " location /c { proxy_next_upstream error http_502; proxy_next_upstream_tries 3;\n"
        "   proxy_pass http://127.0.0.1:1; }\n"
        " location /d { limit_except GET { proxy_next_upstream http_502; } proxy_pass http://127.0.0.1:1; }\n"
        " location /e { proxy_next_upstream error timeout; proxy_pass http://127.0.0.1:1; }\n"
        "}"
    )
    assert _rules(found, "retry-non-idempotent") == [("warning", 6), ("warning", 7)]


def test_a_custom_502_page() -> None:
    """A proxying server with no error_page 502 is informational; error_page 502 (server or http level) or a
    server that proxies nothing is not."""
    proxy = "location / { proxy_pass http://127.0.0.1:8080; }"
    found = _audit(
        f"server {{\n listen 80;\n {proxy}\n}}\n"
        f"server {{\n listen 81;\n error_page 502 503 /50x.html;\n {proxy}\n}}\n"
        "server {\n listen 82;\n root /srv;\n}"
    )
    assert _rules(found, "no-custom-502-page") == [("info", 4)]
    assert not _rules(_audit(f"error_page 500 502 /50x.html;\nserver {{ listen 80; {proxy} }}"), "no-custom-502-page")


def test_upstream_services_restart_on_failure() -> None:
    """Facts read on the backend host: a service with no restart setting is flagged at its unit or program
    file; one that restarts is not; offline (no facts) nothing is said."""
    services = {
        "app": {"manager": "supervisor", "restarts": False, "file": "/etc/supervisor/conf.d/app.conf", "line": 3,
                "setting": "autorestart=false", "host": "app01"},
        "api": {"manager": "systemd", "restarts": True, "file": "/etc/systemd/system/api.service", "line": 1},
    }  # fmt: skip
    found = _audit("", services=services)
    assert [(f.file, f.line) for f in found if f.rule == "upstream-service-no-restart"] == [
        ("/etc/supervisor/conf.d/app.conf", 3)
    ]
    assert not _rules(_audit(""), "upstream-service-no-restart")


def test_stub_status_that_localhost_may_read() -> None:
    """No stub_status, or one that denies 127.0.0.1 (deny all first, or a server-level deny all that the
    location inherits), is informational; allow 127.0.0.1 (or a /8) before deny all is not."""
    assert _rules(_audit("server { listen 80; }"), "no-stub-status") == [("info", 3)]
    denied = _audit("server { listen 80; location = /s { stub_status; deny all; allow 127.0.0.1; } }")
    assert _rules(denied, "no-stub-status") == [("info", 3)]
    inherited = _audit("server { listen 80; deny all; location = /s { stub_status; } }")
    assert _rules(inherited, "no-stub-status") == [("info", 3)]
    network = _audit("server { listen 80; deny all; location = /s { stub_status; allow 127.0.0.0/8; deny all; } }")
    assert not _rules(network, "no-stub-status")
    assert not _rules(
        _audit("server { listen 80; location = /s { stub_status; allow 127.0.0.1; deny all; } }"), "no-stub-status"
    )


def test_a_commented_out_directive_is_not_a_finding() -> None:
    """The weakness only in a comment: no finding (comments are not directives)."""
    found = _audit(
        GOOD_LOG + "\nerror_page 502 /50x.html;\n"
        "# proxy_read_timeout 300s;\n"
        "upstream app {\n # server app2.internal:8080;\n server 10.0.0.1:8080 max_fails=3 fail_timeout=30s;\n"
        " server 10.0.0.2:8080 max_fails=3 fail_timeout=30s;\n}\n"
        "server {\n listen 80;\n location = /s { stub_status; }\n"
        " location / {\n  # proxy_next_upstream non_idempotent;\n  # proxy_pass http://$arg_x;\n"
        "  proxy_pass http://app;\n }\n}"
    )
    assert found == [], found


def test_every_rule_says_why_and_the_order_is_the_issues() -> None:
    """Each rule carries the runbook section and paragraph it enforces (what --list-rules and SARIF show)."""
    assert list(harden.RULES) == list(harden.ORDER)
    for rule in harden.RULES.values():
        assert len(rule.why) > 60 and rule.section and rule.title, rule.id


# -- the command ------------------------------------------------------------------------------------------


@pytest.fixture
def weak_conf(tmp_path: Path) -> Path:
    """A small config tree with findings at several severities; one include read from the same disk."""
    (tmp_path / "conf.d").mkdir()
    (tmp_path / "conf.d" / "site.conf").write_text(
        "server {\n    listen 80;\n    location / {\n        proxy_pass http://$arg_host;\n    }\n}\n"
    )
    path = tmp_path / "nginx.conf"
    path.write_text("events {}\nhttp {\n    include conf.d/*.conf;\n    include missing.conf;\n}\n")
    return path


def test_harden_file_table_exit_codes_and_skip(weak_conf: Path) -> None:
    done = remediate_cli("harden", "--file", str(weak_conf))
    assert done.returncode == EXIT_REFUSED, done.stderr
    assert f"{weak_conf.parent}/conf.d/site.conf:4" in done.stdout and "variable-pass-without-resolver" in done.stdout
    assert "include missing.conf: no such file" in done.stdout and "finding(s)" in done.stdout
    assert remediate_cli("harden", "--file", str(weak_conf), "--fail-on", "error").returncode == EXIT_OK
    skipped = remediate_cli("harden", "--file", str(weak_conf), "--json", "--skip", "variable-pass-without-resolver",
                            "no-upstream-timing-log", "--fail-on", "warning")  # fmt: skip
    data = json.loads(skipped.stdout)
    assert skipped.returncode == EXIT_OK and {f["rule"] for f in data["findings"]} == {
        "no-custom-502-page",
        "no-stub-status",
    }


@pytest.mark.parametrize(
    ("argv", "code", "says"),
    [
        (["harden"], EXIT_USAGE, "give --host NAME, --limit PATTERN or --file FILE"),
        (["harden", "--file", "/nonexistent/nginx.conf"], EXIT_INPUT, "no such file"),
        (["harden", "--file", "{broken}", "--skip", "no-such-rule"], EXIT_USAGE, "no-such-rule: no such rule"),
    ],
)
def test_bad_input_is_one_line(argv: list[str], code: int, says: str) -> None:
    done = remediate_cli(*argv)
    assert done.returncode == code and says in done.stderr, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr


def test_an_unparsable_config_is_one_line_with_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "nginx.conf"
    path.write_text("http {\n  server {\n    listen 80\n  }\n")
    done = remediate_cli("harden", "--file", str(path))
    assert done.returncode == EXIT_INPUT and f"{path}:" in done.stderr and len(done.stderr.splitlines()) == 1


def test_an_nginx_t_dump_is_read_whole(tmp_path: Path) -> None:
    dump = (
        b"nginx: the configuration file /etc/nginx/nginx.conf syntax is ok\n"
        b"# configuration file /etc/nginx/nginx.conf:\nevents {}\nhttp { include /etc/nginx/conf.d/*.conf; }\n\n"
        b"# configuration file /etc/nginx/conf.d/a.conf:\n"
        b"upstream u { server 10.0.0.1:80; server 10.0.0.2:80; }\n\n"
    )
    path = tmp_path / "dump.txt"
    path.write_bytes(dump[dump.index(b"# configuration") :])
    data = json.loads(remediate_cli("harden", "--file", str(path), "--json").stdout)
    assert {(f["rule"], f["file"], f["line"]) for f in data["findings"] if f["rule"].startswith("upstream")} == {
        ("upstream-no-passive-health", "/etc/nginx/conf.d/a.conf", 1)
    }


def _sarif_schema() -> dict[str, Any]:
    archive = CORPUS / "microsoft-jest-sarif-1.0.0-beta.0.tgz"
    assert archive.exists(), f"{archive} is missing: run scripts/setup.sh (it fetches the test corpora)"
    with tarfile.open(archive) as tar:
        member = tar.extractfile("package/lib/schemas/sarif-2.1.0-rtm.5.json")
        assert member is not None
        return dict(json.load(member))


def test_sarif_validates_against_the_sarif_2_1_0_schema(weak_conf: Path) -> None:
    """--sarif: a SARIF 2.1.0 log that the official JSON schema accepts, each result at its file and line,
    every rule described with its runbook paragraph."""
    done = remediate_cli("harden", "--file", str(weak_conf), "--sarif")
    assert done.returncode == EXIT_REFUSED, done.stderr
    log = json.loads(done.stdout)
    jsonschema.Draft4Validator(_sarif_schema()).validate(log)
    run = log["runs"][0]
    assert [r["id"] for r in run["tool"]["driver"]["rules"]] == list(harden.ORDER)
    located = {(r["ruleId"], r["locations"][0]["physicalLocation"]["artifactLocation"]["uri"],
                r["locations"][0]["physicalLocation"]["region"]["startLine"]) for r in run["results"]}  # fmt: skip
    assert ("variable-pass-without-resolver", Path(weak_conf.parent / "conf.d" / "site.conf").as_uri(), 4) in located
    broken = dict(log, version="2.0")
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft4Validator(_sarif_schema()).validate(broken)


# -- configs nobody here wrote ----------------------------------------------------------------------------


def _foreign_configs(tmp_path: Path) -> list[Path]:
    archive = CORPUS / "gixy_ng-0.2.59.tar.gz"
    assert archive.exists(), f"{archive} is missing: run scripts/setup.sh (it fetches the test corpora)"
    with tarfile.open(archive) as tar:
        members = [m for m in tar.getmembers() if m.name.endswith(".conf") and m.isfile()]
        tar.extractall(tmp_path, members=members, filter="data")
    found = [Path(p) for p in sorted(glob.glob(f"{tmp_path}/**/*.conf", recursive=True))]
    assert len(found) > 300
    return found


def _check_foreign(path: Path) -> tuple[int, int]:
    """harden over ``path``: (findings, 1 if nginx would refuse it too); a finding never on a comment line."""
    try:
        config, _ = read_config(path)
    except RemediateError:
        return 0, 1  # a config our parser refuses (an unbalanced brace...): one line, as nginx would
    findings = harden.audit(harden.Subject(config))
    for f in findings:
        line = Path(f.file).read_text(errors="replace").splitlines()[f.line - 1].strip()
        assert not line.startswith("#"), (f, line)
    return len(findings), 0


def test_configs_nobody_here_wrote_never_crash_nor_flag_comments(tmp_path: Path) -> None:
    """gixy-ng's 320 test configs (from PyPI) and Debian's /etc/nginx tree: harden never crashes, and no
    finding points at a commented-out line."""
    paths = _foreign_configs(tmp_path)
    totals = [_check_foreign(p) for p in paths]
    assert sum(t[0] for t in totals) > 100, "the rules found something in 300 configs"
    assert sum(t[1] for t in totals) < len(paths) // 10
    debian = Path("/etc/nginx/nginx.conf")
    assert debian.exists(), "Debian's nginx package provides /etc/nginx (scripts/setup.sh installs it)"
    _check_foreign(debian)
    done = remediate_cli("harden", "--file", str(debian))
    assert done.returncode in (EXIT_OK, EXIT_REFUSED) and "Traceback" not in done.stderr, done.stderr
