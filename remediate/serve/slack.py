"""The Slack side of `remediate serve`: ``/remediate`` and the Approve / Deny buttons, on slack-bolt.

Requests reach Bolt only after :class:`Gate` has checked them (remediate.serve.app): size, UTF-8,
headers, a timestamp inside 300 s, Slack's v0 HMAC signature, and the replay cache (a signature
seen once is refused for the rest of the window; Bolt keeps none). Bolt then checks the signature
again, and the handlers here parse the command, ask the policy (default deny), record the job,
and ``ack()`` with what happens next; the job's results come back to the channel as a thread.

Command text is data, never code: each argument must be a plain name (letters, digits, ``_.:-``),
hosts must be in the inventory and causes in the playbooks, so nothing a user types reaches a
shell, a path or a pattern.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

import structlog

if TYPE_CHECKING:
    from slack_bolt.async_app import AsyncApp

    from remediate.serve.service import Service

__all__ = ["build_app"]

log = structlog.get_logger("remediate.serve")


def build_app(service: Service) -> AsyncApp:
    """The Bolt app: one slash command, two buttons. Its Web API client points at ``slack.api_url``."""
    from slack_bolt.async_app import AsyncApp
    from slack_sdk.web.async_client import AsyncWebClient

    slack = service.config.slack
    assert slack is not None
    client = AsyncWebClient(token=slack.token, base_url=slack.api_url, timeout=10)
    app = AsyncApp(
        signing_secret=slack.signing_secret,
        client=client,
        # The handlers only check and record (milliseconds; the jobs run in the workers), so Bolt
        # answers when they return instead of polling every 10 ms for the ack.
        process_before_response=True,
        raise_error_for_unhandled_request=False,
        url_verification_enabled=False,
        ssl_check_enabled=False,
    )
    groups = _Groups(service, client)

    @app.command(slack.command)
    async def on_command(ack: Any, command: dict[str, Any]) -> None:
        user = str(command.get("user_id", ""))
        reply = {"channel": command.get("channel_id")}
        text = str(command.get("text", ""))
        await ack(text=await service.slash(user, text, reply, await groups.of(user)), response_type="ephemeral")

    async def on_click(ack: Any, body: dict[str, Any], action: dict[str, Any]) -> None:
        await ack()
        user = str((body.get("user") or {}).get("id", ""))
        message = body.get("message") or {}
        channel = (body.get("channel") or {}).get("id")
        reply = {"channel": channel, "thread_ts": message.get("thread_ts") or message.get("ts")}
        approve = action.get("action_id") == "remediate_approve"
        text = await service.click(user, str(action.get("value", "")), approve, reply, await groups.of(user))
        if channel:  # after the answer: the Web API's latency is not Slack's to wait for
            service.later(_post(client, channel, reply["thread_ts"], text))

    app.action("remediate_approve")(on_click)
    app.action("remediate_deny")(on_click)
    return app


async def _post(client: Any, channel: str, thread_ts: str | None, text: str) -> None:
    try:
        await client.chat_postMessage(channel=channel, thread_ts=thread_ts, text=text)
    except Exception as exc:  # the decision is recorded either way
        log.warning("slack-post-failed", error=str(exc))


class _Groups:
    """Which of the policy's Slack user groups a user is in (``usergroups.users.list``), cached 5 minutes.

    If Slack cannot say, the user is in no group: default deny, never a guess.
    """

    def __init__(self, service: Service, client: Any) -> None:
        self.service, self.client = service, client
        self.members: dict[str, set[str]] = {}
        self.fetched = 0.0
        self.lock = asyncio.Lock()  # 50 requests at once: one lookup, not 50

    async def of(self, user: str) -> tuple[str, ...]:
        wanted = list(self.service.config.policy.groups)
        if not wanted:
            return ()
        async with self.lock:
            if time.monotonic() - self.fetched > 300:
                await self._fetch(wanted)
        return tuple(g for g in wanted if user in self.members.get(g, set()))

    async def _fetch(self, wanted: list[str]) -> None:
        members: dict[str, set[str]] = {}
        complete = True
        for group in wanted:
            try:
                answer = await self.client.usergroups_users_list(usergroup=group)
                members[group] = set(answer.get("users") or [])
            except Exception as exc:  # unknown membership is no membership
                log.warning("slack-usergroups-failed", group=group, error=str(exc))
                members[group], complete = set(), False
        self.members = members
        self.fetched = time.monotonic() if complete else 0.0  # a failed lookup is asked again next time
