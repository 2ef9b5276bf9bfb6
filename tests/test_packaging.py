"""A regular install ships the playbooks/ and templates/ folders with the package."""

from __future__ import annotations

from remediate.resources import playbooks_dir, templates_dir


def test_playbooks_and_templates_ship() -> None:
    """The installed package finds its playbooks/ and templates/ folders and their files."""
    assert (playbooks_dir() / "README.md").is_file()
    assert (templates_dir() / "README.md").is_file()
