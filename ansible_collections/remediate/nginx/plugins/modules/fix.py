# The work is done by the action plugin of the same name (plugins/action/fix.py) on the controller;
# this file holds the documentation ansible-doc shows.

DOCUMENTATION = r"""
---
module: fix
short_description: Fix an nginx 502 cause on a host, guarded (validate, reload, probe, roll back)
version_added: "0.1.0"
description:
  - Runs remediate's fix of one root cause of nginx 502 Bad Gateway (or C(auto), which diagnoses first and
    fixes only a confident, fixable verdict) on the task's host.
  - An action plugin, run on the controller, that calls remediate's Python API, which connects to the host
    over SSH itself (the inventory's C(ansible_host), C(ansible_user), C(ansible_ssh_private_key_file), and
    host keys verified against C(known_hosts)). Install remediate on the controller (C(pip install remediate)).
  - Every change goes through remediate's guarded transaction on the host, in one round trip under a lock
    the host keeps. The candidate must pass C(nginx -t) (and C(php-fpm -t)) first. nginx reloads, and the
    host's C(probe_urls) must stop answering 502. Any failure restores every file byte for byte.
  - Supports check mode (remediate's C(--check), validated by C(nginx -t) on the host, nothing written) and
    diff mode (remediate's unified diff).
options:
  cause:
    description:
      - The root cause to fix, as remediate's playbooks name them, or C(auto).
    type: str
    required: true
    choices: [auto, socket, down, proxy-pass, dns, timeout, invalid-response, workers]
  since:
    description: How far back the error log is read (C(15m), C(2h)); default the playbook's (15 minutes).
    type: str
  insecure_tls:
    description: Let the invalid-response fix turn C(proxy_ssl_verify) off when no CA can be trusted.
    type: bool
    default: false
extends_documentation_fragment:
  - remediate.nginx.remediate
attributes:
  check_mode:
    support: full
  diff_mode:
    support: full
  platform:
    platforms: posix
notes:
  - C(changed) is true only when remediate changed files or services (outcome C(fixed)); a healthy host is
    C(ok) with outcome C(nothing-to-do), so a second run reports C(changed=0).
  - The task fails when the fix was rolled back, failed, or refused; C(msg) carries remediate's reason.
  - Use the play's C(serial) and C(max_fail_percentage) for a rollout; C(gather_facts) is not needed.
author:
  - remediate
"""

EXAMPLES = r"""
- name: Fix the socket cause on the web hosts, three at a time
  hosts: web
  gather_facts: false
  serial: 3
  max_fail_percentage: 0
  tasks:
    - name: Fix what the diagnosis names
      remediate.nginx.fix:
        cause: auto

- name: Look first
  hosts: web01
  gather_facts: false
  tasks:
    - remediate.nginx.fix:
        cause: socket
      check_mode: true
      diff: true
"""

RETURN = r"""
outcome:
  description: remediate's outcome.
  returned: always
  type: str
  sample: fixed
  choices: [fixed, applied-unverified, nothing-to-do, planned, refused, rolled-back, failed]
cause:
  description: The cause fixed (the diagnosed one for C(auto)).
  returned: always
  type: str
  sample: socket
run_id:
  description: The run's id, in the host's journal and remediate's own (C(remediate rollback --host H RUN_ID)).
  returned: always
  type: str
  sample: 20261121T120325Z-1fae1f
message:
  description: What remediate did or why not.
  returned: always
  type: str
remediate:
  description: remediate's whole report (as C(remediate run --json) prints it) with evidence, decision, plan, steps.
  returned: always
  type: dict
"""
