"""The policy and inventory the tests of policy and approvals share."""

from __future__ import annotations

INVENTORY = """\
all:
  children:
    web:
      children:
        web_eu:
          hosts: {web01: {ansible_host: 10.0.1.11}, web02: {}}
        web_us:
          hosts: {web10: {}, web-canary: {}}
    db:
      hosts: {db01: {}}
    prod:
      hosts: {web01: {}, web10: {}, db01: {}}
  hosts:
    bastion: {}
"""


POLICY = {
    "roles": {
        "oncall": {"verbs": ["diagnose", "check", "run", "rollback"], "hosts": "web:!web-canary", "causes": "all"},
        "lead": {"verbs": ["approve"], "hosts": "all", "causes": ["socket", "down"]},
        "viewer": {"verbs": ["diagnose"], "hosts": "all"},
    },
    "users": {"U111": ["oncall"], "U222": ["oncall", "lead"]},
    "groups": {"S0SRE": ["viewer"]},
}
