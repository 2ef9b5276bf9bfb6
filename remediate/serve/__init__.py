"""`remediate serve`: the long-running service (Alertmanager, Slack, metrics, the job API).

Needs the ``serve`` extra (aiohttp, slack-bolt, prometheus_client): ``pip install 'remediate[serve]'``.
The CLI imports this package only for ``remediate serve``, so the other commands start without it.
"""
