"""What the service says back: Slack messages (Web API, base URL configurable), or the log when there is no Slack.

Each job carries a ``reply`` target: ``{"channel": C, "thread_ts": TS}``. A job's first message
starts a thread in the channel; everything after goes into that thread. The message texts are
built here too, so what a user reads in chat is in one place.
"""

from __future__ import annotations

from typing import Any

import structlog

from remediate.serve.config import SlackConfig

__all__ = ["Notifier", "approval_blocks", "mrkdwn", "outcome_text", "plan_text"]

log = structlog.get_logger("remediate.serve")
_MAX_DIFF = 2800  # a Slack section's text is limited to 3000 characters


class Notifier:
    """Posts to Slack with the bot token from the config; without Slack, writes the messages to the log."""

    def __init__(self, slack: SlackConfig | None) -> None:
        self.slack = slack
        self._client: Any = None
        if slack is not None:
            from slack_sdk import WebClient

            self._client = WebClient(token=slack.token, base_url=slack.api_url, timeout=10)

    def post(self, reply: dict[str, Any], text: str, blocks: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        """Post ``text`` to ``reply``; the reply target for what follows (the thread this message started)."""
        channel = reply.get("channel") or (self.slack.channel if self.slack else None)
        if self._client is None or not channel:
            log.info("message", channel=channel, text=text)
            return reply
        thread = reply.get("thread_ts")
        try:
            answer = self._client.chat_postMessage(
                channel=channel,
                text=text,
                blocks=blocks,
                thread_ts=thread,
                unfurl_links=False,
                unfurl_media=False,
            )
        except Exception as exc:  # chat being down must not fail the job
            log.warning("slack-post-failed", channel=channel, error=str(exc))
            return reply
        return {"channel": channel, "thread_ts": thread or answer.get("ts")}


def plan_text(report: Any) -> str:
    """What a run would change: the unified diff, then the service actions. This is what an approver approves."""
    lines = [report.plan.diff()]
    lines += [f"# then: {action.describe()}\n" for action in report.plan.actions]
    return "".join(lines)


def approval_blocks(summary: str, plan: str, approval_id: str, expires_in: float) -> list[dict[str, Any]]:
    shown = plan if len(plan) <= _MAX_DIFF else plan[:_MAX_DIFF] + "\n… (cut; `remediate run --check` shows it all)"
    return [
        {"type": "section", "text": {"type": "mrkdwn", "text": summary}},
        {"type": "section", "text": {"type": "mrkdwn", "text": f"```{shown or '(no file changes)'}```"}},
        {
            "type": "context",
            "elements": [{"type": "mrkdwn", "text": f"Approval expires in {int(expires_in // 60)} min."}],
        },
        {
            "type": "actions",
            "block_id": "remediate_approval",
            "elements": [
                {
                    "type": "button",
                    "action_id": "remediate_approve",
                    "style": "primary",
                    "text": {"type": "plain_text", "text": "Approve"},
                    "value": approval_id,
                },
                {
                    "type": "button",
                    "action_id": "remediate_deny",
                    "style": "danger",
                    "text": {"type": "plain_text", "text": "Deny"},
                    "value": approval_id,
                },
            ],
        },
    ]


def mrkdwn(untrusted: str) -> str:
    """Text from outside (alert labels, log lines, a backend's answer) as Slack shows it, never as markup:
    Slack's own escaping of ``&``, ``<`` and ``>``, so ``<!channel>`` or ``<https://x|click>`` in a label
    is printed, not obeyed."""
    return untrusted.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def outcome_text(report: Any) -> str:
    """One line per run: host, cause, outcome, the message, and the run id to roll back with."""
    icon = {
        "fixed": ":white_check_mark:",
        "restored": ":leftwards_arrow_with_hook:",
        "nothing-to-do": ":information_source:",
        "planned": ":memo:",
    }.get(report.outcome, ":warning:")
    text = f"{icon} *{report.host}* {report.cause}: *{report.outcome}*"  # a rollback's cause is "rollback RUN_ID"
    if report.message:
        text += f"; {mrkdwn(report.message)}"
    if report.outcome in {"fixed", "applied-unverified", "rolled-back", "failed"}:
        text += f"\nrun `{report.run_id}` (`/remediate rollback {report.host} {report.run_id}`)"
    return text
