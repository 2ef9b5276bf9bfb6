"""How a fleet rollout looks: a live line per host, then the summary table (rich); or JSON lines.

On a terminal every host has a line that changes as it goes (waiting, running, its outcome).
Elsewhere (a log, a pipe, CI) each host prints one line when it finishes, so the output is the
same however it is read. With ``--json``, each finished host is one JSON object on its own line,
and the last line is ``{"summary": {...}}``.
"""

from __future__ import annotations

import json
import sys
import time
from typing import IO, TYPE_CHECKING, Any

from remediate.engine.fleet import HostResult, Rollout
from remediate.outcomes import Outcome

if TYPE_CHECKING:
    from remediate.hosts.inventory import Host

__all__ = ["FleetView"]

_STYLE: dict[str, str] = {
    Outcome.FIXED: "green",
    Outcome.NOTHING_TO_DO: "green",
    Outcome.CLEAN: "green",
    Outcome.PLANNED: "cyan",
    Outcome.DIAGNOSED: "cyan",
    Outcome.REFUSED: "yellow",
    Outcome.ROLLED_BACK: "yellow",
    Outcome.APPLIED_UNVERIFIED: "yellow",
    Outcome.NOT_ATTEMPTED: "dim",
}


class FleetView:
    def __init__(self, hosts: list[Host], *, verb: str, as_json: bool, out: IO[str] | None = None) -> None:
        from rich.console import Console

        self.out = out or sys.stdout
        self.as_json = as_json
        self.verb = verb
        self.console = Console(file=self.out, highlight=False, width=None if self.out.isatty() else 120)
        self.live_mode = self.console.is_terminal and not as_json
        self.rows: dict[str, list[str]] = {h.name: ["waiting", "", ""] for h in hosts}
        self.began: dict[str, float] = {}
        self.live: Any = None

    def __enter__(self) -> FleetView:
        if self.live_mode:
            from rich.live import Live

            self.live = Live(self._table(), console=self.console, refresh_per_second=8, transient=True)
            self.live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.live is not None:
            self.live.__exit__(None, None, None)

    def started(self, host: Host) -> None:
        self.began[host.name] = time.monotonic()
        self.rows[host.name] = [f"{self.verb}...", "", ""]
        self._refresh()

    def finished(self, result: HostResult) -> None:
        self.rows[result.host] = [result.outcome, f"{result.seconds:.2f}s" if result.seconds else "", result.message]
        if self.as_json:
            self.out.write(json.dumps(result.to_json()) + "\n")
            self.out.flush()
        elif not self.live_mode:
            seconds = f"{result.seconds:6.2f}s" if result.outcome is not Outcome.NOT_ATTEMPTED else " " * 7
            self.out.write(f"{result.host:<12} {result.outcome:<14} {seconds}  {_first_line(result.message, 100)}\n")
            self.out.flush()
        self._refresh()

    def summary(self, rollout: Rollout) -> None:
        """The summary table (or object) and, under it, why it stopped and what was not attempted."""
        if self.as_json:
            self.out.write(json.dumps({"summary": rollout.summary()}) + "\n")
            return
        from rich.table import Table

        table = Table(title=None, show_edge=False, pad_edge=False, box=None, header_style="bold")
        for column in ("host", "cause", "outcome", "seconds", "run id"):
            table.add_column(column, justify="right" if column == "seconds" else "left", no_wrap=True)
        for r in rollout.results:
            style = _STYLE.get(r.outcome, "red")
            seconds = f"{r.seconds:.2f}" if r.outcome is not Outcome.NOT_ATTEMPTED else "-"
            table.add_row(r.host, r.cause or "-", f"[{style}]{r.outcome}[/]", seconds, r.run_id or "-")
        self.console.print()
        self.console.print(table)
        counts = ", ".join(f"{n} {outcome}" for outcome, n in rollout.summary()["outcomes"].items())
        lines = [f"\n{len(rollout.results)} hosts in {rollout.seconds:.1f}s: {counts}"]
        lines += [f"  {r.host}: {r.outcome}: {_first_line(r.message)}" for r in rollout.results if _failed(r)]
        if rollout.stopped:
            lines.append(f"stopped: {rollout.stopped}")
        if rollout.not_attempted:
            lines.append(f"not attempted: {', '.join(rollout.not_attempted)}")
        self.out.write("\n".join(lines) + "\n")  # unwrapped: a message is read, or grepped, whole

    def _refresh(self) -> None:
        if self.live is not None:
            self.live.update(self._table())

    def _table(self) -> Any:
        from rich.table import Table

        table = Table(show_header=False, box=None, pad_edge=False, expand=False)
        for justify in ("left", "left", "right"):
            table.add_column(justify=justify, no_wrap=True)
        table.add_column(no_wrap=True, overflow="ellipsis", max_width=70)
        now = time.monotonic()
        for name, (state, seconds, message) in self.rows.items():
            if state.endswith("...") and name in self.began:
                seconds = f"{now - self.began[name]:.1f}s"
            style = _STYLE.get(state, "red") if not state.endswith("...") and state != "waiting" else "dim"
            table.add_row(name, f"[{style}]{state}[/]", seconds, _first_line(message))
        return table


def _failed(result: HostResult) -> bool:
    return result.failed and result.outcome is not Outcome.NOT_ATTEMPTED


def _first_line(text: str, width: int = 0) -> str:
    line = text.strip().splitlines()[0] if text.strip() else ""
    return line[: width - 1] + "…" if width and len(line) > width else line
