"""Shared fixtures: the real lab, built once per test session.

The lab needs root and real programs. When they are missing the lab tests
*fail* with the install command; they never skip, so CI cannot pass by
silently running less.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.lab import FLEET_NET, FLEET_SIZE, TEST_NET, running_lab
from support.pg import Postgres
from support.serving import FakeSlack

from remediate.hosts.inventory import Host, Inventory, load_inventory
from remediate.lab.core import Lab, LabConfig


@pytest.fixture
def state_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The controller's journal goes to a fresh directory per test, never the user's ~/.local/state."""
    path = tmp_path / "state"
    monkeypatch.setenv("REMEDIATE_STATE_DIR", str(path))
    return path


@pytest.fixture(scope="session")
def lab() -> Iterator[Lab]:
    yield from running_lab("remediate-test-lab-", net=TEST_NET)


@pytest.fixture(scope="session")
def fleet_lab() -> Iterator[Lab]:
    """A lab with FLEET_SIZE web hosts (group `web`), for the tests of fleet rollouts."""
    yield from running_lab("remediate-fleet-lab-", net=FLEET_NET, web_hosts=FLEET_SIZE)


@pytest.fixture(scope="session")
def postgres() -> Iterator[Postgres]:
    """Debian's PostgreSQL in a temporary directory on 127.0.22.1, shared by the session's tests."""
    server = Postgres()
    server.start()
    try:
        yield server
    finally:
        server.destroy()


@pytest.fixture(params=["sqlite", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> str | Path:
    """Where empty stores are (remediate.stores.db), once per engine: the same tests hold on both."""
    if request.param == "sqlite":
        return tmp_path
    server: Postgres = request.getfixturevalue("postgres")
    return server.stores()


@pytest.fixture
def fake_slack() -> Iterator[FakeSlack]:
    """Slack's Web API on loopback, recording what the service posts (user group S0LEADS holds U444)."""
    fake = FakeSlack(groups={"S0LEADS": ["U444"]})
    yield fake
    fake.close()


@pytest.fixture(scope="session")
def lab_cfg(lab: Lab) -> LabConfig:
    return lab.config()


@pytest.fixture(scope="session")
def lab_inventory(lab: Lab) -> Inventory:
    return load_inventory(lab.inventory)


@pytest.fixture(scope="session")
def web01(lab_inventory: Inventory) -> Host:
    return lab_inventory.host("web01")


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """In CI a skipped test is a failure: the run must prove everything it claims."""
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    skipped = len(reporter.stats.get("skipped", [])) if reporter is not None else 0
    if skipped and os.environ.get("CI"):
        reporter.write_line(f"CI: {skipped} test(s) skipped; every test must run in CI", red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


_TIERS = ("unit", "lab", "service", "realhost")
#: The tiers, by the real parts a test needs (what its fixtures start): each runs alone with -m.
_TIER_FIXTURES = {
    "lab": ("lab", "fleet_lab", "lab_cfg", "lab_inventory", "web01"),
    "service": ("postgres", "store", "fake_slack", "service"),
}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Every test in exactly one tier: realhost and lab as marked or by their fixtures, service by its
    fixtures (a running service, PostgreSQL, Slack), and unit for the rest: text and logic only. The
    tier is also the test's folder (tests/unit, tests/lab, ...); a test in the wrong one stops the run."""
    for item in items:
        marked = {m.name for m in item.iter_markers()} & {"unit", "lab", "service", "realhost"}
        names = set(getattr(item, "fixturenames", ()))
        for tier, fixtures in _TIER_FIXTURES.items():
            if names & set(fixtures) and "realhost" not in marked:
                marked.add(tier)
        if "lab" in marked:
            marked.discard("service")
        if not marked:
            marked.add("unit")
        for tier in marked:
            item.add_marker(getattr(pytest.mark, tier))
        folder = Path(str(item.fspath)).parent.name
        if folder in _TIERS and {folder} != marked:
            raise pytest.UsageError(f"{item.nodeid} is in tests/{folder}/ but its tier is {', '.join(sorted(marked))}")
