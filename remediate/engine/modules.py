"""Fix modules by name: each turns rendered args plus the evidence into a Plan (file changes and
service actions), the name a playbook's fix step gives.

Modules never touch the host; they only compute. A module that cannot act safely raises Refused
with the reason. They live in nginx_modules (nginx's config) and host_modules (services and their
files); every line they add comes from a template (remediate.engine.render).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from remediate.engine.host_modules import (
    file_like,
    ini_set,
    service_nofile,
    service_restart,
    service_restart_policy,
)
from remediate.engine.nginx_modules import (
    nginx_block_set,
    nginx_dns_variable,
    nginx_re_resolve,
    nginx_retarget,
    nginx_server_params,
    nginx_set_pass,
    nginx_timeout,
)
from remediate.engine.plan import Plan
from remediate.evidence.framework import Context

__all__ = ["MODULES"]

MODULES: dict[str, Callable[[Context, dict[str, Any]], Plan]] = {
    "service_restart": service_restart,
    "ini_set": ini_set,
    "nginx_retarget": nginx_retarget,
    "nginx_set_pass": nginx_set_pass,
    "nginx_timeout": nginx_timeout,
    "nginx_block_set": nginx_block_set,
    "nginx_dns_variable": nginx_dns_variable,
    "nginx_server_params": nginx_server_params,
    "nginx_re_resolve": nginx_re_resolve,
    "service_nofile": service_nofile,
    "file_like": file_like,
    "service_restart_policy": service_restart_policy,
}
