"""How `remediate harden` shows its findings: a table by severity, JSON, or SARIF 2.1.0 for code scanning."""

from __future__ import annotations

from typing import Any

from remediate.harden.model import RULES, SEVERITIES, Finding

__all__ = ["sarif", "table", "to_json"]

SARIF_SCHEMA = "https://json.schemastore.org/sarif-2.1.0.json"
_LEVEL = {"info": "note", "warning": "warning", "error": "error"}


def table(findings: list[Finding], subject: str, notes: list[str] | None = None) -> str:
    """Findings by severity: one line each (severity, rule, file:line, what), then the fix indented."""
    lines = [f"# {note}" for note in notes or ()]
    if not findings:
        lines.append(f"{subject}: no findings ({len(RULES)} rules)")
        return "\n".join(lines)
    width = max(len(f.rule) for f in findings)
    for f in findings:
        lines.append(f"{f.severity:<8} {f.rule:<{width}}  {f.where}")
        lines.append(f"         {f.message}")
        if f.fix:
            lines.append(f"         fix: {f.fix}")
    counts = ", ".join(f"{n} {s}" for s in reversed(SEVERITIES) if (n := sum(f.severity == s for f in findings)))
    lines.append(f"{subject}: {len(findings)} finding(s): {counts}")
    return "\n".join(lines)


def to_json(findings: list[Finding], subject: str, notes: list[str] | None = None) -> dict[str, Any]:
    return {"subject": subject, "findings": [f.to_json() for f in findings], "notes": list(notes or ())}


def sarif(findings: list[Finding], version: str) -> dict[str, Any]:
    """A SARIF 2.1.0 log: one run, every rule described (with the runbook paragraph), one result per finding."""
    ids = list(RULES)
    rules = [
        {
            "id": r.id,
            "name": "".join(part.capitalize() for part in r.id.split("-")),
            "shortDescription": {"text": r.title},
            "fullDescription": {"text": r.why},
            "help": {"text": f"{r.why}\n\nFix: {r.fix or 'by hand (no safe automatic fix)'}\nRunbook: {r.section}"},
            "defaultConfiguration": {"level": _LEVEL[r.severity]},
            "properties": {"runbook": r.section, "fixable": bool(r.fix)},
        }
        for r in RULES.values()
    ]
    results = [
        {
            "ruleId": f.rule,
            "ruleIndex": ids.index(f.rule),
            "level": _LEVEL[f.severity],
            "message": {"text": f.message + (f" Fix: {f.fix}" if f.fix else "")},
            "locations": [
                {
                    "physicalLocation": {
                        "artifactLocation": {"uri": _uri(f.file)},
                        "region": {"startLine": max(1, f.line)},
                    }
                }
            ],
        }
        for f in findings
    ]
    return {
        "$schema": SARIF_SCHEMA,
        "version": "2.1.0",
        "runs": [
            {
                "tool": {
                    "driver": {
                        "name": "remediate-harden",
                        "version": version,
                        "rules": rules,
                    }
                },
                "results": results,
            }
        ],
    }


def _uri(path: str) -> str:
    """A file's SARIF URI: relative paths stay relative (to the repository a CI job scans), absolute ones file://."""
    from pathlib import PurePosixPath

    return PurePosixPath(path).as_uri() if path.startswith("/") else path
