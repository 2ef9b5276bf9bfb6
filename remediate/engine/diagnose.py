"""Name the cause of a 502 from the evidence, say why, and say "I don't know" when that is the truth.

1. The error log's window (``since`` seconds back, read from the end on the host, rotated files
   included) is classified line by line (remediate.evidence.classify).
2. Each cause the log shows is confirmed or contradicted by its playbook's own evidence, run in
   --check mode: the socket's stat, ss on the backend host, the resolver's answer, the backend
   asked directly. A playbook that decides a fix confirms the cause; one that refuses past its
   first check confirms it but cannot fix it; one that has nothing to do says it is over.
3. The verdict: one cause, ``ambiguous`` (several need fixing), or ``unknown``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from remediate.evidence.classify import classify_text
from remediate.evidence.framework import Context
from remediate.hosts.inventory import Host, Inventory
from remediate.transport.base import Transport

__all__ = [
    "Diagnosis",
    "Finding",
    "access_peers",
    "choose_cause",
    "diagnose",
    "offline",
    "summarize",
]

_ACCESS_5XX = re.compile(r'" 50[24] ')
# The runbook's upstream_timing log_format: upstream=$upstream_addr upstream_status=$upstream_status
_ACCESS_UPSTREAM = re.compile(r"upstream(?:_addr)?=(?P<addrs>\S+(?:, \S+)*) upstream_status=(?P<codes>\S+(?:, \S+)*)")


_ACCESS_TIME = re.compile(r"\[(\d\d)/([A-Z][a-z]{2})/(\d{4}):(\d\d:\d\d:\d\d) [^\]]*\] \"[^\"]*\" 50[24] ")
_MONTHS = {
    m: i for i, m in enumerate(["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"], 1)
}


def _access_5xx_times(text: str) -> list[str]:
    """The times of the access log's 502/504 lines, in the error log's form (YYYY/MM/DD HH:MM:SS, local)."""
    found = _ACCESS_TIME.finditer(text)
    return [f"{m.group(3)}/{_MONTHS.get(m.group(2), 0):02d}/{m.group(1)} {m.group(4)}" for m in found]


def access_peers(text: str) -> dict[str, dict[str, int]]:
    """Per upstream peer, from an access log that carries $upstream_addr and $upstream_status: how many
    attempts it got and how many failed (502/504, or no answer). nginx lists every peer it tried,
    comma-separated, so a retried request counts against each peer that failed it."""
    peers: dict[str, dict[str, int]] = {}
    for m in _ACCESS_UPSTREAM.finditer(text):
        addrs = [a.strip() for a in m.group("addrs").split(",")]
        codes = [c.strip() for c in m.group("codes").split(",")]
        for addr, code in zip(addrs, codes, strict=False):
            if addr in ("-", ""):
                continue
            entry = peers.setdefault(addr, {"attempts": 0, "failed": 0})
            entry["attempts"] += 1
            if code in ("502", "504", "-"):
                entry["failed"] += 1
    return dict(sorted(peers.items(), key=lambda kv: -kv[1]["failed"]))


@dataclass
class Finding:
    """One cause the log shows, with the proof behind it."""

    label: str
    count: int = 0
    first: str = ""
    last: str = ""
    example: str = ""
    peers: dict[str, int] = field(default_factory=dict)
    cause: str = ""  # the confirmed cause (proxy-pass for some `down` lines)
    confidence: str = "log only"  # high | confirmed, not fixable | over | contradicted | log only
    fixable: bool = False
    facts: list[dict[str, str]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "cause": self.cause or self.label,
            "confidence": self.confidence,
            "fixable": self.fixable,
            "lines": {"count": self.count, "first": self.first, "last": self.last, "example": self.example},
            "peers": self.peers,
            "facts": self.facts,
        }


@dataclass
class Diagnosis:
    host: str
    window: dict[str, Any]
    findings: list[Finding]
    other: int = 0
    verdict: str = "unknown"  # a cause, "ambiguous" or "unknown"
    access_peers: dict[str, dict[str, int]] = field(default_factory=dict)
    reason: str = ""
    round_trips: int = 0

    @property
    def causes(self) -> list[str]:
        return [f.cause or f.label for f in self.findings if f.fixable]

    def to_json(self) -> dict[str, Any]:
        return {
            "host": self.host,
            "verdict": self.verdict,
            "reason": self.reason,
            "window": self.window,
            "findings": [f.to_json() for f in self.findings],
            "other_lines": self.other,
            "access_log_peers": self.access_peers,
            "round_trips": self.round_trips,
        }


def summarize(text: str) -> tuple[list[Finding], int]:
    """Group the classified lines by label: count, first and last seen, one example, peers."""
    tally = Tally()
    tally.add(text)
    return tally.result()


class Tally:
    """Findings by label, added text by text (so a window can be classified in bounded pieces)."""

    def __init__(self) -> None:
        self.by_label: dict[str, Finding] = {}
        self.matched = 0
        self.total = 0

    def add(self, text: str) -> None:
        """Classify ``text`` (whole lines) and count it in."""
        for line in classify_text(text):
            self.matched += 1
            found = self.by_label.setdefault(line.label, Finding(line.label, first=line.time))
            found.count += 1
            found.last = line.time
            found.example = line.text
            if line.peer:
                found.peers[line.peer] = found.peers.get(line.peer, 0) + 1
        self.total += text.count("\n") + (0 if text.endswith("\n") or not text else 1)

    def result(self) -> tuple[list[Finding], int]:
        order = sorted(self.by_label.values(), key=lambda f: (-f.count, f.label))
        return order, self.total - self.matched


def diagnose(
    host: Host,
    inventory: Inventory,
    *,
    since: float = 900,
    transport: Transport | None = None,
    accept_new_host_key: bool = False,
    playbooks: list[str] | None = None,
) -> Diagnosis:
    """Read the window on ``host``, classify it, and confirm each cause with its playbook's evidence.

    One round trip to ``host`` for the window and every candidate playbook's evidence, then one
    to each host that must be asked (nginx's host again for what the first answer pointed at, a
    backend host); ``round_trips`` in the result counts them."""
    from remediate.engine.session import Transports, call_helper

    pool = Transports(host, transport, accept_new_host_key)
    try:
        diagnosis, _ = gather_candidates(
            host, inventory, pool, lambda request: call_helper(pool.get(host), host, request), since=since,
            playbooks=playbooks,
        )  # fmt: skip
        diagnosis.round_trips = pool.round_trips
        return diagnosis
    finally:
        pool.close()


def gather_candidates(
    host: Host,
    inventory: Inventory,
    pool: Any,
    first_call: Callable[[dict[str, Any]], dict[str, Any]],
    *,
    since: float | None = None,
    playbooks: list[str] | None = None,
    run_id: str = "diagnose",
    options: dict[str, Any] | None = None,
) -> tuple[Diagnosis, dict[str, Context]]:
    """The diagnosis, and each candidate playbook's evidence (by cause) for a run to go on from.

    ``first_call`` sends the one request to ``host`` (a run sends it through its locked session);
    ``pool`` opens the other hosts' transports (remediate.engine.session.Transports)."""
    from remediate.engine.gather import ask_hosts, evidence_request, finish_evidence, read_evidence, remote_asks
    from remediate.engine.playbook import candidates, load_playbooks
    from remediate.errors import Refused
    from remediate.evidence.window import merge_window, window_request

    since = 900.0 if since is None else since
    loaded = load_playbooks(playbooks)
    by_label = candidates(loaded)  # label → the playbooks that confirm it, in rank order (their `confirms:`)
    books = {cause: loaded[cause] for causes in by_label.values() for cause in causes}
    request = evidence_request(host, list(books.values()), since=since)
    request["window"] = window_request(host, since)
    if host["nginx_access_log"] not in request["logs"]:
        request["logs"].append(host["nginx_access_log"])
        request["log_bytes"] = max(request.get("log_bytes", 0), 262144)
    answer = first_call(request)
    window = merge_window(answer)
    findings, other = summarize(window["text"])
    access = answer.get("logs", {}).get(host["nginx_access_log"], {}).get("text", "")
    diagnosis = Diagnosis(
        host.name, {k: window.get(k) for k in ("path", "cutoff", "files", "truncated", "bytes", "notes")}, findings,
        other,
    )  # fmt: skip
    diagnosis.access_peers = access_peers(access)
    confirmable = [f for f in findings if f.label in by_label]
    newest = max((f.last for f in confirmable if f.last), default="")
    # 502s in the access log after the newest error-log cause line: a failure the error log does not show
    # (a proxy_pass that rewrites the path), hidden behind older lines of causes since fixed.
    asked = {c for f in confirmable for c in by_label[f.label]}
    if confirmable and "proxy-pass" not in asked and any(t > newest for t in _access_5xx_times(access)):
        confirmable = []
    if not confirmable and _ACCESS_5XX.search(access):
        # 502s with no error-log cause: a proxy_pass that rewrites the path shows only there.
        found = Finding("access-log-502", count=len(_ACCESS_5XX.findall(access)), example="(access log)")
        findings.append(found)
        confirmable = [found]
    causes = list(dict.fromkeys(c for f in confirmable for c in by_label[f.label]))
    options = options or {}
    contexts: dict[str, Context] = {}
    failed: dict[str, str] = {}  # a playbook whose evidence cannot be read (a route remediate cannot tell)
    asks: dict[str, tuple[Host, dict[str, Any]]] = {}
    for c in causes:
        try:
            contexts[c] = read_evidence(host, books[c], answer, inventory, options)
            # Second phase: what every candidate must ask, one round trip per host asked.
            asks.update({f"{c}/{name}": target for name, target in remote_asks(contexts[c], books[c]).items()})
        except Refused as exc:
            failed[c] = str(exc)
    no_live = next((f for f in findings if f.label == "no-live-upstreams"), None)
    if no_live is not None:
        asks.update(_peer_asks(host, answer, no_live, inventory, options))
    remote = ask_hosts(pool, run_id, asks) if asks else {}
    for c in list(contexts):
        mine = {key.split("/", 1)[1]: value for key, value in remote.items() if key.startswith(c + "/")}
        try:
            contexts[c] = finish_evidence(contexts[c], books[c], answer, mine)
        except Refused as exc:
            failed[c] = str(exc)
            del contexts[c]
    for found in confirmable:
        for cause in by_label[found.label]:
            outcome = ("refused", {}, failed[cause]) if cause in failed else _outcome(books[cause], contexts[cause])
            _judge(found, cause, *outcome)
            if found.fixable:
                break
    if no_live is not None:
        _consequence(no_live, confirmable, remote)
    _verdict(diagnosis)
    return diagnosis, contexts


def _outcome(book: Any, ctx: Context) -> tuple[str, dict[str, Any], str]:
    """What ``book`` would do with this evidence, as run --check says it: planned, refused or nothing-to-do."""
    import dataclasses

    from remediate.engine.fixes import plan_fix
    from remediate.engine.playbook import render
    from remediate.errors import Refused, RemediateError

    try:
        decision, reason = book.decide(ctx)
    except RemediateError as exc:
        return "failed", {}, str(exc)
    facts = {"name": decision.name, "reason": reason, "outcome": decision.outcome}
    if decision.outcome == "refuse":
        return "refused", facts, str(render(decision.refuse, ctx))
    if decision.outcome == "nothing-to-do":
        return "nothing-to-do", facts, reason
    try:
        # on a copy: planning advances the files, and a run goes on from the evidence as it was read
        copy = dataclasses.replace(ctx, values=dict(ctx.values), files=dict(ctx.files), routes=dict(ctx.routes))
        plan = plan_fix(book, decision.fix or "", copy)
    except Refused as exc:
        return "refused", facts, str(exc)
    return ("nothing-to-do" if plan.empty else "planned"), facts, ""


def _judge(found: Finding, cause: str, outcome: str, decision: dict[str, Any], message: str) -> None:
    """Fold one playbook's outcome on the evidence into the finding."""
    from remediate.engine.playbook import find_playbook

    fact = {"playbook": cause, "outcome": outcome, "decision": decision.get("name", ""), "reason": ""}
    fact["reason"] = decision.get("reason", "") or message
    found.facts.append(fact)
    first = find_playbook(cause).decisions[0].name if decision else ""
    if outcome == "planned":
        found.cause, found.confidence, found.fixable = cause, "high", True
    elif outcome == "refused" and decision.get("name") not in (first, None, ""):
        if found.confidence not in ("high",):
            found.cause, found.confidence = found.cause or cause, "confirmed, not fixable"
    elif outcome == "nothing-to-do" and found.confidence == "log only":
        found.cause, found.confidence = cause, "over"
    elif found.confidence == "log only":
        found.confidence = "contradicted"


_NO_LIVE_UPSTREAM = re.compile(r', upstream: \\?"(?:[a-z]+://)?(?P<name>[^/":]+)')


def _peer_asks(
    host: Host, answer: dict[str, Any], found: Finding, inventory: Inventory, options: dict[str, Any]
) -> dict[str, tuple[Host, dict[str, Any]]]:
    """ "no live upstreams" alone: ask each server of that upstream block, from nginx's host, whether it answers."""
    from remediate.evidence.framework import Context, new_request
    from remediate.evidence.registry import interpret
    from remediate.evidence.routing import pass_addresses

    m = _NO_LIVE_UPSTREAM.search(found.example)
    ctx = interpret(
        Context(host, inventory=inventory, values={"options": options}), [("nginx", "nginx_config", {})], answer
    )
    if m is None or ctx.config is None or m.group("name") not in ctx.config.upstreams():
        return {}
    peers = pass_addresses(ctx.config, m.group("name"))
    request = new_request(http={peer: f"http://{peer}/" for peer in peers[:8]})
    found.peers = {peer: found.count for peer in peers}
    return {"no-live/peers": (host, request)}


def _consequence(found: Finding, confirmable: list[Finding], remote: dict[str, Any]) -> None:
    """ "no live upstreams" is what nginx says once every peer has failed: name the failure that did it."""
    strong = ("high", "confirmed, not fixable", "over")
    from remediate.engine.playbook import PSEUDO_LABELS

    causes = [f for f in confirmable if f.label not in PSEUDO_LABELS and f.confidence in strong]
    found.confidence = "consequence"
    if causes:
        found.cause = causes[0].cause or causes[0].label
        found.facts.append(
            {
                "playbook": "",
                "outcome": "consequence",
                "decision": "",
                "reason": (
                    f"every peer was marked failed by the {found.cause} lines in the same window "
                    f"({causes[0].count} line(s), first at {causes[0].first})"
                ),
            }
        )
        return
    answers = (remote.get("no-live/peers") or {}).get("http", {})
    errors = {peer: a.get("error") or a.get("status") for peer, a in answers.items()}
    refused = [p for p, e in errors.items() if isinstance(e, str) and "refused" in e.lower()]
    timed = [p for p, e in errors.items() if isinstance(e, str) and "timed out" in e.lower()]
    if answers and len(refused) == len(answers):
        found.cause, why = "down", "every peer refuses connections now"
    elif answers and len(timed) == len(answers):
        found.cause, why = "timeout", "every peer times out now"
    elif answers:
        found.cause, why = "", "the peers answer now: they failed earlier and nginx will try them again"
    else:
        found.cause, why = "", "the window has no failure that marked the peers down, and no peer could be asked"
    shown = ", ".join(f"{peer}: {what}" for peer, what in errors.items())
    found.facts.append(
        {"playbook": "", "outcome": "peers asked", "decision": "", "reason": f"{why} ({shown})" if shown else why}
    )


def _verdict(diagnosis: Diagnosis) -> None:
    fixable = [f for f in diagnosis.findings if f.fixable]
    confirmed = [f for f in diagnosis.findings if f.confidence == "confirmed, not fixable"]
    if len({f.cause for f in fixable}) == 1:
        diagnosis.verdict = fixable[0].cause
        diagnosis.reason = f"{fixable[0].count} line(s) and the {fixable[0].cause} playbook's evidence agree"
    elif len(fixable) > 1:
        diagnosis.verdict = "ambiguous"
        names = ", ".join(sorted({f.cause for f in fixable}))
        diagnosis.reason = f"several causes need different fixes: {names}"
    elif len({f.cause for f in confirmed}) == 1:
        diagnosis.verdict = confirmed[0].cause
        # The reason is the confirmed cause's own playbook's, not whichever playbook was asked last.
        own = [f for f in confirmed[0].facts if f["playbook"] == confirmed[0].cause] or confirmed[0].facts
        diagnosis.reason = f"{confirmed[0].cause} is confirmed, but remediate cannot fix it: {own[0]['reason']}"
    elif confirmed:
        diagnosis.verdict = "ambiguous"
        diagnosis.reason = "several causes are confirmed and none can be fixed here"
    else:
        diagnosis.verdict = "unknown"
        shown = ", ".join(f"{f.label} ({f.count})" for f in diagnosis.findings) or "no cause lines"
        diagnosis.reason = f"no cause is confirmed by the evidence; the log shows: {shown}"
        no_live = next((f for f in diagnosis.findings if f.label == "no-live-upstreams" and f.facts), None)
        if no_live is not None:
            # alone, "no live upstreams" is a symptom: say what asking the peers showed
            looks = f" (it looks like {no_live.cause})" if no_live.cause else ""
            diagnosis.reason = (
                f'only "no live upstreams" ({no_live.count} line(s)): {no_live.facts[-1]["reason"]}{looks}; '
                "the failure that marked the peers down is not in the window"
            )


def choose_cause(diagnosis: Diagnosis) -> str:
    """The cause ``--cause auto`` may fix: one confident, fixable verdict; otherwise Refused, with the candidates."""
    from remediate.errors import Refused

    if diagnosis.verdict in diagnosis.causes:
        return diagnosis.verdict
    seen = "; ".join(
        f"{f.cause or f.label} ({f.count} line(s), {f.confidence}"
        + (f": {f.facts[-1]['reason']}" if f.facts else "")
        + ")"
        for f in diagnosis.findings
    )
    raise Refused(
        f"{diagnosis.host}: --cause auto: the diagnosis is {diagnosis.verdict} ({diagnosis.reason}); "
        f"candidates: {seen or 'none'}; nothing was changed"
    )


def offline(source: str | bytes, since: float) -> Diagnosis:
    """Classify a local error log (a path, or the bytes of stdin); the window ends at its newest line."""
    import os
    import time

    from remediate import hostside
    from remediate.errors import InputError

    if isinstance(source, str):
        try:
            with open(source, "rb") as fh:
                fh.seek(max(0, os.path.getsize(source) - 65536))
                tail = fh.read()
        except OSError as exc:
            raise InputError(f"cannot read {source}: {exc.strerror}") from None
    else:
        tail = source[-65536:]
    stamps = hostside._STAMP.findall(tail)
    newest = time.mktime(time.strptime(stamps[-1].decode(), "%Y/%m/%d %H:%M:%S")) if stamps else time.time()
    tally = Tally()
    if isinstance(source, str):
        # Streamed in bounded pieces: time linear in the window, memory independent of it.
        cutoff = hostside.cutoff_of(since, newest)
        spans, files = hostside.window_spans(source, cutoff)
        for name, start, end in spans:
            carry = b""
            for block in hostside.read_span(name, start, end):
                block = carry + block
                cut = block.rfind(b"\n") + 1
                carry = block[cut:]
                tally.add(block[:cut].decode("utf-8", "surrogateescape"))
            if carry:
                tally.add(carry.decode("utf-8", "surrogateescape"))
        window = {"path": source, "cutoff": cutoff.decode(), "files": files, "truncated": False}
        window["bytes"] = sum(end - start for _, start, end in spans)
    else:
        cutoff = time.strftime("%Y/%m/%d %H:%M:%S", time.localtime(newest - since)).encode()
        start = hostside._first_at_or_after(source, cutoff)
        data = source[start:] if stamps else source
        tally.add(data.decode("utf-8", "surrogateescape"))
        window = {"path": "-", "cutoff": cutoff.decode(), "files": [{"path": "-", "bytes": len(data)}]}
        window.update(truncated=False, bytes=len(data))
    findings, other = tally.result()
    diagnosis = Diagnosis(
        str(source) if isinstance(source, str) else "-",
        {k: window[k] for k in ("path", "cutoff", "files", "truncated", "bytes")},
        findings,
        other,
    )
    # No host: nothing can confirm the log, so the verdict is what the log alone shows.
    from remediate.engine.playbook import candidates, load_playbooks

    confirmed = candidates(load_playbooks())
    causes = [f for f in findings if f.label in confirmed]
    if len(causes) == 1:
        diagnosis.verdict = causes[0].label
        diagnosis.reason = f"{causes[0].count} line(s) show it; unconfirmed (no host to check the evidence on)"
    elif causes:
        diagnosis.verdict = "ambiguous"
        diagnosis.reason = "the log shows several causes: " + ", ".join(f"{f.label} ({f.count})" for f in causes)
    else:
        diagnosis.reason = "no line in the window shows a known cause"
    return diagnosis
