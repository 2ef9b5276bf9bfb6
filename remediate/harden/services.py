"""Runbook, Prevention: "Monitor upstream processes with systemd and alerting" (restart on failure)."""

from __future__ import annotations

from collections.abc import Iterator

from remediate.harden.model import Finding, Subject, rule

RULE = "upstream-service-no-restart"


@rule(
    RULE,
    "warning",
    "Prevention: Monitor upstream processes with systemd and alerting",
    "an upstream service that is not restarted when it crashes",
    fix="a drop-in: Restart=on-failure (systemd) or autorestart=true (supervisor)",
)
def restart_on_failure(subject: Subject) -> Iterator[Finding]:
    """Configure Restart=on-failure in your upstream service unit files so crashed backends automatically
    restart: [Service] Restart=on-failure RestartSec=3s"""
    for name, service in sorted((subject.facts.get("services") or {}).items()):
        if service.get("restarts"):
            continue
        manager = service.get("manager", "systemd")
        setting = "Restart=on-failure" if manager == "systemd" else "autorestart=true"
        yield Finding(RULE, "warning", str(service.get("file", name)), int(service.get("line", 1)),
                      f"{manager} service {name} on {service.get('host', 'its host')} is not restarted when it "
                      f"crashes ({service.get('setting', 'no restart setting')}): until someone starts it, "
                      "nginx answers 502",
                      setting, {"service": name, "host": str(service.get("host", ""))})  # fmt: skip
