"""The hosts remediate works on: inventory (Ansible YAML → typed vars), patterns (Ansible host
patterns), values (what each directive and argument accepts), services (the argv of each service
manager), connect (an inventory host → the transport that reaches it)."""
