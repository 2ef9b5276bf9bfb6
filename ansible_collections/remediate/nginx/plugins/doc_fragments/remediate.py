"""The options every remediate.nginx module takes: how remediate finds the inventory, playbooks and host keys."""


class ModuleDocFragment:
    DOCUMENTATION = r"""
options:
  inventory:
    description:
      - The inventory remediate reads (Ansible's YAML inventory format). Default the play's own inventory file
        (C(inventory_file)).
    type: path
  playbooks:
    description: Directories of playbooks that add causes or override the shipped ones.
    type: list
    elements: path
  accept_new_host_key:
    description: Trust a host key seen for the first time (a changed key is always refused).
    type: bool
    default: false
"""
