"""Read an Ansible YAML inventory and give each host its merged, typed vars.

The format is Ansible's: a top-level ``all`` group (other top-level groups
are its children), each group with ``hosts``, ``children`` and ``vars``. Vars
merge the way Ansible merges them: ``all`` first, then groups by depth (then
name), then the host's own. Every var remediate reads is declared in VARS
with its type, its Debian default and one line of documentation;
``inventory.example.yml`` documents the same list.
"""

from __future__ import annotations

import copy
import difflib
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from remediate.errors import InventoryError
from remediate.hosts import values

__all__ = ["VARS", "Host", "Inventory", "Var", "load_inventory"]

_TRUE = {"yes", "on", "true", "1", "y", "t"}
_FALSE = {"no", "off", "false", "0", "n", "f"}


def _bool(value: Any) -> bool:
    # Ansible reads YAML 1.1, where yes/no are booleans; ruamel reads 1.2, where they are strings.
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    raise TypeError("a boolean (true/false, yes/no)")


def _int(value: Any) -> int:
    if isinstance(value, bool):
        raise TypeError("an integer")
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value)
    raise TypeError("an integer")


def _number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError("a number")
    return float(value)


def _str(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)  # Ansible stringifies scalars it expects as text
    raise TypeError("a string")


def _opt_str(value: Any) -> str | None:
    return None if value is None else _str(value)


def _str_list(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return list(value)
    raise TypeError("a list of strings")


def _opt_str_list(value: Any) -> list[str] | None:
    return None if value is None else _str_list(value)


def _services(value: Any) -> dict[str, dict[str, Any]]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise TypeError("a mapping of service name to {port: N}")
    out: dict[str, dict[str, Any]] = {}
    for name, spec in value.items():
        try:
            values.service_name(str(name))
        except ValueError as exc:
            raise TypeError(f"a mapping of service name to {{port: N}}, each name {exc} ({name!r} is not)") from None
        spec = spec or {}
        if not isinstance(spec, dict) or ("port" in spec and _int_or_none(spec["port"]) is None):
            raise TypeError(f"a mapping of service name to {{port: N}} (service {name!r})")
        out[str(name)] = {**spec, **({"port": int(spec["port"])} if "port" in spec else {})}
    return out


def _int_or_none(value: Any) -> int | None:
    try:
        return _int(value)
    except TypeError:
        return None


def _checked(check: Callable[[str], str]) -> Callable[[Any], str]:
    """A string var that must also pass ``check`` (remediate.hosts.values): what its directive accepts."""

    def convert(value: Any) -> str:
        text = _str(value)
        try:
            return check(text)
        except ValueError as exc:
            raise TypeError(str(exc)) from None

    return convert


def _opt(convert: Callable[[Any], Any]) -> Callable[[Any], Any]:
    return lambda value: None if value is None else convert(value)


def _list_of(check: Callable[[str], str]) -> Callable[[Any], list[str]]:
    def convert(value: Any) -> list[str]:
        items = _str_list(value)
        for item in items:
            try:
                check(item)
            except ValueError as exc:
                raise TypeError(f"a list of which each item is {exc} ({item!r} is not)") from None
        return items

    return convert


_PATH = _checked(values.path)
_SERVICE = _checked(values.service_name)


def _choice(*choices: str) -> Callable[[Any], str]:
    def check(value: Any) -> str:
        if isinstance(value, str) and value in choices:
            return value
        raise TypeError("one of " + ", ".join(choices))

    return check


@dataclass(frozen=True)
class Var:
    name: str
    convert: Callable[[Any], Any]
    default: Any
    doc: str


VARS: tuple[Var, ...] = (
    # How to reach the host (Ansible's own names).
    Var("ansible_host", _opt_str, None, "address to connect to (default: the inventory name)"),
    Var("ansible_port", _int, 22, "SSH port"),
    Var("ansible_user", _opt_str, None, "SSH user (default: the current user)"),
    Var("ansible_ssh_private_key_file", _opt_str, None, "private key file (default: agent and ~/.ssh)"),
    Var("ansible_connection", _choice("ssh", "local"), "ssh", "ssh, or local to run on this machine"),
    Var("ansible_become", _bool, False, "run commands through `sudo -n` (passwordless sudo required)"),
    Var("ansible_become_user", _str, "root", "the user to become"),
    Var(
        "ansible_ssh_common_args",
        _opt_str,
        None,
        "ssh options as Ansible users write them; remediate honours -o ProxyJump=, -o ProxyCommand= and -J",
    ),
    Var("ansible_ssh_extra_args", _opt_str, None, "more ssh options, read as ansible_ssh_common_args"),
    Var(
        "ssh_config",
        _opt_str,
        None,
        "an OpenSSH client config to honour for this host (e.g. ~/.ssh/config); by default the inventory is the truth",
    ),
    Var("known_hosts", _str, "~/.ssh/known_hosts", "known_hosts file that host keys are checked against"),
    Var("ssh_connect_timeout", _number, 10.0, "seconds to wait for TCP connect, banner and auth"),
    Var("command_timeout", _number, 60.0, "seconds one remote command may run"),
    # nginx
    Var("nginx_bin", _PATH, "/usr/sbin/nginx", "the nginx binary"),
    Var("nginx_conf", _PATH, "/etc/nginx/nginx.conf", "main config file (nginx -c)"),
    Var("nginx_prefix", _opt(_PATH), None, "prefix directory (nginx -p), when nginx runs with one"),
    Var("nginx_error_log", _PATH, "/var/log/nginx/error.log", "the error log remediate reads"),
    Var("nginx_access_log", _PATH, "/var/log/nginx/access.log", "the access log remediate reads"),
    Var("nginx_service", _SERVICE, "nginx", "nginx's service name in the service manager"),
    Var(
        "nginx_reload",
        _opt_str_list,
        None,
        "argv that reloads nginx (default: nginx [-p P] -c CONF -s reload)",
    ),
    # services
    Var("service_manager", _choice("systemd", "supervisor", "sysv"), "systemd", "systemd, supervisor or sysv"),
    Var("supervisor_config", _opt(_PATH), None, "supervisord.conf for supervisorctl -c (supervisor only)"),
    Var(
        "restartable_services",
        _list_of(values.service_name),
        [],
        "services remediate may restart; nothing else is touched",
    ),
    Var("restart_wait", _number, 30.0, "seconds a restarted service gets to listen again before it counts as failed"),
    # php-fpm
    Var("php_fpm_bin", _PATH, "/usr/sbin/php-fpm8.2", "php-fpm binary, used for `php-fpm -t`"),
    Var("php_fpm_conf", _PATH, "/etc/php/8.2/fpm/php-fpm.conf", "php-fpm main config (php-fpm -y)"),
    Var("php_fpm_service", _SERVICE, "php8.2-fpm", "php-fpm's service name"),
    Var("php_fpm_log", _PATH, "/var/log/php8.2-fpm.log", "php-fpm's own log (its error_log): 'max children reached'"),
    Var(
        "php_fpm_pools",
        _list_of(values.path),
        [],
        "pool files (globs allowed) remediate reads and may edit (default: what php_fpm_conf's include= names)",
    ),
    # backends this host serves (for restarting a crashed upstream)
    Var("services", _services, {}, "services on this host and the port each listens on"),
    # timeouts
    Var("timeout_ceiling", _number, 300.0, "the highest proxy timeout remediate will set, in seconds"),
    # dns and tls
    Var(
        "resolvers",
        _opt(_list_of(values.address)),
        None,
        "nameservers for nginx's resolver (default: the host's resolv.conf)",
    ),
    Var(
        "dns_strategy",
        _choice("variable", "pin"),
        "variable",
        "stale DNS: re-resolve through a variable, or pin the IP",
    ),
    Var("resolver_valid", _checked(values.duration), "30s", "how long nginx trusts an answer (resolver valid=)"),
    Var("resolver_timeout", _checked(values.duration), "5s", "nginx's resolver_timeout"),
    Var("tls_ca_bundle", _opt(_PATH), None, "CA bundle on the web host that signs private HTTPS backends"),
    # workers
    Var("worker_connections_ceiling", _int, 16384, "the highest worker_connections remediate will set"),
    Var("nginx_pid_file", _opt(_PATH), None, "nginx's pid file (default: from the config's pid directive)"),
    # remediate harden
    Var("harden_skip", _str_list, [], "hardening rules switched off for this host (remediate harden --list-rules)"),
    # verification
    Var("probe_urls", _str_list, [], "URLs that must not answer 502 once fixed"),
    Var("probe_budget", _number, 10.0, "seconds the fixed URLs get to stop answering 502 before a rollback"),
    # the run's own state on the host
    Var(
        "journal_dir", _PATH, "/var/lib/remediate", "journal (backups, lock) on the host; never under an nginx include"
    ),
    Var("ansible_python_interpreter", _PATH, "/usr/bin/python3", "python3 on the host, for remediate's helper"),
)
_BY_NAME = {var.name: var for var in VARS}


@dataclass(frozen=True)
class Host:
    """One inventory host with its vars merged and typed."""

    name: str
    vars: dict[str, Any]
    groups: tuple[str, ...]
    inventory_file: str

    def __getitem__(self, key: str) -> Any:
        return self.vars[key]

    @property
    def address(self) -> str:
        return str(self.vars["ansible_host"] or self.name)

    @property
    def is_local(self) -> bool:
        return bool(self.vars["ansible_connection"] == "local")

    @property
    def become_user(self) -> str | None:
        return str(self.vars["ansible_become_user"]) if self.vars["ansible_become"] else None

    @property
    def nginx_base_argv(self) -> list[str]:
        """``nginx [-p PREFIX] -c CONF``: every nginx invocation starts with this."""
        argv = [self.vars["nginx_bin"]]
        if self.vars["nginx_prefix"]:
            argv += ["-p", self.vars["nginx_prefix"]]
        return [*argv, "-c", self.vars["nginx_conf"]]

    @property
    def nginx_reload_argv(self) -> list[str]:
        custom = self.vars["nginx_reload"]
        return list(custom) if custom else [*self.nginx_base_argv, "-s", "reload"]


@dataclass
class _Group:
    name: str
    vars: dict[str, tuple[Any, int]] = field(default_factory=dict)
    hosts: dict[str, dict[str, tuple[Any, int]]] = field(default_factory=dict)
    children: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Inventory:
    path: str
    hosts: dict[str, Host]

    def host(self, name: str) -> Host:
        try:
            return self.hosts[name]
        except KeyError:
            known = ", ".join(sorted(self.hosts)) or "none"
            close = difflib.get_close_matches(name, self.hosts, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else f" (hosts: {known})"
            raise InventoryError(f"no host {name!r} in this inventory{hint}", file=self.path) from None

    def __iter__(self) -> Iterator[Host]:
        return iter(self.hosts.values())


def load_inventory(path: str | os.PathLike[str], text: str | None = None) -> Inventory:
    """Load the inventory at ``path`` (or ``text``, named ``path`` in errors)."""
    from ruamel.yaml import YAML
    from ruamel.yaml.error import MarkedYAMLError, YAMLError

    name = str(path)
    if text is None:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except FileNotFoundError:
            raise InventoryError("no such inventory file", file=name) from None
        except (OSError, UnicodeDecodeError) as exc:
            raise InventoryError(f"cannot read inventory: {exc}", file=name) from None
    try:
        data = YAML(typ="rt").load(text)
    except MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else None
        problem = exc.problem or exc.context or "malformed YAML"
        raise InventoryError(f"malformed YAML: {problem}", file=name, line=line) from None
    except YAMLError as exc:
        raise InventoryError(f"malformed YAML: {str(exc).splitlines()[0]}", file=name) from None
    return _Loader(name).build(data)


class _Loader:
    def __init__(self, path: str) -> None:
        self.path = path
        self.groups: dict[str, _Group] = {}

    def fail(self, message: str, line: int | None) -> InventoryError:
        return InventoryError(message, file=self.path, line=line)

    def build(self, data: Any) -> Inventory:
        if data is None:
            raise self.fail("the inventory is empty", None)
        if not _is_map(data):
            raise self.fail("an inventory is a mapping of groups, starting with `all:`", _line(data, None))
        self.groups["all"] = _Group("all")
        for group_name in data:
            self.read_group(str(group_name), data[group_name], _key_line(data, group_name))
            if group_name != "all" and group_name not in self.groups["all"].children:
                self.groups["all"].children.append(str(group_name))
        depths = self.depths()
        members = {name: self.all_hosts(name, set()) for name in self.groups}
        hosts: dict[str, Host] = {}
        for host_name in self.host_names():
            # A host in a child group belongs to every ancestor too, as in Ansible.
            member_of = sorted(
                (g for g in self.groups.values() if host_name in members[g.name] or g.name == "all"),
                key=lambda g: (depths.get(g.name, 0), g.name),
            )
            merged: dict[str, tuple[Any, int]] = {}
            for group in member_of:
                merged.update(group.vars)
            for group in member_of:
                merged.update(group.hosts.get(host_name, {}))
            hosts[host_name] = Host(
                name=host_name,
                vars=self.typed(host_name, merged),
                groups=tuple(g.name for g in member_of),
                inventory_file=self.path,
            )
        if not hosts:
            raise self.fail("the inventory has no hosts", None)
        return Inventory(self.path, hosts)

    def read_group(self, name: str, body: Any, line: int | None) -> None:
        group = self.groups.setdefault(name, _Group(name))
        if body is None:
            return
        if not _is_map(body):
            raise self.fail(f"group {name!r} must be a mapping with hosts, children or vars", line)
        for key in body:
            value, key_line = body[key], _key_line(body, key)
            if key == "hosts":
                if value is None:
                    continue
                if not _is_map(value):
                    raise self.fail(f"`hosts` of group {name!r} must be a mapping of host names", key_line)
                for host in value:
                    host_vars = value[host]
                    host_line = _key_line(value, host)
                    if host_vars is not None and not _is_map(host_vars):
                        raise self.fail(f"host {host!r} must map to its vars (or nothing)", host_line)
                    group.hosts.setdefault(str(host), {}).update(self.vars_of(host_vars))
            elif key == "vars":
                if value is not None and not _is_map(value):
                    raise self.fail(f"`vars` of group {name!r} must be a mapping", key_line)
                group.vars.update(self.vars_of(value))
            elif key == "children":
                if value is None:
                    continue
                if not _is_map(value):
                    raise self.fail(f"`children` of group {name!r} must be a mapping of groups", key_line)
                for child in value:
                    if str(child) not in group.children:
                        group.children.append(str(child))
                    self.read_group(str(child), value[child], _key_line(value, child))
            else:
                raise self.fail(
                    f"unexpected key {key!r} in group {name!r} (expected hosts, children or vars)", key_line
                )

    def vars_of(self, mapping: Any) -> dict[str, tuple[Any, int]]:
        if mapping is None:
            return {}
        return {str(k): (_plain(mapping[k]), _value_line(mapping, k)) for k in mapping}

    def depths(self) -> dict[str, int]:
        depth: dict[str, int] = {"all": 0}
        frontier = ["all"]
        while frontier:
            nxt = []
            for name in frontier:
                for child in self.groups[name].children:
                    if depth.get(child, -1) < depth[name] + 1 and depth[name] < len(self.groups):
                        depth[child] = depth[name] + 1
                        nxt.append(child)
            frontier = nxt
        return depth

    def all_hosts(self, name: str, seen: set[str]) -> set[str]:
        """The hosts of group ``name`` and of all its descendants."""
        if name in seen:
            return set()
        seen.add(name)
        group = self.groups[name]
        found = set(group.hosts)
        for child in group.children:
            found |= self.all_hosts(child, seen)
        return found

    def host_names(self) -> list[str]:
        seen: dict[str, None] = {}
        for group in self.groups.values():
            for host in group.hosts:
                seen.setdefault(host, None)
        return list(seen)

    def typed(self, host: str, merged: dict[str, tuple[Any, int]]) -> dict[str, Any]:
        result: dict[str, Any] = {}
        for var in VARS:
            result[var.name] = copy.deepcopy(var.default)  # hosts never share a mutable default
        for key, (value, line) in merged.items():
            known = _BY_NAME.get(key)
            if known is None:
                result[key] = value  # the user's own vars pass through untouched
                continue
            try:
                result[key] = known.convert(value)
            except TypeError as exc:
                raise self.fail(f"var {key!r} of host {host!r} must be {exc}, not {_describe(value)}", line) from None
        return result


def _is_map(value: Any) -> bool:
    return isinstance(value, dict)


def _plain(value: Any) -> Any:
    """ruamel's round-trip types become plain Python values."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    if isinstance(value, str):
        return str(value)
    return value


def _describe(value: Any) -> str:
    if isinstance(value, bool):
        return f"the boolean {value}"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    if value is None:
        return "null"
    return f"{type(value).__name__} {value!r}"


def _line(node: Any, default: int | None) -> int | None:
    lc = getattr(node, "lc", None)
    return lc.line + 1 if lc is not None and lc.line is not None else default


def _key_line(mapping: Any, key: Any) -> int | None:
    try:
        return int(mapping.lc.key(key)[0]) + 1
    except (AttributeError, KeyError, TypeError):
        return _line(mapping, None)


def _value_line(mapping: Any, key: Any) -> int:
    try:
        return int(mapping.lc.value(key)[0]) + 1
    except (AttributeError, KeyError, TypeError):
        return _key_line(mapping, key) or 0
