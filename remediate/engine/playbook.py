"""Playbooks: one YAML file per cause, readable by an SRE, loaded with ruamel.yaml.

A playbook has four parts:

* ``evidence``: named collectors (``{name, collect, args}``), asked in one round trip;
* ``decisions``: tried in order; the first whose Jinja ``when`` holds wins. Each
  has a ``reason`` (shown to the user) and one outcome: ``fix: NAME``,
  ``outcome: nothing-to-do`` or ``refuse: MESSAGE``;
* ``fixes``: name → steps, each a module with Jinja-templated args;
* ``verify``: what must hold after the fix (``probe: URLS``).

Errors name the file and line, like every input error.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from remediate.errors import InputError, RemediateError
from remediate.evidence.classify import LABELS
from remediate.evidence.framework import Context
from remediate.evidence.registry import COLLECTORS
from remediate.resources import playbooks_dir

__all__ = [
    "PSEUDO_LABELS", "Decision", "Playbook", "Step", "candidates", "find_playbook", "load_playbook", "load_playbooks",
]  # fmt: skip

#: Labels a diagnosis gives that the classifier does not: 502s the access log shows and the error log does not.
PSEUDO_LABELS = ("access-log-502",)


@dataclass(frozen=True)
class Step:
    """One fix step: a module with Jinja-templated args; Ansible's ``when`` and ``loop`` (each value as ``item``)."""

    module: str
    args: dict[str, Any]
    line: int
    when: str | None = None
    loop: str | None = None


@dataclass(frozen=True)
class Decision:
    name: str
    when: str
    reason: str
    fix: str | None
    outcome: str  # "fix" | "nothing-to-do" | "refuse"
    refuse: str | None
    line: int


@dataclass
class Playbook:
    cause: str
    summary: str
    path: str
    runbook: str = ""
    evidence: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)
    decisions: list[Decision] = field(default_factory=list)
    fixes: dict[str, list[Step]] = field(default_factory=dict)
    verify: list[dict[str, Any]] = field(default_factory=list)
    #: The classifier's labels this playbook can confirm, each with its rank among the playbooks that
    #: confirm it (1 first): a diagnosis asks them in that order, and the first fixable one stands.
    confirms: dict[str, int] = field(default_factory=dict)
    #: The labels whose error-log lines are the requests this cause's fix must make succeed (replayed).
    replays: tuple[str, ...] = ()

    def decide(self, ctx: Context) -> tuple[Decision, str]:
        """The first decision whose condition holds, with its reason rendered."""
        for decision in self.decisions:
            try:
                holds = bool(evaluate(decision.when, ctx))
            except RemediateError as exc:
                raise InputError(f"decision {decision.name!r}: {exc}", file=self.path, line=decision.line) from None
            if holds:
                return decision, str(render(decision.reason, ctx))
        raise InputError("no decision matched the evidence; end the list with `when: true`", file=self.path)


# -- Jinja -----------------------------------------------------------------------------


def _env() -> Any:
    from jinja2 import StrictUndefined
    from jinja2.sandbox import SandboxedEnvironment

    return SandboxedEnvironment(undefined=StrictUndefined, autoescape=False)


def evaluate(expression: str, ctx: Context) -> Any:
    from jinja2 import TemplateError

    try:
        return _env().compile_expression(expression, undefined_to_none=False)(**ctx.jinja())
    except TemplateError as exc:
        raise RemediateError(f"in `{expression}`: {exc}") from None


def render(value: Any, ctx: Context) -> Any:
    """Render templated args: a lone ``{{ expr }}`` keeps its type (a list stays a list)."""
    from jinja2 import TemplateError

    if isinstance(value, dict):
        return {k: render(v, ctx) for k, v in value.items()}
    if isinstance(value, list):
        return [render(v, ctx) for v in value]
    if not isinstance(value, str) or "{" not in value:
        return value
    stripped = value.strip()
    if stripped.startswith("{{") and stripped.endswith("}}") and stripped.count("{{") == 1:
        return evaluate(stripped[2:-2], ctx)
    try:
        return _env().from_string(value).render(**ctx.jinja())
    except TemplateError as exc:
        raise RemediateError(f"in `{value}`: {exc}") from None


# -- loading ---------------------------------------------------------------------------


def load_playbook(path: Path) -> Playbook:
    from ruamel.yaml import YAML
    from ruamel.yaml.error import MarkedYAMLError

    name = str(path)
    try:
        data = YAML(typ="rt").load(path.read_text(encoding="utf-8"))
    except MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        raise InputError(
            f"malformed YAML: {exc.problem or exc.context}", file=name, line=mark.line + 1 if mark else None
        ) from None
    except OSError as exc:
        raise InputError(f"cannot read playbook: {exc}", file=name) from None

    def line(node: Any, key: Any = None) -> int | None:
        try:
            return int(node.lc.key(key)[0]) + 1 if key is not None else int(node.lc.line) + 1
        except (AttributeError, KeyError, TypeError):
            return None

    def fail(message: str, at: int | None) -> InputError:
        return InputError(message, file=name, line=at)

    if not isinstance(data, dict):
        raise fail("a playbook is a mapping with cause, evidence, decisions, fixes and verify", 1)
    for key in ("cause", "summary", "evidence", "decisions"):
        if key not in data:
            raise fail(f"missing `{key}:`", 1)
    unknown = set(data) - {"cause", "summary", "runbook", "confirms", "replays", "evidence", "decisions", "fixes",
                           "verify"}  # fmt: skip
    if unknown:
        key = sorted(unknown)[0]
        raise fail(f"unexpected key {key!r}", line(data, key))
    book = Playbook(
        cause=str(data["cause"]), summary=str(data["summary"]), path=name, runbook=str(data.get("runbook", ""))
    )
    known = (*LABELS, *PSEUDO_LABELS)
    confirms = data.get("confirms") or {}
    if not isinstance(confirms, dict):
        raise fail("`confirms:` maps a label to its rank, like `{timeout: 1}`", line(data, "confirms"))
    for label, rank in confirms.items():
        if label not in known or isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
            raise fail(f"`confirms:` {label!r}: {rank!r} is not a label ({', '.join(known)}) and a rank ≥ 1",
                       line(data, "confirms"))  # fmt: skip
        book.confirms[str(label)] = rank
    replayed = data.get("replays") or []
    if not isinstance(replayed, list) or not all(label in known for label in replayed):
        raise fail(f"`replays:` is a list of labels ({', '.join(known)})", line(data, "replays"))
    book.replays = tuple(str(label) for label in replayed)
    for item in data["evidence"] or []:
        if not isinstance(item, dict) or "name" not in item or "collect" not in item:
            raise fail("each evidence step needs `name` and `collect`", line(item))
        if item["collect"] not in COLLECTORS:
            raise fail(
                f"unknown collector {item['collect']!r}; collectors: {', '.join(COLLECTORS)}", line(item, "collect")
            )
        book.evidence.append((str(item["name"]), str(item["collect"]), dict(item.get("args") or {})))
    fixes = data.get("fixes") or {}
    for fix_name, steps in fixes.items():
        parsed = []
        for step in steps or []:
            if not isinstance(step, dict) or "module" not in step:
                raise fail(f"each step of fix {fix_name!r} needs `module`", line(step))
            from remediate.engine.modules import MODULES

            if step["module"] not in MODULES:
                raise fail(f"unknown module {step['module']!r}; modules: {', '.join(MODULES)}", line(step, "module"))
            unknown_keys = set(step) - {"module", "args", "when", "loop", "name"}
            if unknown_keys:
                raise fail(f"unexpected key {sorted(unknown_keys)[0]!r} in a fix step", line(step))
            parsed.append(
                Step(
                    str(step["module"]),
                    _plain(step.get("args") or {}),
                    line(step) or 0,
                    when=str(step["when"]) if "when" in step else None,
                    loop=str(step["loop"]) if "loop" in step else None,
                )
            )
        book.fixes[str(fix_name)] = parsed
    for item in data["decisions"] or []:
        at = line(item)
        if not isinstance(item, dict) or "when" not in item or "reason" not in item:
            raise fail("each decision needs `when` and `reason`", at)
        outcomes = [k for k in ("fix", "outcome", "refuse") if k in item]
        if len(outcomes) != 1:
            raise fail("each decision has exactly one of `fix`, `outcome: nothing-to-do` or `refuse`", at)
        kind = outcomes[0]
        if kind == "fix" and item["fix"] not in book.fixes:
            raise fail(f"decision names fix {item['fix']!r}, which `fixes:` does not define", line(item, "fix"))
        if kind == "outcome" and item["outcome"] != "nothing-to-do":
            raise fail("`outcome` may only be nothing-to-do", line(item, "outcome"))
        book.decisions.append(
            Decision(
                name=str(item.get("name", f"decision-{len(book.decisions) + 1}")),
                when=str(item["when"]).lower() if isinstance(item["when"], bool) else str(item["when"]),
                reason=str(item["reason"]),
                fix=str(item["fix"]) if kind == "fix" else None,
                outcome="fix" if kind == "fix" else "nothing-to-do" if kind == "outcome" else "refuse",
                refuse=str(item["refuse"]) if kind == "refuse" else None,
                line=at or 0,
            )
        )
    book.verify = [_plain(v) for v in data.get("verify") or []]
    return book


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def candidates(books: dict[str, Playbook]) -> dict[str, list[str]]:
    """Label → the causes whose playbooks confirm it, in their rank order (from each ``confirms:``)."""
    ranked = sorted((rank, label, cause) for cause, book in books.items() for label, rank in book.confirms.items())
    by_label: dict[str, list[str]] = {}
    for _, label, cause in ranked:
        by_label.setdefault(label, []).append(cause)
    return by_label


def load_playbooks(extra: list[str] | None = None) -> dict[str, Playbook]:
    """The shipped playbooks, then the user's (``--playbooks DIR``), which override by cause."""
    books: dict[str, Playbook] = {}
    for directory in [playbooks_dir(), *(Path(d) for d in extra or [])]:
        if not directory.is_dir():
            raise InputError("no such playbook directory", file=str(directory))
        for path in sorted(directory.glob("*.yml")) + sorted(directory.glob("*.yaml")):
            book = load_playbook(path)
            books[book.cause] = book
    return books


def find_playbook(cause: str, extra: list[str] | None = None) -> Playbook:
    # Fast path (the common case, shipped playbooks only): CAUSE.yml, without parsing the others.
    # With --playbooks a file of any name may override a cause, so everything is read.
    path = playbooks_dir() / f"{cause}.yml"
    if not extra and path.is_file():
        book = load_playbook(path)
        if book.cause == cause:
            return book
    books = load_playbooks(extra)
    if cause not in books:
        from remediate.errors import UsageError

        raise UsageError(f"no playbook for cause {cause!r}; playbooks: {', '.join(sorted(books)) or 'none'}")
    return books[cause]
