"""Inventory loading: Ansible's format and merge order, typed vars, and one-line errors with file:line."""

from __future__ import annotations

from pathlib import Path

import pytest
from support import ROOT
from support.lab import remediate_cli

from remediate.errors import EXIT_INPUT, InventoryError
from remediate.hosts.inventory import VARS, load_inventory

EXISTING = """\
# An inventory an Ansible user already has: groups, children, vars at every level.
all:
  vars:
    ansible_user: deploy
    ntp_server: pool.ntp.org        # a var remediate does not know passes through
  children:
    web:
      vars:
        ansible_become: yes          # YAML 1.1 boolean, as Ansible reads it
        probe_urls: https://shop.example.com/healthz
      children:
        web_eu:
          vars:
            nginx_error_log: /var/log/nginx/eu-error.log
          hosts:
            web01:
              ansible_host: 10.0.1.11
              ansible_port: "2222"
            web02:
    db:
      hosts:
        db01:
          ansible_connection: local
  hosts:
    bastion:
"""


@pytest.fixture
def existing(tmp_path: Path) -> Path:
    path = tmp_path / "hosts.yml"
    path.write_text(EXISTING)
    return path


def test_an_existing_ansible_inventory_loads(existing: Path) -> None:
    """Groups, children and vars load, with every host found wherever it is declared."""
    inv = load_inventory(existing)
    assert sorted(inv.hosts) == ["bastion", "db01", "web01", "web02"]
    assert inv.host("web01").groups == ("all", "web", "web_eu")


def test_vars_merge_in_ansible_order_and_are_typed(existing: Path) -> None:
    """all < parent group < child group < host; strings like "2222" and "yes" become int and bool."""
    web01 = load_inventory(existing).host("web01")
    assert web01["ansible_user"] == "deploy"
    assert web01["ansible_port"] == 2222
    assert web01["ansible_become"] is True and web01.become_user == "root"
    assert web01["nginx_error_log"] == "/var/log/nginx/eu-error.log"
    assert web01["probe_urls"] == ["https://shop.example.com/healthz"]
    assert web01["ntp_server"] == "pool.ntp.org"
    assert web01.address == "10.0.1.11"


def test_defaults_are_debian_and_safe(existing: Path) -> None:
    """A host with no vars gets Debian's paths and may restart nothing."""
    bastion = load_inventory(existing).host("bastion")
    assert bastion["nginx_bin"] == "/usr/sbin/nginx"
    assert bastion["nginx_conf"] == "/etc/nginx/nginx.conf"
    assert bastion["restartable_services"] == []
    assert bastion.address == "bastion" and bastion["ansible_port"] == 22
    assert bastion.nginx_reload_argv == ["/usr/sbin/nginx", "-c", "/etc/nginx/nginx.conf", "-s", "reload"]
    assert load_inventory(existing).host("db01").is_local


def test_nginx_prefix_goes_into_every_nginx_command(tmp_path: Path) -> None:
    """With nginx_prefix, nginx is always called with -p."""
    path = tmp_path / "i.yml"
    path.write_text("all:\n  hosts:\n    w:\n      nginx_prefix: /srv/nginx\n      nginx_conf: /srv/nginx/n.conf\n")
    assert load_inventory(path).host("w").nginx_base_argv == [
        "/usr/sbin/nginx",
        "-p",
        "/srv/nginx",
        "-c",
        "/srv/nginx/n.conf",
    ]


BAD = [
    (
        "unknown host",
        "all:\n  hosts:\n    web01:\n",
        None,
        r"i\.yml: no host 'web1' in this inventory; did you mean 'web01'\?",
    ),
    (
        "broken yaml",
        "all:\n  hosts:\n    web01: {a: [1, 2}\n",
        None,
        r"i\.yml:3: malformed YAML: expected ',' or ']'",
    ),
    ("tab indentation", "all:\n\thosts:\n", None, r"i\.yml:2: malformed YAML"),
    (
        "wrong type int",
        "all:\n  hosts:\n    web01:\n      ansible_port: many\n",
        None,
        r"i\.yml:4: var 'ansible_port' of host 'web01' must be an integer, not str 'many'",
    ),
    (
        "wrong type list",
        "all:\n  vars:\n    restartable_services: {a: 1}\n  hosts:\n    web01:\n",
        None,
        r"i\.yml:3: var 'restartable_services' of host 'web01' must be a list of strings, not a mapping",
    ),
    (
        "wrong choice",
        "all:\n  hosts:\n    web01:\n      service_manager: upstart\n",
        None,
        r"i\.yml:4: var 'service_manager' of host 'web01' must be one of systemd, supervisor, sysv",
    ),
    ("not a mapping", "- web01\n- web02\n", None, r"i\.yml:1: an inventory is a mapping of groups"),
    ("bad group key", "all:\n  host:\n    web01:\n", None, r"i\.yml:2: unexpected key 'host' in group 'all'"),
    ("empty", "", None, r"i\.yml: the inventory is empty"),
]


@pytest.mark.parametrize(("name", "text", "_unused", "pattern"), BAD, ids=[b[0] for b in BAD])
def test_bad_inventory_is_one_line_with_file_and_line(
    tmp_path: Path, name: str, text: str, _unused: None, pattern: str
) -> None:
    """Each bad inventory raises InventoryError whose single line names the file (and line when there is one)."""
    path = tmp_path / "i.yml"
    path.write_text(text)
    with pytest.raises(InventoryError) as info:
        load_inventory(path).host("web1")
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(str(path))
    import re

    assert re.search(pattern, message), message
    assert info.value.exit_code == EXIT_INPUT


@pytest.mark.parametrize(("name", "text", "_unused", "pattern"), BAD, ids=[b[0] for b in BAD])
def test_bad_inventory_on_the_command_line(tmp_path: Path, name: str, text: str, _unused: None, pattern: str) -> None:
    """The CLI prints that one line to stderr, no traceback, and exits with the input-error code."""
    path = tmp_path / "i.yml"
    path.write_text(text)
    done = remediate_cli("inventory", "-i", str(path), "--host", "web1")
    assert done.returncode == EXIT_INPUT
    assert done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("remediate: error: ")
    assert "Traceback" not in done.stderr


def test_missing_inventory_file(tmp_path: Path) -> None:
    """A path that does not exist is an input error naming it."""
    with pytest.raises(InventoryError, match="no such inventory file"):
        load_inventory(tmp_path / "nope.yml")


def test_example_inventory_documents_every_var() -> None:
    """inventory.example.yml loads, and mentions every var remediate reads."""
    example = ROOT / "inventory.example.yml"
    text = example.read_text()
    load_inventory(example)
    missing = [v.name for v in VARS if v.name not in text]
    assert missing == []
