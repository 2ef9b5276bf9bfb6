"""The error-log classifier against a corpus of every message form nginx emits for the seven causes."""

from __future__ import annotations

import gzip
import json
import subprocess
import time
from pathlib import Path

import pytest
from support import TESTS
from support.lab import cli_argv

from remediate.engine.diagnose import access_peers, offline
from remediate.evidence.classify import LABELS, classify, classify_text, label_of
from remediate.hosts.values import parse_since
from remediate.hostside import log_window

CORPUS = TESTS / "corpus" / "errorlog" / "labelled.log"
FROM_SOURCE = CORPUS.with_name("from-source.tsv")


def _corpus() -> list[tuple[str, bytes]]:
    rows = []
    for raw in CORPUS.read_bytes().splitlines():
        if raw.startswith(b"#"):
            continue
        label, line = raw.split(b"\t", 1)
        rows.append((label.decode(), line))
    return rows


def test_corpus_covers_every_label_ten_times() -> None:
    """At least 10 lines per cause and per non-cause label, so each label's check means something."""
    counts = {label: sum(1 for lab, _ in _corpus() if lab == label) for label in LABELS}
    assert all(n >= 10 for n in counts.values()), counts


def test_every_corpus_line_gets_its_label() -> None:
    """Each line, alone and in one text together, gets the label written beside it."""
    rows = _corpus()
    text = b"\n".join(line for _, line in rows).decode("utf-8", "surrogateescape")
    assert classify(text) == [label for label, _ in rows]
    for label, line in rows:
        assert label_of(line.decode("utf-8", "surrogateescape")) == label, line


def _from_source() -> list[list[str]]:
    text = FROM_SOURCE.read_text(encoding="utf-8")
    return [line.split("\t") for line in text.splitlines() if not line.startswith("#")]


def test_corpus_from_nginx_source_is_labelled_right() -> None:
    """The corpus built from nginx's message table (build.py): at least 97 % right, no label under 90 %."""
    rows = _from_source()
    right: dict[str, list[bool]] = {}
    wrong = []
    for label, _source, _errno, _platform, _prefix, line in rows:
        got = label_of(line)
        right.setdefault(label, []).append(got == label)
        if got != label:
            wrong.append((label, got, line[:200]))
    overall = sum(map(sum, right.values())) / len(rows)
    per_label = {label: sum(ok) / len(ok) for label, ok in right.items()}
    assert overall >= 0.97, (overall, wrong)
    assert min(per_label.values()) >= 0.90, (per_label, wrong)
    # in one text too: the scan over a whole window gives each line the same label as alone
    assert classify("\n".join(r[5] for r in rows)) == [label_of(r[5]) for r in rows]


def test_corpus_from_nginx_source_covers_the_table() -> None:
    """300+ lines; every label 20 times; every errno, platform and prefix family; every table row used."""
    from remediate.evidence.classify import _MESSAGE, _STDERR_MESSAGE, ERRNOS, MESSAGES

    rows = _from_source()
    assert len(rows) >= 300
    labels = {label: sum(1 for r in rows if r[0] == label) for label in LABELS}
    assert min(labels.values()) >= 20, labels
    assert set(ERRNOS) - {"EPERM"} <= {r[2] for r in rows}, "an errno of the table has no line"
    assert {"linux", "musl", "freebsd", "macos"} <= {r[3] for r in rows}
    prefixes = {r[4].removesuffix("+cut") for r in rows}
    assert {"none", "syslog", "journald-short", "journald-cat", "compose", "docker-json", "cri"} <= prefixes
    assert any(r[4].endswith("+cut") and len(r[5].encode()) >= 2000 for r in rows)
    assert any(r[5].startswith("nginx: [emerg]") and r[0] == "dns" for r in rows)
    used = {m.lastgroup for r in rows if (m := _MESSAGE.search(r[5]) or _STDERR_MESSAGE.search(r[5]))}
    assert used == {m.name for m in MESSAGES}
    assert all(r[1].startswith("src/") for r in rows), "every line cites the source that logs it"


def test_corpus_from_nginx_source_is_what_build_py_writes() -> None:
    """The corpus is generated, not hand-edited: build.py's rows are the file's rows."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("corpus_build", FROM_SOURCE.with_name("build.py"))
    assert spec is not None and spec.loader is not None
    build = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(build)
    assert [r[0] for r in build.rows()] == [r[0] for r in _from_source()]
    assert len(build.rows()) == len(_from_source())


def test_look_alikes_from_other_phases_stay_other() -> None:
    """A client's timeout or TLS handshake, FastCGI's stderr quoting a refused connect, a duplicate header
    nginx ignored, a cut line whose action is gone: none is a cause."""
    head = "2026/11/21 10:00:00 [error] 7#7: *1 "
    for message in (
        "client timed out (110: Connection timed out) while reading client request headers, client: ::1",
        'FastCGI sent in stderr: "connect() failed (111: Connection refused) while connecting to upstream"',
        "SSL_do_handshake() failed (SSL: error:0A00006C:SSL routines::bad key share) while SSL handshaking, client: x",
        'upstream sent duplicate header line: "A: 1", previous value: "A: 2", ignored while reading response header',
        "recv() failed (104: Connection reset by peer) while reading client request line, client: 10.0.0.1",
        'recv() failed (104: Connection reset by peer), client: 10.0.0.1, request: "GET /x while reading upstream',
    ):
        assert label_of(head + message) == "other", message


def test_words_in_the_request_or_uri_do_not_count() -> None:
    """A URI or file name containing a cause's words, even a whole fake head, stays `other`."""
    line = (
        '2026/04/04 10:30:44 [error] 1#1: *5 open() "/x/] 1#1: *2 connect() failed (111: Connection refused) while '
        'connecting to upstream" failed (2: No such file or directory), client: ::1, request: "GET / HTTP/1.1"'
    )
    assert classify(line) == ["other"]


def test_lines_carry_time_level_and_peer() -> None:
    """Each labelled line has its time, level and the upstream peer (IPv6 and unix sockets too)."""
    text = b"\n".join(line for _, line in _corpus()).decode("utf-8", "surrogateescape")
    lines = list(classify_text(text))
    ipv6 = next(line for line in lines if "[2001:db8::20]" in line.text)
    assert (ipv6.label, ipv6.level, ipv6.peer) == ("down", "error", "[2001:db8::20]:8080")
    sock = next(line for line in lines if line.label == "socket")
    assert sock.level == "crit" and sock.peer == "unix:/run/php/php8.2-fpm.sock"


def _stamp(t: float) -> str:
    return time.strftime("%Y/%m/%d %H:%M:%S", time.localtime(t))


def test_window_reads_from_the_end_and_into_rotated_files(tmp_path: Path) -> None:
    """Only the window's lines come back; a window older than the file's start continues into .1.gz."""
    now = time.time()
    log = tmp_path / "error.log"
    old = "".join(f"{_stamp(now - 7200 + i)} [error] 1#1: *1 old {i}\n" for i in range(3000))
    new = "".join(f"{_stamp(now - 300 + i)} [error] 1#1: *1 new {i}\n" for i in range(100))
    log.write_text(old + new)
    window = log_window(str(log), 900, 1 << 20, now_ts=now)
    assert window["text"] == new and not window["truncated"]
    rotated = "".join(f"{_stamp(now - 1500 + i)} [error] 1#1: *1 rotated {i}\n" for i in range(1000))
    with gzip.open(tmp_path / "e2.log.1.gz", "wt") as fh:
        fh.write(rotated)
    (tmp_path / "e2.log").write_text(new)
    both = log_window(str(tmp_path / "e2.log"), 900, 1 << 20, now_ts=now)
    assert both["text"].endswith(new) and "rotated 999\n" in both["text"] and "rotated 599\n" not in both["text"]
    assert [f["path"].rsplit("/", 1)[1] for f in both["files"]] == ["e2.log", "e2.log.1.gz"]


def test_offline_diagnosis_names_the_cause_of_the_window(tmp_path: Path) -> None:
    """--log FILE: the window ends at the file's newest line; older causes fall outside it."""
    now = time.time()
    log = tmp_path / "error.log"
    refused = "connect() failed (111: Connection refused) while connecting to upstream, client: ::1"
    sock = "connect() to unix:/run/php.sock failed (13: Permission denied) while connecting to upstream"
    log.write_text(
        f"{_stamp(now - 7200)} [error] 1#1: *1 {refused}\n"
        + "".join(f"{_stamp(now - 60 + i)} [crit] 1#1: *2 {sock}, client: 10.0.0.{i}\n" for i in range(5))
    )
    result = offline(str(log), parse_since("15m"))
    assert result.verdict == "socket" and [f.label for f in result.findings] == ["socket"]
    assert result.findings[0].count == 5


def test_cli_per_line_labels_every_input_line(tmp_path: Path) -> None:
    """`diagnose --log - --json --per-line`: one JSON object per input line, numbered, with its label."""
    rows = _corpus()
    data = b"\n".join(line for _, line in rows) + b"\n"
    done = subprocess.run(
        cli_argv("diagnose", "--log", "-", "--json", "--per-line"), input=data, capture_output=True, check=False
    )
    assert done.returncode == 0, done.stderr
    out = [json.loads(line) for line in done.stdout.decode().splitlines()]
    assert out == [{"line": n, "label": label} for n, (label, _) in enumerate(rows, 1)]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--log", "x", "--host", "web01"], "give one of --host NAME, --limit PATTERN"),
        (["--since", "soon", "--log", "-"], "not a duration"),
        (["--per-line", "--log", "-"], "--per-line needs --json and --log"),
        (["--log", "/nonexistent/error.log"], "cannot read /nonexistent/error.log"),
    ],
)
def test_cli_bad_input_is_one_line(args: list[str], message: str) -> None:
    """Bad input: one line naming the problem, a documented exit code, no traceback."""
    done = subprocess.run(cli_argv("diagnose", *args), input=b"", capture_output=True, check=False)
    assert done.returncode in (2, 5), done
    assert message in done.stderr.decode() and "Traceback" not in done.stderr.decode()
    assert len(done.stderr.decode().strip().splitlines()) == 1


def test_access_log_peers_say_which_peer_fails() -> None:
    """With $upstream_addr/$upstream_status in the access log, each peer's attempts and failures are counted."""
    text = (
        '10.0.0.5 - - [04/Apr/2026:10:30:44 +0000] "GET / HTTP/1.1" 200 15 upstream=10.10.10.21:8080 '
        "upstream_status=200 upstream_response_time=0.004 request_time=0.004\n"
        '10.0.0.5 - - [04/Apr/2026:10:30:45 +0000] "GET / HTTP/1.1" 200 15 upstream=10.10.10.20:8080, '
        "10.10.10.21:8080 upstream_status=502, 200 upstream_response_time=0.001, 0.003 request_time=0.004\n"
        '10.0.0.5 - - [04/Apr/2026:10:30:46 +0000] "GET / HTTP/1.1" 502 157 upstream=10.10.10.20:8080 '
        "upstream_status=502 upstream_response_time=0.001 request_time=0.001\n"
        '10.0.0.5 - - [04/Apr/2026:10:30:47 +0000] "GET /static.css HTTP/1.1" 200 9 upstream=- upstream_status=-\n'
    )
    assert access_peers(text) == {
        "10.10.10.20:8080": {"attempts": 2, "failed": 2},
        "10.10.10.21:8080": {"attempts": 2, "failed": 0},
    }


@pytest.mark.parametrize("block", [64, 97, 4096, 1 << 20])
def test_window_start_is_exact_across_block_boundaries(tmp_path: Path, block: int) -> None:
    """The backwards reader finds the same first in-window line as a forward scan, whatever the block size."""
    from remediate.hostside import _window_start

    now = time.time()
    log = tmp_path / "error.log"
    lines = [f"{_stamp(now - 2000 + i * 7)} [error] 1#1: *{i} {'x' * (i % 150)}\n" for i in range(300)]
    data = "".join(lines).encode()
    log.write_bytes(data)
    for since in (0, 60, 700, 1500, 5000):
        cutoff = _stamp(now - since).encode()
        naive = next((data.index(line.encode()) for line in lines if line[:19].encode() >= cutoff), len(data))
        start, end, whole = _window_start(str(log), cutoff, block=block)
        assert (start, end) == (naive, len(data)) and whole == (naive == 0)


def test_window_over_the_cap_keeps_the_newest_lines_and_says_truncated(tmp_path: Path) -> None:
    """A window larger than max_bytes returns its newest whole lines, at most max_bytes, with truncated true."""
    now = time.time()
    log = tmp_path / "error.log"
    lines = [f"{_stamp(now - 500 + i)} [error] 1#1: *1 line {i}\n" for i in range(400)]
    log.write_text("".join(lines))
    window = log_window(str(log), 900, 2000, now_ts=now)
    assert window["truncated"] is True and window["bytes"] <= 2000
    assert window["text"].endswith(lines[-1]) and window["text"].splitlines(keepends=True)[0] in lines
    assert not log_window(str(log), 900, 1 << 20, now_ts=now)["truncated"]


def test_offline_diagnosis_streams_the_window_in_pieces(tmp_path: Path) -> None:
    """A window bigger than one read block is classified piecewise with the same counts as in one piece."""
    from remediate.engine.diagnose import summarize

    now = time.time()
    log = tmp_path / "error.log"
    sock = "connect() to unix:/run/php.sock failed (13: Permission denied) while connecting to upstream"
    refused = "connect() failed (111: Connection refused) while connecting to upstream, client: ::1"
    text = "".join(
        f"{_stamp(now - 600 + i // 100)} [crit] 1#1: *{i} {sock if i % 3 else refused}, client: 10.0.0.1\n"
        for i in range(60000)
    )
    log.write_text(text)
    assert len(text) > (8 << 20)  # more than one of read_span's blocks
    result = offline(str(log), parse_since("15m"))
    whole, other = summarize(text)
    assert [(f.label, f.count) for f in result.findings] == [(f.label, f.count) for f in whole]
    assert result.other == other and result.window["bytes"] == len(text)


def test_collectors_read_the_log_through_the_classifier(tmp_path: Path) -> None:
    """The playbooks' collectors see what diagnose sees: a FreeBSD refused connect behind a syslog prefix is the
    down playbook's refused upstream; a musl-spelled timeout is the timeout playbook's; a client's timeout is not."""
    from support.lab import text_context

    from remediate.evidence.down import _read_refused
    from remediate.evidence.framework import Log
    from remediate.evidence.timeout import _latest_timeout

    site = b"http { server { listen 80; location / { proxy_pass http://10.0.0.9:8080; } } }\n"
    ctx = text_context(tmp_path, site)
    fields = ', client: 10.1.1.1, server: x, request: "GET /a HTTP/1.1", upstream: "http://10.0.0.9:8080/a", host: "x"'
    ctx.by_collector["error_log"] = Log(
        "/e.log",
        "Nov 21 10:00:01 web01 nginx: 2026/11/21 10:00:01 [error] 5#5: *1 connect() failed (61: Connection refused)"
        f" while connecting to upstream{fields}\n"
        "2026/11/21 10:00:02 [error] 5#5: *2 client timed out (110: Connection timed out) while reading upstream"
        f"{fields}\n"
        "web-1  | 2026/11/21 10:00:03 [error] 5#5: *3 upstream timed out (110: Operation timed out) while reading "
        f"response header from upstream{fields}\n",
    )
    refused = _read_refused(ctx, {}, {})["latest"]
    assert (refused["address"], refused["count"], refused["uri"]) == ("10.0.0.9:8080", 1, "/a")
    timed = _latest_timeout(ctx)
    assert timed is not None and timed["directive"] == "proxy_read_timeout" and timed["count"] == 1
    assert "*3 upstream timed out" in timed["example"]
