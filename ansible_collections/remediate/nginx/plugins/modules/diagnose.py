# The work is done by the action plugin of the same name (plugins/action/diagnose.py) on the controller;
# this file holds the documentation ansible-doc shows.

DOCUMENTATION = r"""
---
module: diagnose
short_description: Name the cause of nginx 502s on a host, from its error log and evidence
version_added: "0.1.0"
description:
  - Reads the task's host's nginx error log window, classifies each line and confirms every candidate cause
    with its playbook's evidence, in one round trip to the host (plus one to each host asked). Changes nothing.
  - An action plugin on the controller that calls remediate's Python API (remediate does its own SSH with
    verified host keys). Install remediate on the controller (C(pip install remediate)).
options:
  since:
    description: How far back the error log is read (C(15m), C(2h)).
    type: str
    default: 15m
extends_documentation_fragment:
  - remediate.nginx.remediate
attributes:
  check_mode:
    support: full
  diff_mode:
    support: none
  platform:
    platforms: posix
author:
  - remediate
"""

EXAMPLES = r"""
- name: What is behind the 502s?
  hosts: web
  gather_facts: false
  tasks:
    - remediate.nginx.diagnose:
        since: 30m
      register: found
    - ansible.builtin.debug:
        msg: "{{ found.verdict }}: {{ found.reason }}"
"""

RETURN = r"""
verdict:
  description: The cause the evidence confirms, or why none is named (C(unknown), C(healthy), ...).
  returned: always
  type: str
  sample: socket
causes:
  description: The causes remediate may fix that the evidence confirms.
  returned: always
  type: list
  elements: str
reason:
  description: Why, in one sentence.
  returned: always
  type: str
diagnosis:
  description: The whole diagnosis (as C(remediate diagnose --json) prints it).
  returned: always
  type: dict
"""
