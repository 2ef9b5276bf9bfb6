"""The Ansible collection remediate.nginx: built and installed as a user would, ansible-doc, and a real
ansible-playbook run against the lab (changed, then ok, then --check --diff that changes nothing)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from support import ROOT

from remediate.lab.core import PROBES, Lab, LabConfig

pytestmark = pytest.mark.lab

SOURCE = ROOT / "ansible_collections" / "remediate" / "nginx"
BIN = Path(sys.executable).parent


def _ansible(tool: str, *argv: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / tool), *argv], capture_output=True, text=True, env=env, cwd=cwd, timeout=300, check=False
    )


@pytest.fixture(scope="module")
def ansible_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """The collection built with ansible-galaxy, installed into a collections path of its own."""
    root = tmp_path_factory.mktemp("ansible")
    env = {
        **{k: v for k, v in os.environ.items() if k != "PYTHONPATH"},  # the installed collection, not the tree
        "ANSIBLE_COLLECTIONS_PATH": str(root / "collections"),
        "ANSIBLE_LOCAL_TEMP": str(root / "tmp"),
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_FORCE_COLOR": "0",
        "ANSIBLE_STDOUT_CALLBACK": "default",
        "ANSIBLE_RETRY_FILES_ENABLED": "0",
    }
    built = _ansible(
        "ansible-galaxy", "collection", "build", str(SOURCE), "--output-path", str(root), env=env, cwd=root
    )
    assert built.returncode == 0, built.stdout + built.stderr
    (tarball,) = root.glob("remediate-nginx-*.tar.gz")
    installed = _ansible(
        "ansible-galaxy", "collection", "install", str(tarball), "-p", str(root / "collections"), env=env, cwd=root
    )
    assert installed.returncode == 0, installed.stdout + installed.stderr
    yield env


def test_ansible_doc_shows_the_modules(ansible_env: dict[str, str], tmp_path: Path) -> None:
    for module, option in (("remediate.nginx.fix", "cause"), ("remediate.nginx.diagnose", "since")):
        done = _ansible("ansible-doc", module, env=ansible_env, cwd=tmp_path)
        assert done.returncode == 0, done.stderr
        assert f"> MODULE {module}" in done.stdout and option in done.stdout and "RETURN VALUES" in done.stdout


PLAY = """\
- name: Fix the socket cause
  hosts: web
  gather_facts: false
  serial: 1
  max_fail_percentage: 0
  tasks:
    - name: remediate
      remediate.nginx.fix:
        cause: socket
      register: fixed
    - name: say what remediate did
      ansible.builtin.debug:
        msg: "outcome={{ fixed.outcome }} run={{ fixed.run_id }}"
"""


def _recap(out: str, host: str = "web01") -> dict[str, int]:
    line = next(line for line in out.splitlines() if line.startswith(host) and "ok=" in line)
    return {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", line)}


def test_a_playbook_fixes_then_reports_ok_and_check_diff_changes_nothing(
    ansible_env: dict[str, str], lab: Lab, lab_cfg: LabConfig, tmp_path: Path
) -> None:
    """ansible-playbook on the lab: a socket break is fixed (changed=1); the second run is ok with changed=0
    (Molecule's idempotence check); after another break, --check --diff shows the diff and changes nothing."""
    play = tmp_path / "fix.yml"
    play.write_text(PLAY)
    argv = ["-i", str(lab.inventory), "--limit", "web01", str(play)]
    lab.break_("socket", "missing")
    assert lab.probe(lab_cfg, PROBES["php"]) == 502

    first = _ansible("ansible-playbook", *argv, env=ansible_env, cwd=tmp_path)
    assert first.returncode == 0, first.stdout + first.stderr
    assert _recap(first.stdout)["changed"] == 1 and "outcome=fixed" in first.stdout, first.stdout
    assert lab.probe(lab_cfg, PROBES["php"]) == 200

    second = _ansible("ansible-playbook", *argv, env=ansible_env, cwd=tmp_path)
    assert second.returncode == 0 and _recap(second.stdout)["changed"] == 0, second.stdout
    assert "outcome=nothing-to-do" in second.stdout

    lab.break_("socket", "permission")
    pool = lab.dir / "web01" / "php" / "pool.d" / "www.conf"
    before = pool.read_bytes()
    checked = _ansible("ansible-playbook", *argv, "--check", "--diff", env=ansible_env, cwd=tmp_path)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "outcome=planned" in checked.stdout and "+++ b" in checked.stdout and "www.conf" in checked.stdout
    assert pool.read_bytes() == before and lab.probe(lab_cfg, PROBES["php"]) == 502
    lab.reset()


def test_a_refusal_fails_the_task_with_remediates_reason(ansible_env: dict[str, str], lab: Lab, tmp_path: Path) -> None:
    lab.reset()
    play = tmp_path / "wrong.yml"
    play.write_text(PLAY.replace("cause: socket", "cause: down"))
    done = _ansible(
        "ansible-playbook", "-i", str(lab.inventory), "--limit", "web01", str(play), env=ansible_env, cwd=tmp_path
    )
    assert done.returncode != 0 and _recap(done.stdout)["failed"] == 1, done.stdout
    assert "remediate: refused:" in done.stdout or "remediate: " in done.stdout


def test_an_eda_rulebook_takes_a_real_alertmanager_alert_to_a_fix(
    ansible_env: dict[str, str], lab: Lab, lab_cfg: LabConfig, tmp_path: Path
) -> None:
    """examples/rulebook.yml under a real ansible-rulebook (Java 17, Drools): Alertmanager's webhook, with the
    bearer token, reaches eda.builtin.webhook; the rule runs examples/fix-one.yml for the alert's instance and
    the lab answers 200 again. A request with the wrong token is refused (401) and starts nothing."""
    from support.serving import Alertmanager, free_port, http, write_secret

    port = free_port()
    examples = SOURCE / "examples"
    rulebook = tmp_path / "rulebook.yml"
    rulebook.write_text(
        (examples / "rulebook.yml").read_text()
        .replace("host: 0.0.0.0", "host: 127.0.0.1")
        .replace("port: 5000", f"port: {port}")
        .replace("examples/fix-one.yml", str(examples / "fix-one.yml"))
    )  # fmt: skip
    token = "eda-token-for-the-tests-0123456789"
    (tmp_path / "vars.yml").write_text(f"REMEDIATE_EDA_TOKEN: {token}\n")
    lab.break_("socket", "missing")
    assert lab.probe(lab_cfg, PROBES["php"]) == 502
    env = {**ansible_env, "PATH": f"{BIN}:{os.environ.get('PATH', '')}"}  # it runs ansible-galaxy, ansible-playbook
    log = (tmp_path / "eda.log").open("wb")
    eda = subprocess.Popen(
        [str(BIN / "ansible-rulebook"), "--rulebook", str(rulebook), "-i", str(lab.inventory),
         "--vars", str(tmp_path / "vars.yml")],
        env=env, cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    am = None
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and not _listening(port):
            assert eda.poll() is None, (tmp_path / "eda.log").read_text()[-3000:]
            time.sleep(0.5)
        forged = http("POST", url + "/alertmanager", "{}", {"Authorization": "Bearer wrong-token"})
        assert forged[0] == 401 and lab.probe(lab_cfg, PROBES["php"]) == 502

        am = Alertmanager(tmp_path / "am", url, write_secret(tmp_path / "eda.token", token)).start()
        am.add("alertname=Nginx502", "instance=web01:9113")
        deadline = time.monotonic() + 150
        while time.monotonic() < deadline and lab.probe(lab_cfg, PROBES["php"]) != 200:
            time.sleep(1)
        said = (tmp_path / "eda.log").read_text(errors="replace")
        assert lab.probe(lab_cfg, PROBES["php"]) == 200, said[-3000:]
        assert "remediate.nginx.fix" in said and "changed=1" in said
    finally:
        if am is not None:
            am.stop()
        eda.terminate()
        try:
            eda.wait(30)
        except subprocess.TimeoutExpired:
            eda.kill()
            eda.wait()
        lab.reset()


def _listening(port: int) -> bool:
    import socket

    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return False
    return True
